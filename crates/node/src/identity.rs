//! The node's Ed25519 identity, persisted in its data dir so it survives
//! restarts. (The network layer derives its libp2p peer id from it.)

use std::path::Path;

use ed25519_dalek::SigningKey;

/// The node's long-lived key pair.
pub struct NodeIdentity {
    key: SigningKey,
}

const FILE: &str = "node.key";
const HEADER: &str = "datamesh-node-key v1\n";

impl NodeIdentity {
    /// Loads `<dir>/node.key`, creating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let hexkey = text.strip_prefix(HEADER).ok_or_else(|| bad(&path, "unknown header"))?;
                let bytes: [u8; 32] = hex::decode(hexkey.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad(&path, "not 32 hex-encoded bytes"))?;
                Ok(Self { key: SigningKey::from_bytes(&bytes) })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::generate(&mut rand::rngs::OsRng);
                let text = format!("{HEADER}{}\n", hex::encode(key.to_bytes()));
                datamesh_store::write_file_atomically(&path, text.as_bytes(), true)?;
                Ok(Self { key })
            }
            Err(e) => Err(e),
        }
    }

    /// The public key, hex encoded: the node's id until the network layer
    /// names it by libp2p peer id.
    pub fn id(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The 32-byte secret seed (for deriving the network key pair).
    pub fn secret_seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

fn bad(path: &Path, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "node key {} is damaged ({why}); restore it from a backup or move it away to create a new identity",
            path.display()
        ),
    )
}

/// Creates a file readable only by its owner.
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists() {
        let d = tempfile::tempdir().unwrap();
        let a = NodeIdentity::load_or_create(d.path()).unwrap().id();
        let b = NodeIdentity::load_or_create(d.path()).unwrap().id();
        assert_eq!(a, b);
        std::fs::write(d.path().join(FILE), "garbage").unwrap();
        assert!(NodeIdentity::load_or_create(d.path()).is_err());
    }
}
