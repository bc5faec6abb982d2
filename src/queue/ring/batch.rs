//! [`Batch`]: items taken at once, copied out back to back into one buffer.

/// Items taken under one lock acquisition, copied out back to back into one buffer.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(super) bytes: Vec<u8>,
    /// How many items `bytes` holds.
    pub(super) count: usize,
    /// Where the first item is (kept apart so a batch of one allocates nothing more).
    pub(super) first: std::ops::Range<usize>,
    /// Where each later item is.
    pub(super) later: Vec<std::ops::Range<usize>>,
}

impl Batch {
    pub(super) fn push(&mut self, item: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(item);
        self.add(start..self.bytes.len());
    }

    /// Records `range` of `bytes` as the next item.
    pub(super) fn add(&mut self, range: std::ops::Range<usize>) {
        if self.count == 0 {
            self.first = range;
        } else {
            self.later.push(range);
        }
        self.count += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Where the batch stands, to [`reset`](Self::reset) to.
    pub(super) fn mark(&self) -> (usize, usize) {
        (self.bytes.len(), self.count)
    }

    /// Forgets what was added since `mark`.
    pub(super) fn reset(&mut self, (len, count): (usize, usize)) {
        self.bytes.truncate(len);
        self.count = count;
        self.later.truncate(count.saturating_sub(1));
    }

    fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        std::iter::once(self.first.clone())
            .chain(self.later.iter().cloned())
            .take(self.count)
    }

    /// The items, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.ranges().map(|r| &self.bytes[r])
    }

    /// The items as `Bytes` sharing one allocation.
    pub(crate) fn into_bytes(self) -> Vec<bytes::Bytes> {
        let ranges: Vec<_> = self.ranges().collect();
        let all = bytes::Bytes::from(self.bytes);
        ranges.into_iter().map(|r| all.slice(r)).collect()
    }
}
