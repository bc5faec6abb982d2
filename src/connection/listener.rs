//! [`Listener`] and [`Client`]: connections by address, with an authkey handshake
//! (Python's `multiprocessing.connection.Listener` / `Client`).

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::auth::AuthOptions;
use super::connection::{self, Connection};
use super::frame::DEFAULT_MAX_FRAME;
use super::frame::Framing;
use crate::{Error, Result};

/// How long an accepted peer may take to authenticate before it is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a [`Listener`] listens and a [`Client`] connects.
///
/// Parses from a string: `"@name"` is a Linux abstract-namespace Unix socket, anything with a `/`
/// a Unix socket path, anything else a TCP address such as `"127.0.0.1:6000"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A Unix socket file.
    Unix(PathBuf),
    /// A Unix socket in the abstract namespace (no file; gone with the listener).
    Abstract(Vec<u8>),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        if let Some(name) = s.strip_prefix('@') {
            Ok(Address::Abstract(name.as_bytes().to_vec()))
        } else if s.contains('/') {
            Ok(Address::Unix(PathBuf::from(s)))
        } else {
            s.parse().map(Address::Tcp).map_err(|_| {
                Error::InvalidArgument(format!(
                    "{s:?} is neither a socket path, @name nor host:port"
                ))
            })
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Unix(p)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Address {
        Address::Unix(p.to_owned())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// Accepts authenticated connections (Python's `multiprocessing.connection.Listener`).
///
/// Peers are accepted and authenticated in the background, each on its own task, so a silent or
/// slow client (dropped after the handshake timeout) never delays the others.
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::connection::{Client, Listener};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tokio_multiprocessing::Result<()> {
/// let mut listener = Listener::<String>::bind("127.0.0.1:0".parse()?, Some(b"secret")).await?;
/// let address = listener.local_addr().clone();
/// let client = tokio::spawn(async move {
///     let conn = Client::connect::<String>(address, Some(b"secret")).await?;
///     conn.send(&"hello".to_string()).await
/// });
/// let mut conn = listener.accept().await?;
/// assert_eq!(conn.recv().await?, "hello");
/// client.await.unwrap()?;
/// # Ok(())
/// # }
/// ```
pub struct Listener<T> {
    incoming: mpsc::Receiver<Result<Connection<T>>>,
    acceptor: JoinHandle<()>,
    address: Address,
    socket_file: Option<SocketFile>,
}

/// A Unix socket path we listen on, and the lock file beside it that says so.
struct SocketFile {
    path: PathBuf,
    lock_path: PathBuf,
    /// Holds the `flock` for as long as we listen (and, if we die, not a moment longer).
    _lock: std::fs::File,
}

/// The lock file beside socket path `path`: `<path>.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Options for a [`Listener`].
#[must_use = "a ListenerBuilder does nothing until `bind` is called"]
pub struct ListenerBuilder<T> {
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    max_frame: usize,
    python: bool,
    allow_md5: bool,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T> Clone for ListenerBuilder<T> {
    fn clone(&self) -> Self {
        ListenerBuilder {
            address: self.address.clone(),
            authkey: self.authkey.clone(),
            handshake_timeout: self.handshake_timeout,
            max_frame: self.max_frame,
            python: self.python,
            allow_md5: self.allow_md5,
            _type: std::marker::PhantomData,
        }
    }
}

impl<T> fmt::Debug for ListenerBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("address", &self.address)
            .field("authkey", &self.authkey.as_ref().map(|_| ".."))
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

impl<T: Send + 'static> ListenerBuilder<T> {
    /// The key both sides must prove they hold; `None` (the default) skips authentication.
    pub fn authkey(mut self, key: Option<&[u8]>) -> Self {
        self.authkey = key.map(<[u8]>::to_vec);
        self
    }

    /// How long an accepted peer may take to authenticate (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Speak CPython's `multiprocessing.connection` wire protocol, so Python's `Client` can
    /// connect: big-endian length frames and pickled values (no handles). Default: off (our
    /// framing, which carries handles over Unix sockets).
    pub fn python_compatible(mut self, on: bool) -> Self {
        self.python = on;
        self
    }

    /// Accept the HMAC-MD5 handshake of CPython ≤ 3.11. MD5 is weak; only enable it for peers
    /// that cannot do better. Default: off.
    pub fn allow_md5(mut self, on: bool) -> Self {
        self.allow_md5 = on;
        self
    }

    /// The largest message payload accepted and sent on accepted connections (default 64 MiB,
    /// at most 4 GiB − 1: [`bind`](Self::bind) refuses more).
    pub fn max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// Binds and starts accepting.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future before it completes leaves nothing bound.
    ///
    /// A Unix socket file left behind by a dead listener is replaced; one that a live listener
    /// serves is an error (`AddrInUse`), and so is a path that is not a socket.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the address cannot be bound.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn bind(self) -> Result<Listener<T>> {
        super::frame::check_max_frame(self.max_frame)?;
        let (socket, address, socket_file) = Socket::bind(&self.address).await?;
        let (tx, incoming) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop::<T>(socket, tx, self));
        Ok(Listener {
            incoming,
            acceptor,
            address,
            socket_file,
        })
    }
}

impl<T: Send + 'static> Listener<T> {
    /// Binds to `address`, requiring `authkey` from clients (`None`: no authentication).
    ///
    /// # Cancel safety
    ///
    /// As [`ListenerBuilder::bind`].
    ///
    /// # Errors
    ///
    /// As [`ListenerBuilder::bind`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn bind(address: Address, authkey: Option<&[u8]>) -> Result<Self> {
        Self::builder(address).authkey(authkey).bind().await
    }

    /// Options for a listener on `address`.
    pub fn builder(address: Address) -> ListenerBuilder<T> {
        ListenerBuilder {
            address,
            authkey: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
            python: false,
            allow_md5: false,
            _type: std::marker::PhantomData,
        }
    }
}

