//! Holder ids (how location records name nodes, [`HolderId`]) and the
//! network's [`PeerId`]s: the two conversions, in one place.

use datamesh_core::HolderId;
use datamesh_net::PeerId;

/// The id a location record names `peer` by.
pub(crate) fn holder_id(peer: &PeerId) -> HolderId {
    HolderId::from(peer.to_bytes())
}

/// The peer a holder id names; `None` when the bytes are no peer id (a
/// record from a newer or broken writer).
pub(crate) fn peer_of(holder: &HolderId) -> Option<PeerId> {
    PeerId::from_bytes(holder.as_slice()).ok()
}
