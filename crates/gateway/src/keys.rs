//! Access keys' encryption keys: the key each S3 access key's objects are
//! encrypted for.
//!
//! S3 and plain HTTP clients cannot encrypt for themselves, so the gateway
//! does it for them: each access key owns a DataMesh user key (the same kind
//! the CLI keeps in `user.key`), made the first time the key writes. Object
//! data keys are wrapped for that user key, exactly as the CLI wraps them for
//! its user, and every segment records the access key id it was written
//! with, so reads find the user key by it. A revoked access key's user key
//! stays: objects it wrote remain readable by whoever has permission.
//!
//! Who an access key is, its secret and its scope belong to the accounts
//! database (`datamesh_services`: `s3_credentials`, secrets sealed there);
//! this store keeps only user keys, sealed (AES-256-GCM) under a key derived
//! from the node's identity, so a copy of the database alone opens nothing.
//! Each user key is sealed under a key derived for its access key id
//! (format v2: a version byte, then the sealed bytes), so a sealed blob
//! copied onto another access key's row does not open there. Blobs of the
//! first format (one sealing key for all) are resealed at the first start
//! that finds them, after which a marker row makes them refused.
//! Keys made before accounts also kept their secret here: [`AccessKeys::legacy`]
//! lists them for the gateway to move into the accounts database once, after
//! which [`AccessKeys::forget_secret`] erases the copy here.
//!
//! Files uploaded through the REST API (`POST /v1/files`) are encrypted the
//! same way, for one more user key the gateway holds: the REST key
//! ([`AccessKeys::rest`], key id [`REST_KEY_ID`]), sealed in the
//! `gateway_keys` table under the same node-derived key. It is not an access
//! key: no S3 request can authenticate with it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datamesh_core::Cipher;
use datamesh_pipeline::crypto::{self, DataKey, NonceMode};
use datamesh_pipeline::keys::UserKey;

use crate::index::{Index, IndexError, KeyRow};

/// Domain separation for the key that seals access keys at rest.
const SEAL_CONTEXT: &str = "datamesh gateway access-key seal v1";

/// The first byte of a user key sealed for its access key id.
const SEAL_V2: u8 = 2;

/// The `gateway_keys` row saying every user key is sealed for its id: from
/// then on a blob of the first format is refused.
const SEAL_V2_MARKER: &str = "@access-key-seal-v2";

/// The key id recorded for files encrypted for the REST key. Access key ids
/// start with `DM`, so the two can never collide.
pub const REST_KEY_ID: &str = "@rest";

/// The sealed field index (AEAD binding) of the REST user key; 0 and 1 are
/// an access key's secret and user key.
const REST_SEAL_INDEX: u64 = 2;

/// The encryption key of one access key (or of the REST API).
pub struct KeyOwner {
    /// Access key id ([`REST_KEY_ID`] for the REST key).
    pub id: String,
    /// The key the objects written with it are encrypted for.
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
    cache: Arc<RwLock<HashMap<String, Arc<KeyOwner>>>>,
    rest: Arc<KeyOwner>,
    /// Serializes [`AccessKeys::ensure`] so two first writes agree on one key.
    making: Arc<std::sync::Mutex<()>>,
}

impl AccessKeys {
    /// Loads every access key, unsealing with `node_seed`.
    pub fn load(index: Index, node_seed: &[u8; 32]) -> Result<AccessKeys, KeyStoreError> {
        let seal = Arc::new(DataKey::from_bytes(blake3::derive_key(SEAL_CONTEXT, node_seed)));
        let rest = Arc::new(Self::load_rest(&index, &seal)?);
        let me = AccessKeys {
            index,
            seal,
            cache: Arc::new(RwLock::new(HashMap::new())),
            rest,
            making: Arc::new(std::sync::Mutex::new(())),
        };
        let legacy_allowed = me.index.gateway_key(SEAL_V2_MARKER)?.is_none();
        for row in me.index.keys()? {
            let (p, legacy) = me.unseal(&row, legacy_allowed)?;
            if legacy {
                // Resealed for its id, in place.
                me.index.set_key_user_key(&row.id, &me.seal_user_key(&row.id, &p.user))?;
                tracing::info!(access_key = %row.id, "resealed an access key's user key for its id");
            }
            me.cache_write().insert(p.id.clone(), Arc::new(p));
        }
        if legacy_allowed {
            me.index.put_gateway_key(SEAL_V2_MARKER, &[SEAL_V2])?;
        }
        Ok(me)
    }

    /// The key sealing access key `id`'s user key.
    fn id_seal(&self, id: &str) -> DataKey {
        DataKey::from_bytes(*blake3::keyed_hash(self.seal.as_bytes(), id.as_bytes()).as_bytes())
    }

