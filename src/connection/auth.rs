//! The authkey handshake: an HMAC-SHA256 challenge in each direction, in the form CPython ≥ 3.12
//! uses (`Lib/multiprocessing/connection.py`: `deliver_challenge` / `answer_challenge`).
//!
//! ```text
//! challenger → #CHALLENGE#{sha256}<40 random bytes>
//! answerer   → {sha256}<HMAC-SHA256(key, "{sha256}" + random bytes)>
//! challenger → #WELCOME#  or  #FAILURE#
//! ```
//!
//! The listener challenges first, then answers the client's challenge. Replies longer than 256
//! bytes are refused, and digests are compared in constant time.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::frame::Frame;
use super::read_side::ReadSide;
use super::write_side::WriteSide;
use crate::sys;
use crate::{Error, Result};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const DIGEST: &[u8] = b"{sha256}";
const NONCE_LEN: usize = 40;
/// CPython reads handshake messages with `recv_bytes(256)`.
pub(crate) const MAX_REPLY: usize = 256;

fn hmac(key: &[u8], message: &[u8]) -> Result<Hmac> {
    let mut mac = Hmac::new_from_slice(key).map_err(|_| Error::Auth)?;
    mac.update(message);
    Ok(mac)
}

type Hmac = hmac::Hmac<Sha256>;

async fn recv_small(reader: &mut ReadSide) -> Result<Vec<u8>> {
    let Frame { payload, .. } = reader.recv().await.map_err(|e| match e {
        Error::TooLarge { .. } => Error::Auth,
        e => e,
    })?;
    if payload.len() > MAX_REPLY {
        return Err(Error::Auth);
    }
    Ok(payload)
}

/// Sends a challenge and checks the answer.
pub(crate) async fn challenge(key: &[u8], reader: &mut ReadSide, writer: &WriteSide) -> Result<()> {
    let mut nonce = [0u8; NONCE_LEN];
    sys::random_bytes(&mut nonce)?;
    let mut message = DIGEST.to_vec();
    message.extend_from_slice(&nonce);
    let mut out = CHALLENGE.to_vec();
    out.extend_from_slice(&message);
    writer.send(&out, Vec::new()).await?;

    let reply = recv_small(reader).await?;
    let ok = reply.strip_prefix(DIGEST).is_some_and(|digest| {
        hmac(key, &message).is_ok_and(|mac| mac.verify_slice(digest).is_ok())
    });
    writer
        .send(if ok { WELCOME } else { FAILURE }, Vec::new())
        .await?;
    if ok { Ok(()) } else { Err(Error::Auth) }
}

/// Answers a challenge and waits for the verdict.
pub(crate) async fn answer(key: &[u8], reader: &mut ReadSide, writer: &WriteSide) -> Result<()> {
    let message = recv_small(reader).await?;
    let message = message.strip_prefix(CHALLENGE).ok_or(Error::Auth)?;
    if !message.starts_with(DIGEST) {
        // Only the SHA-256 form is spoken; the legacy MD5 form is refused.
        return Err(Error::Auth);
    }
    let digest = hmac(key, message)?.finalize().into_bytes();
    let mut reply = DIGEST.to_vec();
    reply.extend_from_slice(&digest);
    writer.send(&reply, Vec::new()).await?;
    match recv_small(reader).await?.as_slice() {
        WELCOME => Ok(()),
        _ => Err(Error::Auth),
    }
}
