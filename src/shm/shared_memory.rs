//! [`SharedMemory`]: a segment of bytes mapped into every process that holds it.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::header::{self, HEADER_SIZE, Kind};
use crate::handle::{FdIndex, FdSink, FdSource, Handle, serde_via_handle};
use crate::sys;
use crate::sys::mapping::{Appendable, Mapping};
use crate::{Error, Result};

/// The largest segment we create (1 TiB): beyond any machine this runs on, small enough that
/// size arithmetic never overflows.
const MAX_SIZE: usize = 1 << 40;

/// A block of memory shared between processes (Python's `shared_memory.SharedMemory`).
///
/// - [`create`](Self::create) makes an anonymous segment: a sealed memfd that exists as long as
///   some process holds a handle or a mapping, and has no name to leak. It reaches other
///   processes as a spawn argument, inside a message, or through [`pass`](crate::pass).
/// - [`create_named`](Self::create_named) makes `/dev/shm/<name>` (mode 0600, created
///   exclusively) that [`open`](Self::open) attaches to by name, as Python does. The creating
///   process owns the name and unlinks it when its last handle drops, unless it calls
///   [`persist`](Self::persist).
///
/// Handles are cheap to clone (an `Arc`); the mapping lives until the last clone drops.
///
/// # Access
///
/// Other processes may write the segment at any moment, so it is never exposed as `&[u8]`:
/// [`read_at`](Self::read_at) and [`write_at`](Self::write_at) copy bytes out and in, with bounds
/// checks. Coordinate concurrent writers with a lock (or use typed views such as
/// [`ShareableList`](crate::ShareableList)). For zero-copy access there is
/// [`as_ptr`](Self::as_ptr), whose use is unsafe.
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::SharedMemory;
///
/// # fn main() -> tokio_multiprocessing::Result<()> {
/// let shm = SharedMemory::create(10)?;
/// shm.write_at(4, b"howdy")?;
/// assert_eq!(&shm.to_vec()?[4..9], b"howdy");
/// assert_eq!(shm.size(), 10);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    inner: Arc<Inner>,
}

struct Inner {
    map: Mapping,
    fd: OwnedFd,
    size: usize,
    name: Option<String>,
    /// This process created the name and unlinks it on drop (unless persisted).
    owns_name: AtomicBool,
    /// This process unlinked the name already.
    unlinked: AtomicBool,
}

impl SharedMemory {
    /// Creates an anonymous segment of `size` bytes, zero-filled.
    ///
    /// The memory is allocated now: running out of memory is an error here, never a `SIGBUS`
    /// later.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a size of 0 (as Python) or above 1 TiB; [`Error::Io`] when
    /// the memory cannot be allocated.
    pub fn create(size: usize) -> Result<Self> {
        Self::create_kind(Kind::Bytes, size, None, |_| Ok(()))
    }

    /// Creates the named segment `/dev/shm/<name>` of `size` bytes, zero-filled, mode 0600.
    ///
    /// The name is unlinked when this process's last handle drops, unless
    /// [`persist`](Self::persist) is called; other processes [`open`](Self::open) it meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] if the name is taken; [`Error::InvalidArgument`] for a bad name
    /// (empty, over 200 bytes, containing `/` or NUL) or size; [`Error::Io`] otherwise.
    pub fn create_named(name: &str, size: usize) -> Result<Self> {
        Self::create_kind(Kind::Bytes, size, Some(name), |_| Ok(()))
    }

