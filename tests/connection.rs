//! Pipes, connections, listeners and clients across real processes.
//!
//! Several behaviours are ported from CPython's `Lib/test/_test_multiprocessing.py`
//! (`_TestConnection`: test_connection, test_duplex_false, test_spawn_close, test_sendbytes,
//! test_missing_fd_transfer; `_TestListenerClient`; `_TestPoll`), rewritten for this crate.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use support::{LIVENESS, unique_name};
use tokio_multiprocessing::connection::{Address, Client, Listener, Receiver, Sender};
use tokio_multiprocessing::{self as mp, Connection, Error, Pipe, SharedMemory};

// ----- pipes across processes -----

async fn echo_plus_one(mut conn: Connection<u64>) {
    while let Ok(x) = conn.recv().await {
        conn.send(&(x + 1)).await.unwrap();
    }
}

#[tokio::test]
async fn ping_pong_across_processes() -> mp::Result<()> {
    mp::init().await?;
    let (mut ours, theirs) = Pipe::<u64>::duplex()?;
    let mut child = mp::Process::spawn(echo_plus_one, theirs)?;
    for i in 0..1000 {
        ours.send(&i).await?;
        assert_eq!(ours.recv().await?, i + 1);
    }
    drop(ours);
    child.join().await?;
    Ok(())
}

async fn send_many((tx, n, batched): (Sender<u64>, u64, bool)) {
    for i in 0..n {
        if batched {
            tx.feed(&i).await.unwrap();
        } else {
            tx.send(&i).await.unwrap();
        }
    }
    tx.flush().await.unwrap();
}

#[tokio::test]
async fn a_hundred_thousand_messages_arrive_in_order() -> mp::Result<()> {
    mp::init().await?;
    for batched in [false, true] {
        let (mut rx, tx) = Pipe::<u64>::simplex()?;
        let mut child = mp::Process::spawn(send_many, (tx, 100_000, batched))?;
        for i in 0..100_000 {
            assert_eq!(rx.recv().await?, i);
        }
        child.join().await?;
        assert!(matches!(rx.recv().await, Err(Error::Closed)));
    }
    Ok(())
}

async fn bursts_after_pauses(mut conn: Connection<Vec<u8>>) {
    for round in 0..6u8 {
        // The other side has read everything and parked by now (usually): the first frame
        // of the burst must wake it through a registration made while it parked.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let big = round % 2 == 1;
        for i in 0..if big { 8 } else { 500u32 } {
            let frame = if big {
                vec![round; 1 << 20]
            } else {
                i.to_le_bytes().to_vec()
            };
            conn.send_bytes(&frame).await.unwrap();
        }
        conn.recv_bytes().await.unwrap();
    }
}

/// A socket is registered with the reactor only while someone waits on it: a receiver drops
/// its registration once frames flow (64 in a row without parking) and registers again when
/// it has to park; a sender of frames larger than the socket's buffer registers for room.
/// Bursts separated by pauses cross every one of those transitions, both ways, six times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_and_senders_wake_after_flowing_and_parking_in_turn() -> mp::Result<()> {
    mp::init().await?;
    let (mut ours, theirs) = Pipe::<Vec<u8>>::duplex()?;
    let mut child = mp::Process::spawn(bursts_after_pauses, theirs)?;
    tokio::time::timeout(LIVENESS, async {
        for round in 0..6u8 {
            let big = round % 2 == 1;
            for i in 0..if big { 8 } else { 500u32 } {
                let frame = ours.recv_bytes().await?;
                if big {
                    assert!(frame.len() == 1 << 20 && frame.iter().all(|&b| b == round));
                } else {
                    assert_eq!(frame[..], i.to_le_bytes());
                }
            }
            ours.send_bytes(b"next").await?;
        }
        child.join().await
    })
    .await
    .expect("no wake-up is lost")
}

async fn send_three_and_exit(tx: Sender<String>) {
    for word in ["one", "two", "three"] {
        tx.send(&word.to_string()).await.unwrap();
    }
}

