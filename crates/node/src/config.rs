//! Node configuration: one documented struct with defaults and human units.
//!
//! Sources, later ones winning: built-in defaults, the TOML file
//! (`<data-dir>/config.toml` or `--config`), environment variables and
//! command-line flags (both applied by the CLI).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use datamesh_core::Erasure;
use serde::{Deserialize, Serialize};

/// Everything a node needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its identity, index, shards and API token.
    pub data_dir: PathBuf,
    /// Address of the HTTP API. Loopback by default: the API is for this
    /// machine's users; exposing it is an explicit choice.
    pub api: SocketAddr,
    /// Disk budget for shards and manifests (e.g. "100 GiB").
    pub capacity: ByteSize,
    /// Memory budget of the hot-chunk cache (e.g. "32 MiB").
    pub cache: ByteSize,
    /// Data shards per chunk for uploads that do not choose.
    pub data_shards: u16,
    /// Parity shards per chunk for uploads that do not choose.
    pub parity_shards: u16,
    /// Seconds an upload session may stay idle before it is dropped and its
    /// shards left to garbage collection.
    pub upload_idle_timeout_secs: u64,
    /// Most upload sessions open at once (bounds memory and disk a client
    /// can tie up).
    pub max_uploads: usize,
    /// Most upload sessions one owner (a gateway user) holds open at once,
    /// within `max_uploads`: one user's stalled uploads cannot take every
    /// slot from the others.
    pub max_uploads_per_owner: usize,
    /// Peer-to-peer listen addresses (multiaddrs). TCP and QUIC.
    pub listen: Vec<String>,
    /// Bootstrap peers (multiaddrs, with or without `/p2p/<peer id>`), in
    /// priority order.
    pub bootstrap: Vec<String>,
    /// Addresses other nodes should dial to reach this one (multiaddrs),
    /// announced in DHT provider records. Empty: the listen addresses.
    pub announce: Vec<String>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// How often a node tells its peers it is alive.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is WARNING (gets no new shards).
    #[serde(with = "humantime_serde")]
    pub warning_after: Duration,
    /// Silence after which a peer is OFFLINE.
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,
    /// Run without the network (a lone node keeping every shard itself).
    pub offline: bool,
    /// A shard request still unanswered after this long gets a spare
    /// request to another holder (hedging); once a shard of the chunk has
    /// arrived, the wait shrinks to four times that shard's time. "0s"
    /// turns hedging off.
    #[serde(with = "humantime_serde")]
    pub hedge_after: Duration,
    /// How often the repair worker checks the files this node maintains
    /// (it also runs at once when a peer turns OFFLINE).
    #[serde(with = "humantime_serde")]
    pub repair_interval: Duration,
    /// Most bytes per second of rebuilt shards the repair worker sends
    /// ("0 B" lifts the cap).
    pub repair_rate: ByteSize,
    /// How often every stored shard is re-read and verified.
    #[serde(with = "humantime_serde")]
    pub scrub_interval: Duration,
    /// Most bytes per second a scrub reads ("0 B": unpaced).
    pub scrub_rate: ByteSize,
    /// How often this node audits the holders of the files it maintains
    /// (proof of storage of a random segment; see `audit`). "0s" turns
    /// audits off.
    #[serde(with = "humantime_serde")]
    pub audit_interval: Duration,
    /// Shards challenged per audit pass.
    pub audit_samples: usize,
    /// How long a holder keeps another node's file without its maintainer
    /// renewing the lease (renewed every quarter lease); then the replica
    /// is dropped and its space reclaimed.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Most files one peer may make this node a replica of per
    /// `adoption_window`, by first location records of files this node
    /// holds nothing of (each pins a manifest here): bounds the disk one
    /// peer can fill.
    pub adoptions_per_peer: u32,
    /// The window `adoptions_per_peer` counts in; every peer's count starts
    /// again when it ends.
    #[serde(with = "humantime_serde")]
    pub adoption_window: Duration,
    /// Address of the S3-compatible API (off when unset).
    pub s3: Option<SocketAddr>,
    /// Region the S3 API reports.
    pub s3_region: String,
    /// Domain for virtual-host style S3 addressing (`BUCKET.<domain>`).
    pub s3_domain: String,
}

