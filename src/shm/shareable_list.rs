//! [`ShareableList`]: a fixed-length list of typed slots in shared memory.

use std::fmt;
use std::sync::atomic::{Ordering, fence};

use super::header::Kind;
use super::shared_memory::{SharedMemory, SharedMemoryWire};
use crate::handle::{FdSink, FdSource, Handle, serde_via_handle};
use crate::{Error, Result};

const MAGIC: u32 = u32::from_le_bytes(*b"SLST");
// 2: every slot holds its current type next to its value, so a value of another type that
// fits may replace it (as in Python).
const VERSION: u32 = 2;
const TABLE: usize = 16;
const ENTRY: usize = 16;
/// A slot's header: sequence u32 | type code u32 | length u32 | unused u32; the value follows.
const SLOT_HEADER: usize = 16;
/// Most slots a list may have (1 Mi): the table is copied out when a list is opened, so its
/// size must be bounded by something sane, not by what a hostile file claims.
pub const MAX_SLOTS: usize = 1 << 20;
/// How long a reader sees a slot mid-write at one sequence number before deciding its writer
/// died while writing.
const STUCK_WRITE: std::time::Duration = std::time::Duration::from_millis(500);

/// One value of a [`ShareableList`] (Python's `int`, `float`, `bool`, `str`, `bytes`, `None`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Item {
    /// `None`.
    None,
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// UTF-8 text, stored with its exact byte length.
    Str(String),
    /// Bytes, stored with their exact length (trailing NULs are kept).
    Bytes(Vec<u8>),
}

/// The type of one slot's value, and (for text and bytes) how many bytes the slot can hold.
///
/// A slot's room is fixed when the list is created: 8 bytes for a number, a bool or `None`,
/// `capacity` bytes for text and bytes. Its type is not: any value that fits may replace the
/// current one, as in Python (`sl[4] = "some"` where a `None` was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Holds only `Item::None`.
    None,
    /// Holds an `i64`.
    Int,
    /// Holds an `f64`.
    Float,
    /// Holds a `bool`.
    Bool,
    /// Holds UTF-8 text of at most `capacity` bytes.
    Str {
        /// Maximum length in bytes.
        capacity: usize,
    },
    /// Holds at most `capacity` bytes.
    Bytes {
        /// Maximum length in bytes.
        capacity: usize,
    },
}

impl Slot {
    fn code(self) -> (u32, usize) {
        match self {
            Slot::None => (0, 0),
            Slot::Int => (1, 0),
            Slot::Float => (2, 0),
            Slot::Bool => (3, 0),
            Slot::Str { capacity } => (4, capacity),
            Slot::Bytes { capacity } => (5, capacity),
        }
    }

    fn from_code(code: u32, capacity: usize) -> Option<Slot> {
        Some(match (code, capacity) {
            (0, 0) => Slot::None,
            (1, 0) => Slot::Int,
            (2, 0) => Slot::Float,
            (3, 0) => Slot::Bool,
            (4, c) => Slot::Str { capacity: c },
            (5, c) => Slot::Bytes { capacity: c },
            _ => return None,
        })
    }

    /// The bytes of value this slot has room for: 8 for scalars, the capacity for text and
    /// bytes.
    fn room(self) -> usize {
        match self {
            Slot::Str { capacity } | Slot::Bytes { capacity } => capacity,
            _ => 8,
        }
    }

    /// Bytes the slot occupies: its header, then its room rounded up to 8.
    fn storage(self) -> Option<usize> {
        self.room()
            .checked_next_multiple_of(8)?
            .checked_add(SLOT_HEADER)
    }

    /// The slot type a value of type `code` takes in a slot with `room` bytes.
    fn of_value(code: u32, room: usize) -> Option<Slot> {
        Slot::from_code(code, if code >= 4 { room } else { 0 })
    }

    /// The slot Python would make for an initial value: text and bytes get their length rounded
    /// up to the next multiple of 8 (strictly more than the length, as CPython does).
    fn for_item(item: &Item) -> Slot {
        match item {
            Item::None => Slot::None,
            Item::Int(_) => Slot::Int,
            Item::Float(_) => Slot::Float,
            Item::Bool(_) => Slot::Bool,
            Item::Str(s) => Slot::Str {
                capacity: 8 * (s.len() / 8 + 1),
            },
            Item::Bytes(b) => Slot::Bytes {
                capacity: 8 * (b.len() / 8 + 1),
            },
        }
    }
}

