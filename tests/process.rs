//! `Process::spawn`, `join` and friends across real child processes.
//!
//! Several behaviours are ported from CPython's `Lib/test/_test_multiprocessing.py`
//! (`_TestProcess`: test_process, test_terminate, test_kill, test_exitcode, test_parent_process),
//! rewritten for this crate.

mod support;

use std::time::Duration;

use support::{LIVENESS, eventually, is_running};
use tokio_multiprocessing::{self as mp, Error, ProcessFailure, SharedMemory};

async fn add(args: (i64, i64)) -> i64 {
    args.0 + args.1
}

async fn whoami((): ()) -> (mp::ProcessInfo, Option<mp::ProcessInfo>, u32) {
    (
        mp::current_process(),
        mp::parent_process(),
        std::process::id(),
    )
}

async fn panics(msg: String) -> u8 {
    panic!("{msg}");
}

async fn exits(code: i32) {
    std::process::exit(code);
}

async fn sleeps_forever((): ()) {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[tokio::test]
async fn spawn_passes_args_and_returns_the_result() -> mp::Result<()> {
    mp::init().await?;
    let mut child = mp::Process::spawn(add, (40, 2))?;
    assert_ne!(child.pid(), std::process::id());
    assert_eq!(child.join().await?, 42);
    assert_eq!(child.exitcode(), Some(0));
    assert!(!child.is_alive());
    // A second join is an error, not a hang.
    assert!(matches!(child.join().await, Err(Error::InvalidArgument(_))));
    Ok(())
}

async fn checked_half(x: u64) -> Result<u64, String> {
    if x % 2 == 1 {
        return Err(format!("{x} is odd"));
    }
    Ok(x / 2)
}

/// A Rust `main` that returns `Err` exits with status 1; so does a child entry, and `join`
/// still hands the `Err` back.
#[tokio::test]
async fn an_entry_returning_err_exits_with_status_1() -> mp::Result<()> {
    mp::init().await?;
    let mut failing = mp::Process::spawn(checked_half, 7)?;
    assert_eq!(failing.join().await?, Err("7 is odd".to_string()));
    assert_eq!(failing.exitcode(), Some(1));
    let mut fine = mp::Process::spawn(checked_half, 8)?;
    assert_eq!(fine.join().await?, Ok(4));
    assert_eq!(fine.exitcode(), Some(0));
    Ok(())
}

/// The natural entry a Python user writes: `?` inside, `mp::Result` out.
async fn parse_and_square(text: String) -> mp::Result<u64> {
    let n: u64 = text
        .parse()
        .map_err(|e| Error::InvalidArgument(format!("{text:?}: {e}")))?;
    if n > 1000 {
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "too big").into());
    }
    Ok(n * n)
}

