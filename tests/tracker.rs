//! The resource tracker: whatever a process creates by name is unlinked within moments of that
//! process dying by any means — SIGKILL of the top-level process included — and so is a spilled
//! item of an anonymous queue once every process of the tree is gone.

mod support;

use std::time::Duration;

use support::LIVENESS;
use tokio::io::AsyncBufReadExt;
use tokio_multiprocessing::{self as mp, Item, Queue, ShareableList, SharedMemory};

/// A child of the helper: a putter blocked on a full queue with a spilled item in hand, and a
/// named segment of its own.
async fn blocked_spilling_putter((queue, name): (Queue<Vec<u8>>, String)) {
    let _own = SharedMemory::create_named(&name, 4096).unwrap();
    // The queue holds one item already: this put waits with its item spilled to a segment.
    let _ = queue.put(vec![2; 100_000]).await;
}

/// The top-level program of the test: makes named things, prints what to look for, and waits
/// to be killed.
#[tokio::test]
async fn helper_makes_named_things_and_waits() {
    if std::env::var_os("TKMP_TEST_HELPER").is_none() {
        return;
    }
    mp::init().await.unwrap();
    let tag = std::process::id();
    let segment = format!("tkmp-test-{tag}-tracked-segment");
    let list = format!("tkmp-test-{tag}-tracked-list");
    let child_segment = format!("tkmp-test-{tag}-tracked-child");
    let _shm = SharedMemory::create_named(&segment, 4096).unwrap();
    let _list = ShareableList::create_named(&list, [Item::Int(1)]).unwrap();
    // An anonymous queue with a spilled item queued in it (it outlives its putter, but not
    // the whole tree).
    let queue = Queue::<Vec<u8>>::builder()
        .capacity(4096)
        .maxsize(1)
        .build()
        .unwrap();
    queue.put(vec![1; 100_000]).await.unwrap();
    let _child = mp::Process::spawn(
        blocked_spilling_putter,
        (queue.clone(), child_segment.clone()),
    )
    .unwrap();
    let prefix = mp::test_hooks::queue_spill_prefix(&queue);
    while !std::path::Path::new(&format!("/dev/shm/{child_segment}")).exists()
        || spill_entries(&prefix).len() < 2
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("NAMES {segment} {list} {child_segment} {prefix}");
    std::future::pending::<()>().await;
}

fn spill_entries(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Regression: every SIGKILL of a top-level process left its named segments in /dev/shm, and
/// the spilled items of its anonymous queues, and a putter killed while waiting with a spilled
/// item left that segment for good.
#[tokio::test]
async fn sigkill_of_the_top_level_process_leaves_nothing_in_dev_shm() -> mp::Result<()> {
    let mut cmd = support::helper_command("helper_makes_named_things_and_waits")?;
    // Its own process tree, with its own tracker, as a program started from a shell.
    cmd.env_remove("TOKIO_MULTIPROCESSING_TRACKER")
        .stdout(std::process::Stdio::piped());
    let mut helper = cmd.spawn()?;
    let mut lines = tokio::io::BufReader::new(helper.stdout.take().unwrap()).lines();
    let names = tokio::time::timeout(LIVENESS, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(names) = line.strip_prefix("NAMES ") {
                return Ok(names.to_owned());
            }
        }
        Err(std::io::Error::other("the helper ended early"))
    })
    .await
    .expect("the helper reports its names")?;
    let names: Vec<&str> = names.split(' ').collect();
    let (named, prefix) = (&names[..3], names[3]);
    for name in named {
        assert!(std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    }
    assert_eq!(
        spill_entries(prefix).len(),
        2,
        "one queued, one in a putter's hand"
    );

    helper.start_kill()?;
    helper.wait().await?;
    assert!(
        support::eventually(|| {
            named
                .iter()
                .all(|name| !std::path::Path::new(&format!("/dev/shm/{name}")).exists())
                && spill_entries(prefix).is_empty()
        }),
        "left in /dev/shm: {:?} {:?}",
        named
            .iter()
            .filter(|n| std::path::Path::new(&format!("/dev/shm/{n}")).exists())
            .collect::<Vec<_>>(),
        spill_entries(prefix)
    );
    Ok(())
}