impl Item {
    /// The type code and the bytes stored for the value.
    fn encode(&self) -> (u32, std::borrow::Cow<'_, [u8]>) {
        use std::borrow::Cow;
        match self {
            Item::None => (0, Cow::Borrowed(&[])),
            Item::Int(v) => (1, Cow::Owned(v.to_le_bytes().to_vec())),
            Item::Float(v) => (2, Cow::Owned(v.to_bits().to_le_bytes().to_vec())),
            Item::Bool(v) => (3, Cow::Owned(vec![u8::from(*v)])),
            Item::Str(s) => (4, Cow::Borrowed(s.as_bytes())),
            Item::Bytes(b) => (5, Cow::Borrowed(b)),
        }
    }

    /// The value stored as `code` and `bytes`, validated.
    fn decode(index: usize, code: u32, bytes: Vec<u8>) -> Result<Item> {
        let corrupt = |what: &str| Error::Corrupt(format!("slot {index} holds {what}"));
        let word = |bytes: &[u8]| -> Result<u64> {
            Ok(u64::from_le_bytes(
                bytes
                    .try_into()
                    .map_err(|_| corrupt("a number of the wrong length"))?,
            ))
        };
        Ok(match code {
            0 if bytes.is_empty() => Item::None,
            1 => Item::Int(word(&bytes)? as i64),
            2 => Item::Float(f64::from_bits(word(&bytes)?)),
            3 => match bytes[..] {
                [0] => Item::Bool(false),
                [1] => Item::Bool(true),
                _ => return Err(corrupt("an invalid bool")),
            },
            4 => Item::Str(String::from_utf8(bytes).map_err(|_| corrupt("invalid UTF-8"))?),
            5 => Item::Bytes(bytes),
            _ => return Err(corrupt(&format!("unknown type code {code}"))),
        })
    }
}

macro_rules! item_from {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for Item {
            fn from(x: $t) -> Item { Item::$v(x.into()) }
        }
    )*};
}
item_from!(i64 => Int, i32 => Int, u32 => Int, f64 => Float, f32 => Float, bool => Bool,
           String => Str, &str => Str, Vec<u8> => Bytes, &[u8] => Bytes);

impl From<()> for Item {
    fn from((): ()) -> Item {
        Item::None
    }
}

/// A fixed-length list of typed values in shared memory (Python's
/// `shared_memory.ShareableList`).
///
/// Each slot holds a value (`int`, `float`, `bool`, `str`, `bytes` or `None`) in room fixed at
/// creation: 8 bytes for numbers, bools and `None`, the capacity for text and bytes (Python
/// rounds an initial text up to the next multiple of 8). A value of another type may replace
/// it if it fits, as in Python. Values keep their exact byte length: no NUL stripping,
/// multi-byte UTF-8 intact (unlike CPython's bugs #96779 and #106939).
///
/// Every slot is guarded by a sequence counter, so a reader never sees a half-written value
/// and concurrent writers of one slot take turns; a writer that dies mid-write leaves the
/// previous value or the new one, never a mix.
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::{Item, ShareableList};
///
/// # fn main() -> tokio_multiprocessing::Result<()> {
/// let list = ShareableList::create([Item::from("howdy"), 42.into(), 2.5.into(), true.into(), ().into()])?;
/// list.set(0, "hi ☃")?;
/// assert_eq!(list.get(0)?, Item::Str("hi ☃".into()));
/// assert_eq!(list.len(), 5);
/// assert!(list.set(0, "far too long for this slot").is_err());
/// assert!(list.get(9).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ShareableList {
    shm: SharedMemory,
    /// The slot table, copied out and validated once: it never changes after creation.
    slots: Vec<(Slot, usize)>,
}

impl ShareableList {
    /// Creates an anonymous list holding `items`; each slot takes the type of its item.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for more than [`MAX_SLOTS`] items; [`Error::Io`] when memory
    /// runs out.
    pub fn create<I: Into<Item>>(items: impl IntoIterator<Item = I>) -> Result<Self> {
        Self::create_inner(None, items.into_iter().map(Into::into).collect())
    }

    /// Creates the named list `/dev/shm/<name>` holding `items`, for [`open`](Self::open) by name.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create), plus those of [`SharedMemory::create_named`].
    pub fn create_named<I: Into<Item>>(
        name: &str,
        items: impl IntoIterator<Item = I>,
    ) -> Result<Self> {
        Self::create_inner(Some(name), items.into_iter().map(Into::into).collect())
    }

