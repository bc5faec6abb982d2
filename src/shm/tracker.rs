//! The resource tracker: named segments never outlive the processes that own them, however
//! those die (Python's `multiprocessing.resource_tracker`).
//!
//! A segment made by name lives in `/dev/shm` until someone unlinks it; a process killed with
//! `SIGKILL` never runs the drop that would. So every process tells a tracker — a copy of the
//! program that becomes the tracker before `main` (see `sys/pre_main.rs`), one per process tree
//! — what it creates by name, over one Unix socket per process:
//!
//! ```text
//! P <name>           about to be created by me (a generated, unique name): unlink whatever
//!                    file has it when my connection closes, unless R or U came first
//! R <inode> <name>   owned by me: unlink it when my connection closes (I died or exited)
//! T <name>           owned by the tree: unlink it when every connection has closed
//! U <name>           forget it (unlinked, or persisted)
//! ```
//!
//! A queue's spilled item moves from its putter to the tree once it is queued: it must outlive
//! the putter, but not everyone. The tracker unlinks a name only if it still names the file
//! that was registered (same inode). Children started with [`Process::spawn`](crate::Process::spawn)
//! and programs given handles with [`pass`](crate::pass) join their parent's tracker through
//! [`ADDRESS_VAR`]; a process that finds none starts its own. The tracker exits once its last
//! connection closes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sys;

/// The environment variable that tells children where their tree's tracker listens.
pub(crate) const ADDRESS_VAR: &str = "TOKIO_MULTIPROCESSING_TRACKER";

/// How long a new tracker waits for its first connection, and a launcher for the tracker.
const START_TIMEOUT: Duration = Duration::from_secs(10);

// ----- the client side, in every process -----

struct Client {
    address: String,
    stream: UnixStream,
    /// What this process told the tracker, to tell a new one if the old one is gone.
    owned: HashMap<String, u64>,
}

static CLIENT: Mutex<Option<Client>> = Mutex::new(None);

/// The address of this process's tracker, starting one if needed: for children to join.
/// `None` when no tracker can be had (names are then only unlinked by drops, as before).
pub(crate) fn address() -> Option<String> {
    with_client(|client| Some(client.address.clone()))
}

/// Registers a name this process created: unlinked if the process dies without unlinking it.
pub(crate) fn track(name: &str, inode: u64) {
    with_client(|client| {
        client.owned.insert(name.to_owned(), inode);
        send(client, &format!("R {inode} {name}\n"))
    });
}

/// Announces a name this process is about to create: if it dies before [`track`] (the few µs
/// between creating the file and registering it), the tracker unlinks whatever has the name.
/// Only for names no other process could have created: generated, unique ones.
pub(crate) fn expect(name: &str) {
    with_client(|client| send(client, &format!("P {name}\n")));
}

/// Withdraws an [`expect`] whose creation failed.
pub(crate) fn unexpect(name: &str) {
    with_client(|client| send(client, &format!("U {name}\n")));
}

/// Passes a name to the whole process tree: unlinked once every process of the tree is gone.
pub(crate) fn hand_to_tree(name: &str) {
    with_client(|client| {
        client.owned.remove(name);
        send(client, &format!("T {name}\n"))
    });
}

/// Forgets a name (it was unlinked, or is to be kept).
pub(crate) fn forget(name: &str) {
    let mut guard = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(client) = guard.as_mut()
        && client.owned.remove(name).is_some()
    {
        let _ = client.stream.write_all(format!("U {name}\n").as_bytes());
    }
}

fn send(client: &mut Client, line: &str) -> Option<()> {
    client.stream.write_all(line.as_bytes()).ok()
}

/// Runs `f` with a connected client, connecting (and if need be starting a tracker) first, and
/// reconnecting once if the tracker went away.
fn with_client<R>(f: impl Fn(&mut Client) -> Option<R>) -> Option<R> {
    let mut guard = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..2 {
        if guard.is_none() {
            let owned = HashMap::new();
            *guard = connect(owned);
        }
        let client = guard.as_mut()?;
        if let Some(result) = f(client) {
            return Some(result);
        }
        // The tracker is gone: start over with a new one, telling it what we own.
        let owned = guard.take().map(|c| c.owned).unwrap_or_default();
        *guard = connect(owned);
    }
    None
}

fn connect(owned: HashMap<String, u64>) -> Option<Client> {
    let inherited = std::env::var(ADDRESS_VAR).ok();
    let stream = inherited
        .as_deref()
        .and_then(|address| Some((address.to_owned(), dial(address).ok()?)))
        .or_else(launch);
    let (address, mut stream) = stream?;
    for (name, inode) in &owned {
        stream
            .write_all(format!("R {inode} {name}\n").as_bytes())
            .ok()?;
    }
    Some(Client {
        address,
        stream,
        owned,
    })
}