    /// `user` sealed for access key `id` (format v2).
    fn seal_user_key(&self, id: &str, user: &UserKey) -> Vec<u8> {
        let plain = zeroize::Zeroizing::new(user.to_file_bytes(None));
        let mut out = vec![SEAL_V2];
        out.extend(crypto::seal_chunk(Cipher::Aes256Gcm, &self.id_seal(id), 1, &plain, NonceMode::Random));
        out
    }

    /// The REST key: loaded, or made and stored on first start.
    fn load_rest(index: &Index, seal: &DataKey) -> Result<KeyOwner, KeyStoreError> {
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
        Ok(KeyOwner { id: REST_KEY_ID.into(), user })
    }

    /// The key files uploaded through the REST API are encrypted for.
    pub fn rest(&self) -> Arc<KeyOwner> {
        self.rest.clone()
    }

    /// The principal whose user key opens files recorded with `key_id`:
    /// an access key, or the REST key.
    pub fn owner(&self, key_id: &str) -> Option<Arc<KeyOwner>> {
        if key_id == REST_KEY_ID { Some(self.rest()) } else { self.get(key_id) }
    }

    /// Every user key the gateway holds: the REST key first, then the
    /// access keys'.
    pub fn all_users(&self) -> Vec<Arc<KeyOwner>> {
        let mut v = vec![self.rest()];
        v.extend(self.cache.read().unwrap_or_else(|p| p.into_inner()).values().cloned());
        v
    }

    fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<KeyOwner>>> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a row's user key; the flag says it was of the first format
    /// (accepted only while `legacy_allowed`).
    fn unseal(&self, row: &KeyRow, legacy_allowed: bool) -> Result<(KeyOwner, bool), KeyStoreError> {
        let bad = || KeyStoreError::Unseal(row.id.clone());
        let blob = &row.sealed_user_key;
        // The index binds each sealed field: 0 = secret (legacy), 1 = user key.
        let v2 = match blob.split_first() {
            Some((&SEAL_V2, rest)) => crypto::open_chunk(Cipher::Aes256Gcm, &self.id_seal(&row.id), 1, rest).ok(),
            _ => None,
        };
        let (user, legacy) = match v2 {
            Some(u) => (u, false),
            None if legacy_allowed => {
                (crypto::open_chunk(Cipher::Aes256Gcm, &self.seal, 1, blob).map_err(|_| bad())?, true)
            }
            None => return Err(bad()),
        };
        let user = zeroize::Zeroizing::new(user);
        Ok((KeyOwner { id: row.id.clone(), user: UserKey::from_file_bytes(&user, None).map_err(|_| bad())? }, legacy))
    }

    /// Access keys made before accounts, with their secrets: the gateway
    /// moves them into the accounts database at start.
    pub fn legacy(&self) -> Result<Vec<(String, zeroize::Zeroizing<String>)>, KeyStoreError> {
        let mut out = Vec::new();
        for row in self.index.keys()? {
            if row.sealed_secret.is_empty() {
                continue;
            }
            let bad = || KeyStoreError::Unseal(row.id.clone());
            let secret = crypto::open_chunk(Cipher::Aes256Gcm, &self.seal, 0, &row.sealed_secret).map_err(|_| bad())?;
            out.push((row.id.clone(), zeroize::Zeroizing::new(String::from_utf8(secret).map_err(|_| bad())?)));
        }
        Ok(out)
    }

    /// Erases the copy of a legacy key's secret here (the accounts database
    /// holds it now).
    pub fn forget_secret(&self, id: &str) -> Result<(), KeyStoreError> {
        Ok(self.index.clear_key_secret(id)?)
    }

    /// The encryption key of access key `id`, made and stored the first
    /// time (the accounts database decides whether the key is valid; this
    /// only needs an id that cannot be the REST key's).
    pub fn ensure(&self, id: &str) -> Result<Arc<KeyOwner>, KeyStoreError> {
        if let Some(p) = self.get(id) {
            return Ok(p);
        }
        let _one = self.making.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = self.get(id) {
            return Ok(p);
        }
        let user = UserKey::generate();
        let row = KeyRow {
            id: id.to_string(),
            sealed_secret: Vec::new(),
            sealed_user_key: self.seal_user_key(id, &user),
            created_at: datamesh_core::clock::unix_secs() as i64,
        };
        self.index.put_key(&row)?;
        let p = Arc::new(KeyOwner { id: id.to_string(), user });
        self.cache_write().insert(id.to_string(), p.clone());
        Ok(p)
    }