impl<T> Listener<T> {
    /// The next authenticated connection.
    ///
    /// # Errors
    ///
    /// A peer that failed its handshake is reported once, and the listener keeps serving:
    /// [`Error::Auth`] for a wrong key, [`Error::Timeout`] for a peer that did not finish in
    /// time, others for a broken peer. [`Error::Io`] when accepting itself fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: connections that arrive meanwhile wait for the next call.
    pub async fn accept(&mut self) -> Result<Connection<T>> {
        self.incoming
            .recv()
            .await
            .unwrap_or_else(|| Err(Error::Io(std::io::Error::other("listener stopped"))))
    }

    /// The address clients connect to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> &Address {
        &self.address
    }
}

impl<T> Drop for Listener<T> {
    fn drop(&mut self) {
        self.acceptor.abort();
        if let Some(file) = &self.socket_file {
            let _ = std::fs::remove_file(&file.path);
            // Still holding the lock, so nobody took the path over in between.
            let _ = std::fs::remove_file(&file.lock_path);
        }
    }
}

impl<T> fmt::Debug for Listener<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
#[derive(Debug)]
pub struct Client(());

/// Options for [`Client`].
#[derive(Debug, Clone)]
#[must_use = "a ClientBuilder does nothing until `connect` is called"]
pub struct ClientBuilder {
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    max_frame: usize,
    python: bool,
    allow_md5: bool,
}

impl Client {
    /// Connects to `address` and, with a key, proves it and checks the listener's proof.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`] when either side's key is wrong (or the listener wants none and we
    /// sent one, or the reverse); [`Error::Timeout`] when the handshake takes longer than 10 s;
    /// [`Error::Io`] when the connection fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future drops the half-made connection.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect<T>(
        address: impl Into<Address>,
        authkey: Option<&[u8]>,
    ) -> Result<Connection<T>> {
        Self::builder(address).authkey(authkey).connect().await
    }

    /// Options for a connection to `address`.
    pub fn builder(address: impl Into<Address>) -> ClientBuilder {
        ClientBuilder {
            address: address.into(),
            authkey: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
            python: false,
            allow_md5: false,
        }
    }
}

impl ClientBuilder {
    /// The key both sides must prove they hold; `None` (the default) skips authentication.
    pub fn authkey(mut self, key: Option<&[u8]>) -> Self {
        self.authkey = key.map(<[u8]>::to_vec);
        self
    }

    /// Speak CPython's wire protocol, to connect to Python's `Listener` (see
    /// [`ListenerBuilder::python_compatible`]).
    pub fn python_compatible(mut self, on: bool) -> Self {
        self.python = on;
        self
    }

    /// Accept the HMAC-MD5 handshake of CPython ≤ 3.11 (weak; off by default).
    pub fn allow_md5(mut self, on: bool) -> Self {
        self.allow_md5 = on;
        self
    }

    /// How long the handshake may take (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The largest message payload accepted and sent (default 64 MiB, at most 4 GiB − 1:
    /// `connect` refuses more).
    pub fn max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// Connects.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect<T>(self) -> Result<Connection<T>> {
        super::frame::check_max_frame(self.max_frame)?;
        let fd = Socket::connect_patiently(&self.address, self.handshake_timeout).await?;
        let framing = if self.python {
            Framing::Python
        } else {
            Framing::Native
        };
        let mut conn = connection::open_with::<T>(fd, self.max_frame, framing)?;
        if let Some(key) = &self.authkey {
            let auth = AuthOptions {
                allow_md5: self.allow_md5,
            };
            tokio::time::timeout(self.handshake_timeout, conn.authenticate(key, false, auth))
                .await
                .unwrap_or(Err(Error::Timeout))?;
        }
        Ok(conn)
    }
}

