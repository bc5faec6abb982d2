//! [`SharedMemoryManager`]: a manager for shared memory segments.

use std::ops::Deref;

use super::Manager;
use crate::Result;

/// A manager that creates shared memory segments and unlinks them all when it shuts down
/// (Python's `multiprocessing.managers.SharedMemoryManager`).
///
/// It is a [`Manager`] (every method of one works on it) started in a child process; use
/// [`shared_memory`](Manager::shared_memory) and [`shareable_list`](Manager::shareable_list).
/// Its segments are unlinked when it shuts down, when this `SharedMemoryManager` is dropped,
/// and when the process that started it dies, even by `SIGKILL`: the manager process notices
/// and cleans up before it exits.
///
/// ```no_run
/// use tokio_multiprocessing as mp;
///
/// # #[tokio::main]
/// # async fn main() -> mp::Result<()> {
/// mp::init().await?;
/// let smm = mp::SharedMemoryManager::start().await?;
/// let numbers = smm.shareable_list((0..2000).map(|i| i as i64)).await?;
/// assert_eq!(numbers.len(), 2000);
/// smm.shutdown().await // unlinks the list
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SharedMemoryManager(Manager);

impl SharedMemoryManager {
    /// Starts the manager in a child process.
    ///
    /// # Errors
    ///
    /// As [`ManagerBuilder::start`](super::ManagerBuilder::start).
    ///
    /// # Cancel safety
    ///
    /// As [`ManagerBuilder::start`](super::ManagerBuilder::start).
    pub async fn start() -> Result<SharedMemoryManager> {
        Ok(SharedMemoryManager(Manager::start().await?))
    }

    /// The manager itself.
    pub fn manager(&self) -> &Manager {
        &self.0
    }
}

impl Deref for SharedMemoryManager {
    type Target = Manager;

    fn deref(&self) -> &Manager {
        &self.0
    }
}
