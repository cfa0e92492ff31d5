//! Access keys: who may use the S3 API, and the key their objects are
//! encrypted for.
//!
//! S3 and plain HTTP clients cannot encrypt for themselves, so the gateway
//! does it for them: each access key owns a DataMesh user key (the same kind
//! the CLI keeps in `user.key`), generated at `datamesh key create`. Object
//! data keys are wrapped for that user key, exactly as the CLI wraps them for
//! its user. The secret access key and the user key are stored in the
//! gateway's database sealed (AES-256-GCM) under a key derived from the
//! node's identity, so a copy of the database alone opens nothing.
//!
//! Files uploaded through the REST API (`POST /v1/files`) are encrypted the
//! same way, for one more user key the gateway holds: the REST key
//! ([`AccessKeys::rest`], key id [`REST_KEY_ID`]), sealed in the
//! `gateway_keys` table under the same node-derived key. It is not an access
//! key: no S3 request can authenticate with it.
//!
//! **Architecture invariant:** the auth layer asks one question — "which
//! principal is this access key, and what is its secret?" ([`AccessKeys`]).
//! The accounts system replaces this store without touching the S3 code.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datamesh_core::Cipher;
use datamesh_pipeline::crypto::{self, DataKey, NonceMode};
use datamesh_pipeline::keys::UserKey;
use rand::Rng;

use crate::index::{Index, IndexError, KeyRow};

/// Domain separation for the key that seals access keys at rest.
const SEAL_CONTEXT: &str = "datamesh gateway access-key seal v1";

/// The key id recorded for files encrypted for the REST key. Access key ids
/// start with `DM`, so the two can never collide.
pub const REST_KEY_ID: &str = "@rest";

/// The sealed field index (AEAD binding) of the REST user key; 0 and 1 are
/// an access key's secret and user key.
const REST_SEAL_INDEX: u64 = 2;

/// One principal.
pub struct Principal {
    /// Access key id.
    pub id: String,
    /// Secret access key (SigV4 signs with it).
    pub secret: String,
    /// The key the principal's objects are encrypted for.
    pub user: UserKey,
}

/// Why an access key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The database failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A sealed entry does not open with this node's key.
    #[error(
        "access key {0} does not open with this node's identity: the gateway database belongs to another node (restore that node's identity.key or recreate the keys)"
    )]
    Unseal(String),
}

/// The access keys of this gateway, cached in memory. Cheap to clone.
#[derive(Clone)]
pub struct AccessKeys {
    index: Index,
    seal: Arc<DataKey>,
    cache: Arc<RwLock<HashMap<String, Arc<Principal>>>>,
    rest: Arc<Principal>,
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

impl AccessKeys {
    /// Loads every access key, unsealing with `node_seed`.
    pub fn load(index: Index, node_seed: &[u8; 32]) -> Result<AccessKeys, KeyStoreError> {
        let seal = Arc::new(DataKey::from_bytes(blake3::derive_key(SEAL_CONTEXT, node_seed)));
        let rest = Arc::new(Self::load_rest(&index, &seal)?);
        let me = AccessKeys { index, seal, cache: Arc::new(RwLock::new(HashMap::new())), rest };
        for row in me.index.keys()? {
            let p = me.unseal(&row)?;
            me.cache_write().insert(p.id.clone(), Arc::new(p));
        }
        Ok(me)
    }

    /// The REST key: loaded, or made and stored on first start.
    fn load_rest(index: &Index, seal: &DataKey) -> Result<Principal, KeyStoreError> {
        let sealed = match index.gateway_key(REST_KEY_ID)? {
            Some(s) => s,
            None => {
                let fresh = UserKey::generate().to_file_bytes(None);
                let sealed = crypto::seal_chunk(Cipher::Aes256Gcm, seal, REST_SEAL_INDEX, &fresh, NonceMode::Random);
                index.put_gateway_key(REST_KEY_ID, &sealed)?
            }
        };
        let bad = || KeyStoreError::Unseal(REST_KEY_ID.into());
        let bytes = crypto::open_chunk(Cipher::Aes256Gcm, seal, REST_SEAL_INDEX, &sealed).map_err(|_| bad())?;
        let user = UserKey::from_file_bytes(&bytes, None).map_err(|_| bad())?;
        Ok(Principal { id: REST_KEY_ID.into(), secret: String::new(), user })
    }

