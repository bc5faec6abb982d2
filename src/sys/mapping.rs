//! Shared mappings (`mmap(2)` through `memmap2::MmapRaw`) and the only ways we touch them.
//!
//! Memory that another process may write at any moment must never be seen through a `&[u8]` or
//! `&mut [u8]`: the compiler may assume such memory does not change. So a [`Mapping`] offers only
//! bounds-checked copies into and out of private memory, and references to *atomics*, whose
//! interior mutability makes concurrent writers legal.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use memmap2::{MmapOptions, MmapRaw};

/// A read-write `MAP_SHARED` mapping of a whole segment file. Clones share the mapping, which
/// is unmapped when the last one is dropped; each clone carries the mapping's address and length
/// itself, so a hot path that keeps a clone reaches a word with one bounds check and no pointer
/// chasing.
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    /// Keeps the mapping alive; every access goes through `ptr`.
    _map: Arc<Region>,
    /// The mapping's first byte (8-aligned, checked in [`map`](Self::map)) and its length.
    ptr: *mut u8,
    len: usize,
    /// For a guarded mapping (see [`map_guarded`](Self::map_guarded)): set once its file was
    /// truncated and its pages replaced.
    vanished: Option<&'static AtomicBool>,
}

/// The mapping and, for a named segment, its SIGBUS guard (dropped first: unregistered before
/// the mapping goes away).
#[derive(Debug)]
struct Region {
    _guard: Option<super::sigbus::Guard>,
    _map: MmapRaw,
}

