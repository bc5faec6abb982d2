//! The authkey handshake of CPython's `multiprocessing.connection`, in both directions.
//!
//! Verified against CPython 3.11.7 (run here as a peer; the legacy HMAC-MD5 form) and written
//! from the 3.12+ source of `Lib/multiprocessing/connection.py` (`deliver_challenge`,
//! `answer_challenge`, `_create_response`, `_verify_challenge`):
//!
//! ```text
//! challenger → #CHALLENGE#{sha256}<40 random bytes>
//! answerer   → {sha256}<HMAC-SHA256(key, "{sha256}" + random bytes)>
//! challenger → #WELCOME#  or  #FAILURE#
//! ```
//!
//! The listener challenges first, then answers the client's challenge. CPython ≤ 3.11 speaks a
//! legacy form: a 20-byte challenge without prefix, answered with a raw 16-byte HMAC-MD5 (and a
//! 3.11 answerer replies to our prefixed challenge with a raw HMAC-MD5 of the whole message).
//! MD5 is accepted only when the Listener or Client opts in. Replies over 256 bytes are refused,
//! and digests are compared in constant time.

use hmac::{KeyInit, Mac};
use md5::Md5;
use sha2::Sha256;

use super::frame::Frame;
use super::read_side::ReadSide;
use super::write_side::WriteSide;
use crate::sys;
use crate::{Error, Result};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const SHA256: &[u8] = b"sha256";
const MD5: &[u8] = b"md5";
const NONCE_LEN: usize = 40;
/// CPython's legacy lengths: a 20-byte challenge, a 16-byte MD5 answer.
const LEGACY_CHALLENGE_LEN: usize = 20;
const LEGACY_ANSWER_LEN: usize = 16;
/// CPython reads handshake messages with `recv_bytes(256)`.
pub(crate) const MAX_REPLY: usize = 256;
/// The longest digest name CPython allows (`sha3_256`), for finding the closing brace.
const MAX_DIGEST_NAME: usize = 8;

/// Which MACs a handshake accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuthOptions {
    /// Accept and produce HMAC-MD5 (CPython ≤ 3.11). Weaker; off unless asked for.
    pub(crate) allow_md5: bool,
}

fn mac(digest: &[u8], key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    match digest {
        SHA256 => {
            let mut m = hmac::Hmac::<Sha256>::new_from_slice(key).map_err(|_| Error::Auth)?;
            m.update(message);
            Ok(m.finalize().into_bytes().to_vec())
        }
        MD5 => {
            let mut m = hmac::Hmac::<Md5>::new_from_slice(key).map_err(|_| Error::Auth)?;
            m.update(message);
            Ok(m.finalize().into_bytes().to_vec())
        }
        _ => Err(Error::Auth),
    }
}

fn verify(digest: &[u8], key: &[u8], message: &[u8], expected: &[u8]) -> bool {
    match digest {
        SHA256 => hmac::Hmac::<Sha256>::new_from_slice(key).is_ok_and(|mut m| {
            m.update(message);
            m.verify_slice(expected).is_ok()
        }),
        MD5 => hmac::Hmac::<Md5>::new_from_slice(key).is_ok_and(|mut m| {
            m.update(message);
            m.verify_slice(expected).is_ok()
        }),
        _ => false,
    }
}

/// CPython's `_get_digest_name_and_payload`: `("", message)` for the legacy lengths, else the
/// name inside a leading `{...}` and what follows it.
fn digest_name_and_payload(message: &[u8]) -> Option<(&[u8], &[u8])> {
    if message.len() == LEGACY_CHALLENGE_LEN || message.len() == LEGACY_ANSWER_LEN {
        return Some((b"", message));
    }
    let rest = message.strip_prefix(b"{")?;
    let close = rest
        .iter()
        .take(MAX_DIGEST_NAME + 1)
        .position(|&b| b == b'}')?;
    Some((&rest[..close], &rest[close + 1..]))
}

/// Receives a handshake message, refusing one over [`MAX_REPLY`] from its header on: an
/// unauthenticated peer cannot make us buffer more than that.
async fn recv_small(reader: &mut ReadSide) -> Result<Vec<u8>> {
    let limit = reader.max_frame();
    reader.set_max_frame(MAX_REPLY);
    let received = reader.recv().await;
    reader.set_max_frame(limit);
    let Frame { payload, .. } = received.map_err(|e| match e {
        Error::TooLarge { .. } => Error::Auth,
        e => e,
    })?;
    if payload.len() > MAX_REPLY {
        return Err(Error::Auth);
    }
    Ok(payload)
}

/// Sends a challenge and checks the answer (CPython's `deliver_challenge`).
pub(crate) async fn challenge(
    key: &[u8],
    options: AuthOptions,
    reader: &mut ReadSide,
    writer: &WriteSide,
) -> Result<()> {
    let mut nonce = [0u8; NONCE_LEN];
    sys::random_bytes(&mut nonce)?;
    let mut message = b"{sha256}".to_vec();
    message.extend_from_slice(&nonce);
    let mut out = CHALLENGE.to_vec();
    out.extend_from_slice(&message);
    writer.send(&out, Vec::new()).await?;

    let reply = recv_small(reader).await?;
    let ok = match digest_name_and_payload(&reply) {
        // A legacy answerer sends a raw HMAC-MD5 of the whole message.
        Some((b"", mac)) => options.allow_md5 && verify(MD5, key, &message, mac),
        Some((SHA256, mac)) => verify(SHA256, key, &message, mac),
        Some((MD5, mac)) => options.allow_md5 && verify(MD5, key, &message, mac),
        _ => false,
    };
    writer
        .send(if ok { WELCOME } else { FAILURE }, Vec::new())
        .await?;
    if ok { Ok(()) } else { Err(Error::Auth) }
}

/// Answers a challenge and waits for the verdict (CPython's `answer_challenge`).
pub(crate) async fn answer(
    key: &[u8],
    options: AuthOptions,
    reader: &mut ReadSide,
    writer: &WriteSide,
) -> Result<()> {
    let message = recv_small(reader).await?;
    let message = message.strip_prefix(CHALLENGE).ok_or(Error::Auth)?;
    if message.len() < LEGACY_CHALLENGE_LEN {
        return Err(Error::Auth);
    }
    let reply = match digest_name_and_payload(message) {
        // A legacy challenger: raw HMAC-MD5, no prefix.
        Some((b"", _)) if options.allow_md5 => mac(MD5, key, message)?,
        Some((name @ (SHA256 | MD5), _)) if name == SHA256 || options.allow_md5 => {
            let mut reply = format!("{{{}}}", String::from_utf8_lossy(name)).into_bytes();
            reply.extend_from_slice(&mac(name, key, message)?);
            reply
        }
        _ => return Err(Error::Auth),
    };
    writer.send(&reply, Vec::new()).await?;
    match recv_small(reader).await?.as_slice() {
        WELCOME => Ok(()),
        _ => Err(Error::Auth),
    }
}
