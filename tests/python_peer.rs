//! Talking to a real CPython through `multiprocessing.connection` (`tests/python/peer.py`).
//!
//! The machine's `python3` is the peer; without one, each test says so and passes.
//! CPython 3.11 speaks the legacy HMAC-MD5 handshake, so these listeners and clients opt in to
//! it with `allow_md5(true)`; with the default (SHA-256 only) a 3.11 peer is refused, which one
//! test checks.

use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_multiprocessing::connection::{Address, Client, Listener};
use tokio_multiprocessing::{self as mp, Error};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/peer.py");
const KEY: &[u8] = b"secret key";

fn have_python() -> bool {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: no python3 on this machine");
    }
    ok
}

fn python(mode: &str, address: &str, key: &[u8]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args([SCRIPT, mode, address, std::str::from_utf8(key).unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn python_address(address: &Address) -> String {
    match address {
        Address::Tcp(a) => format!("tcp:{}:{}", a.ip(), a.port()),
        Address::Unix(p) => format!("unix:{}", p.display()),
        Address::Abstract(_) => unreachable!("not used with Python"),
    }
}

/// What Python's client sends: a dict of plain values.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    name: String,
    values: Vec<f64>,
    count: i64,
    ok: bool,
    note: Option<String>,
    pair: (i64, i64),
    blob: bytes::Bytes,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Reply {
    total: f64,
    name_upper: String,
}

/// Messages either way on one connection: plain dicts on the Python side.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Msg {
    Job(Job),
    Reply(Reply),
    Out { name: String, values: Vec<f64> },
}

async fn listener(address: Address, allow_md5: bool) -> mp::Result<Listener<Msg>> {
    Listener::builder(address)
        .authkey(Some(KEY))
        .python_compatible(true)
        .allow_md5(allow_md5)
        .max_frame(1 << 20)
        .bind()
        .await
}

#[tokio::test]
async fn a_python_client_talks_to_a_rust_listener_over_tcp_and_unix() -> mp::Result<()> {
    if !have_python() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    for address in [
        Address::Tcp("127.0.0.1:0".parse().unwrap()),
        Address::Unix(dir.path().join("py.sock")),
    ] {
        let mut listener = listener(address, true).await?;
        let child = python("client", &python_address(listener.local_addr()), KEY).spawn()?;
        let mut conn = listener.accept().await?;
        assert_eq!(&conn.recv_bytes().await?[..], b"raw \x00\xff bytes");
        let Msg::Job(job) = conn.recv().await? else {
            panic!("expected a job")
        };
        assert_eq!(job.values, [1.5, 2.5]);
        assert_eq!(&job.blob[..], b"\x00\x01\xfe");
        assert_eq!(
            (job.name.as_str(), job.count, job.ok, job.note, job.pair),
            ("job-1", 3, true, None, (4, 5))
        );
        let reply = Reply {
            total: job.values.iter().sum(),
            name_upper: job.name.to_uppercase(),
        };
        conn.send(&Msg::Reply(reply)).await?;
        conn.send_bytes(b"\x00\x01back").await?;
        let out = child.wait_with_output().await?;
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.contains("REPLY {'total': 4.0, 'name_upper': 'JOB-1'}"),
            "{out}"
        );
        assert!(out.contains("BYTES 00016261636b"), "{out}");
    }
    Ok(())
}

#[tokio::test]
async fn python_compatible_rust_peers_use_sha256_by_default() -> mp::Result<()> {
    let mut listener = listener(Address::Tcp("127.0.0.1:0".parse().unwrap()), false).await?;
    let Address::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    let client = tokio::spawn(async move {
        let conn = Client::builder(addr)
            .authkey(Some(KEY))
            .python_compatible(true)
            .connect::<Msg>()
            .await?;
        conn.send(&Msg::Out {
            name: "x".into(),
            values: vec![],
        })
        .await
    });
    let mut conn = listener.accept().await?;
    assert!(matches!(conn.recv().await?, Msg::Out { .. }));
    client.await.unwrap()?;
    // A key mismatch fails both ways here too.
    let bad = tokio::spawn(async move {
        Client::builder(addr)
            .authkey(Some(b"nope"))
            .python_compatible(true)
            .connect::<Msg>()
            .await
            .map(drop)
    });
    assert!(matches!(listener.accept().await, Err(Error::Auth)));
    assert!(matches!(bad.await.unwrap(), Err(Error::Auth)));
    Ok(())
}

#[tokio::test]
async fn a_rust_client_talks_to_a_python_listener() -> mp::Result<()> {
    if !have_python() {
        return Ok(());
    }
    let mut child = python("listener", "tcp:127.0.0.1:0", KEY).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("python started")?
        .unwrap();
    let port: u16 = ready.strip_prefix("READY ").unwrap().parse().unwrap();
    let mut conn = Client::builder(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .authkey(Some(KEY))
        .python_compatible(true)
        .allow_md5(true)
        .connect::<Msg>()
        .await?;
    conn.send(&Msg::Out {
        name: "from rust".into(),
        values: vec![1.0, 2.0, 3.5],
    })
    .await?;
    match conn.recv().await? {
        Msg::Reply(back) => assert_eq!(
            back,
            Reply {
                total: 6.5,
                name_upper: "FROM RUST".into()
            }
        ),
        other => panic!("unexpected {other:?}"),
    }
    conn.send_bytes(b"abc\x00").await?;
    assert_eq!(&conn.recv_bytes().await?[..], b"\x00cba");
    assert!(child.wait().await?.success());
    Ok(())
}

#[tokio::test]
async fn wrong_keys_fail_on_both_sides_and_the_listener_keeps_serving() -> mp::Result<()> {
    if !have_python() {
        return Ok(());
    }
    let mut listener = listener(Address::Tcp("127.0.0.1:0".parse().unwrap()), true).await?;
    let address = python_address(listener.local_addr());
    let bad = python("client", &address, b"wrong key").spawn()?;
    assert!(matches!(listener.accept().await, Err(Error::Auth)));
    let out = bad.wait_with_output().await?;
    assert_eq!(out.status.code(), Some(3), "python saw AuthenticationError");
    // Still serving: a good client gets through.
    let good = python("client", &address, KEY).spawn()?;
    let mut conn = listener.accept().await?;
    conn.recv_bytes().await?;
    drop(conn);
    let _ = good.wait_with_output().await;

    // Without opting in to MD5, CPython 3.11's legacy handshake is refused.
    let mut strict = self::listener(Address::Tcp("127.0.0.1:0".parse().unwrap()), false).await?;
    let legacy = python("client", &python_address(strict.local_addr()), KEY).spawn()?;
    let verdict = strict.accept().await;
    let out = legacy.wait_with_output().await?;
    let version = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys; print(sys.version_info[:2] >= (3, 12))")
        .output()?;
    if String::from_utf8_lossy(&version.stdout).trim() == "False" {
        assert!(matches!(verdict, Err(Error::Auth)), "{verdict:?}");
        assert_eq!(out.status.code(), Some(3));
    }
    Ok(())
}

#[tokio::test]
async fn oversized_and_malformed_frames_from_python_are_errors_not_crashes() -> mp::Result<()> {
    if !have_python() {
        return Ok(());
    }
    for (mode, expect_too_large) in [
        ("oversized", true),
        ("malformed", false),
        ("unmappable", false),
    ] {
        let mut listener = listener(Address::Tcp("127.0.0.1:0".parse().unwrap()), true).await?;
        let child = python(mode, &python_address(listener.local_addr()), KEY).spawn()?;
        let mut conn = listener.accept().await?;
        let result = conn.recv().await;
        if expect_too_large {
            assert!(
                matches!(
                    result,
                    Err(Error::TooLarge {
                        size: 100_000_000,
                        ..
                    })
                ),
                "{result:?}"
            );
        } else {
            assert!(matches!(result, Err(Error::Corrupt(_))), "{result:?}");
        }
        drop(conn);
        let _ = child.wait_with_output().await;
    }
    Ok(())
}

async fn typed_listener<T: Send + 'static>() -> mp::Result<Listener<T>> {
    Listener::builder(Address::Tcp("127.0.0.1:0".parse().unwrap()))
        .authkey(Some(KEY))
        .python_compatible(true)
        .allow_md5(true) // CPython 3.11 answers with HMAC-MD5
        .max_frame(1 << 20)
        .bind()
        .await
}

/// Ordinary Python data: shared references (`[row] * 3`) arrive as three equal values (only
/// true cycles are refused), ints of 2^63 and more fill `u64` and `u128`, and a pickle nested
/// 400,000 deep is an `Err`, not a stack overflow.
#[tokio::test]
async fn python_sends_shared_references_big_ints_and_deep_nesting() -> mp::Result<()> {
    if !have_python() {
        return Ok(());
    }
    let mut listener = typed_listener::<Vec<std::collections::HashMap<String, i64>>>().await?;
    let child = python("shared", &python_address(listener.local_addr()), KEY).spawn()?;
    let mut conn = listener.accept().await?;
    let rows = conn.recv().await?;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|row| row["k"] == 1));
    drop(conn);
    let _ = child.wait_with_output().await;

    let mut listener = typed_listener::<(u64, u64, u128)>().await?;
    let child = python("bigints", &python_address(listener.local_addr()), KEY).spawn()?;
    let mut conn = listener.accept().await?;
    assert_eq!(conn.recv().await?, (1 << 63, u64::MAX, (1u128 << 127) + 5));
    drop(conn);
    let _ = child.wait_with_output().await;

    let mut listener = typed_listener::<Vec<Vec<u8>>>().await?;
    let child = python("deep", &python_address(listener.local_addr()), KEY).spawn()?;
    let mut conn = listener.accept().await?;
    let deep = conn.recv().await;
    assert!(
        matches!(deep, Err(Error::Corrupt(ref m)) if m.contains("deeper")),
        "{deep:?}"
    );
    drop(conn);
    let _ = child.wait_with_output().await;
    Ok(())
}

/// 128-bit integers both ways through a real CPython: Rust pickles them, Python rebuilds them
/// as ints and pickles them back.
#[tokio::test]
async fn python_round_trips_128_bit_ints() -> mp::Result<()> {
    if !have_python() {
        return Ok(());
    }
    type Ints = (u128, i128, i64, u64, Vec<i128>);
    let mut listener = typed_listener::<Ints>().await?;
    let child = python("echo", &python_address(listener.local_addr()), KEY).spawn()?;
    let mut conn = listener.accept().await?;
    let sent: Ints = (
        u128::MAX,
        i128::MIN,
        -5,
        u64::MAX,
        vec![1 << 100, -(1 << 90), 0],
    );
    conn.send(&sent).await?;
    assert_eq!(conn.recv().await?, sent);
    drop(conn);
    let _ = child.wait_with_output().await;
    Ok(())
}
