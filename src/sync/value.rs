//! [`Value`] and [`Array`]: typed data in shared memory, guarded by a [`Lock`] (Python's
//! `multiprocessing.Value` / `Array`), and [`RawValue`] without the lock.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lock::{Lock, LockError, LockGuard};
use crate::shm::SharedMemory;
use crate::{Error, Result};

fn load<T: Pod>(shm: &SharedMemory, len: usize) -> Vec<T> {
    let mut items = vec![T::zeroed(); len];
    shm.read_at(0, bytemuck::cast_slice_mut(&mut items))
        .expect("the segment holds `len` items");
    items
}

fn store<T: Pod>(shm: &SharedMemory, items: &[T]) {
    shm.write_at(0, bytemuck::cast_slice(items))
        .expect("the segment holds `len` items");
}

fn segment_for<T: Pod>(items: &[T]) -> Result<SharedMemory> {
    let bytes = std::mem::size_of_val(items).max(1);
    let shm = SharedMemory::create(bytes)?;
    store(&shm, items);
    Ok(shm)
}

fn check_len<T>(shm: &SharedMemory, len: usize) -> std::result::Result<(), Error> {
    let want = (std::mem::size_of::<T>() * len).max(1);
    if shm.size() != want {
        return Err(Error::Corrupt(format!(
            "shared value of {} bytes where {want} were expected (a different type?)",
            shm.size()
        )));
    }
    Ok(())
}

/// An array of `T` in shared memory with a lock (Python's `multiprocessing.Array('d', n)`).
///
/// [`lock`](Self::lock) takes the lock and copies the items into the guard, which derefs to a
/// `[T]`; dropping the guard writes them back and unlocks. Working on a private copy keeps it
/// sound even if some process writes without the lock (it then loses its write, never memory
/// safety). `T` is any [`bytemuck::Pod`] type: plain numbers and `#[repr(C)]` structs of them.
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::Array;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tokio_multiprocessing::Result<()> {
/// let a = Array::<f64>::new(&[1.0, 2.0, 3.0])?;
/// {
///     let mut items = a.lock().await?;
///     items[0] = -items[0];
/// }
/// assert_eq!(a.to_vec(), [-1.0, 2.0, 3.0]);
/// # Ok(())
/// # }
/// ```
pub struct Array<T> {
    lock: Lock,
    /// The items themselves: a [`RawArray`] that only this lock guards.
    raw: RawArray<T>,
}

/// The items of an [`Array`] while its lock is held; written back on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct ArrayGuard<T: Pod> {
    items: Vec<T>,
    shm: SharedMemory,
    owner_died: bool,
    // Dropped after the write-back in `Drop`, which releases the lock.
    _guard: LockGuard,
}

impl<T: Pod> Array<T> {
    /// An array holding a copy of `items`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the segments cannot be made.
    pub fn new(items: &[T]) -> Result<Self> {
        Ok(Array {
            lock: Lock::new()?,
            raw: RawArray::new(items)?,
        })
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The lock guarding the array (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    fn guard(
        &self,
        locked: std::result::Result<LockGuard, LockError>,
    ) -> Result<ArrayGuard<T>, LockError> {
        let (guard, owner_died) = match locked {
            Ok(guard) => (guard, false),
            Err(LockError::OwnerDied(mut guard)) => {
                // The items are plain data and the guard below rewrites them whole, so the lock
                // is usable again at once; the caller learns of the death from `owner_died`.
                guard.mark_consistent();
                (guard, true)
            }
            Err(e) => return Err(e),
        };
        Ok(ArrayGuard {
            items: self.raw.to_vec(),
            shm: self.raw.shm.clone(),
            owner_died,
            _guard: guard,
        })
    }

    /// Takes the lock and a copy of the items.
    ///
    /// # Errors
    ///
    /// [`LockError::NotRecoverable`] when a plain [`Lock`] user gave up this lock. A previous
    /// holder that died is not an error here: the guard comes back with
    /// [`owner_died`](ArrayGuard::owner_died) set, since the dead process may have written the
    /// items only partly.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`Lock::lock`].
    pub async fn lock(&self) -> Result<ArrayGuard<T>, LockError> {
        self.guard(self.lock.lock().await)
    }

    /// [`lock`](Self::lock) with a deadline.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`], or as [`lock`](Self::lock).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<ArrayGuard<T>, LockError> {
        self.guard(self.lock.lock_timeout(timeout).await)
    }

    /// [`lock`](Self::lock) for threads.
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock).
    pub fn lock_blocking(&self) -> Result<ArrayGuard<T>, LockError> {
        self.guard(self.lock.lock_blocking())
    }

    /// A copy of the items, read without the lock (may mix concurrent writes).
    pub fn to_vec(&self) -> Vec<T> {
        self.raw.to_vec()
    }
}

impl<T: Pod> ArrayGuard<T> {
    /// Whether the previous holder's process died holding the lock, so the items may be
    /// half-written (as pthread's `EOWNERDEAD`, already marked consistent).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<T: Pod> ValueGuard<T> {
    /// See [`ArrayGuard::owner_died`].
    pub fn owner_died(&self) -> bool {
        self.0.owner_died()
    }
}

impl<T: Pod> Deref for ArrayGuard<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T: Pod> DerefMut for ArrayGuard<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items
    }
}

impl<T: Pod> Drop for ArrayGuard<T> {
    fn drop(&mut self) {
        store(&self.shm, &self.items);
    }
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            lock: self.lock.clone(),
            raw: self.raw.clone(),
        }
    }
}

impl<T> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("len", &self.raw.len)
            .finish_non_exhaustive()
    }
}

impl<T: Pod> fmt::Debug for ArrayGuard<T>
where
    T: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items.iter()).finish()
    }
}

