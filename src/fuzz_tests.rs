//! Fuzz-style tests of every decoder that reads what another process wrote: random and
//! mutated frames (native and CPython framing), handle wire forms with their fds, and pickles.
//! Each input must give a value or an `Err` — never a panic, an abort or a hang. Seeded and
//! bounded, so they run in CI in seconds; the segment-header and ring-state fuzzers live in
//! `tests/fuzz.rs` (they need real named segments and queues).

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};

use crate::connection::unpickle;
use crate::connection::{Frame, FrameReader, Framing, Step};
use crate::sys::scm_rights;

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `input` with a few random changes: flipped bits, overwritten, inserted and removed
    /// bytes, and interesting values (0, 0xff, lengths near a boundary) written over words.
    pub(crate) fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(6) {
                0 if at < out.len() => out[at] ^= 1 << self.below(8),
                1 if at < out.len() => out[at] = self.next() as u8,
                2 => out.insert(at, self.next() as u8),
                3 if at < out.len() => {
                    out.remove(at);
                }
                4 => {
                    let word: [u8; 4] = match self.below(4) {
                        0 => [0; 4],
                        1 => [0xff; 4],
                        2 => 0x7fff_ffffu32.to_le_bytes(),
                        _ => 0x8000_0000u32.to_be_bytes(),
                    };
                    for (i, b) in word.iter().enumerate() {
                        if let Some(slot) = out.get_mut(at + i) {
                            *slot = *b;
                        }
                    }
                }
                _ => out.truncate(at),
            }
        }
        out
    }
}

/// Feeds `bytes` (then end of stream) to a frame reader; returns the frames read before the
/// stream ended or an error stopped it. Never waits: the writer closed its end.
fn read_all(bytes: &[u8], framing: Framing, max_frame: usize) -> Vec<Frame> {
    let (a, b) = scm_rights::socketpair().unwrap();
    let writer = {
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            for chunk in bytes.chunks(4096) {
                if scm_rights::send(a.as_fd(), &[IoSlice::new(chunk)], &[]).is_err() {
                    return;
                }
            }
        })
    };
    let mut reader = FrameReader::with_framing(max_frame, framing);
    let mut frames = Vec::new();
    loop {
        match reader.read_once(b.as_fd()) {
            Ok(Step::Frame(frame)) => frames.push(frame),
            Ok(Step::More) => {}
            Err(crate::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if writer.is_finished() {
                    // Everything written is in the socket: one more read sees it, or the end.
                    match reader.read_once(b.as_fd()) {
                        Ok(Step::Frame(frame)) => frames.push(frame),
                        Ok(Step::More) => continue,
                        Err(_) => break,
                    }
                } else {
                    std::thread::yield_now();
                }
            }
            Err(_) => break,
        }
    }
    writer.join().unwrap();
    frames
}

#[test]
fn random_and_mutated_frames_are_values_or_errors() {
    let mut rng = Rng::new(0x5eed_f4a3);
    let mut valid = Vec::new();
    for len in [0usize, 1, 7, 300, 70_000] {
        valid.extend_from_slice(&crate::connection::frame_header(len, 0));
        valid.extend(rng.bytes(len));
    }
    let mut python = Vec::new();
    for len in [0usize, 5, 1000] {
        python.extend_from_slice(&(len as i32).to_be_bytes());
        python.extend(rng.bytes(len));
    }
    python.extend_from_slice(&(-1i32).to_be_bytes());
    python.extend_from_slice(&3u64.to_be_bytes());
    python.extend_from_slice(b"abc");
    assert_eq!(read_all(&valid, Framing::Native, 1 << 20).len(), 5);
    assert_eq!(read_all(&python, Framing::Python, 1 << 20).len(), 4);
    for round in 0..1000 {
        let (seed, framing) = if round % 2 == 0 {
            (&valid, Framing::Native)
        } else {
            (&python, Framing::Python)
        };
        let input = if round % 5 == 0 {
            let n = rng.below(200);
            rng.bytes(n)
        } else {
            rng.mutate(seed)
        };
        let max_frame = [16, 4096, 1 << 20, usize::MAX][rng.below(4)];
        for frame in read_all(&input, framing, max_frame) {
            assert!(frame.payload.len() <= max_frame);
        }
    }
}

#[test]
fn mutated_pickles_are_values_or_errors() {
    // Pickles CPython 3.11 wrote (protocols 0, 2 and 4) of nested plain data.
    let seeds: [&[u8]; 3] = [
        b"\x80\x04\x95(\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00\x8c\x02\xc3\xa9\x94C\x01x\x94N\x88}\x94\x8c\x01k\x94K\x01K\x02\x86\x94se.",
        b"\x80\x02]q\x00(}q\x01X\x01\x00\x00\x00kq\x02K\x01sh\x01h\x01e.",
        b"(lp0\nI1\naVa\xe9\\u20ac\np1\naF2.5\naNaI01\na(I1\nI2\ntp2\na(dp3\nVx\np4\n(lp5\nI3\nasaL1180591620717411303424L\na.",
    ];
    let mut rng = Rng::new(0x91c4_1e55);
    for round in 0..50_000 {
        let input = if round % 10 == 0 {
            let n = rng.below(64);
            rng.bytes(n)
        } else {
            rng.mutate(seeds[round % seeds.len()])
        };
        let _ = unpickle::from_slice::<serde::de::IgnoredAny>(&input);
        let _ = unpickle::from_slice::<Vec<Option<String>>>(&input);
        let _ = unpickle::from_slice::<(u8, f64, String)>(&input);
        let _ = unpickle::from_slice::<std::collections::HashMap<String, Vec<i64>>>(&input);
    }
}

/// A message holding one of every handle, as the crate sends it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Everything {
    shm: crate::SharedMemory,
    list: crate::ShareableList,
    lock: crate::Lock,
    event: crate::Event,
    barrier: crate::Barrier,
    queue: crate::Queue<u32>,
    condition: crate::Condition,
    text: String,
}

#[test]
fn mutated_handle_wire_forms_are_values_or_errors() {
    let lock = crate::Lock::new().unwrap();
    let everything = Everything {
        shm: crate::SharedMemory::create(64).unwrap(),
        list: crate::ShareableList::create([crate::Item::Int(1)]).unwrap(),
        condition: crate::Condition::new(&lock).unwrap(),
        lock,
        event: crate::Event::new().unwrap(),
        barrier: crate::Barrier::new(2).unwrap(),
        queue: crate::Queue::new(4).unwrap(),
        text: "text".into(),
    };
    let (bytes, fds) = crate::handle::encode(&everything).unwrap();
    let dup = |fds: &[OwnedFd]| -> Vec<OwnedFd> {
        fds.iter().map(|fd| crate::sys::dup(fd).unwrap()).collect()
    };
    crate::handle::decode::<Everything>(&bytes, dup(&fds)).expect("the real one decodes");
    let mut rng = Rng::new(0x0a11_f0d5);
    for round in 0..5_000 {
        let input = rng.mutate(&bytes);
        // The fds, shuffled or cut short now and then (a peer may send any fds, or none).
        let mut mine = dup(&fds);
        if round % 3 == 0 {
            let by = rng.below(mine.len());
            mine.rotate_left(by);
        }
        if round % 7 == 0 {
            let keep = rng.below(mine.len());
            mine.truncate(keep);
        }
        let _ = crate::handle::decode::<Everything>(&input, mine);
    }
}
