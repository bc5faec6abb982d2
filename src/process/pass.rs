//! [`pass`] / [`inherited`]: handing handles to a program started with `tokio::process::Command`.

use std::os::fd::AsRawFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result, handle, sys};

const PREFIX: &str = "TOKIO_MULTIPROCESSING_HANDLE_";

/// Hands `handle` to the program `cmd` will start, under `name`; the program gets it back with
/// [`inherited`].
///
/// The handle's file descriptors are inherited by exactly that child (nothing else our process
/// starts meanwhile sees them), and its description travels in an environment variable. Any
/// serde value containing handles works, so several handles can go as one struct. Call it
/// before `cmd.spawn()`; the fds stay open as long as `cmd` lives.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a name that is not 1–64 ASCII letters, digits or `_`, or a
/// value that cannot be serialised.
///
/// # Examples
///
/// ```no_run
/// # #![allow(dead_code)]
/// use tokio_multiprocessing as mp;
///
/// # async fn f() -> mp::Result<()> {
/// let shm = mp::SharedMemory::create(4096)?;
/// let mut cmd = tokio::process::Command::new("./worker");
/// mp::pass(&mut cmd, "scratch", &shm)?;
/// let status = cmd.status().await?;
/// assert!(status.success());
/// // in ./worker: let shm: mp::SharedMemory = mp::inherited("scratch")?;
/// # Ok(())
/// # }
/// ```
pub fn pass<H: Serialize + ?Sized>(
    cmd: &mut tokio::process::Command,
    name: &str,
    handle: &H,
) -> Result<()> {
    check_name(name)?;
    let (bytes, fds) = handle::encode(handle)?;
    let numbers: Vec<String> = fds.iter().map(|fd| fd.as_raw_fd().to_string()).collect();
    let value = format!("{}:{}", numbers.join(","), hex(&bytes));
    cmd.env(format!("{PREFIX}{name}"), value);
    if let Some(address) = crate::shm::tracker::address() {
        cmd.env(crate::shm::tracker::ADDRESS_VAR, address);
    }
    sys::spawn::inherit_fds(cmd, fds);
    Ok(())
}

/// Takes the handle a parent passed to this process under `name` with [`pass`].
///
/// Each handle can be taken once per process.
///
/// # Errors
///
/// [`Error::NotFound`] when nothing was passed under `name`; [`Error::Corrupt`] when the passed
/// value or its fds fail validation or were taken before; [`Error::InvalidArgument`] for a bad
/// name.
pub fn inherited<H: DeserializeOwned>(name: &str) -> Result<H> {
    check_name(name)?;
    let var = format!("{PREFIX}{name}");
    let value =
        std::env::var(&var).map_err(|_| Error::NotFound(format!("handle {name} (no {var})")))?;
    let bad = || Error::Corrupt(format!("malformed {var}"));
    let (numbers, payload) = value.split_once(':').ok_or_else(bad)?;
    let mut fds = Vec::new();
    for n in numbers.split(',').filter(|n| !n.is_empty()) {
        let n: i32 = n.parse().map_err(|_| bad())?;
        fds.push(sys::spawn::take_inherited(n).map_err(|e| Error::Corrupt(format!("{var}: {e}")))?);
    }
    let bytes = unhex(payload).ok_or_else(bad)?;
    handle::decode(&bytes, fds)
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(Error::InvalidArgument(format!(
            "handle name {name:?} must be 1 to 64 ASCII letters, digits or '_'"
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        let data = [0u8, 1, 0xab, 0xff];
        assert_eq!(super::unhex(&super::hex(&data)).unwrap(), data);
        assert!(super::unhex("abc").is_none());
        assert!(super::unhex("zz").is_none());
    }
}