impl<T> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.lock, &self.raw).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (lock, raw): (Lock, RawArray<T>) = Deserialize::deserialize(d)?;
        Ok(Array { lock, raw })
    }
}

/// One `T` in shared memory with a lock (Python's `multiprocessing.Value('i', 0)`).
///
/// An [`Array`] of one: [`lock`](Self::lock) gives a guard that derefs to `T`.
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::Value;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tokio_multiprocessing::Result<()> {
/// let counter = Value::new(0u64)?;
/// *counter.lock().await? += 1;
/// assert_eq!(counter.get(), 1);
/// # Ok(())
/// # }
/// ```
pub struct Value<T> {
    array: Array<T>,
}

/// The value of a [`Value`] while its lock is held; written back on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<T: Pod>(ArrayGuard<T>);

impl<T: Pod> Value<T> {
    /// A shared value holding `value`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the segments cannot be made.
    pub fn new(value: T) -> Result<Self> {
        Ok(Value {
            array: Array::new(&[value])?,
        })
    }

    /// The lock guarding the value (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        self.array.get_lock()
    }

    /// Takes the lock and a copy of the value.
    ///
    /// # Errors
    ///
    /// As [`Array::lock`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn lock(&self) -> Result<ValueGuard<T>, LockError> {
        Ok(ValueGuard(self.array.lock().await?))
    }

    /// [`lock`](Self::lock) with a deadline.
    ///
    /// # Errors
    ///
    /// As [`Array::lock_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<ValueGuard<T>, LockError> {
        Ok(ValueGuard(self.array.lock_timeout(timeout).await?))
    }

    /// [`lock`](Self::lock) for threads.
    ///
    /// # Errors
    ///
    /// As [`Array::lock`].
    pub fn lock_blocking(&self) -> Result<ValueGuard<T>, LockError> {
        Ok(ValueGuard(self.array.lock_blocking()?))
    }

    /// The value, read without the lock.
    pub fn get(&self) -> T {
        self.array.to_vec()[0]
    }
}

impl<T: Pod> Deref for ValueGuard<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0[0]
    }
}

impl<T: Pod> DerefMut for ValueGuard<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0[0]
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            array: self.array.clone(),
        }
    }
}

impl<T> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value").finish_non_exhaustive()
    }
}

impl<T> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.array.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let array = Array::<T>::deserialize(d)?;
        if array.raw.len != 1 {
            return Err(serde::de::Error::custom("a Value has exactly one item"));
        }
        Ok(Value { array })
    }
}

/// One `T` in shared memory without a lock (Python's `multiprocessing.RawValue`).
///
/// [`get`](Self::get) and [`set`](Self::set) copy the bytes in and out; a `T` larger than a
/// machine word may be read half-written while another process sets it. Use [`Value`] when that
/// matters.
pub struct RawValue<T> {
    shm: SharedMemory,
    _type: PhantomData<fn() -> T>,
}

impl<T: Pod> RawValue<T> {
    /// A shared value holding `value`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the segment cannot be made.
    pub fn new(value: T) -> Result<Self> {
        Ok(RawValue {
            shm: segment_for(&[value])?,
            _type: PhantomData,
        })
    }

    /// A copy of the value.
    pub fn get(&self) -> T {
        load::<T>(&self.shm, 1)[0]
    }

    /// Overwrites the value.
    pub fn set(&self, value: T) {
        store(&self.shm, &[value]);
    }
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            shm: self.shm.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue").finish_non_exhaustive()
    }
}

impl<T> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let shm = SharedMemory::deserialize(d)?;
        check_len::<T>(&shm, 1).map_err(serde::de::Error::custom)?;
        Ok(RawValue {
            shm,
            _type: PhantomData,
        })
    }
}

/// An array of `T` in shared memory without a lock (Python's `multiprocessing.RawArray`).
///
/// [`get`](Self::get), [`set`](Self::set) and [`to_vec`](Self::to_vec) copy items in and out; an
/// item may be read half-written while another process writes it. Use [`Array`] when that
/// matters.
pub struct RawArray<T> {
    shm: SharedMemory,
    len: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T: Pod> RawArray<T> {
    /// An array holding a copy of `items`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the segment cannot be made.
    pub fn new(items: &[T]) -> Result<Self> {
        Ok(RawArray {
            shm: segment_for(items)?,
            len: items.len(),
            _type: PhantomData,
        })
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of item `index`.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`].
    pub fn get(&self, index: usize) -> Result<T> {
        self.check(index)?;
        let mut item = T::zeroed();
        self.shm.read_at(
            index * std::mem::size_of::<T>(),
            bytemuck::bytes_of_mut(&mut item),
        )?;
        Ok(item)
    }

    /// Overwrites item `index`.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`].
    pub fn set(&self, index: usize, item: T) -> Result<()> {
        self.check(index)?;
        self.shm
            .write_at(index * std::mem::size_of::<T>(), bytemuck::bytes_of(&item))
    }

    /// A copy of all items.
    pub fn to_vec(&self) -> Vec<T> {
        load(&self.shm, self.len)
    }

    fn check(&self, index: usize) -> Result<()> {
        if index < self.len {
            Ok(())
        } else {
            Err(Error::IndexOutOfRange {
                index,
                len: self.len,
            })
        }
    }
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            shm: self.shm.clone(),
            len: self.len,
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.shm, self.len as u64).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (shm, len): (SharedMemory, u64) = Deserialize::deserialize(d)?;
        let len = usize::try_from(len).map_err(serde::de::Error::custom)?;
        check_len::<T>(&shm, len).map_err(serde::de::Error::custom)?;
        Ok(RawArray {
            shm,
            len,
            _type: PhantomData,
        })
    }
}
