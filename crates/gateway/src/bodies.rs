//! The node's answers as the API's types ([`datamesh_api`]). Each
//! conversion destructures the node's struct whole, so a field added there
//! fails to compile here until the API says whether it shows it.
//!
//! The API's `DrainProgress`, `GcReport`, `RepairTotals`, `FileStat`,
//! `StoreStats` and the rest mirror the node's and the store's structs on
//! purpose, however alike they look: the API's are the HTTP contract (the
//! CLI, scripts and the OpenAPI document read them), the node's and the
//! store's are internals, free to change. These functions are the only
//! place the two meet, so an internal rename or a new field moves nothing
//! on the wire until someone decides here, and in `crates/api`, that it
//! should.

use datamesh_api as api;

/// `GET /v1/status`.
pub(crate) fn status(s: datamesh_node::NodeStatus) -> api::NodeStatus {
    let datamesh_node::NodeStatus {
        node_id,
        peer_id,
        version,
        data_dir,
        store,
        peers,
        uploads,
        protection,
        repair,
        audit,
        draining,
        workers,
    } = s;
    let datamesh_store::StoreStats {
        shards,
        shard_bytes,
        manifests,
        pins,
        capacity_bytes,
        used_bytes,
        manifest_bytes,
        state_records,
        state_bytes,
    } = store;
    let datamesh_node::repair::RepairTotals {
        passes,
        shards_rebuilt,
        bytes_rebuilt,
        chunks_degraded_last,
        chunks_unrecoverable_last,
        rebuilt_for_peers,
    } = repair;
    let repair = api::RepairTotals {
        passes,
        shards_rebuilt,
        bytes_rebuilt,
        chunks_degraded_last,
        chunks_unrecoverable_last,
        rebuilt_for_peers,
    };
    let datamesh_node::audit::AuditTotals { passes, passed, failed, unanswered } = audit;
    api::NodeStatus {
        node_id,
        peer_id,
        version: version.to_string(),
        data_dir: data_dir.to_string_lossy().into_owned(),
        store: api::StoreStats {
            shards,
            shard_bytes,
            manifests,
            pins,
            capacity_bytes,
            used_bytes,
            manifest_bytes,
            state_records,
            state_bytes,
        },
        peers,
        uploads,
        protection: protection.to_string(),
        repair,
        audit: api::AuditTotals { passes, passed, failed, unanswered },
        draining,
        workers: workers.into_iter().map(worker).collect(),
    }
}

fn worker(w: datamesh_node::workers::WorkerInfo) -> api::WorkerInfo {
    use datamesh_node::workers::WorkerState as S;
    let datamesh_node::workers::WorkerInfo { name, state, doing, since_secs, restarts, last_panic } = w;
    api::WorkerInfo {
        name: name.to_string(),
        state: match state {
            S::Running => api::WorkerState::Running,
            S::Restarting => api::WorkerState::Restarting,
            S::Stopping => api::WorkerState::Stopping,
            S::Stopped => api::WorkerState::Stopped,
        },
        doing,
        since_secs,
        restarts,
        last_panic,
    }
}

/// `POST /v1/gc`, and the `gc` of a delete.
pub(crate) fn gc(r: datamesh_store::GcReport) -> api::GcReport {
    let datamesh_store::GcReport {
        shards_removed,
        manifests_removed,
        bytes_freed,
        pins_without_manifest,
        aliases_removed,
    } = r;
    api::GcReport { shards_removed, manifests_removed, bytes_freed, pins_without_manifest, aliases_removed }
}

/// `GET` and `POST /v1/drain`.
pub(crate) fn drain(p: datamesh_node::DrainProgress) -> api::DrainProgress {
    let datamesh_node::DrainProgress {
        draining,
        started_at,
        rounds,
        files,
        shards_to_move,
        shards_moved,
        bytes_moved,
        shards_failed,
        chunks_short,
        files_needing_replicas,
        files_local_only,
        safe_to_stop,
        errors,
    } = p;
    api::DrainProgress {
        draining,
        started_at,
        rounds,
        files,
        shards_to_move,
        shards_moved,
        bytes_moved,
        shards_failed,
        chunks_short,
        files_needing_replicas,
        files_local_only,
        safe_to_stop,
        errors,
    }
}

/// `GET /v1/files/{cid}`.
pub(crate) fn stat(s: datamesh_node::FileStat) -> api::FileStat {
    let datamesh_node::FileStat { cid, unixfs, size, encrypted, k, m, pinned, name, live_shards, holders } = s;
    api::FileStat { cid, unixfs, size, encrypted, k, m, pinned, name, live_shards, holders }
}

/// `PUT /v1/uploads/{id}/chunks`.
pub(crate) fn receipt(r: datamesh_node::ChunkReceipt) -> api::ChunkReceipt {
    let datamesh_node::ChunkReceipt { cid, shards } = r;
    api::ChunkReceipt { cid, shards }
}

/// One peer of `GET /v1/peers`, with this node's view of its reputation.
pub(crate) fn peer(p: datamesh_net::PeerInfo, reputation: datamesh_node::audit::Reputation) -> api::Peer {
    let draining = datamesh_node::network::is_draining(&p);
    let datamesh_net::PeerInfo { peer, addrs, state, since_last_seen, last_heartbeat, strikes, connected, banned: _ } =
        p;
    let datamesh_node::audit::Reputation { score, passed, failed, unanswered, last_audit } = reputation;
    api::Peer {
        peer: peer.to_string(),
        state: match state {
            datamesh_net::PeerState::Online => api::PeerState::Online,
            datamesh_net::PeerState::Warning => api::PeerState::Warning,
            datamesh_net::PeerState::Offline => api::PeerState::Offline,
        },
        connected,
        addrs: addrs.iter().map(|a| a.to_string()).collect(),
        since_last_seen_secs: since_last_seen.as_secs_f64(),
        free_bytes: last_heartbeat.as_ref().map(|h| h.free_bytes),
        shards: last_heartbeat.as_ref().map(|h| h.shards),
        strikes,
        draining,
        reputation: api::Reputation { score, passed, failed, unanswered, last_audit },
    }
}
