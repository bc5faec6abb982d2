//! [`Manager`]: starting, serving and reaching a manager, and making objects in it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::address::ManagerAddress;
use super::managed::Managed;
use super::proxy::{Proxy, ProxyCore};
use super::served::{Registry, TypeTable};
use super::server::Server;
use super::session::{Session, Undo};
use super::wire::{self, Message};
use crate::connection::wire::serde_bytes_vec::Bytes;
use crate::connection::{Address, Connection, Listener, Pipe};
use crate::{Error, Process, Result};

/// How long [`ManagerBuilder::start`] waits for the manager process to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Manager::shutdown`] waits for the manager process to exit before killing it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a manager: the process (or task) that owns shared objects, and hands out
/// proxies to them (Python's `multiprocessing.Manager()` / `BaseManager`).
///
/// - [`Manager::start`] runs a manager in a child process, as Python does; it shuts down when
///   the `Manager` returned (and all its clones) is dropped, when [`shutdown`](Self::shutdown)
///   is called, or when this process dies — and then drops every object it holds.
/// - [`ManagerBuilder::serve`] serves from this process, on the running runtime: for a tokio
///   service that owns the state.
/// - [`Manager::connect`] reaches a manager someone else started, over a Unix socket or TCP.
///
/// Every object lives until its last proxy, in every process, is dropped (a process that dies
/// drops its proxies with it), or until the manager shuts down.
///
/// A `Manager` is `Clone`, and crosses to other processes as a spawn argument or in a message;
/// a copy received elsewhere connects to the same manager but does not own it.
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing as mp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mp::Result<()> {
/// let manager = mp::Manager::builder().serve().await?;
/// let scores = manager.dict::<String, u32>().await?;
/// scores.insert("ada".into(), 36).await?;
/// assert_eq!(scores.get("ada").await?, Some(36));
/// manager.shutdown().await
/// # }
/// ```
#[derive(Clone)]
pub struct Manager {
    session: Arc<Session>,
    owner: Option<Arc<Owner>>,
}

/// What the `Manager` that started a manager owns, so that dropping it stops the manager.
// One per manager, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Owner {
    Child {
        /// Closing it (by dropping, or by dying) tells the child to shut down.
        _lifeline: Connection<Result<ManagerAddress>>,
        process: tokio::sync::Mutex<Process<Result<()>>>,
    },
    Local(Arc<Server>),
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Owner::Local(server) = self {
            server.stop();
        }
    }
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.session.address)
            .field("owner", &self.owner.is_some())
            .finish()
    }
}

/// Options for starting or serving a manager, and the user types it can make.
pub struct ManagerBuilder<R: Registry = ()> {
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
    _types: PhantomData<fn() -> R>,
}