    /// Attaches to the named segment `/dev/shm/<name>` made by [`create_named`](Self::create_named).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if no such segment exists; [`Error::Corrupt`] if it is too small, not
    /// made by this crate, of another layout version, or holds another kind of object (a
    /// [`ShareableList`](crate::ShareableList)); [`Error::Io`] with `PermissionDenied` if it
    /// belongs to another user or is open to others.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_kind(name, Kind::Bytes)
    }

    /// The segment's name, `None` for an anonymous one.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// The usable size in bytes (what was asked for at creation).
    #[inline]
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`] if the range does not fit in the segment.
    #[inline]
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        Ok(self.inner.map.read(HEADER_SIZE + offset, buf)?)
    }

    /// Copies `data` into the segment starting at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`] if the range does not fit in the segment.
    #[inline]
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        Ok(self.inner.map.write(HEADER_SIZE + offset, data)?)
    }

    /// Appends `len` bytes starting at `offset` to `out` (no zero-filling first).
    #[inline]
    pub(crate) fn read_append(
        &self,
        offset: usize,
        len: usize,
        out: &mut impl Appendable,
    ) -> Result<()> {
        self.check_range(offset, len)?;
        Ok(self.inner.map.read_append(HEADER_SIZE + offset, len, out)?)
    }

    /// A private copy of the whole segment.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a named segment's file was truncated by another process (its
    /// contents are gone; so for every access after that).
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = vec![0; self.size()];
        self.read_at(0, &mut v)?;
        Ok(v)
    }

    /// A raw pointer to the first usable byte, for zero-copy access.
    ///
    /// Getting the pointer is safe; using it is not. The `size()` bytes behind it stay mapped as
    /// long as this handle (or a clone) lives.
    ///
    /// # Safety
    ///
    /// Before dereferencing, make sure that:
    /// - no other process or thread writes the bytes while a `&[u8]` to them exists, and none
    ///   reads or writes them while a `&mut [u8]` exists (coordinate with a lock), because the
    ///   compiler assumes memory behind a reference does not change underneath it;
    /// - every access stays within `size()` bytes and outlives no handle;
    /// - for a named segment, no peer shrinks the file (named segments cannot be sealed).
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.map.as_ptr().wrapping_add(HEADER_SIZE)
    }

    /// The whole mapping (header included), for the crate's hot paths that keep a clone and
    /// reach their words without going through this handle.
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.inner.map
    }

    /// Removes the name, so nobody new can [`open`](Self::open) it; existing handles keep working
    /// (Python's `unlink`). Any process may call it.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the name is already gone (a second `unlink`);
    /// [`Error::InvalidArgument`] for an anonymous segment, which has no name.
    pub fn unlink(&self) -> Result<()> {
        let name = self.name().ok_or_else(|| {
            Error::InvalidArgument("an anonymous segment has no name to unlink".into())
        })?;
        if self.inner.unlinked.swap(true, Ordering::AcqRel) {
            return Err(Error::NotFound(name.to_owned()));
        }
        let unlinked = sys::shm_open::unlink(name).map_err(|e| map_name_error(e, name));
        super::tracker::forget(name);
        unlinked
    }

    /// Keeps the name after this process's handles drop: somebody else will
    /// [`unlink`](Self::unlink) it. Without this, the creator unlinks it on drop.
    pub fn persist(&self) {
        self.release_name();
        if let Some(name) = self.name() {
            super::tracker::forget(name);
        }
    }

    /// Stops unlinking the name on drop, but leaves it with the resource tracker (a queue's
    /// spilled item, whose owner changes once it is queued).
    pub(crate) fn release_name(&self) {
        self.inner.owns_name.store(false, Ordering::Release);
    }

    // ----- crate-internal: typed views are built on these -----

    pub(crate) fn create_kind(
        kind: Kind,
        size: usize,
        name: Option<&str>,
        init: impl FnOnce(&SharedMemory) -> Result<()>,
    ) -> Result<Self> {
        if size == 0 || size > MAX_SIZE {
            return Err(Error::InvalidArgument(format!(
                "segment size must be between 1 byte and 1 TiB, not {size}"
            )));
        }
        let total = (HEADER_SIZE + size) as u64;
        let fd = match name {
            None => sys::memfd::create_sealed("tokio-multiprocessing", total)?,
            Some(name) => {
                check_name(name)?;
                sys::shm_open::create_exclusive(name, total).map_err(|e| map_name_error(e, name))?
            }
        };
        // A named segment's file can be truncated by anyone who can open it: guard its mapping.
        let mapped = if name.is_some() {
            Mapping::map_guarded(&fd, HEADER_SIZE + size)
        } else {
            Mapping::map(&fd, HEADER_SIZE + size)
        };
        let map = match mapped {
            Ok(map) => map,
            Err(e) => {
                if let Some(name) = name {
                    let _ = sys::shm_open::unlink(name);
                }
                return Err(e.into());
            }
        };
        // From here on, dropping `shm` unlinks a named segment again if initialisation fails.
        let shm = SharedMemory {
            inner: Arc::new(Inner {
                map,
                fd,
                size,
                name: name.map(str::to_owned),
                owns_name: AtomicBool::new(name.is_some()),
                unlinked: AtomicBool::new(false),
            }),
        };
        if let Some(name) = name {
            // Unlinked by the tracker if this process dies without unlinking it.
            super::tracker::track(name, sys::shm_open::inode_of(&shm.inner.fd)?);
        }
        header::initialise(&shm.inner.map, kind, size)?;
        init(&shm)?;
        header::publish(&shm.inner.map)?;
        Ok(shm)
    }

    pub(crate) fn open_kind(name: &str, kind: Kind) -> Result<Self> {
        check_name(name)?;
        let fd = sys::shm_open::open(name).map_err(|e| map_name_error(e, name))?;
        Self::from_fd(fd, Some(name.to_owned()), kind)
    }

    /// Validates a segment fd that came from a name or from another process and maps it.
    fn from_fd(fd: OwnedFd, name: Option<String>, kind: Kind) -> Result<Self> {
        if name.is_none() && !sys::memfd::is_sealed(&fd)? {
            return Err(Error::Corrupt(
                "anonymous segment is not sealed against shrinking and growing".into(),
            ));
        }
        let file_size = sys::file_size(&fd)?;
        if file_size < HEADER_SIZE as u64 {
            return Err(Error::Corrupt(format!(
                "segment is {file_size} bytes, smaller than the {HEADER_SIZE}-byte header"
            )));
        }
        // A named segment's file can be truncated by anyone who can open it (even while we read
        // its header): guard its mappings. An anonymous one is sealed (checked above).
        let map = |len| {
            if name.is_some() {
                Mapping::map_guarded(&fd, len)
            } else {
                Mapping::map(&fd, len)
            }
        };
        let size = {
            let head = map(HEADER_SIZE)?;
            header::validate(&head, file_size, kind)?
        };
        let map = map(HEADER_SIZE + size)?;
        Ok(SharedMemory {
            inner: Arc::new(Inner {
                map,
                fd,
                size,
                name,
                owns_name: AtomicBool::new(false),
                unlinked: AtomicBool::new(false),
            }),
        })
    }

    #[inline]
    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(Error::IndexOutOfRange {
                index: offset.saturating_add(len),
                len: self.size(),
            }),
        }
    }

    /// The 32-bit word at data offset `offset`, as an atomic shared with every process that maps
    /// the segment: counters, flags and sequence numbers without a lock.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let shm = tokio_multiprocessing::SharedMemory::create(64)?;
    /// shm.atomic_u32(8)?.fetch_add(1, Ordering::AcqRel);
    /// assert_eq!(shm.atomic_u32(8)?.load(Ordering::Acquire), 1);
    /// assert!(matches!(shm.atomic_u32(6), Err(tokio_multiprocessing::Error::InvalidArgument(_))));
    /// assert!(shm.atomic_u32(64).is_err()); // past the end
    /// # Ok::<(), tokio_multiprocessing::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`] past the end; [`Error::InvalidArgument`] when `offset` is not a
    /// multiple of 4.
    #[inline]
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32> {
        self.inner.map.intact()?;
        if offset.is_multiple_of(4)
            && offset.checked_add(4).is_some_and(|e| e <= self.size())
            && let Some(word) = self.inner.map.try_atomic_u32(HEADER_SIZE + offset)
        {
            return Ok(word);
        }
        Err(self.misplaced_atomic(offset, 4))
    }

    /// The 64-bit word at data offset `offset`, as an atomic shared with every process that maps
    /// the segment (see [`atomic_u32`](Self::atomic_u32)).
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`] past the end; [`Error::InvalidArgument`] when `offset` is not a
    /// multiple of 8.
    #[inline]
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        self.inner.map.intact()?;
        if offset.is_multiple_of(8)
            && offset.checked_add(8).is_some_and(|e| e <= self.size())
            && let Some(word) = self.inner.map.try_atomic_u64(HEADER_SIZE + offset)
        {
            return Ok(word);
        }
        Err(self.misplaced_atomic(offset, 8))
    }

    /// Why there is no `size`-byte atomic at `offset`.
    #[cold]
    fn misplaced_atomic(&self, offset: usize, size: usize) -> Error {
        if let Err(e) = self.check_range(offset, size) {
            return e;
        }
        if !offset.is_multiple_of(size) {
            return Error::InvalidArgument(format!(
                "offset {offset} of a {}-bit atomic is not a multiple of {size}",
                size * 8
            ));
        }
        Error::Io(std::io::Error::other(
            "the mapping does not hold the segment's data",
        ))
    }

    /// Whether `other` refers to the same segment (the same file).
    pub(crate) fn same_segment(&self, other: &SharedMemory) -> bool {
        sys::same_file(&self.inner.fd, &other.inner.fd).unwrap_or(false)
    }

    /// The segment's fd.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let Some(name) = &self.name else { return };
        if !self.owns_name.load(Ordering::Acquire) || self.unlinked.load(Ordering::Acquire) {
            return;
        }
        // Only unlink the name if it still refers to *our* segment: after someone else unlinked
        // it, the same name may belong to a new segment.
        if sys::shm_open::names(name, &self.fd) {
            let _ = sys::shm_open::unlink(name);
        }
        super::tracker::forget(name);
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.inner.name)
            .field("size", &self.inner.size)
            .finish_non_exhaustive()
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 200
        || name.contains(['/', '\0'])
        || name == "."
        || name == ".."
    {
        return Err(Error::InvalidArgument(format!(
            "segment name {name:?} must be 1 to 200 bytes without '/' or NUL"
        )));
    }
    Ok(())
}

fn map_name_error(e: std::io::Error, name: &str) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(name.to_owned()),
        std::io::ErrorKind::AlreadyExists => Error::AlreadyExists(name.to_owned()),
        _ => Error::Io(e),
    }
}

/// The plain-data part of a [`SharedMemory`] in a message.
///
/// Opaque: it only travels inside the crate's own messages (see [`Handle`](crate::handle::Handle)).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SharedMemoryWire {
    fd: FdIndex,
    name: Option<String>,
}

impl SharedMemory {
    pub(crate) fn wire(&self, fds: &mut FdSink) -> Result<SharedMemoryWire> {
        Ok(SharedMemoryWire {
            fd: fds.push(&self.inner.fd)?,
            name: self.inner.name.clone(),
        })
    }

    pub(crate) fn from_wire_kind(
        wire: SharedMemoryWire,
        fds: &mut FdSource,
        kind: Kind,
    ) -> Result<Self> {
        let fd = fds.take(wire.fd)?;
        if let Some(name) = &wire.name {
            check_name(name).map_err(|e| Error::Corrupt(e.to_string()))?;
        }
        Self::from_fd(fd, wire.name, kind)
    }
}

impl Handle for SharedMemory {
    type Wire = SharedMemoryWire;

    fn to_wire(&self, fds: &mut FdSink) -> Result<Self::Wire> {
        self.wire(fds)
    }

    fn from_wire(wire: Self::Wire, fds: &mut FdSource) -> Result<Self> {
        Self::from_wire_kind(wire, fds, Kind::Bytes)
    }
}

serde_via_handle!(SharedMemory);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsealed_anonymous_segment_is_refused() {
        let fd = sys::memfd::create_unsealed(4096).unwrap();
        let err = SharedMemory::from_fd(fd, None, Kind::Bytes).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt(ref m) if m.contains("sealed")),
            "{err}"
        );
    }

    #[test]
    fn a_received_segment_is_validated_like_an_opened_one() {
        let shm = SharedMemory::create(100).unwrap();
        let copy =
            SharedMemory::from_fd(sys::dup(&shm.inner.fd).unwrap(), None, Kind::Bytes).unwrap();
        assert_eq!(copy.size(), 100);
        let wrong_kind =
            SharedMemory::from_fd(sys::dup(&shm.inner.fd).unwrap(), None, Kind::ShareableList);
        assert!(matches!(wrong_kind, Err(Error::Corrupt(_))));
    }
}