    /// The encryption key of an access key id, if it has one.
    pub fn get(&self, id: &str) -> Option<Arc<KeyOwner>> {
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
        let p = keys.ensure("DMAAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(keys.ensure(&p.id).unwrap().user.public().fingerprint(), p.user.public().fingerprint());
        let again = AccessKeys::load(ix.clone(), &[7; 32]).unwrap();
        let q = again.get(&p.id).unwrap();
        assert_eq!(q.user.public().fingerprint(), p.user.public().fingerprint());
        assert!(again.legacy().unwrap().is_empty(), "new keys keep no secret here");
        assert_eq!(again.rest().user.public().fingerprint(), keys.rest().user.public().fingerprint());
        assert!(again.get(REST_KEY_ID).is_none(), "the REST key is no access key");
        assert!(matches!(AccessKeys::load(ix, &[8; 32]), Err(KeyStoreError::Unseal(_))));
    }

    #[test]
    fn legacy_secrets_are_listed_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Index::open(&dir.path().join("g.db")).unwrap();
        let seal = DataKey::from_bytes(blake3::derive_key(SEAL_CONTEXT, &[7; 32]));
        let user = UserKey::generate().to_file_bytes(None);
        ix.put_key(&KeyRow {
            id: "DMLEGACYLEGACYLEGACY".into(),
            sealed_secret: crypto::seal_chunk(Cipher::Aes256Gcm, &seal, 0, b"s3cret", NonceMode::Random),
            sealed_user_key: crypto::seal_chunk(Cipher::Aes256Gcm, &seal, 1, &user, NonceMode::Random),
            created_at: 0,
        })
        .unwrap();
        let keys = AccessKeys::load(ix, &[7; 32]).unwrap();
        let legacy = keys.legacy().unwrap();
        assert_eq!(legacy.len(), 1);
        assert_eq!(legacy[0].1.as_str(), "s3cret");
        keys.forget_secret("DMLEGACYLEGACYLEGACY").unwrap();
        assert!(keys.legacy().unwrap().is_empty());
        assert!(keys.get("DMLEGACYLEGACYLEGACY").is_some(), "its user key stays");
    }

    /// A sealed user key is bound to its access key id: moved onto another
    /// key's row it does not open. A first-format blob is resealed at the
    /// first start; one planted after that is refused.
    #[test]
    fn sealed_user_keys_are_bound_to_their_key_id() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Index::open(&dir.path().join("g.db")).unwrap();
        let seal = DataKey::from_bytes(blake3::derive_key(SEAL_CONTEXT, &[7; 32]));
        let old_user = UserKey::generate();
        let legacy_blob =
            crypto::seal_chunk(Cipher::Aes256Gcm, &seal, 1, &old_user.to_file_bytes(None), NonceMode::Random);
        let row = |id: &str, blob: &[u8]| KeyRow {
            id: id.into(),
            sealed_secret: Vec::new(),
            sealed_user_key: blob.to_vec(),
            created_at: 0,
        };
        ix.put_key(&row("DMOLDOLDOLDOLDOLDOLD", &legacy_blob)).unwrap();
        let keys = AccessKeys::load(ix.clone(), &[7; 32]).unwrap();
        let fp = |k: &AccessKeys, id: &str| k.get(id).unwrap().user.public().fingerprint();
        assert_eq!(fp(&keys, "DMOLDOLDOLDOLDOLDOLD"), old_user.public().fingerprint(), "a legacy blob still opens");
        let stored = |id: &str| ix.keys().unwrap().into_iter().find(|r| r.id == id).unwrap().sealed_user_key;
        assert_eq!(stored("DMOLDOLDOLDOLDOLDOLD")[0], SEAL_V2, "and is resealed for its id");
        let a = keys.ensure("DMAAAAAAAAAAAAAAAAAA").unwrap();
        keys.ensure("DMBBBBBBBBBBBBBBBBBB").unwrap();
        let again = AccessKeys::load(ix.clone(), &[7; 32]).unwrap();
        assert_eq!(fp(&again, "DMOLDOLDOLDOLDOLDOLD"), old_user.public().fingerprint());
        // A's blob copied onto B's row.
        let a_blob = stored(&a.id);
        ix.lock_for_tests()
            .execute("UPDATE access_keys SET user_key = ?1 WHERE id = 'DMBBBBBBBBBBBBBBBBBB'", [a_blob])
            .unwrap();
        assert!(
            matches!(AccessKeys::load(ix.clone(), &[7; 32]), Err(KeyStoreError::Unseal(id)) if id == "DMBBBBBBBBBBBBBBBBBB")
        );
        // A first-format blob planted after the reseal.
        ix.set_key_user_key("DMBBBBBBBBBBBBBBBBBB", &legacy_blob).unwrap();
        assert!(
            matches!(AccessKeys::load(ix, &[7; 32]), Err(KeyStoreError::Unseal(id)) if id == "DMBBBBBBBBBBBBBBBBBB")
        );
    }
}
