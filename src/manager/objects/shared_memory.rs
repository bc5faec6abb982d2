//! Segments a manager creates and tracks ([`SharedMemoryManager`](crate::manager::SharedMemoryManager),
//! Python's `multiprocessing.managers.SharedMemoryManager`).
//!
//! The manager creates each segment by name and keeps it until it shuts down; clients open it
//! by name. The segments go with the manager, however it ends: its shutdown drops them, a
//! manager whose starting process died shuts down, and a manager killed outright has them
//! unlinked by the resource tracker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::builtin_proxy;
use crate::manager::Manager;
use crate::manager::served::{Call, Reply, Served, ready, unknown_method};
use crate::manager::wire::encode;
use crate::shm::{Item, ShareableList, SharedMemory};
use crate::{Error, Result};

pub(crate) const TYPE_NAME: &str = "mp.segment";

/// What to create.
#[derive(Serialize, Deserialize)]
enum SegmentInit {
    Memory { size: u64 },
    List { items: Vec<Item> },
}

struct Tracked {
    name: String,
    /// Kept, not read: dropping it unlinks the name.
    _segment: Box<dyn std::any::Any + Send + Sync>,
}

pub(crate) fn construct(init: &[u8]) -> Result<Arc<dyn Served>> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut tag = [0u8; 4];
    crate::sys::random_bytes(&mut tag)?;
    let name = format!(
        "tokio-mp-smm-{}-{}-{:08x}",
        crate::sys::getpid(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        u32::from_ne_bytes(tag)
    );
    let segment: Box<dyn std::any::Any + Send + Sync> = match crate::manager::wire::decode(init)? {
        SegmentInit::Memory { size } => {
            let size = usize::try_from(size)
                .map_err(|_| Error::InvalidArgument(format!("{size} bytes is too large")))?;
            Box::new(SharedMemory::create_named(&name, size)?)
        }
        SegmentInit::List { items } => Box::new(ShareableList::create_named(&name, items)?),
    };
    Ok(Arc::new(Tracked {
        name,
        _segment: segment,
    }))
}

impl Served for Tracked {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        ready(match call.method.as_str() {
            "name" => encode(&self.name),
            other => Err(unknown_method("segment", other)),
        })
    }
}

builtin_proxy!(
    /// A segment a manager tracks (internal: clients get the segment itself).
    SegmentProxy,
    TYPE_NAME
);

impl Manager {
    /// Makes a segment in the manager, pins it there until shutdown, and returns its name.
    async fn tracked_segment(&self, init: SegmentInit) -> Result<String> {
        let proxy: SegmentProxy = self.create_builtin(&init).await?;
        let name: String = proxy.core.call("name", &()).await?;
        self.publish(&format!("{TYPE_NAME}.{name}"), &proxy).await?;
        Ok(name)
    }

    /// A new shared memory segment of `size` bytes, created and tracked by the manager and
    /// unlinked when it shuts down (Python's `smm.SharedMemory(size)`). Pass it to other
    /// processes as any [`SharedMemory`]; it does not keep the manager's copy alive.
    ///
    /// # Errors
    ///
    /// As [`SharedMemory::create_named`] (in the manager) and [`SharedMemory::open`] (here);
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a segment made for a dropped call stays in the manager until it shuts
    /// down.
    pub async fn shared_memory(&self, size: usize) -> Result<SharedMemory> {
        let name = self
            .tracked_segment(SegmentInit::Memory { size: size as u64 })
            .await?;
        SharedMemory::open(&name)
    }

    /// A new [`ShareableList`] holding `items`, created and tracked by the manager and
    /// unlinked when it shuts down (Python's `smm.ShareableList(sequence)`).
    ///
    /// # Errors
    ///
    /// As [`ShareableList::create_named`] (in the manager) and [`ShareableList::open`] (here);
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// As [`shared_memory`](Self::shared_memory).
    pub async fn shareable_list<I: Into<Item>>(
        &self,
        items: impl IntoIterator<Item = I>,
    ) -> Result<ShareableList> {
        let items = items.into_iter().map(Into::into).collect();
        let name = self.tracked_segment(SegmentInit::List { items }).await?;
        ShareableList::open(&name)
    }
}
