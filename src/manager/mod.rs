//! Managers: shared objects that live in one process and are reached from any other through
//! typed proxies (Python's `multiprocessing.managers`).
//!
//! A [`Manager`] owns objects; every other process talks to them through *proxies*, handles
//! that are `Clone` and `Send`, cross to other processes like any other handle, and keep their
//! object alive. It is the way to share state that is not plain bytes — a map, a list, your
//! own type — and the only way to share it with other machines.
//!
//! | Python | tokio-multiprocessing |
//! |---|---|
//! | `multiprocessing.Manager()` | [`Manager::start().await`](Manager::start) |
//! | `manager.dict()`, `list()`, `Value()`, `Namespace()` | [`dict`](Manager::dict), [`list`](Manager::list), [`value`](Manager::value), [`namespace`](Manager::namespace) |
//! | `manager.Queue()`, `JoinableQueue()` | [`queue`](Manager::queue), [`joinable_queue`](Manager::joinable_queue) |
//! | `manager.Lock()`, `RLock()`, `Semaphore()`, `BoundedSemaphore()`, `Event()`, `Condition()`, `Barrier()` | [`lock`](Manager::lock), [`rlock`](Manager::rlock), [`semaphore`](Manager::semaphore), [`bounded_semaphore`](Manager::bounded_semaphore), [`event`](Manager::event), [`condition`](Manager::condition), [`barrier`](Manager::barrier) |
//! | `BaseManager.register('Maths', MathsClass)`; `manager.Maths()` | [`managed!`](crate::managed) and [`ManagerBuilder::register`]; [`manager.create(Maths::default())`](Manager::create) |
//! | `BaseManager(address, authkey).start()` / `.get_server().serve_forever()` / `.connect()` | [`ManagerBuilder::bind`] + [`start`](ManagerBuilder::start) / [`serve`](ManagerBuilder::serve) / [`Manager::connect`] |
//! | `register('get_queue', callable=...)` on a remote manager | [`Manager::publish`] / [`Manager::lookup`] |
//! | `SharedMemoryManager`: `smm.SharedMemory(size)`, `smm.ShareableList(seq)` | [`SharedMemoryManager`]: [`shared_memory`](Manager::shared_memory), [`shareable_list`](Manager::shareable_list) |
//!
//! # Lifetimes
//!
//! An object lives as long as some proxy of it exists in some process. Each process's proxies
//! of one manager share a connection, and the manager counts references per connection: when
//! a process exits, drops its last proxy, or is killed with `SIGKILL`, its connection closes
//! and its references go with it (Python leaks those of a killed process). Everything is
//! dropped when the manager shuts down.
//!
//! A proxy in flight (in a message, a spawn argument) holds its object until the receiver has
//! it. A proxy stored *inside* a managed container (a proxy in a managed `dict`) is bytes to
//! the manager: it holds its object only until it is first read back, so keep a proxy of the
//! object somewhere, or [`publish`](Manager::publish) it, for as long as the container should
//! reach it.
//!
//! # Failures
//!
//! A method that panics in the manager reaches its caller as [`Error::Remote`](crate::Error::Remote)
//! with the panic's message; the manager keeps serving. A manager that exits or becomes
//! unreachable makes every pending and later call fail with [`Error::Closed`](crate::Error::Closed).
//! A client that sends garbage, too much, or the wrong authkey loses its own connection only.
//! Over TCP, a peer whose whole host goes silent (a crash, a cable) is noticed within about
//! 20 s on either side (keepalive probes, and `TCP_USER_TIMEOUT` for unacknowledged data).
//!
//! # Example
//!
//! ```
//! use tokio_multiprocessing as mp;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mp::Result<()> {
//! // `Manager::start()` runs the manager in a child process (call `mp::init()` first in
//! // `main`); here it serves from this process.
//! let manager = mp::Manager::builder().serve().await?;
//! let jobs = manager.queue::<u32>(0).await?;
//! let results = manager.list::<u32>([]).await?;
//! for job in 0..3 {
//!     jobs.put(job).await?;
//! }
//! for _ in 0..3 {
//!     let job = jobs.get().await?;
//!     results.push(job * 10).await?;
//! }
//! assert_eq!(results.to_vec().await?, [0, 10, 20]);
//! manager.shutdown().await
//! # }
//! ```

/// Over TCP, how long a silent peer host (crashed, or off the network) may take to be noticed:
/// keepalive probes while idle, a bound on unacknowledged data while busy.
const SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

mod address;
mod managed;
#[allow(clippy::module_inception)]
mod manager;
mod objects;
mod proxy;
mod served;
mod server;
mod session;
mod shared_memory_manager;
mod wire;

pub use managed::{__private, Managed};
pub use manager::{Manager, ManagerBuilder};
pub use objects::barrier::BarrierProxy;
pub use objects::condition::ConditionProxy;
pub use objects::dict::DictProxy;
pub use objects::event::EventProxy;
pub use objects::list::ListProxy;
pub use objects::lock::{LockProxy, ManagedLockError, ManagedLockGuard, RLockProxy};
pub use objects::namespace::NamespaceProxy;
pub use objects::queue::QueueProxy;
pub use objects::semaphore::SemaphoreProxy;
pub use objects::value::ValueProxy;
pub use proxy::{Proxy, ProxyCore};
pub use served::{Registry, TypeTable};
pub use shared_memory_manager::SharedMemoryManager;