#[tokio::test]
async fn eof_comes_after_everything_sent() -> mp::Result<()> {
    mp::init().await?;
    let (mut rx, tx) = Pipe::<String>::simplex()?;
    let mut child = mp::Process::spawn(send_three_and_exit, tx)?;
    child.join().await?;
    let mut got = Vec::new();
    loop {
        match rx.recv().await {
            Ok(word) => got.push(word),
            Err(Error::Closed) => break,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(got, ["one", "two", "three"]);
    // EOF is sticky, as Python's repeated EOFError.
    assert!(matches!(rx.recv().await, Err(Error::Closed)));
    Ok(())
}

/// Receives a connection and a segment over the control pipe while running, then uses both.
async fn serve_handles(mut control: Connection<(Connection<String>, SharedMemory)>) -> String {
    let (mut conn, shm) = control.recv().await.unwrap();
    shm.write_at(0, b"child was here").unwrap();
    let greeting = conn.recv().await.unwrap();
    conn.send(&format!("{greeting}, back")).await.unwrap();
    greeting
}

#[tokio::test]
async fn a_connection_and_a_segment_reach_a_running_child_inside_a_message() -> mp::Result<()> {
    mp::init().await?;
    let (control, theirs) = Pipe::duplex()?;
    let mut child = mp::Process::spawn(serve_handles, theirs)?;
    let (mut ours, for_child) = Pipe::<String>::duplex()?;
    let shm = SharedMemory::create(64)?;
    control.send(&(for_child, shm.clone())).await?;
    ours.send(&"hello".to_string()).await?;
    assert_eq!(ours.recv().await?, "hello, back");
    assert_eq!(child.join().await?, "hello");
    assert_eq!(&shm.to_vec()?[..14], b"child was here");
    Ok(())
}

async fn stream_numbers(mut tx: Sender<u32>) {
    let mut numbers = futures::stream::iter((0..10_000).map(Ok));
    tx.send_all(&mut numbers).await.unwrap();
    tx.close().await.unwrap();
}

#[tokio::test]
async fn receivers_are_streams_and_senders_are_sinks() -> mp::Result<()> {
    mp::init().await?;
    let (rx, tx) = Pipe::<u32>::simplex()?;
    let mut child = mp::Process::spawn(stream_numbers, tx)?;
    let got: Vec<u32> = rx.map(|r| r.unwrap()).collect().await;
    assert_eq!(got, (0..10_000).collect::<Vec<_>>());
    child.join().await?;
    Ok(())
}

async fn blocking_echo(conn: Connection<String>) {
    // A plain thread in the child, using the blocking twins.
    tokio::task::spawn_blocking(move || {
        let mut conn = conn;
        let msg = conn.recv_blocking().unwrap();
        conn.send_blocking(&msg.to_uppercase()).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn blocking_twins_work_from_threads_on_both_sides() -> mp::Result<()> {
    mp::init().await?;
    let (ours, theirs) = Pipe::<String>::duplex()?;
    let mut child = mp::Process::spawn(blocking_echo, theirs)?;
    let reply = tokio::task::spawn_blocking(move || {
        let mut ours = ours;
        ours.send_blocking(&"quiet".to_string())?;
        ours.recv_blocking()
    })
    .await
    .unwrap()?;
    assert_eq!(reply, "QUIET");
    child.join().await?;
    Ok(())
}

// ----- framing and bad input -----

#[tokio::test]
async fn frames_never_merge_or_split_and_zero_length_works() -> mp::Result<()> {
    let (mut a, b) = Pipe::<()>::duplex()?;
    const SIZES: [usize; 6] = [1, 100_000, 0, 5, 3 << 20, 0];
    // `send` returns once written, so a reader must run meanwhile (as with Python's pipes).
    let writer = tokio::spawn(async move {
        for (i, &n) in SIZES.iter().enumerate() {
            b.send_bytes(&vec![i as u8; n]).await?;
        }
        Ok::<_, Error>(b)
    });
    let sizes = SIZES;
    for (i, &n) in sizes.iter().enumerate() {
        let got = a.recv_bytes().await?;
        assert_eq!(got.len(), n);
        assert!(got.iter().all(|&x| x == i as u8));
    }
    writer.await.unwrap()?;
    Ok(())
}

#[tokio::test]
async fn oversized_sends_are_refused_and_nothing_is_written() -> mp::Result<()> {
    let (mut a, b) = Pipe::<Vec<u8>>::builder().max_frame(1024).open_duplex()?;
    assert!(matches!(
        b.send_bytes(&[0; 1025]).await,
        Err(Error::TooLarge {
            size: 1025,
            max: 1024
        })
    ));
    assert!(matches!(
        b.send(&vec![0; 2000]).await,
        Err(Error::TooLarge { .. })
    ));
    b.send(&vec![7; 10]).await?;
    assert_eq!(a.recv().await?, vec![7; 10]);
    assert!(!a.poll(Duration::ZERO).await, "nothing else was written");
    Ok(())
}

#[tokio::test]
async fn an_oversized_announcement_closes_the_connection_without_allocating() -> mp::Result<()> {
    let (ours, mut raw) = std::os::unix::net::UnixStream::pair()?;
    let mut conn = Connection::<Vec<u8>>::from_std(ours)?;
    // A header announcing 4 GiB - 1 bytes, then nothing.
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])?;
    assert!(matches!(
        conn.recv().await,
        Err(Error::TooLarge {
            size: 0xffff_ffff,
            ..
        })
    ));
    // The connection is shut down: the peer sees end of stream, and we stay broken.
    let mut buf = [0u8; 1];
    assert_eq!(raw.read(&mut buf)?, 0);
    assert!(matches!(conn.recv().await, Err(Error::Corrupt(_))));
    Ok(())
}

#[tokio::test]
async fn garbage_and_truncated_frames_are_errors_not_panics() -> mp::Result<()> {
    // Random garbage.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..50 {
        let (ours, mut raw) = std::os::unix::net::UnixStream::pair()?;
        let mut conn = Connection::<(String, Vec<u64>)>::from_std(ours)?;
        let mut junk = vec![0u8; 64];
        for b in junk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        raw.write_all(&junk)?;
        drop(raw);
        loop {
            match conn.recv().await {
                Ok(_) => continue,
                Err(Error::Closed | Error::Corrupt(_) | Error::TooLarge { .. }) => break,
                Err(e) => panic!("unexpected error kind {e:?}"),
            }
        }
    }
    // A frame cut short by the peer closing.
    let (ours, mut raw) = std::os::unix::net::UnixStream::pair()?;
    let mut conn = Connection::<String>::from_std(ours)?;
    raw.write_all(&[100, 0, 0, 0, 0, 0, 0, 0, b'a', b'b'])?;
    drop(raw);
    assert!(matches!(conn.recv().await, Err(Error::Corrupt(m)) if m.contains("middle of a frame")));
    // A whole frame that is not a `T`.
    let (mut a, b) = Pipe::<u64>::duplex()?;
    b.send_bytes(&[0xff; 20]).await?;
    assert!(matches!(a.recv().await, Err(Error::Corrupt(_))));
    Ok(())
}

#[tokio::test]
async fn recv_bytes_into_a_short_buffer_keeps_the_frame() -> mp::Result<()> {
    let (mut a, b) = Pipe::<()>::duplex()?;
    b.send_bytes(b"a message of 23 bytes..").await?;
    let mut small = [0u8; 8];
    assert!(matches!(
        a.recv_bytes_into(&mut small).await,
        Err(Error::TooLarge { size: 23, max: 8 })
    ));
    let mut big = [0u8; 64];
    let n = a.recv_bytes_into(&mut big).await?;
    assert_eq!(&big[..n], b"a message of 23 bytes..");
    Ok(())
}

#[tokio::test]
async fn poll_try_recv_and_timeouts_consume_nothing() -> mp::Result<()> {
    let (mut a, b) = Pipe::<u8>::duplex()?;
    assert!(!a.poll(Duration::ZERO).await);
    assert!(matches!(a.try_recv(), Err(Error::Empty)));
    let start = std::time::Instant::now();
    assert!(matches!(
        a.recv_timeout(Duration::from_millis(100)).await,
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(!a.poll(Duration::from_millis(50)).await);
    b.send(&9).await?;
    assert!(a.poll(LIVENESS).await);
    assert!(a.poll(Duration::ZERO).await, "poll consumed nothing");
    assert_eq!(a.try_recv()?, 9);
    drop(b);
    assert!(a.poll(LIVENESS).await, "end of stream counts as readable");
    assert!(matches!(a.recv().await, Err(Error::Closed)));
    Ok(())
}

#[tokio::test]
async fn a_cancelled_send_never_leaves_half_a_frame() -> mp::Result<()> {
    let (mut a, b) = Pipe::<Vec<u8>>::duplex()?;
    // Nobody reads yet, so big frames back up; cancel sends at arbitrary points.
    let mut attempted = 0;
    for i in 0..20u8 {
        let frame = vec![i; 256 * 1024];
        attempted += 1;
        let _ = tokio::time::timeout(Duration::from_millis(5), b.send(&frame)).await;
    }
    let last = tokio::spawn(async move { b.send(&vec![255; 3]).await });
    let mut seen = 0;
    loop {
        let frame = a.recv_timeout(LIVENESS).await?;
        if frame == vec![255; 3] {
            break;
        }
        assert_eq!(frame.len(), 256 * 1024, "a frame was cut");
        assert!(
            frame.iter().all(|&x| x == frame[0]),
            "a frame was mixed with another"
        );
        seen += 1;
    }
    assert!(seen <= attempted);
    last.await.unwrap()?;
    Ok(())
}

/// Sends checksummed 1 MiB messages until killed.
async fn send_until_killed(tx: Sender<Vec<u8>>) {
    let mut i = 0u8;
    loop {
        let mut msg = vec![i; 1 << 20];
        let sum = msg.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        msg.push(sum);
        tx.send(&msg).await.unwrap();
        i = i.wrapping_add(1);
    }
}

#[tokio::test]
async fn a_peer_killed_mid_send_gives_whole_messages_then_an_error() -> mp::Result<()> {
    mp::init().await?;
    for _ in 0..3 {
        let (mut rx, tx) = Pipe::<Vec<u8>>::simplex()?;
        let child = mp::Process::spawn(send_until_killed, tx)?;
        for _ in 0..3 {
            rx.recv().await?;
        }
        child.kill()?;
        loop {
            match rx.recv().await {
                Ok(msg) => {
                    let (body, sum) = msg.split_at(msg.len() - 1);
                    assert_eq!(body.len(), 1 << 20, "truncated value delivered");
                    assert_eq!(body.iter().fold(0u8, |s, b| s.wrapping_add(*b)), sum[0]);
                }
                Err(Error::Closed | Error::Corrupt(_)) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
    Ok(())
}

// ----- listeners and clients -----

async fn connect_and_talk((address, key): (String, Option<Vec<u8>>)) -> String {
    let address: Address = address.parse().unwrap();
    match Client::connect::<String>(address, key.as_deref()).await {
        Ok(mut conn) => {
            // A keyless client reads the listener's challenge as its first message (as in
            // Python), which is not a String: report it instead of panicking.
            if let Err(e) = conn
                .send(&format!("hello from {}", std::process::id()))
                .await
            {
                return format!("send error: {e:?}");
            }
            conn.recv()
                .await
                .unwrap_or_else(|e| format!("recv error: {e:?}"))
        }
        Err(e) => format!("client error: {e:?}"),
    }
}

async fn listener_round(address: Address) -> mp::Result<()> {
    let mut listener = Listener::<String>::bind(address, Some(b"right key")).await?;
    let address = listener.local_addr().to_string();

    // Wrong key: both sides fail, the listener keeps serving.
    let mut bad = mp::Process::spawn(
        connect_and_talk,
        (address.clone(), Some(b"wrong key".to_vec())),
    )?;
    assert!(matches!(listener.accept().await, Err(Error::Auth)));
    assert_eq!(bad.join().await?, "client error: Auth");

    // No key against a keyed listener: refused too.
    let mut keyless = mp::Process::spawn(connect_and_talk, (address.clone(), None))?;
    let _ = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
    keyless.kill()?;
    let _ = keyless.join().await;

    // Right key: talks.
    let mut good = mp::Process::spawn(
        connect_and_talk,
        (address.clone(), Some(b"right key".to_vec())),
    )?;
    let mut conn = loop {
        match listener.accept().await {
            Ok(conn) => break conn,
            Err(Error::Auth | Error::Timeout) => continue,
            Err(e) => return Err(e),
        }
    };
    let hello = conn.recv().await?;
    assert_eq!(hello, format!("hello from {}", good.pid()));
    conn.send(&"welcome".to_string()).await?;
    assert_eq!(good.join().await?, "welcome");
    Ok(())
}

#[tokio::test]
async fn listener_and_client_authenticate_over_tcp() -> mp::Result<()> {
    mp::init().await?;
    listener_round("127.0.0.1:0".parse()?).await
}

#[tokio::test]
async fn listener_and_client_authenticate_over_a_unix_path() -> mp::Result<()> {
    mp::init().await?;
    let dir = tempfile::tempdir()?;
    listener_round(Address::Unix(dir.path().join("listener.sock"))).await
}

#[tokio::test]
async fn listener_and_client_authenticate_in_the_abstract_namespace() -> mp::Result<()> {
    mp::init().await?;
    listener_round(Address::Abstract(unique_name("abstract").into_bytes())).await
}

#[tokio::test]
async fn a_silent_client_times_out_without_blocking_the_listener() -> mp::Result<()> {
    let mut listener = Listener::<u8>::builder("127.0.0.1:0".parse()?)
        .authkey(Some(b"k"))
        .handshake_timeout(Duration::from_secs(2))
        .bind()
        .await?;
    let Address::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    let silent = std::net::TcpStream::connect(addr)?;
    let good = tokio::spawn(async move { Client::connect::<u8>(addr, Some(b"k")).await });
    // The good client is served first although the silent one came earlier.
    let first = listener.accept().await;
    assert!(first.is_ok(), "{first:?}");
    assert!(matches!(listener.accept().await, Err(Error::Timeout)));
    good.await.unwrap()?;
    drop(silent);
    Ok(())
}

/// Regression: an unauthenticated peer could announce a 64 MiB handshake reply and the
/// listener waited to buffer all of it before the 256-byte limit was checked (12 such peers
/// grew it by 576 MiB). The limit now applies to the announcement: refused at once.
#[tokio::test]
async fn an_oversized_handshake_reply_is_refused_before_it_arrives() -> mp::Result<()> {
    use std::io::{Read, Write};
    let mut listener = Listener::<u8>::builder("127.0.0.1:0".parse()?)
        .authkey(Some(b"k"))
        .handshake_timeout(LIVENESS)
        .bind()
        .await?;
    let Address::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    let peer = std::thread::spawn(move || {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        let mut challenge = [0u8; 8];
        sock.read_exact(&mut challenge).unwrap(); // the challenge's header
        // A reply announcing 64 MiB, of which only a little ever comes.
        let mut header = (64u32 << 20).to_le_bytes().to_vec();
        header.extend_from_slice(&0u32.to_le_bytes());
        sock.write_all(&header).unwrap();
        sock.write_all(&[0u8; 1024]).unwrap();
        std::thread::sleep(LIVENESS + Duration::from_secs(5));
    });
    let refused = tokio::time::timeout(LIVENESS / 2, listener.accept())
        .await
        .expect("refused without waiting for the 64 MiB");
    assert!(matches!(refused, Err(Error::Auth)), "{refused:?}");
    drop(peer);
    Ok(())
}

/// Regression: a second `bind` on a path a live listener of ours holds checked it with a real
/// connection, and the live listener's `accept` returned that probe (empty, already closed)
/// instead of the client it waited for. Live listeners are now told by a lock file.
#[tokio::test]
async fn a_second_bind_never_reaches_the_live_listeners_accept() -> mp::Result<()> {
    let dir = tempfile::tempdir()?;
    let address = Address::Unix(dir.path().join("live.sock"));
    let mut live = Listener::<u32>::bind(address.clone(), None).await?;
    for _ in 0..3 {
        let second = Listener::<u32>::bind(address.clone(), None).await;
        assert!(
            matches!(second, Err(Error::Io(ref e)) if e.kind() == std::io::ErrorKind::AddrInUse)
        );
    }
    let client = tokio::spawn({
        let address = address.clone();
        async move {
            let mut conn = Client::connect::<u32>(address, None).await?;
            conn.send(&7).await?;
            conn.recv().await
        }
    });
    let mut conn = live.accept().await?;
    assert_eq!(
        conn.recv().await?,
        7,
        "the first connection is the client's"
    );
    conn.send(&8).await?;
    assert_eq!(client.await.unwrap()?, 8);
    drop(live);
    assert!(
        std::fs::read_dir(dir.path())?.next().is_none(),
        "socket and lock file removed"
    );
    Ok(())
}

/// A peer that closes before the handshake completes (a probe) never surfaces from `accept`.
#[tokio::test]
async fn peers_that_leave_during_the_handshake_are_not_reported() -> mp::Result<()> {
    let mut listener = Listener::<u8>::bind("127.0.0.1:0".parse()?, Some(b"k")).await?;
    let Address::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    for _ in 0..3 {
        drop(std::net::TcpStream::connect(addr)?);
    }
    let good = tokio::spawn(async move { Client::connect::<u8>(addr, Some(b"k")).await });
    let first = listener.accept().await;
    assert!(first.is_ok(), "{first:?}");
    good.await.unwrap()?;
    Ok(())
}

async fn echo_strings(mut conn: mp::Connection<String>) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(text) = conn.recv().await {
        seen.push(text);
    }
    seen
}

/// Code ported from Python: `conn.send("stop")` on a `Pipe<String>` (anything `T` borrows as
/// is accepted), and `close()` / `closed` without dropping the connection.
#[tokio::test]
async fn send_takes_borrowed_forms_and_close_ends_the_stream() -> mp::Result<()> {
    mp::init().await?;
    let (mut a, b) = mp::Pipe::<String>::duplex()?;
    let mut child = mp::Process::spawn(echo_strings, b)?;
    a.send("start").await?;
    a.send(&"middle".to_string()).await?;
    a.send_blocking("stop")?;
    assert!(!a.is_closed());
    a.close();
    a.close();
    assert!(a.is_closed());
    assert_eq!(
        child.join_timeout(LIVENESS).await?,
        ["start", "middle", "stop"]
    );
    assert!(a.send("after").await.is_err());
    assert!(a.recv().await.is_err());
    Ok(())
}

/// Regression: a `Client` connecting to a Unix listener whose accept backlog is full (CPython's
/// `Listener` has a backlog of 1) failed at once with `EAGAIN`; CPython's `Client` waits and
/// gets in. Ours now waits too, up to its timeout.
#[tokio::test]
async fn a_client_waits_while_the_listeners_backlog_is_full() -> mp::Result<()> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("busy.sock");
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    let addr = SocketAddrUnix::new(&path).unwrap();
    rustix::net::bind(&listener, &addr).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    // Fill the backlog with connections nobody accepts yet.
    let mut waiting = Vec::new();
    loop {
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        match rustix::net::connect(&sock, &addr) {
            Ok(()) => waiting.push(sock),
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let acceptor = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut accepted = Vec::new();
        for _ in 0..waiting.len() + 1 {
            accepted.push(rustix::net::accept(&listener).unwrap());
        }
        accepted
    });
    let client = Client::connect::<u8>(Address::Unix(path), None).await;
    assert!(client.is_ok(), "{client:?}");
    acceptor.join().unwrap();
    Ok(())
}

/// Regression: a `max_frame` over 4 GiB − 1 was lowered silently; it is refused, saying why.
#[tokio::test]
async fn a_max_frame_the_framing_cannot_carry_is_refused() -> mp::Result<()> {
    let too_big = u32::MAX as usize + 1;
    let pipe = mp::Pipe::<u8>::builder().max_frame(too_big).open_duplex();
    assert!(matches!(pipe, Err(Error::InvalidArgument(ref m)) if m.contains("4 GiB")));
    let listener = Listener::<u8>::builder("127.0.0.1:0".parse()?)
        .max_frame(too_big)
        .bind()
        .await;
    assert!(matches!(listener, Err(Error::InvalidArgument(_))));
    let client = Client::builder("127.0.0.1:9".parse::<Address>()?)
        .max_frame(too_big)
        .connect::<u8>()
        .await;
    assert!(matches!(client, Err(Error::InvalidArgument(_))));
    assert!(
        mp::Pipe::<u8>::builder()
            .max_frame(u32::MAX as usize)
            .open_duplex()
            .is_ok()
    );
    Ok(())
}

async fn recv_one(mut conn: mp::Connection<u32>) -> String {
    format!("{:?}", conn.recv_timeout(LIVENESS).await)
}

/// Regression: a connection handed to another process lost the frames it had read ahead.
/// Both frames arrive in one read here; the child must still get the second.
#[tokio::test]
async fn a_connection_sent_away_carries_the_frames_it_read_ahead() -> mp::Result<()> {
    mp::init().await?;
    let (a, mut b) = mp::Pipe::<u32>::duplex()?;
    a.send(&1).await?;
    a.send(&2).await?;
    assert_eq!(b.recv().await?, 1);
    let mut child = mp::Process::spawn(recv_one, b)?;
    assert_eq!(child.join_timeout(LIVENESS).await?, "Ok(2)");
    drop(a);
    Ok(())
}

/// The standard server: accept, then hand the connection to a worker process; the client
/// wrote right after the handshake, so its first message may already sit in our buffer.
#[tokio::test]
async fn an_accepted_connection_handed_to_a_worker_keeps_what_the_client_sent() -> mp::Result<()> {
    mp::init().await?;
    let dir = tempfile::tempdir()?;
    let address = Address::Unix(dir.path().join("server.sock"));
    let mut listener = Listener::<u32>::bind(address.clone(), Some(b"key")).await?;
    let client = tokio::spawn(async move {
        let mut conn = Client::connect::<u32>(address, Some(b"key")).await?;
        conn.send(&41).await?;
        conn.send(&42).await?;
        conn.recv().await
    });
    let mut conn = listener.accept().await?;
    // Let the client's frames arrive, and make sure at least one read happens here first.
    assert!(conn.poll(LIVENESS).await);
    assert_eq!(conn.recv().await?, 41);
    let mut worker = mp::Process::spawn(recv_one, conn)?;
    assert_eq!(worker.join_timeout(LIVENESS).await?, "Ok(42)");
    drop(listener);
    let _ = client.await;
    Ok(())
}

#[tokio::test]
async fn stale_socket_files_are_replaced_and_live_ones_refused() -> mp::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.sock");
    // A socket file whose listener died.
    drop(std::os::unix::net::UnixListener::bind(&path)?);
    assert!(path.exists());
    let live = Listener::<u8>::bind(Address::Unix(path.clone()), None).await?;
    let second = Listener::<u8>::bind(Address::Unix(path.clone()), None).await;
    assert!(matches!(second, Err(Error::Io(ref e)) if e.kind() == std::io::ErrorKind::AddrInUse));
    // A regular file is never removed.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"data")?;
    assert!(
        Listener::<u8>::bind(Address::Unix(file.clone()), None)
            .await
            .is_err()
    );
    assert_eq!(std::fs::read(&file)?, b"data");
    drop(live);
    assert!(!path.exists(), "the listener removes its socket file");
    Ok(())
}

async fn report_pid(address: String) -> u32 {
    let conn = Client::connect::<u32>(address.parse::<Address>().unwrap(), None)
        .await
        .unwrap();
    conn.send(&std::process::id()).await.unwrap();
    std::process::id()
}

#[tokio::test]
async fn unix_connections_expose_peer_credentials() -> mp::Result<()> {
    mp::init().await?;
    let dir = tempfile::tempdir()?;
    let mut listener =
        Listener::<u32>::bind(Address::Unix(dir.path().join("c.sock")), None).await?;
    let mut child = mp::Process::spawn(report_pid, listener.local_addr().to_string())?;
    let mut conn = listener.accept().await?;
    let creds = conn.peer_credentials()?;
    assert_eq!(creds.pid, conn.recv().await?);
    assert_eq!(creds.pid, child.join().await?);
    Ok(())
}

#[tokio::test]
async fn handles_cannot_travel_over_tcp() -> mp::Result<()> {
    let mut listener = Listener::<SharedMemory>::bind("127.0.0.1:0".parse()?, None).await?;
    let Address::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    let client = Client::connect::<SharedMemory>(addr, None).await?;
    let _server = listener.accept().await?;
    let shm = SharedMemory::create(8)?;
    assert!(matches!(
        client.send(&shm).await,
        Err(Error::InvalidArgument(_))
    ));
    Ok(())
}

#[test]
fn addresses_parse() {
    assert_eq!(
        "@name".parse::<Address>().unwrap(),
        Address::Abstract(b"name".to_vec())
    );
    assert!(matches!(
        "/tmp/x.sock".parse::<Address>().unwrap(),
        Address::Unix(_)
    ));
    assert!(matches!(
        "127.0.0.1:80".parse::<Address>().unwrap(),
        Address::Tcp(_)
    ));
    assert!("nonsense".parse::<Address>().is_err());
}

#[allow(dead_code)]
fn receivers_and_senders_are_send(r: Receiver<u8>, s: Sender<u8>) -> impl Send {
    (r, s)
}