impl<R: Registry> fmt::Debug for ManagerBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types = TypeTable::default();
        R::add_to(&mut types);
        f.debug_struct("ManagerBuilder")
            .field("address", &self.address)
            .field("types", &types)
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Options, and user types to [`register`](ManagerBuilder::register).
    pub fn builder() -> ManagerBuilder<()> {
        ManagerBuilder {
            address: None,
            authkey: None,
            _types: PhantomData,
        }
    }

    /// Starts a manager in a child process with the built-in types (Python's
    /// `multiprocessing.Manager()`); see [`ManagerBuilder::start`].
    ///
    /// # Errors
    ///
    /// As [`ManagerBuilder::start`].
    ///
    /// # Cancel safety
    ///
    /// As [`ManagerBuilder::start`].
    pub async fn start() -> Result<Manager> {
        Manager::builder().start().await
    }

    /// Connects to the manager at `address` (Python's `BaseManager(address, authkey).connect()`).
    ///
    /// The connection is made in the background; a manager that cannot be reached makes the
    /// first call fail with [`Error::Closed`], which this function checks for you.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when no manager answers there or the authkey is wrong.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn connect(address: impl Into<Address>, authkey: &[u8]) -> Result<Manager> {
        let address = ManagerAddress::from(&address.into());
        let manager = Manager {
            session: Session::get(&address, authkey)?,
            owner: None,
        };
        manager.object_count().await?;
        Ok(manager)
    }

    /// Where the manager listens.
    pub fn address(&self) -> Address {
        self.session.address.to_address()
    }

    /// The key clients authenticate with.
    pub fn authkey(&self) -> &[u8] {
        &self.session.authkey
    }

    /// Moves `value` into the manager as a new object, and returns its proxy (Python:
    /// `manager.Maths()` after `register('Maths', MathsClass)`). `T`'s type must be registered
    /// with the manager ([`ManagerBuilder::register`]).
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when the manager does not know `T`; [`Error::Closed`] when it is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: an object made for a call that was dropped is released again.
    pub async fn create<T: Managed + Serialize>(&self, value: T) -> Result<T::Proxy> {
        self.create_named_type(T::TYPE_NAME, &value).await
    }

    /// Makes an object of registered type `type_name` from `init`.
    pub(crate) async fn create_named_type<P: Proxy, I: Serialize + ?Sized>(
        &self,
        type_name: &str,
        init: &I,
    ) -> Result<P> {
        let init = wire::encode(init)?;
        let bytes = self
            .session
            .request(
                |id| Message::Create {
                    id,
                    type_name: type_name.to_owned(),
                    init: Bytes(init),
                },
                Some(Undo::Unref),
            )
            .await?;
        let object: u64 = wire::decode(&bytes)?;
        Ok(P::from_core(ProxyCore::adopt(self.session.clone(), object)))
    }

    /// Makes a built-in object.
    pub(crate) async fn create_builtin<P: Proxy, I: Serialize + ?Sized>(
        &self,
        init: &I,
    ) -> Result<P> {
        self.create_named_type(P::TYPE_NAME, init).await
    }

    /// Publishes `proxy`'s object under `name`, for clients that [`lookup`](Self::lookup) it
    /// (Python's `register('get_queue', callable=lambda: queue)` on a remote manager). The
    /// name keeps the object alive until it is published again with another object, or the
    /// manager shuts down.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone; [`Error::InvalidArgument`] for a proxy of
    /// another manager.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe; a dropped call may still have published.
    pub async fn publish<P: Proxy>(&self, name: &str, proxy: &P) -> Result<()> {
        if !Arc::ptr_eq(proxy.core().session(), &self.session)
            && proxy.core().session().address != self.session.address
        {
            return Err(Error::InvalidArgument(
                "the proxy belongs to another manager".into(),
            ));
        }
        let object = proxy.core().object_id();
        let bytes = self
            .session
            .request(
                |id| Message::Publish {
                    id,
                    name: name.to_owned(),
                    object,
                },
                None,
            )
            .await?;
        wire::decode(&bytes)
    }

    /// The object published as `name`, through a proxy of type `P`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when nothing is published under `name`; [`Error::InvalidArgument`]
    /// when it is not a `P`'s object; [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn lookup<P: Proxy>(&self, name: &str) -> Result<P> {
        let bytes = self
            .session
            .request(
                |id| Message::Lookup {
                    id,
                    name: name.to_owned(),
                },
                Some(Undo::Unref),
            )
            .await?;
        let (object, type_name): (u64, String) = wire::decode(&bytes)?;
        let core = ProxyCore::adopt(self.session.clone(), object);
        if type_name != P::TYPE_NAME {
            return Err(Error::InvalidArgument(format!(
                "{name:?} is a {type_name}, not a {}",
                P::TYPE_NAME
            )));
        }
        Ok(P::from_core(core))
    }

    /// How many objects the manager holds (Python's `manager._number_of_objects()`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn object_count(&self) -> Result<usize> {
        let bytes = self
            .session
            .request(|id| Message::ObjectCount { id }, None)
            .await?;
        let count: u64 = wire::decode(&bytes)?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Stops the manager: every object is dropped, and every proxy's calls fail with
    /// [`Error::Closed`] from then on. For a manager this `Manager` started, also waits for its
    /// process to exit (killing it after 10 s).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager was already gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe; a dropped call may still have stopped the manager.
    pub async fn shutdown(&self) -> Result<()> {
        let asked = self
            .session
            .request(|id| Message::Shutdown { id }, None)
            .await;
        match self.owner.as_deref() {
            Some(Owner::Local(server)) => {
                server.stop();
                Ok(())
            }
            Some(Owner::Child { process, .. }) => {
                let mut process = process.lock().await;
                if process.join_timeout(SHUTDOWN_TIMEOUT).await.is_err() {
                    let _ = process.kill();
                    let _ = process.join().await;
                }
                Ok(())
            }
            None => asked.map(|_| ()),
        }
    }

    /// The process running the manager, for one this `Manager` started.
    pub fn pid(&self) -> Option<u32> {
        match self.owner.as_deref() {
            Some(Owner::Child { process, .. }) => process.try_lock().ok().map(|p| p.pid()),
            _ => None,
        }
    }
}