enum Socket {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl Socket {
    async fn bind(address: &Address) -> Result<(Socket, Address, Option<SocketFile>)> {
        match address {
            Address::Tcp(a) => {
                let l = tokio::net::TcpListener::bind(a).await?;
                let local = Address::Tcp(l.local_addr()?);
                Ok((Socket::Tcp(l), local, None))
            }
            Address::Abstract(name) => {
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                let l = std::os::unix::net::UnixListener::bind_addr(&addr)?;
                l.set_nonblocking(true)?;
                Ok((
                    Socket::Unix(tokio::net::UnixListener::from_std(l)?),
                    address.clone(),
                    None,
                ))
            }
            Address::Unix(path) => {
                // A live listener of ours holds the lock beside its path: it is never probed
                // with a connection (which its `accept` would see).
                let lock_path = lock_path(path);
                let lock = crate::sys::file_lock::try_lock(&lock_path)?.ok_or_else(|| {
                    Error::Io(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!("a live listener serves {}", path.display()),
                    ))
                })?;
                remove_stale_socket(path)?;
                let l = tokio::net::UnixListener::bind(path)?;
                let file = SocketFile {
                    path: path.clone(),
                    lock_path,
                    _lock: lock,
                };
                Ok((Socket::Unix(l), address.clone(), Some(file)))
            }
        }
    }

    async fn accept(&self) -> std::io::Result<OwnedFd> {
        match self {
            Socket::Unix(l) => Ok(l.accept().await?.0.into_std()?.into()),
            Socket::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(s.into_std()?.into())
            }
        }
    }

    /// [`connect`](Self::connect), waiting while a Unix listener's accept backlog is full
    /// (`EAGAIN` on our non-blocking socket; Python's blocking `Client` simply waits, and
    /// CPython's `Listener` has a backlog of 1), for at most `timeout`.
    async fn connect_patiently(address: &Address, timeout: Duration) -> Result<OwnedFd> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match Socket::connect(address).await {
                Err(Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(Error::Timeout);
                }
                other => return other,
            }
        }
    }

    async fn connect(address: &Address) -> Result<OwnedFd> {
        Ok(match address {
            Address::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await?;
                s.set_nodelay(true)?;
                s.into_std()?.into()
            }
            Address::Abstract(name) => {
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                std::os::unix::net::UnixStream::connect_addr(&addr)?.into()
            }
            Address::Unix(path) => tokio::net::UnixStream::connect(path)
                .await?
                .into_std()?
                .into(),
        })
    }
}

/// Removes a socket file nobody listens on any more; refuses to touch anything else. (Called
/// with the path's lock held, so no listener of ours serves it: a live one found by connecting
/// is another program's, for example CPython's.)
fn remove_stale_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("a live listener serves {}", path.display()),
        ))),
        Err(_) => Ok(std::fs::remove_file(path)?),
    }
}

async fn accept_loop<T: Send + 'static>(
    socket: Socket,
    tx: mpsc::Sender<Result<Connection<T>>>,
    options: ListenerBuilder<T>,
) {
    loop {
        let fd = match socket.accept().await {
            Ok(fd) => fd,
            Err(e) => {
                if tx.send(Err(Error::Io(e))).await.is_err() {
                    return;
                }
                // Out of fds and the like: give the system a moment instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tx, options) = (tx.clone(), options.clone());
        tokio::spawn(async move {
            let handshake = async {
                let framing = if options.python {
                    Framing::Python
                } else {
                    Framing::Native
                };
                let mut conn = connection::open_with::<T>(fd, options.max_frame, framing)?;
                if let Some(key) = &options.authkey {
                    let auth = AuthOptions {
                        allow_md5: options.allow_md5,
                    };
                    conn.authenticate(key, true, auth).await?;
                }
                Ok(conn)
            };
            let result = tokio::time::timeout(options.handshake_timeout, handshake)
                .await
                .unwrap_or(Err(Error::Timeout));
            // A peer that went away before the handshake completed (a liveness probe, a client
            // that gave up) is nobody's business: only real connections and real failures
            // (a wrong key, garbage, a client too slow) surface from `accept`.
            if let Err(e) = &result {
                if went_away(e) {
                    return;
                }
                tracing::warn!(target: "tokio_multiprocessing::connection", error = %e, "a peer failed the handshake");
            }
            let _ = tx.send(result).await;
        });
    }
}

/// Whether a handshake failed because the peer closed or reset the connection.
fn went_away(e: &Error) -> bool {
    match e {
        Error::Closed => true,
        Error::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}