    /// The key files uploaded through the REST API are encrypted for.
    pub fn rest(&self) -> Arc<Principal> {
        self.rest.clone()
    }

    /// The principal whose user key opens files recorded with `key_id`:
    /// an access key, or the REST key.
    pub fn owner(&self, key_id: &str) -> Option<Arc<Principal>> {
        if key_id == REST_KEY_ID { Some(self.rest()) } else { self.get(key_id) }
    }

    /// Every user key the gateway holds: the REST key first, then the
    /// access keys'.
    pub fn all_users(&self) -> Vec<Arc<Principal>> {
        let mut v = vec![self.rest()];
        v.extend(self.cache.read().unwrap_or_else(|p| p.into_inner()).values().cloned());
        v
    }

    fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Principal>>> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    fn unseal(&self, row: &KeyRow) -> Result<Principal, KeyStoreError> {
        let bad = || KeyStoreError::Unseal(row.id.clone());
        // The index binds each sealed field: 0 = secret, 1 = user key.
        let secret = crypto::open_chunk(Cipher::Aes256Gcm, &self.seal, 0, &row.sealed_secret).map_err(|_| bad())?;
        let user = crypto::open_chunk(Cipher::Aes256Gcm, &self.seal, 1, &row.sealed_user_key).map_err(|_| bad())?;
        Ok(Principal {
            id: row.id.clone(),
            secret: String::from_utf8(secret).map_err(|_| bad())?,
            user: UserKey::from_file_bytes(&user, None).map_err(|_| bad())?,
        })
    }

    /// Creates a key pair; it is usable on the next request.
    pub fn create(&self) -> Result<Arc<Principal>, KeyStoreError> {
        let id = format!("DM{}", random_string(ID_ALPHABET, 18));
        let secret = random_string(SECRET_ALPHABET, 40);
        let user = UserKey::generate();
        let row = KeyRow {
            id: id.clone(),
            sealed_secret: crypto::seal_chunk(Cipher::Aes256Gcm, &self.seal, 0, secret.as_bytes(), NonceMode::Random),
            sealed_user_key: crypto::seal_chunk(
                Cipher::Aes256Gcm,
                &self.seal,
                1,
                &user.to_file_bytes(None),
                NonceMode::Random,
            ),
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        };
        self.index.put_key(&row)?;
        let p = Arc::new(Principal { id: id.clone(), secret, user });
        self.cache_write().insert(id, p.clone());
        Ok(p)
    }

    /// The principal of an access key id.
    pub fn get(&self, id: &str) -> Option<Arc<Principal>> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Number of access keys.
    pub fn len(&self) -> usize {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_reload_and_need_the_node_key() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Index::open(&dir.path().join("g.db")).unwrap();
        let keys = AccessKeys::load(ix.clone(), &[7; 32]).unwrap();
        let p = keys.create().unwrap();
        assert_eq!(p.id.len(), 20);
        let again = AccessKeys::load(ix.clone(), &[7; 32]).unwrap();
        let q = again.get(&p.id).unwrap();
        assert_eq!(q.secret, p.secret);
        assert_eq!(q.user.public().fingerprint(), p.user.public().fingerprint());
        assert_eq!(again.rest().user.public().fingerprint(), keys.rest().user.public().fingerprint());
        assert!(again.get(REST_KEY_ID).is_none(), "the REST key is no access key");
        assert!(matches!(AccessKeys::load(ix, &[8; 32]), Err(KeyStoreError::Unseal(_))));
    }
}