impl<R: Registry> ManagerBuilder<R> {
    /// Lets the manager make objects of type `T` ([`Manager::create`]); Python's
    /// `BaseManager.register(typeid, callable)`. Write `T`'s methods with
    /// [`managed!`](crate::managed).
    pub fn register<T: Managed + DeserializeOwned>(self) -> ManagerBuilder<(T, R)> {
        ManagerBuilder {
            address: self.address,
            authkey: self.authkey,
            _types: PhantomData,
        }
    }

    /// Listens at `address` (a Unix socket path, `@name` in the abstract namespace, or a TCP
    /// `host:port`) instead of a fresh abstract-namespace name. Unix socket files are made
    /// `0600`; TCP needs an [`authkey`](Self::authkey).
    pub fn bind(mut self, address: impl Into<Address>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The key clients must prove they know (mutual HMAC, as [`Listener`] does); a random one
    /// by default, which proxies carry to the processes they are sent to.
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.authkey = Some(key.to_vec());
        self
    }

    /// [`settle`](Self::settle), refusing TCP without an explicit authkey.
    fn settle_checked(self) -> Result<(ManagerAddress, Vec<u8>)> {
        let explicit_key = self.authkey.is_some();
        let (address, authkey) = self.settle()?;
        if address.is_tcp() && !explicit_key {
            return Err(Error::InvalidArgument(
                "a manager on TCP needs an authkey that its remote clients know".into(),
            ));
        }
        Ok((address, authkey))
    }

    fn settle(self) -> Result<(ManagerAddress, Vec<u8>)> {
        let authkey = match self.authkey {
            Some(key) => key,
            None => {
                let mut key = vec![0u8; 32];
                crate::sys::random_bytes(&mut key)?;
                key
            }
        };
        if authkey.is_empty() {
            return Err(Error::InvalidArgument(
                "a manager's authkey must not be empty".into(),
            ));
        }
        let address = match self.address {
            Some(address) => ManagerAddress::from(&address),
            None => {
                let mut tag = [0u8; 8];
                crate::sys::random_bytes(&mut tag)?;
                ManagerAddress::Abstract(
                    format!(
                        "tokio-mp-manager-{}-{:016x}",
                        crate::sys::getpid(),
                        u64::from_ne_bytes(tag)
                    )
                    .into_bytes(),
                )
            }
        };
        Ok((address, authkey))
    }

