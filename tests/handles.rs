//! Handles reaching other processes: (a) as spawn arguments, (b) inside messages on a Unix socket
//! with their fds in `SCM_RIGHTS` (a child's result travels that way), and (c) through
//! `mp::pass` to a program started with `tokio::process::Command`.

mod support;

use serde::{Deserialize, Serialize};
use tokio_multiprocessing::{self as mp, Error, Item, ShareableList, SharedMemory};

#[derive(Serialize, Deserialize)]
struct Workspace {
    label: String,
    scratch: Vec<SharedMemory>,
    table: ShareableList,
}

async fn use_workspace(ws: Workspace) -> (String, usize) {
    for (i, shm) in ws.scratch.iter().enumerate() {
        shm.write_at(0, &[i as u8 + 1]).unwrap();
    }
    ws.table.set(0, ws.label.clone()).unwrap();
    (ws.label, ws.scratch.len())
}

#[tokio::test]
async fn nested_handles_cross_as_arguments() -> mp::Result<()> {
    mp::init().await?;
    let scratch: Vec<SharedMemory> = (0..5)
        .map(|_| SharedMemory::create(16))
        .collect::<Result<_, _>>()?;
    let table = ShareableList::create([Item::from("........")])?;
    let ws = Workspace {
        label: "ws-1".into(),
        scratch: scratch.clone(),
        table: table.clone(),
    };
    let (label, n) = mp::Process::spawn(use_workspace, ws)?.join().await?;
    assert_eq!((label.as_str(), n), ("ws-1", 5));
    for (i, shm) in scratch.iter().enumerate() {
        assert_eq!(shm.to_vec()?[0], i as u8 + 1);
    }
    assert_eq!(table.get(0)?, Item::Str("ws-1".into()));
    Ok(())
}

/// Creates segments in the child and sends them back in its result message.
async fn make_segments(n: usize) -> (Vec<SharedMemory>, ShareableList) {
    let segments = (0..n)
        .map(|i| {
            let shm = SharedMemory::create(64).unwrap();
            shm.write_at(0, format!("segment {i}").as_bytes()).unwrap();
            shm
        })
        .collect();
    let list = ShareableList::create([Item::Float(0.5), Item::from("made in the child")]).unwrap();
    (segments, list)
}

#[tokio::test]
async fn handles_come_back_in_a_message_with_their_fds() -> mp::Result<()> {
    mp::init().await?;
    let (segments, list) = mp::Process::spawn(make_segments, 3)?.join().await?;
    assert_eq!(segments.len(), 3);
    for (i, shm) in segments.iter().enumerate() {
        let text = format!("segment {i}");
        assert_eq!(&shm.to_vec()?[..text.len()], text.as_bytes());
    }
    // The child is gone; the memory lives on because we hold the fds.
    assert_eq!(
        list.to_vec()?,
        [Item::Float(0.5), Item::Str("made in the child".into())]
    );
    Ok(())
}

#[test]
fn handles_refuse_to_serialise_outside_the_crate() {
    let shm = SharedMemory::create(8).unwrap();
    let err = postcard::to_allocvec(&shm).unwrap_err().to_string();
    assert!(!err.is_empty());
}

/// The "any program" of (c): this test binary started by a plain `Command`, filtered to this
/// test, which only acts when the parent set the helper variable.
#[test]
fn helper_takes_inherited_handles() {
    if std::env::var_os("TKMP_TEST_HELPER").is_none() {
        return;
    }
    let shm: SharedMemory = mp::inherited("scratch").expect("inherited segment");
    let list: ShareableList = mp::inherited("table").expect("inherited list");
    shm.write_at(0, b"seen by the command").unwrap();
    list.set(0, 99i64).unwrap();
    // Each handle can be taken once, and unknown names are reported.
    assert!(matches!(
        mp::inherited::<SharedMemory>("scratch"),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        mp::inherited::<SharedMemory>("nothing_here"),
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn handles_pass_to_a_command_child() -> mp::Result<()> {
    let shm = SharedMemory::create(64)?;
    let list = ShareableList::create([0i64])?;
    let mut cmd = support::helper_command("helper_takes_inherited_handles")?;
    mp::pass(&mut cmd, "scratch", &shm)?;
    mp::pass(&mut cmd, "table", &list)?;
    assert!(matches!(
        mp::pass(&mut cmd, "bad name!", &shm),
        Err(Error::InvalidArgument(_))
    ));
    let status = cmd.status().await?;
    assert!(status.success(), "helper failed: {status}");
    assert_eq!(&shm.to_vec()?[..19], b"seen by the command");
    assert_eq!(list.get(0)?, Item::Int(99));
    Ok(())
}

#[tokio::test]
async fn passed_fds_reach_only_their_command() -> mp::Result<()> {
    // A sibling started at the same time without `pass` sees none of the handle's fds.
    let shm = SharedMemory::create(64)?;
    let mut with = tokio::process::Command::new("sleep");
    with.arg("0");
    mp::pass(&mut with, "scratch", &shm)?;
    let listing = tokio::process::Command::new("ls")
        .arg("-l")
        .arg("/proc/self/fd")
        .output()
        .await?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        !listing.contains("memfd:tokio-multiprocessing"),
        "leaked into an unrelated child:\n{listing}"
    );
    with.status().await?;
    Ok(())
}

/// The "any program" for a connection passed with `mp::pass`.
#[tokio::test]
async fn helper_talks_over_an_inherited_connection() {
    if std::env::var_os("TKMP_TEST_HELPER").is_none() {
        return;
    }
    let mut conn: mp::Connection<String> = mp::inherited("conn").expect("inherited connection");
    let question = conn.recv().await.unwrap();
    conn.send(&format!(
        "{question} -> answered by pid {}",
        std::process::id()
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn a_connection_passes_to_a_command_child() -> mp::Result<()> {
    let (mut ours, theirs) = mp::Pipe::<String>::duplex()?;
    let mut cmd = support::helper_command("helper_talks_over_an_inherited_connection")?;
    mp::pass(&mut cmd, "conn", &theirs)?;
    drop(theirs);
    let mut child = cmd.spawn()?;
    drop(cmd);
    ours.send(&"why".to_string()).await?;
    let answer = ours.recv().await?;
    assert!(answer.starts_with("why -> answered by pid"), "{answer}");
    assert!(child.wait().await?.success());
    Ok(())
}