/// Regression: `mp::Error` was not serde, so an entry could not return `mp::Result<T>`. The
/// error crosses with its variant and message (an I/O error with its kind).
#[tokio::test]
async fn an_entry_may_return_mp_result() -> mp::Result<()> {
    mp::init().await?;
    let squared = mp::Process::spawn(parse_and_square, "12".to_string())?
        .join()
        .await?;
    assert!(matches!(squared, Ok(144)), "{squared:?}");
    let mut bad = mp::Process::spawn(parse_and_square, "twelve".to_string())?;
    match bad.join().await? {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("twelve"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(bad.exitcode(), Some(1));
    match mp::Process::spawn(parse_and_square, "5000".to_string())?
        .join()
        .await?
    {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("too big"));
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}

async fn open_fds((): ()) -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Regression: an fd left inheritable (as a C library or a `dup2` leaves it) was open in every
/// spawned child. Only the fds meant for a child reach it, as with CPython's spawn.
#[tokio::test]
async fn children_inherit_no_stray_fds() -> mp::Result<()> {
    mp::init().await?;
    let file = std::fs::File::open("/proc/self/exe")?;
    let stray = rustix::io::fcntl_dupfd_cloexec(&file, 900).unwrap();
    rustix::io::fcntl_setfd(&stray, rustix::io::FdFlags::empty()).unwrap();
    let number = std::os::fd::AsRawFd::as_raw_fd(&stray);
    let seen = mp::Process::spawn(open_fds, ())?.join().await?;
    assert!(
        !seen.contains(&number),
        "fd {number} leaked into the child: {seen:?}"
    );
    assert!(
        rustix::io::fcntl_getfd(&stray).unwrap().is_empty(),
        "ours is left as it was"
    );
    Ok(())
}

#[tokio::test]
async fn children_know_their_name_and_parent() -> mp::Result<()> {
    mp::init().await?;
    let mut child = mp::Process::builder().name("worker-7").spawn(whoami, ())?;
    assert_eq!(child.name(), "worker-7");
    let (me, parent, pid) = child.join().await?;
    assert_eq!(me.name, "worker-7");
    assert_eq!(me.pid, pid);
    assert_eq!(pid, child.pid());
    let parent = parent.expect("a spawned child has a parent");
    assert_eq!(parent.pid, std::process::id());
    assert_eq!(parent.name, "MainProcess");
    assert_eq!(mp::current_process().name, "MainProcess");
    assert!(mp::parent_process().is_none());
    Ok(())
}

#[tokio::test]
async fn default_names_count_up() -> mp::Result<()> {
    mp::init().await?;
    let mut a = mp::Process::spawn(add, (1, 1))?;
    let mut b = mp::Process::spawn(add, (1, 2))?;
    assert!(a.name().starts_with("Process-") && b.name().starts_with("Process-"));
    assert_ne!(a.name(), b.name());
    assert_eq!((a.join().await?, b.join().await?), (2, 3));
    Ok(())
}

#[tokio::test]
async fn a_panicking_child_reports_its_message() -> mp::Result<()> {
    mp::init().await?;
    let mut child = mp::Process::spawn(panics, "boom at step 3".to_string())?;
    match child.join().await {
        Err(Error::Process(ProcessFailure::Panicked(msg))) => assert_eq!(msg, "boom at step 3"),
        other => panic!("expected a panic report, got {other:?}"),
    }
    assert_eq!(child.exitcode(), Some(101));
    Ok(())
}

#[tokio::test]
async fn a_child_calling_exit_reports_its_code() -> mp::Result<()> {
    mp::init().await?;
    let mut child = mp::Process::spawn(exits, 3)?;
    match child.join().await {
        Err(Error::Process(ProcessFailure::Exited(3))) => {}
        other => panic!("expected exit code 3, got {other:?}"),
    }
    assert_eq!(child.exitcode(), Some(3));
    Ok(())
}

#[tokio::test]
async fn killed_and_terminated_children_report_their_signal() -> mp::Result<()> {
    mp::init().await?;
    let mut killed = mp::Process::spawn(sleeps_forever, ())?;
    let mut terminated = mp::Process::spawn(sleeps_forever, ())?;
    assert!(killed.is_alive() && terminated.is_alive());
    assert_eq!(killed.exitcode(), None);
    killed.kill()?;
    terminated.terminate()?;
    assert!(matches!(
        killed.join().await,
        Err(Error::Process(ProcessFailure::Signaled(9)))
    ));
    assert!(matches!(
        terminated.join().await,
        Err(Error::Process(ProcessFailure::Signaled(15)))
    ));
    assert_eq!(killed.exitcode(), Some(-9));
    assert_eq!(terminated.exitcode(), Some(-15));
    // Signalling a finished child is harmless.
    killed.kill()?;
    Ok(())
}

#[tokio::test]
async fn join_timeout_expires_and_a_later_join_still_works() -> mp::Result<()> {
    mp::init().await?;
    let mut child = mp::Process::spawn(sleeps_forever, ())?;
    let started = std::time::Instant::now();
    assert!(matches!(
        child.join_timeout(Duration::from_millis(200)).await,
        Err(Error::Timeout)
    ));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(child.is_alive());
    child.kill()?;
    assert!(matches!(
        child.join_timeout(LIVENESS).await,
        Err(Error::Process(ProcessFailure::Signaled(9)))
    ));
    Ok(())
}

/// Starts a grandchild that sleeps forever, publishes its pid, then sleeps forever itself.
async fn spawns_a_grandchild(pid_slot: SharedMemory) {
    let grandchild = mp::Process::spawn(sleeps_forever, ()).expect("spawn grandchild");
    pid_slot
        .write_at(0, &grandchild.pid().to_le_bytes())
        .expect("publish pid");
    sleeps_forever(()).await;
}

#[tokio::test]
async fn children_die_with_their_parent() -> mp::Result<()> {
    mp::init().await?;
    let slot = SharedMemory::create(4)?;
    let mut child = mp::Process::spawn(spawns_a_grandchild, slot.clone())?;
    let mut grandchild = 0;
    assert!(eventually(|| {
        let mut pid = [0u8; 4];
        slot.read_at(0, &mut pid).unwrap();
        grandchild = u32::from_le_bytes(pid);
        grandchild != 0
    }));
    assert!(is_running(grandchild));
    let killed_at = std::time::Instant::now();
    child.kill()?;
    assert!(matches!(
        child.join().await,
        Err(Error::Process(ProcessFailure::Signaled(9)))
    ));
    assert!(
        eventually(|| !is_running(grandchild)),
        "grandchild {grandchild} outlived its parent"
    );
    eprintln!(
        "grandchild gone {:?} after its parent was killed",
        killed_at.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_dropped_child_keeps_running_and_is_reaped() -> mp::Result<()> {
    mp::init().await?;
    let child = mp::Process::spawn(sleeps_forever, ())?;
    let pid = child.pid();
    drop(child);
    assert!(is_running(pid));
    // Nobody holds a handle any more; kill it from outside and the spawner reaps it.
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    assert!(eventually(
        || std::fs::metadata(format!("/proc/{pid}")).is_err()
    ));
    Ok(())
}

async fn double(x: u32) -> u32 {
    x * 2
}

#[tokio::test]
async fn kill_on_drop_kills_the_child_with_its_handle() -> mp::Result<()> {
    mp::init().await?;
    let child = mp::Process::builder()
        .kill_on_drop(true)
        .spawn(sleeps_forever, ())?;
    let pid = child.pid();
    assert!(is_running(pid));
    drop(child);
    assert!(
        eventually(|| !is_running(pid)),
        "the child outlived its handle"
    );
    Ok(())
}

/// A synchronous `main` in miniature: `init_blocking` first, then a runtime of its own. Runs in
/// a process of its own (started by the next test).
#[test]
fn helper_sync_main() {
    if std::env::var_os("TKMP_TEST_HELPER").is_none() {
        return;
    }
    mp::init_blocking().expect("init_blocking");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(async { mp::Process::spawn(double, 21)?.join().await });
    assert_eq!(got.unwrap(), 42);
}

#[tokio::test]
async fn init_blocking_serves_a_sync_main() -> mp::Result<()> {
    let status = support::helper_command("helper_sync_main")?
        .status()
        .await?;
    assert!(status.success());
    Ok(())
}

/// Runs in a process of its own (started by the next test), where nobody called `init`.
#[tokio::test]
async fn helper_spawn_without_init() {
    if std::env::var_os("TKMP_TEST_HELPER").is_none() {
        return;
    }
    match mp::Process::spawn(add, (1, 2)) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("init()"), "{msg}"),
        other => panic!("spawn without init must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn spawning_without_init_is_refused() -> mp::Result<()> {
    let status = support::helper_command("helper_spawn_without_init")?
        .status()
        .await?;
    assert!(status.success());
    Ok(())
}