    /// Starts the manager in a child process (Python's `manager.start()`) and connects to it.
    ///
    /// The manager process notices when this process dies (however it dies) and shuts down
    /// cleanly: user objects are dropped and segments of a
    /// [`SharedMemoryManager`](super::SharedMemoryManager) unlinked.
    ///
    /// # Errors
    ///
    /// As [`Process::spawn`]; [`Error::Io`] when the address cannot be bound;
    /// [`Error::Timeout`] when the manager did not come up within 30 s.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe in one respect: a manager process started by a dropped call shuts
    /// itself down when it finds nobody on the other end, which takes a moment.
    pub async fn start(self) -> Result<Manager> {
        let (address, authkey) = self.settle_checked()?;
        let (mut lifeline, child_end) = Pipe::<Result<ManagerAddress>>::duplex()?;
        let process = Process::builder().name("Manager").outlives_parent().spawn(
            run_child::<R>,
            ChildArgs {
                address: address.clone(),
                authkey: Bytes(authkey.clone()),
                lifeline: child_end,
            },
        )?;
        // The address it really listens on (the port of a TCP `:0`).
        let address = match tokio::time::timeout(START_TIMEOUT, lifeline.recv()).await {
            Ok(Ok(Ok(address))) => address,
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => {
                let mut process = process;
                return Err(match process.join().await {
                    Err(e) => e,
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => Error::Closed,
                });
            }
            Err(_) => {
                let _ = process.kill();
                return Err(Error::Timeout);
            }
        };
        Ok(Manager {
            session: Session::get(&address, &authkey)?,
            owner: Some(Arc::new(Owner::Child {
                _lifeline: lifeline,
                process: tokio::sync::Mutex::new(process),
            })),
        })
    }

    /// Serves from this process, on the running tokio runtime, and connects to it. The manager
    /// stops when the `Manager` returned (and all its clones) is dropped, or on
    /// [`shutdown`](Manager::shutdown).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the address cannot be bound; [`Error::InvalidArgument`] for a TCP
    /// address without an authkey.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call serves nothing.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn serve(self) -> Result<Manager> {
        let (address, authkey) = self.settle_checked()?;
        let server = Server::new(type_table::<R>());
        let listener = listen(&address, &authkey).await?;
        let address = ManagerAddress::from(listener.local_addr());
        tokio::spawn(server.clone().run(listener));
        Ok(Manager {
            session: Session::get(&address, &authkey)?,
            owner: Some(Arc::new(Owner::Local(server))),
        })
    }
}

fn type_table<R: Registry>() -> TypeTable {
    let mut table = TypeTable::default();
    super::objects::add_builtins(&mut table);
    R::add_to(&mut table);
    table
}

async fn listen(address: &ManagerAddress, authkey: &[u8]) -> Result<Listener<Message>> {
    let listener = Listener::<Message>::bind(address.to_address(), Some(authkey)).await?;
    if let ManagerAddress::Unix(path) = address {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(listener)
}

#[derive(Serialize, Deserialize)]
struct ChildArgs {
    address: ManagerAddress,
    authkey: Bytes,
    lifeline: Connection<Result<ManagerAddress>>,
}

/// The manager process: serve until the parent hangs up (or dies), or a client asks to stop.
async fn run_child<R: Registry>(args: ChildArgs) -> Result<()> {
    // Started without `PR_SET_PDEATHSIG` (killed with our parent, we could not drop the
    // objects and unlink their segments): we watch the lifeline instead, which closes however
    // the parent goes.
    let mut lifeline = args.lifeline;
    let server = Server::new(type_table::<R>());
    let listener = match listen(&args.address, &args.authkey.0).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = lifeline.send(&Err(e.duplicate())).await;
            return Err(e);
        }
    };
    lifeline
        .send(&Ok(ManagerAddress::from(listener.local_addr())))
        .await?;
    let stopped = server.stopped();
    let serving = tokio::spawn(server.clone().run(listener));
    tokio::select! {
        _ = lifeline.recv() => {}
        () = stopped.cancelled() => {}
    }
    server.stop();
    let _ = serving.await;
    Ok(())
}

/// A manager crosses as its address and authkey: the receiver connects, but does not own it.
#[derive(Serialize, Deserialize)]
struct ManagerWire {
    address: ManagerAddress,
    authkey: Bytes,
}

impl Serialize for Manager {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ManagerWire {
            address: self.session.address.clone(),
            authkey: Bytes(self.session.authkey.clone()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Manager {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let wire = ManagerWire::deserialize(d)?;
        Ok(Manager {
            session: Session::get(&wire.address, &wire.authkey.0)
                .map_err(serde::de::Error::custom)?,
            owner: None,
        })
    }
}
