//! Timings the node reports to an observer (the gateway's metrics).
//!
//! The node measures; whoever watches decides what to do with the numbers.
//! An observer is called on the thread that did the work (a blocking-pool
//! thread for erasure coding), so it must be quick and must not block:
//! recording into a histogram is the intended use.

use std::sync::Arc;
use std::time::Duration;

use crate::Node;

/// What was timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timing {
    /// Reed-Solomon encoding of one chunk into its k+m shards.
    ErasureEncode,
    /// Decoding one chunk from k shards (verification of every shard and of
    /// the result included).
    ErasureDecode,
    /// One DHT provider lookup (`find_providers`), answered or timed out.
    DhtLookup,
}

/// Receives timings. Cheap to clone.
pub type Observer = Arc<dyn Fn(Timing, Duration) + Send + Sync>;

impl Node {
    /// Sets the observer that receives this node's timings. Only the first
    /// call has an effect; returns whether this one did.
    pub fn set_observer(&self, observer: Observer) -> bool {
        self.inner.observer.set(observer).is_ok()
    }

    /// The observer, if one is set.
    pub(crate) fn observer(&self) -> Option<Observer> {
        self.inner.observer.get().cloned()
    }
}

/// Reports `elapsed` to `observer`, if any.
pub(crate) fn report(observer: &Option<Observer>, what: Timing, elapsed: Duration) {
    if let Some(o) = observer {
        o(what, elapsed);
    }
}
