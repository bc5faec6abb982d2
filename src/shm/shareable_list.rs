//! [`ShareableList`]: a fixed-length list of typed slots in shared memory.

use std::fmt;
use std::sync::atomic::{Ordering, fence};

use super::header::Kind;
use super::shared_memory::{SharedMemory, SharedMemoryWire};
use crate::handle::{FdSink, FdSource, Handle, serde_via_handle};
use crate::{Error, Result};

const MAGIC: u32 = u32::from_le_bytes(*b"SLST");
const VERSION: u32 = 1;
const TABLE: usize = 16;
const ENTRY: usize = 16;
/// Tries a reader makes before deciding a text slot is stuck mid-write.
const READ_ATTEMPTS: u32 = 100_000;

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

/// The type and capacity of one slot, fixed when the list is created.
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

    /// Bytes this slot occupies: 8 for scalars; a sequence word, a length word and the capacity
    /// rounded up to 8 for text and bytes.
    fn storage(self) -> Option<usize> {
        match self {
            Slot::Str { capacity } | Slot::Bytes { capacity } => {
                capacity.checked_next_multiple_of(8)?.checked_add(8)
            }
            _ => Some(8),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Slot::None => "None",
            Slot::Int => "int",
            Slot::Float => "float",
            Slot::Bool => "bool",
            Slot::Str { .. } => "str",
            Slot::Bytes { .. } => "bytes",
        }
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
    fn kind_name(&self) -> &'static str {
        Slot::for_item(self).name()
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
/// Each slot has a type (`int`, `float`, `bool`, `str`, `bytes` or `None`) and, for text and
/// bytes, a capacity in bytes, all fixed at creation. Values keep their exact byte length: no NUL
/// stripping, multi-byte UTF-8 intact (unlike CPython's bugs #96779 and #106939).
///
/// Scalar slots are single atomic words. Text and bytes slots are guarded by a sequence counter,
/// so a reader never sees a half-written value; two processes writing the *same* text slot at
/// once must coordinate with a lock.
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
    /// [`Error::InvalidArgument`] for an empty list; [`Error::Io`] when memory runs out.
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

    /// Whether the list has no slots (never true: empty lists cannot be created).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The type of slot `index`.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`].
    pub fn slot(&self, index: usize) -> Result<Slot> {
        Ok(self.entry(index)?.0)
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
    pub fn get(&self, index: usize) -> Result<Item> {
        let (slot, offset) = self.entry(index)?;
        let word = || {
            self.shm
                .atomic_u64(offset)
                .map(|w| w.load(Ordering::Acquire))
        };
        Ok(match slot {
            Slot::None => Item::None,
            Slot::Int => Item::Int(word()? as i64),
            Slot::Float => Item::Float(f64::from_bits(word()?)),
            Slot::Bool => match word()? {
                0 => Item::Bool(false),
                1 => Item::Bool(true),
                other => {
                    return Err(Error::Corrupt(format!(
                        "slot {index} holds bool value {other}"
                    )));
                }
            },
            Slot::Str { capacity } => {
                let bytes = self.read_sequence(index, offset, capacity)?;
                Item::Str(
                    String::from_utf8(bytes)
                        .map_err(|_| Error::Corrupt(format!("slot {index} holds invalid UTF-8")))?,
                )
            }
            Slot::Bytes { capacity } => Item::Bytes(self.read_sequence(index, offset, capacity)?),
        })
    }

    /// Writes `value` into slot `index`.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`]; [`Error::InvalidArgument`] when the value's type differs from
    /// the slot's; [`Error::TooLarge`] when text or bytes exceed the slot's capacity. Nothing is
    /// written on error.
    pub fn set(&self, index: usize, value: impl Into<Item>) -> Result<()> {
        let value = value.into();
        let (slot, offset) = self.entry(index)?;
        let word = |w: u64| -> Result<()> {
            self.shm.atomic_u64(offset)?.store(w, Ordering::Release);
            Ok(())
        };
        match (slot, &value) {
            (Slot::None, Item::None) => Ok(()),
            (Slot::Int, Item::Int(v)) => word(*v as u64),
            (Slot::Float, Item::Float(v)) => word(v.to_bits()),
            (Slot::Bool, Item::Bool(v)) => word(u64::from(*v)),
            (Slot::Str { capacity }, Item::Str(s)) => {
                self.write_sequence(offset, capacity, s.as_bytes())
            }
            (Slot::Bytes { capacity }, Item::Bytes(b)) => self.write_sequence(offset, capacity, b),
            _ => Err(Error::InvalidArgument(format!(
                "slot {index} holds {}, not {}",
                slot.name(),
                value.kind_name()
            ))),
        }
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
        if slots.is_empty() {
            return Err(Error::InvalidArgument(
                "a ShareableList needs at least one slot".into(),
            ));
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
            // Initial values go in before the segment is published as ready.
            let list = ShareableList {
                shm: shm.clone(),
                slots: table.clone(),
            };
            for (i, item) in items.iter().enumerate() {
                list.set(i, item.clone())?;
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
        let max_len = ((shm.size() - TABLE) / (ENTRY + 8)) as u64;
        if len == 0 || len > max_len {
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

    /// Seqlock write: odd sequence while writing, even once the value is complete.
    fn write_sequence(&self, offset: usize, capacity: usize, data: &[u8]) -> Result<()> {
        if data.len() > capacity {
            return Err(Error::TooLarge {
                size: data.len(),
                max: capacity,
            });
        }
        let seq = self.shm.atomic_u32(offset)?;
        let length = self.shm.atomic_u32(offset + 4)?;
        // `| 1` also recovers from a writer that died mid-write and left the sequence odd.
        let writing = seq.load(Ordering::Relaxed).wrapping_add(1) | 1;
        seq.swap(writing, Ordering::Acquire);
        fence(Ordering::Release);
        self.shm.write_at(offset + 8, data)?;
        length.store(data.len() as u32, Ordering::Relaxed);
        seq.store(writing.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Seqlock read: retry until a value was copied with no write in between.
    fn read_sequence(&self, index: usize, offset: usize, capacity: usize) -> Result<Vec<u8>> {
        let seq = self.shm.atomic_u32(offset)?;
        let length = self.shm.atomic_u32(offset + 4)?;
        let mut buf = vec![0u8; capacity];
        for attempt in 0..READ_ATTEMPTS {
            if attempt % 64 == 63 {
                std::thread::yield_now();
            }
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let len = length.load(Ordering::Relaxed) as usize;
            let copied = len.min(capacity);
            self.shm.read_at(offset + 8, &mut buf[..copied])?;
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) != before {
                continue;
            }
            if len > capacity {
                return Err(Error::Corrupt(format!(
                    "slot {index} claims {len} bytes, over its capacity of {capacity}"
                )));
            }
            buf.truncate(len);
            return Ok(buf);
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