// SAFETY: `ptr` points into the mapping that `_map` keeps alive, which is `MAP_SHARED` memory that
// every process and thread may touch at once; this type only ever accesses it through
// bounds-checked copies and atomics, which are sound from any thread. `MmapRaw` itself is `Send`
// and `Sync`.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: no access through a `Mapping` needs exclusive use of it.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd` shared and read-write.
    ///
    /// The caller has checked that the file is at least `len` bytes long.
    pub(crate) fn map(fd: impl AsFd, len: usize) -> io::Result<Self> {
        Self::map_with(fd, len, false)
    }

    /// [`map`](Self::map) for a file another process may truncate (a named segment): a fault
    /// past its new end replaces the mapping with zero pages instead of killing us, and every
    /// checked access fails from then on (see `sigbus.rs`).
    pub(crate) fn map_guarded(fd: impl AsFd, len: usize) -> io::Result<Self> {
        Self::map_with(fd, len, true)
    }

    fn map_with(fd: impl AsFd, len: usize, guarded: bool) -> io::Result<Self> {
        let file = std::fs::File::from(super::dup(fd)?);
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        let (ptr, len) = (map.as_mut_ptr(), map.len());
        if !(ptr as usize).is_multiple_of(8) {
            return Err(io::Error::other("mmap returned an unaligned address"));
        }
        let guard = guarded
            .then(|| super::sigbus::Guard::register(ptr, len))
            .flatten();
        let vanished = guard.as_ref().map(super::sigbus::Guard::vanished);
        Ok(Mapping {
            _map: Arc::new(Region {
                _guard: guard,
                _map: map,
            }),
            ptr,
            len,
            vanished,
        })
    }

    /// An error once the segment's file was truncated under a guarded mapping.
    #[inline]
    pub(crate) fn intact(&self) -> io::Result<()> {
        match self.vanished {
            Some(flag) if flag.load(std::sync::atomic::Ordering::Acquire) => Err(vanished()),
            _ => Ok(()),
        }
    }

    /// The mapped length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first byte of the mapping. Dereferencing it is the caller's business.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {offset}..{} is outside the {}-byte segment",
                    offset.saturating_add(len),
                    self.len()
                ),
            )),
        }
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping into private memory.
    #[inline]
    pub(crate) fn read(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len())?;
        self.intact()?;
        // SAFETY: `offset + buf.len() <= self.len()` was checked, so the source range lies inside
        // the live mapping, which lives as long as `self` (its file is sealed against shrinking,
        // or, for a named segment, a truncation makes the SIGBUS guard put zero pages there). The destination is a private `&mut [u8]`, so the two
        // ranges never overlap. Bytes a peer writes concurrently arrive as some bytes; `u8` has
        // no invalid values, and no reference to the shared range is ever formed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.as_ptr().wrapping_add(offset).cast_const(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        // A truncation during the copy gave us zeros: do not pass them off as the contents.
        // (The fence keeps the compiler from moving the copy below the check.)
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        self.intact()
    }

    /// Appends `len` bytes at `offset` to `out`, without zero-filling them first.
    #[inline]
    pub(crate) fn read_append(
        &self,
        offset: usize,
        len: usize,
        out: &mut impl Appendable,
    ) -> io::Result<()> {
        self.check(offset, len)?;
        self.intact()?;
        let dest = out.spare(len);
        // SAFETY: the source range was bounds-checked against the live mapping; `spare` returned
        // room for `len` more bytes in `out`'s private allocation, so the ranges never overlap.
        // Only raw pointers to the shared range are used.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.as_ptr().wrapping_add(offset).cast_const(),
                dest,
                len,
            )
        };
        // SAFETY: the `len` bytes at `dest`, right after `out`'s initialised bytes, were just
        // initialised by the copy above.
        unsafe { out.grow(len) };
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = self.intact() {
            out.truncate_to(out.filled() - len);
            return Err(e);
        }
        Ok(())
    }

    /// Copies `data` into the mapping at `offset`.
    #[inline]
    pub(crate) fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len())?;
        self.intact()?;
        // SAFETY: the destination range was bounds-checked against the live mapping as in `read`,
        // the source is private memory, so the ranges never overlap, and only a raw pointer to
        // the shared range is used.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.as_ptr().wrapping_add(offset),
                data.len(),
            )
        };
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        self.intact()
    }

    /// The `AtomicU32` at `offset`, which must be 4-byte aligned and inside the mapping.
    #[inline]
    pub(crate) fn atomic_u32(&self, offset: usize) -> io::Result<&AtomicU32> {
        self.try_atomic_u32(offset)
            .ok_or_else(|| misplaced_atomic(offset, 4, self.len()))
    }

    /// [`atomic_u32`](Self::atomic_u32) for hot paths: `None` instead of an error to build.
    #[inline]
    pub(crate) fn try_atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        if offset >= self.len || self.len - offset < 4 || !offset.is_multiple_of(4) {
            return None;
        }
        let ptr = self.as_ptr().wrapping_add(offset);
        // SAFETY: the 4 bytes at `ptr` are inside the mapping (checked), aligned for `AtomicU32`
        // (the mapping starts 8-aligned and `offset` is a multiple of 4, both checked), and
        // stay mapped while `self` is borrowed. `AtomicU32` has the size and
        // validity of `u32` (every bit pattern is valid) and is interior-mutable, so a shared
        // reference to it is sound while other processes write the same word atomically.
        Some(unsafe { AtomicU32::from_ptr(ptr.cast::<u32>()) })
    }

    /// The `AtomicU64` at `offset`, which must be 8-byte aligned and inside the mapping.
    #[inline]
    pub(crate) fn atomic_u64(&self, offset: usize) -> io::Result<&AtomicU64> {
        self.try_atomic_u64(offset)
            .ok_or_else(|| misplaced_atomic(offset, 8, self.len()))
    }

    /// [`atomic_u64`](Self::atomic_u64) for hot paths: `None` instead of an error to build.
    #[inline]
    pub(crate) fn try_atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        if offset >= self.len || self.len - offset < 8 || !offset.is_multiple_of(8) {
            return None;
        }
        let ptr = self.as_ptr().wrapping_add(offset);
        // SAFETY: as in `try_atomic_u32`: in bounds, aligned (8-aligned start, offset a
        // multiple of 8), mapped for the borrow, every bit pattern valid, interior-mutable.
        Some(unsafe { AtomicU64::from_ptr(ptr.cast::<u64>()) })
    }
}

/// A private growable byte buffer that a mapping appends to without zero-filling first.
pub(crate) trait Appendable {
    /// Room for `n` more bytes after the initialised ones: where they go.
    fn spare(&mut self, n: usize) -> *mut u8;

