//! What can go wrong talking to the network, said so the caller knows what to do.

use datamesh_core::Cid;
use libp2p::PeerId;

/// Errors of the network layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// No answer within the request timeout.
    #[error("the peer did not answer in time; retry, or ask another peer")]
    Timeout,
    /// No connection to the peer could be made or kept.
    #[error("the peer is unreachable (dial failed or the connection dropped); ask another peer")]
    PeerUnreachable,
    /// The peer refused the request.
    #[error("the peer refused: {0}")]
    Refused(String),
    /// The peer sent bytes that do not match their CID; it has been struck.
    #[error("peer {peer} sent data that does not match {cid}; it was counted against the peer, fetch from another")]
    Corrupt {
        /// What was asked for.
        cid: Cid,
        /// Who sent the wrong bytes.
        peer: PeerId,
    },
    /// The peer (or the DHT) does not have it.
    #[error("not found on the peer; try another holder")]
    NotFound,
    /// The peer broke the protocol, or does not speak it.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Too many requests or queries are already waiting.
    #[error("the network layer is at its limit of requests in flight; retry shortly")]
    Busy,
    /// The network could not start with this configuration.
    #[error("network configuration: {0}")]
    Config(String),
    /// The network actor has stopped.
    #[error("the network layer has shut down")]
    Shutdown,
}