    /// Creates an anonymous list with the given slot types, each holding its zero value (`0`,
    /// `0.0`, `false`, empty text or bytes, `None`).
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create).
    pub fn with_slots(slots: &[Slot]) -> Result<Self> {
        Self::build(None, slots, &[])
    }

    /// As [`with_slots`](Self::with_slots), under a name.
    ///
    /// # Errors
    ///
    /// As [`create_named`](Self::create_named).
    pub fn with_slots_named(name: &str, slots: &[Slot]) -> Result<Self> {
        Self::build(Some(name), slots, &[])
    }

    /// Attaches to the named list made by [`create_named`](Self::create_named).
    ///
    /// # Errors
    ///
    /// Those of [`SharedMemory::open`]; [`Error::Corrupt`] when the slot table fails validation.
    pub fn open(name: &str) -> Result<Self> {
        Self::attach(SharedMemory::open_kind(name, Kind::ShareableList)?)
    }

    /// The number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the list has no slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The type of the value in slot `index` now, and the slot's room for text and bytes.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`]; [`Error::Corrupt`] if the stored type code is unknown.
    pub fn slot(&self, index: usize) -> Result<Slot> {
        let (room, offset) = self.entry(index)?;
        let code = self.shm.atomic_u32(offset + 4)?.load(Ordering::Acquire);
        Slot::of_value(code, room.room())
            .ok_or_else(|| Error::Corrupt(format!("slot {index} holds unknown type code {code}")))
    }

    /// The segment behind the list (its name, for example).
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// The list's name, `None` for an anonymous one.
    pub fn name(&self) -> Option<&str> {
        self.shm.name()
    }

    /// Reads slot `index`.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`]; [`Error::Corrupt`] if the stored value fails validation
    /// (a length over the capacity, invalid UTF-8, a bool that is neither 0 nor 1), or a text
    /// slot stays mid-write for good (its writer died while writing).
    ///
    /// A slot mid-write is waited for on this thread (it is a seqlock: writes take
    /// microseconds): spinning, then sleeping 20 µs at a time, for at most 500 ms when its
    /// writer died mid-write. Called from a tokio task, that is the one case that holds the
    /// worker thread for long.
    pub fn get(&self, index: usize) -> Result<Item> {
        let (room, offset) = self.entry(index)?;
        let (code, bytes) = self.read_slot(index, offset, room.room())?;
        Item::decode(index, code, bytes)
    }

    /// Writes `value` into slot `index`, whatever type the slot held before.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`]; [`Error::TooLarge`] when the value needs more room than
    /// the slot has (8 bytes for a number, text and bytes their length). Nothing is written on
    /// error.
    ///
    /// Waits on this thread for another writer of the slot, as [`get`](Self::get) does; one
    /// that stays mid-write for 500 ms died, and its slot is taken over.
    pub fn set(&self, index: usize, value: impl Into<Item>) -> Result<()> {
        let value = value.into();
        let (room, offset) = self.entry(index)?;
        let (code, bytes) = value.encode();
        let needs = if code >= 4 { bytes.len() } else { 8 };
        if needs > room.room() {
            return Err(Error::TooLarge {
                size: needs,
                max: room.room(),
            });
        }
        self.write_slot(offset, code, &bytes)
    }

    /// All values, in order.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn to_vec(&self) -> Result<Vec<Item>> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// The index of the first slot equal to `value` (Python's `index`), `None` if absent.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn index(&self, value: &Item) -> Result<Option<usize>> {
        for i in 0..self.len() {
            if self.get(i)? == *value {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// How many slots equal `value` (Python's `count`).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn count(&self, value: &Item) -> Result<usize> {
        let mut n = 0;
        for i in 0..self.len() {
            n += usize::from(self.get(i)? == *value);
        }
        Ok(n)
    }

    // ----- layout -----

    fn create_inner(name: Option<&str>, items: Vec<Item>) -> Result<Self> {
        let slots: Vec<Slot> = items.iter().map(Slot::for_item).collect();
        Self::build(name, &slots, &items)
    }

    fn build(name: Option<&str>, slots: &[Slot], items: &[Item]) -> Result<Self> {
        if slots.len() > MAX_SLOTS {
            return Err(Error::InvalidArgument(format!(
                "a ShareableList has at most {MAX_SLOTS} slots, not {}",
                slots.len()
            )));
        }
        for slot in slots {
            if let Slot::Str { capacity } | Slot::Bytes { capacity } = slot
                && *capacity > u32::MAX as usize
            {
                return Err(Error::InvalidArgument(format!(
                    "slot capacity {capacity} is over 4 GiB"
                )));
            }
        }
        let (offsets, total) =
            layout(slots).ok_or_else(|| Error::InvalidArgument("list too large".into()))?;
        let table: Vec<(Slot, usize)> = slots.iter().copied().zip(offsets).collect();
        let shm = SharedMemory::create_kind(Kind::ShareableList, total, name, |shm| {
            shm.atomic_u32(0)?.store(MAGIC, Ordering::Relaxed);
            shm.atomic_u32(4)?.store(VERSION, Ordering::Relaxed);
            shm.atomic_u64(8)?
                .store(table.len() as u64, Ordering::Relaxed);
            for (i, (slot, offset)) in table.iter().enumerate() {
                let (code, capacity) = slot.code();
                let at = TABLE + i * ENTRY;
                shm.atomic_u32(at)?.store(code, Ordering::Relaxed);
                shm.atomic_u32(at + 4)?
                    .store(capacity as u32, Ordering::Relaxed);
                shm.atomic_u64(at + 8)?
                    .store(*offset as u64, Ordering::Relaxed);
            }
            // Initial values go in before the segment is published as ready; a slot made
            // without one holds its type's zero value.
            let list = ShareableList {
                shm: shm.clone(),
                slots: table.clone(),
            };
            for (i, slot) in slots.iter().enumerate() {
                let zero = match slot {
                    Slot::None => Item::None,
                    Slot::Int => Item::Int(0),
                    Slot::Float => Item::Float(0.0),
                    Slot::Bool => Item::Bool(false),
                    Slot::Str { .. } => Item::Str(String::new()),
                    Slot::Bytes { .. } => Item::Bytes(Vec::new()),
                };
                list.set(i, items.get(i).cloned().unwrap_or(zero))?;
            }
            Ok(())
        })?;
        Ok(ShareableList { shm, slots: table })
    }

    /// Copies out and validates the slot table of a segment made elsewhere.
    fn attach(shm: SharedMemory) -> Result<Self> {
        let corrupt = |what: String| Error::Corrupt(format!("ShareableList {what}"));
        if shm.size() < TABLE {
            return Err(corrupt("segment is smaller than its table header".into()));
        }
        if shm.atomic_u32(0)?.load(Ordering::Relaxed) != MAGIC {
            return Err(corrupt("has a bad magic number".into()));
        }
        let version = shm.atomic_u32(4)?.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(corrupt(format!(
                "layout version {version}, expected {VERSION}"
            )));
        }
        let len = shm.atomic_u64(8)?.load(Ordering::Relaxed);
        let max_len = ((shm.size() - TABLE) / (ENTRY + SLOT_HEADER + 8)).min(MAX_SLOTS) as u64;
        if len > max_len {
            return Err(corrupt(format!(
                "claims {len} slots, impossible in {} bytes",
                shm.size()
            )));
        }
        let mut slots = Vec::with_capacity(len as usize);
        let mut offsets = Vec::with_capacity(len as usize);
        for i in 0..len as usize {
            let at = TABLE + i * ENTRY;
            let code = shm.atomic_u32(at)?.load(Ordering::Relaxed);
            let capacity = shm.atomic_u32(at + 4)?.load(Ordering::Relaxed) as usize;
            let slot = Slot::from_code(code, capacity)
                .ok_or_else(|| corrupt(format!("slot {i} has unknown type code {code}")))?;
            slots.push(slot);
            offsets.push(shm.atomic_u64(at + 8)?.load(Ordering::Relaxed));
        }
        // The table must be exactly the layout this build would make for these slots, and fit.
        let (expected, total) =
            layout(&slots).ok_or_else(|| corrupt("slot table overflows".into()))?;
        if total > shm.size() || expected.iter().zip(&offsets).any(|(e, o)| *e as u64 != *o) {
            return Err(corrupt("slot table does not match its layout".into()));
        }
        Ok(ShareableList {
            shm,
            slots: slots.into_iter().zip(expected).collect(),
        })
    }

    fn entry(&self, index: usize) -> Result<(Slot, usize)> {
        self.slots
            .get(index)
            .copied()
            .ok_or(Error::IndexOutOfRange {
                index,
                len: self.len(),
            })
    }

    /// Seqlock write of a value and its type: the sequence is odd while writing, even once the
    /// value is whole. A writer waits for another writer of the slot to finish; one that stays
    /// mid-write for good (it died) is taken over.
    fn write_slot(&self, offset: usize, code: u32, data: &[u8]) -> Result<()> {
        let seq = self.shm.atomic_u32(offset)?;
        let kind = self.shm.atomic_u32(offset + 4)?;
        let length = self.shm.atomic_u32(offset + 8)?;
        let mut attempts = 0u32;
        let mut mid_write: Option<(u32, std::time::Instant)> = None;
        let writing = loop {
            let now = seq.load(Ordering::Relaxed);
            // Another writer mid-write at one sequence number for `STUCK_WRITE` died there:
            // take the slot over. (A count of attempts cannot tell a dead writer from a live
            // one that was preempted on a busy machine.)
            let stuck = now & 1 == 1
                && match mid_write {
                    Some((at, since)) if at == now => since.elapsed() >= STUCK_WRITE,
                    _ => {
                        mid_write = Some((now, std::time::Instant::now()));
                        false
                    }
                };
            if now & 1 == 0 || stuck {
                let writing = now.wrapping_add(1) | 1;
                if seq
                    .compare_exchange(now, writing, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    break writing;
                }
            }
            attempts = attempts.saturating_add(1);
            if attempts >= 1024 {
                std::thread::sleep(std::time::Duration::from_micros(20));
            } else if attempts % 64 == 63 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        };
        fence(Ordering::Release);
        self.shm.write_at(offset + SLOT_HEADER, data)?;
        kind.store(code, Ordering::Relaxed);
        length.store(data.len() as u32, Ordering::Relaxed);
        seq.store(writing.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Seqlock read: retry until a value was copied with no write in between.
    ///
    /// A slot whose writers keep writing is read once there is a gap: the reader backs off
    /// (yields, then sleeps briefly) so one appears even on a loaded machine. Only a slot that
    /// stays mid-write at one sequence number for [`STUCK_WRITE`] is reported (its writer died
    /// while writing): how many attempts failed says nothing, a busy writer fails many.
    fn read_slot(&self, index: usize, offset: usize, room: usize) -> Result<(u32, Vec<u8>)> {
        let seq = self.shm.atomic_u32(offset)?;
        let kind = self.shm.atomic_u32(offset + 4)?;
        let length = self.shm.atomic_u32(offset + 8)?;
        let mut buf = vec![0u8; room];
        let mut mid_write: Option<(u32, std::time::Instant)> = None;
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            if attempt >= 1024 {
                std::thread::sleep(std::time::Duration::from_micros(20));
            } else if attempt % 64 == 63 {
                std::thread::yield_now();
            }
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                match mid_write {
                    Some((at, since)) if at == before => {
                        if since.elapsed() >= STUCK_WRITE {
                            break;
                        }
                    }
                    _ => mid_write = Some((before, std::time::Instant::now())),
                }
                std::hint::spin_loop();
                continue;
            }
            let code = kind.load(Ordering::Relaxed);
            let len = length.load(Ordering::Relaxed) as usize;
            let copied = len.min(room);
            self.shm.read_at(offset + SLOT_HEADER, &mut buf[..copied])?;
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) != before {
                continue;
            }
            if len > room {
                return Err(Error::Corrupt(format!(
                    "slot {index} claims {len} bytes, over its room of {room}"
                )));
            }
            buf.truncate(len);
            return Ok((code, buf));
        }
        Err(Error::Corrupt(format!(
            "slot {index} stayed mid-write (its writer may have died while writing)"
        )))
    }
}

/// The offset of every slot and the total data size for `slots`; `None` on overflow.
fn layout(slots: &[Slot]) -> Option<(Vec<usize>, usize)> {
    let mut offset = TABLE.checked_add(slots.len().checked_mul(ENTRY)?)?;
    let mut offsets = Vec::with_capacity(slots.len());
    for slot in slots {
        offsets.push(offset);
        offset = offset.checked_add(slot.storage()?)?;
    }
    Some((offsets, offset))
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList")
            .field("name", &self.name())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Handle for ShareableList {
    type Wire = SharedMemoryWire;

    fn to_wire(&self, fds: &mut FdSink) -> Result<Self::Wire> {
        self.shm.wire(fds)
    }

    fn from_wire(wire: Self::Wire, fds: &mut FdSource) -> Result<Self> {
        Self::attach(SharedMemory::from_wire_kind(
            wire,
            fds,
            Kind::ShareableList,
        )?)
    }
}

serde_via_handle!(ShareableList);