    /// Counts `n` more bytes as initialised.
    ///
    /// # Safety
    ///
    /// The `n` bytes at the pointer the last [`spare`](Self::spare)`(n)` returned must have been
    /// written since.
    unsafe fn grow(&mut self, n: usize);

    /// Appends private bytes.
    fn append(&mut self, bytes: &[u8]);

    /// How many bytes it holds.
    fn filled(&self) -> usize;

    /// Keeps only the first `len` bytes.
    fn truncate_to(&mut self, len: usize);
}

/// `Vec<u8>` and `BytesMut` have the same inherent methods for this.
macro_rules! appendable {
    ($($buffer:ty),*) => {$(
        impl Appendable for $buffer {
            fn spare(&mut self, n: usize) -> *mut u8 {
                self.reserve(n);
                // From the spare capacity itself, so the pointer may be written through.
                self.spare_capacity_mut().as_mut_ptr().cast::<u8>()
            }

            unsafe fn grow(&mut self, n: usize) {
                // SAFETY: `spare(n)` reserved the room and the caller initialised it.
                unsafe { self.set_len(self.len() + n) }
            }

            fn append(&mut self, bytes: &[u8]) {
                self.extend_from_slice(bytes);
            }

            fn filled(&self) -> usize {
                self.len()
            }

            fn truncate_to(&mut self, len: usize) {
                self.truncate(len);
            }
        }
    )*};
}

appendable!(Vec<u8>, bytes::BytesMut);

/// `N` consecutive 32-bit words of a mapping, checked once when made, so a hot path reaches
/// each of them with no check at all (a wait channel's three words, touched on every notify).
#[derive(Debug, Clone)]
pub(crate) struct Words32<const N: usize> {
    map: Mapping,
    offset: usize,
}

impl<const N: usize> Words32<N> {
    /// The words at `offset`..`offset + 4 * N` of `map`, which must be inside it and 4-aligned.
    pub(crate) fn new(map: &Mapping, offset: usize) -> io::Result<Self> {
        let end = offset.checked_add(4 * N).filter(|&end| end <= map.len());
        if N == 0 || end.is_none() || !offset.is_multiple_of(4) {
            return Err(misplaced_atomic(offset, 4 * N, map.len()));
        }
        Ok(Words32 {
            map: map.clone(),
            offset,
        })
    }

    /// Word `index` (below `N`).
    #[inline]
    pub(crate) fn get(&self, index: usize) -> &AtomicU32 {
        assert!(index < N, "word {index} of {N}");
        let ptr = self.map.as_ptr().wrapping_add(self.offset + 4 * index);
        // SAFETY: `new` checked that the `N` words at `offset` lie inside the mapping and that
        // `offset` is 4-aligned (the mapping itself starts 8-aligned), and `index < N`, so `ptr`
        // is an aligned word inside the mapping, which `self.map` keeps alive for the borrow.
        // `AtomicU32` accepts every bit pattern and is interior-mutable, as in `try_atomic_u32`.
        unsafe { AtomicU32::from_ptr(ptr.cast::<u32>()) }
    }
}

#[cold]
fn vanished() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the segment's file was truncated by another process: its contents are gone",
    )
}

#[cold]
fn misplaced_atomic(offset: usize, size: usize, len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("no aligned {size}-byte atomic at {offset} in a {len}-byte mapping"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn copies_and_atomics_are_bounds_checked() {
        let fd = super::super::memfd::create_sealed("t", 64).unwrap();
        let m = Mapping::map(&fd, 64).unwrap();
        m.write(60, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        m.read(60, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(m.write(61, &[0; 4]).is_err());
        assert!(m.read(usize::MAX, &mut b).is_err());
        assert!(m.atomic_u32(62).is_err());
        assert!(m.atomic_u64(4).is_err());
        m.atomic_u64(8).unwrap().store(7, Ordering::Relaxed);
        let other = Mapping::map(&fd, 64).unwrap();
        assert_eq!(other.atomic_u64(8).unwrap().load(Ordering::Relaxed), 7);
    }
}