/// The default API address.
pub const DEFAULT_API: &str = "127.0.0.1:7780";
/// The default peer-to-peer TCP address.
pub const DEFAULT_LISTEN_TCP: &str = "/ip4/0.0.0.0/tcp/7781";
/// The default peer-to-peer QUIC address.
pub const DEFAULT_LISTEN_QUIC: &str = "/ip4/0.0.0.0/udp/7781/quic-v1";

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            api: DEFAULT_API.parse().expect("valid default address"),
            capacity: ByteSize::gib(100),
            cache: ByteSize::mib(32),
            data_shards: Erasure::DEFAULT.k,
            parity_shards: Erasure::DEFAULT.m,
            upload_idle_timeout_secs: 24 * 3600,
            max_uploads: 64,
            max_uploads_per_owner: 16,
            listen: vec![DEFAULT_LISTEN_TCP.into(), DEFAULT_LISTEN_QUIC.into()],
            bootstrap: Vec::new(),
            announce: Vec::new(),
            mdns: false,
            heartbeat_interval: Duration::from_secs(30),
            warning_after: Duration::from_secs(60),
            offline_after: Duration::from_secs(300),
            offline: false,
            hedge_after: Duration::from_millis(500),
            repair_interval: Duration::from_secs(60),
            repair_rate: ByteSize::mib(64),
            scrub_interval: Duration::from_secs(24 * 3600),
            scrub_rate: ByteSize::mib(32),
            audit_interval: Duration::from_secs(600),
            audit_samples: 32,
            lease: Duration::from_secs(7 * 24 * 3600),
            adoptions_per_peer: 16_384,
            adoption_window: Duration::from_secs(3600),
            s3: None,
            s3_region: "us-east-1".into(),
            s3_domain: "localhost".into(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// Values that cannot work together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Loads `path` over the defaults; a missing file at the default location
    /// is not an error, a missing explicit file is.
    pub fn load(path: &Path, must_exist: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path: path.to_owned(), source }),
        }
    }

    /// The erasure code new uploads get by default.
    pub fn erasure(&self) -> Erasure {
        Erasure { k: self.data_shards, m: self.parity_shards }
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = self.erasure();
        if e.k == 0 || e.total() > datamesh_core::limits::MAX_TOTAL_SHARDS {
            return Err(ConfigError::Invalid(format!(
                "erasure {}+{}: need at least 1 data shard and at most {} shards in all",
                e.k,
                e.m,
                datamesh_core::limits::MAX_TOTAL_SHARDS
            )));
        }
        if !(self.heartbeat_interval < self.warning_after && self.warning_after < self.offline_after) {
            return Err(ConfigError::Invalid(format!(
                "timers must satisfy heartbeat_interval < warning_after < offline_after (got {:?} < {:?} < {:?})",
                self.heartbeat_interval, self.warning_after, self.offline_after
            )));
        }
        if self.adoption_window.is_zero() {
            // A count that starts again at every record bounds nothing.
            return Err(ConfigError::Invalid("adoption_window must be longer than 0s".into()));
        }
        if self.max_uploads == 0 {
            return Err(ConfigError::Invalid("max_uploads must be at least 1".into()));
        }
        if self.max_uploads_per_owner == 0 {
            return Err(ConfigError::Invalid("max_uploads_per_owner must be at least 1".into()));
        }
        Ok(())
    }
}

/// `$XDG_DATA_HOME/datamesh`, else `~/.local/share/datamesh`, else `./datamesh-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("datamesh");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/datamesh");
    }
    PathBuf::from("datamesh-data")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_human_units() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "capacity = \"2 GiB\"\ncache = \"8 MiB\"\ndata_shards = 10\nparity_shards = 4\nheartbeat_interval = \"1s\"\nwarning_after = \"2s\"\noffline_after = \"5s\"\nbootstrap = [\"/ip4/127.0.0.1/tcp/7781\"]\n").unwrap();
        let c = NodeConfig::load(&p, true).unwrap();
        assert_eq!(c.capacity, ByteSize::gib(2));
        assert_eq!(c.erasure(), Erasure { k: 10, m: 4 });
        assert_eq!(c.warning_after, Duration::from_secs(2));
        assert_eq!(c.bootstrap.len(), 1);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "capacty = \"2 GiB\"\n").unwrap();
        assert!(matches!(NodeConfig::load(&p, true), Err(ConfigError::Parse { .. })));
        let missing = dir.path().join("nope.toml");
        assert!(NodeConfig::load(&missing, false).is_ok());
        assert!(matches!(NodeConfig::load(&missing, true), Err(ConfigError::Read { .. })));
    }
}