fn dial(address: &str) -> std::io::Result<UnixStream> {
    UnixStream::connect_addr(&SocketAddr::from_abstract_name(address)?)
}

/// Starts a tracker: this program again, told by its first argument to become one. Returns
/// its address and our connection to it — the first one it accepts: a probe connection that
/// closed again would make it exit at once, its last connection gone.
fn launch() -> Option<(String, UnixStream)> {
    if !sys::pre_main::hook_ran() {
        return None;
    }
    let mut nonce = [0u8; 8];
    sys::random_bytes(&mut nonce).ok()?;
    let address = format!(
        "tokio-multiprocessing-tracker-{}-{:016x}",
        sys::getpid(),
        u64::from_le_bytes(nonce)
    );
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg(sys::pre_main::TRACKER_ARG)
        .arg(&address)
        .env_remove(ADDRESS_VAR)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // Its own process group: a Ctrl-C meant for the program must not stop the cleanup.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().ok()?;
    let started = Instant::now();
    let stream = loop {
        match dial(&address) {
            Ok(stream) => break stream,
            Err(_) if started.elapsed() > START_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    // Reap it when it exits (after our own connection closed, normally after we did).
    std::thread::spawn(move || child.wait());
    Some((address, stream))
}

// ----- the tracker itself -----

#[derive(Default)]
struct Books {
    /// Names owned by one connection (by its number), with their inode.
    owned: HashMap<String, (u64, u64)>,
    /// Names owned by the tree.
    tree: HashMap<String, u64>,
    inodes: HashMap<String, u64>,
    connections: usize,
}

/// The tracker's server loop: serves connections until the last one closes, then unlinks
/// whatever the tree still owns. Called before `main` in the tracker process.
pub(crate) fn serve(address: &str) {
    let Ok(addr) = SocketAddr::from_abstract_name(address) else {
        return;
    };
    let Ok(listener) = UnixListener::bind_addr(&addr) else {
        return;
    };
    let books = Arc::new(Mutex::new(Books::default()));
    // Nobody came: give up.
    let watchdog = books.clone();
    std::thread::spawn(move || {
        std::thread::sleep(START_TIMEOUT);
        let books = lock(&watchdog);
        if books.connections == 0 && books.inodes.is_empty() {
            std::process::exit(0);
        }
    });
    for (number, stream) in (1u64..).zip(listener.incoming().flatten()) {
        lock(&books).connections += 1;
        let books = books.clone();
        std::thread::spawn(move || serve_connection(number, stream, &books));
    }
}

fn lock(books: &Mutex<Books>) -> std::sync::MutexGuard<'_, Books> {
    books.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve_connection(number: u64, stream: UnixStream, books: &Mutex<Books>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let mut books = lock(books);
        let books = &mut *books;
        match line.split_once(' ') {
            // Inode 0: not created yet, so any file of that name is the one.
            Some(("P", name)) => {
                books.owned.entry(name.to_owned()).or_insert((number, 0));
            }
            Some(("R", rest)) => {
                if let Some((inode, name)) = rest.split_once(' ')
                    && let Ok(inode) = inode.parse()
                {
                    books.owned.insert(name.to_owned(), (number, inode));
                    books.inodes.insert(name.to_owned(), inode);
                }
            }
            Some(("T", name)) => {
                if let Some(inode) = books.inodes.get(name).copied() {
                    books.owned.remove(name);
                    books.tree.insert(name.to_owned(), inode);
                }
            }
            Some(("U", name)) => {
                books.owned.remove(name);
                books.tree.remove(name);
                books.inodes.remove(name);
            }
            _ => {}
        }
    }
    // The process behind this connection is gone (or done): what it still owned goes.
    let mut books = lock(books);
    let books = &mut *books;
    let mine: Vec<String> = books
        .owned
        .iter()
        .filter(|(_, (owner, _))| *owner == number)
        .map(|(name, _)| name.clone())
        .collect();
    for name in mine {
        if let Some((_, inode)) = books.owned.remove(&name) {
            books.inodes.remove(&name);
            unlink_if_same(&name, inode);
        }
    }
    books.connections -= 1;
    if books.connections == 0 {
        for (name, inode) in books.tree.drain() {
            unlink_if_same(&name, inode);
        }
        std::process::exit(0);
    }
}

/// Unlinks `/dev/shm/<name>` if it is still the file with `inode` (any file, for inode 0: a
/// name announced before its file existed).
fn unlink_if_same(name: &str, inode: u64) {
    if sys::shm_open::inode(name).is_ok_and(|current| inode == 0 || current == inode) {
        let _ = sys::shm_open::unlink(name);
    }
}
