//! What a parent tells a child it starts, and the child's answer.

use serde::{Deserialize, Serialize};

/// The environment variable naming the child's end of the bootstrap socket: `<parent pid>:<fd>`.
pub(crate) const ENV: &str = "TOKIO_MULTIPROCESSING_CHILD";

/// Largest bootstrap or result frame (arguments and results are meant to be modest; large data
/// belongs in shared memory or a queue).
pub(crate) const MAX_FRAME: usize = 1 << 30;

/// First frame on the bootstrap socket, parent → child. Its fds belong to `args`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bootstrap {
    /// The entry trampoline, as an offset from the anchor function (see `sys::code_address`).
    pub(crate) entry: i64,
    /// Device and inode of the parent's executable; the child must run the same file.
    pub(crate) exe: (u64, u64),
    /// The child's `Process` name.
    pub(crate) name: String,
    /// The parent's name and pid, for `parent_process()`.
    pub(crate) parent_name: String,
    /// The test-harness filter the child was started with, so its own children re-run it too.
    pub(crate) test: Option<String>,
    /// The serialised arguments.
    pub(crate) args: Vec<u8>,
}

/// The only frame child → parent. Its fds belong to `Returned`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The entry returned this serialised value.
    Returned(Vec<u8>),
    /// The entry panicked with this message.
    Panicked(String),
    /// The entry could not be started (arguments failed validation, wrong executable, ...).
    Failed(String),
}
