//! Supervising children as a Python user expects: `mp::shutdown()` waits for non-daemon
//! children (Python waits for them at exit), `active_children()`, `cpu_count()`, `ProcessSet`
//! (whichever child ends first), and `tracing` events for spawns, exits and failed handshakes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::LIVENESS;
use tokio_multiprocessing::{self as mp, Event, SharedMemory};

/// Waits for `go`, then marks the segment done.
async fn finish_when_told((go, done): (Event, SharedMemory)) {
    go.wait().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    done.write_at(0, &[1]).unwrap();
}

async fn wait_forever((): ()) {
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_non_daemon_children_only() -> mp::Result<()> {
    mp::init().await?;
    let (go, done) = (Event::new()?, SharedMemory::create(8)?);
    let worker = mp::Process::builder()
        .name("worker")
        .spawn(finish_when_told, (go.clone(), done.clone()))?;
    let daemon = mp::Process::builder()
        .name("daemon")
        .daemon(true)
        .spawn(wait_forever, ())?;
    let names: Vec<String> = mp::active_children().into_iter().map(|c| c.name).collect();
    assert!(names.contains(&"worker".to_string()) && names.contains(&"daemon".to_string()));
    let shutdown = tokio::spawn(mp::shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!shutdown.is_finished(), "shutdown waits for the worker");
    go.set();
    tokio::time::timeout(LIVENESS, shutdown)
        .await
        .expect("shutdown returns once the worker is done")
        .unwrap()?;
    assert_eq!(done.to_vec()?[0], 1, "the worker finished its work");
    assert!(daemon.is_alive(), "a daemon is not waited for");
    daemon.kill()?;
    drop(worker);
    assert!(support::eventually(|| !mp::active_children()
        .iter()
        .any(|c| c.name == "daemon")));
    Ok(())
}

#[test]
fn cpu_count_honours_the_affinity_mask() {
    let n = mp::cpu_count();
    assert!(n >= 1);
    assert!(n <= std::thread::available_parallelism().map_or(usize::MAX, usize::from));
}

async fn wait_then_report((go, tag): (Event, u32)) -> u32 {
    go.wait().await;
    tag
}

#[tokio::test]
async fn a_process_set_joins_whichever_child_ends_first() -> mp::Result<()> {
    mp::init().await?;
    let events: Vec<Event> = (0..3).map(|_| Event::new()).collect::<mp::Result<_>>()?;
    let mut set = mp::ProcessSet::new();
    for (tag, go) in events.iter().enumerate() {
        set.spawn(wait_then_report, (go.clone(), tag as u32))?;
    }
    assert_eq!(set.len(), 3);
    for tag in [2, 0, 1] {
        events[tag].set();
        let (_, result) = tokio::time::timeout(LIVENESS, set.join_next())
            .await
            .expect("a child ends")
            .expect("the set is not empty");
        assert_eq!(result?, tag as u32);
    }
    assert!(set.is_empty());
    assert!(set.join_next().await.is_none());
    Ok(())
}

/// A subscriber that keeps every event's message and fields as text.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

async fn exit_with(code: i32) {
    std::process::exit(code);
}

#[tokio::test]
async fn spawns_exits_and_failed_handshakes_are_traced() -> mp::Result<()> {
    mp::init().await?;
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());
    let mut child = mp::Process::builder().name("traced").spawn(exit_with, 3)?;
    let _ = child.join().await;
    let mut listener = mp::Listener::<u8>::bind("127.0.0.1:0".parse()?, Some(b"right")).await?;
    let address = listener.local_addr().clone();
    let wrong =
        tokio::spawn(async move { mp::Client::connect::<u8>(address, Some(b"wrong")).await });
    assert!(listener.accept().await.is_err());
    let _ = wrong.await;
    let seen = recorder.0.lock().unwrap().join("\n");
    assert!(
        seen.contains("child spawned") && seen.contains("name=traced"),
        "{seen}"
    );
    assert!(
        seen.contains("child exited with an error status") && seen.contains("code=3"),
        "{seen}"
    );
    assert!(seen.contains("failed the handshake"), "{seen}");
    Ok(())
}
