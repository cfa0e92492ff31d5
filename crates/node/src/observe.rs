//! Timings the node reports to an observer (the gateway's metrics).
//!
//! The node measures; whoever watches decides what to do with the numbers.
//! An observer is called on the thread that did the work (a blocking-pool
//! thread for erasure coding), so it must be quick and must not block:
//! recording into a histogram is the intended use.

use std::sync::Arc;
use std::time::Duration;

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

/// Reports `elapsed` to `observer`, if any.
pub(crate) fn report(observer: &Option<Observer>, what: Timing, elapsed: Duration) {
    if let Some(o) = observer {
        o(what, elapsed);
    }
}
