//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Liveness bound for anything a test waits on: generous, because CI machines are small and
/// noisy. Tests never assert that something is *fast*.
pub const LIVENESS: Duration = Duration::from_secs(30);

/// A `/dev/shm` name unique to this test run, under the prefix the leak checks look for.
pub fn unique_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "tkmp-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes `/dev/shm/<name>` by hand, 0600, with the given contents (a segment an attacker or
/// another program could have left there).
pub fn plant_segment(name: &str, contents: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(format!("/dev/shm/{name}"))
        .unwrap();
    std::io::Write::write_all(&mut f, contents).unwrap();
}

/// `/dev/shm` entries made by this process's tests.
pub fn our_shm_entries() -> Vec<String> {
    let prefix = format!("tkmp-test-{}-", std::process::id());
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of this process's children that are still running (zombies do not count).
pub fn live_children() -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in list.split_whitespace().filter_map(|p| p.parse().ok()) {
            if is_running(pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// Whether process `pid` exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself contain ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Polls `cond` until it holds or [`LIVENESS`] passes; returns whether it held.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < LIVENESS {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A command that re-runs this test binary filtered to the helper test `name`, which acts only
/// when it sees `TKMP_TEST_HELPER` (so in a normal run it passes at once): a stand-in for "any
/// program" a user would start.
pub fn helper_command(name: &str) -> std::io::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args([name, "--exact", "--nocapture", "-q"])
        .env("TKMP_TEST_HELPER", "1")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    Ok(cmd)
}

/// CPU time of every thread of `pid` so far (from `/proc/<pid>/task/*/schedstat`).
pub fn cpu_of(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process is alive");
    Duration::from_nanos(
        tasks
            .filter_map(|task| {
                let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
                stat.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum(),
    )
}
