//! The gateway's embedded database (SQLite): access keys, buckets, objects
//! and multipart uploads for S3; file metadata and share links for the REST
//! API. It holds names and pointers only; object bytes live in the node as
//! ordinary DataMesh files (manifests), one per *segment*.
//!
//! An object is an ordered list of segments: a simple PUT writes one, a
//! multipart upload one per part (each part went through the pipeline as it
//! arrived, with chunk indexes from 0, so parts cannot be merged into one
//! manifest without re-encrypting), a copy shares its source's segments.
//! Every manifest named by a segment or a pending part is pinned on the node;
//! when the last row naming it goes, the caller unpins it (see
//! [`Index::unreferenced`]).
//!
//! Keys are stored as BLOBs so that listing can skip past a common prefix
//! with `prefix || 0xFF` (no UTF-8 string contains that byte).
//!
//! Schema version 4; `PRAGMA user_version` records it. Version 2 added the
//! `gateway_keys`, `files` and `shares` tables; version 3 the shares'
//! `partial` column (bytes served towards the next whole download) and the
//! uploads' `initiator` (the user who owns the upload); version 4 the
//! one-row `object_totals` (objects and bytes), kept by triggers on
//! `objects` so that `/metrics`, scraped by anyone, reads one row instead
//! of counting the whole table under the index's lock. An older database
//! is upgraded in place on open (new tables and columns are added, the
//! totals counted once, nothing else changes).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

mod files;
mod objects;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod uploads;

use self::objects::{replace_object_rows, segments_of, unreferenced_in};

/// Schema version this build writes.
const SCHEMA_VERSION: i64 = 4;

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// SQLite failed (disk full, corruption).
    #[error("gateway index: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The database was written by a newer build.
    #[error("gateway index schema {0} is newer than this build understands ({SCHEMA_VERSION}); upgrade DataMesh")]
    TooNew(i64),
    /// A worker thread failed.
    #[error("gateway index worker failed: {0}")]
    Join(String),
}

/// A stored access key (the secret and the user key are sealed by the node key).
#[derive(Debug, Clone)]
pub struct KeyRow {
    /// Access key id.
    pub id: String,
    /// Sealed secret access key.
    pub sealed_secret: Vec<u8>,
    /// Sealed user key file bytes (the key objects are encrypted for).
    pub sealed_user_key: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
}

/// One segment of an object: a DataMesh file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Manifest CID (string form).
    pub manifest: String,
    /// Plaintext bytes.
    pub size: u64,
    /// Access key whose user key opens it.
    pub key_id: String,
}

/// An object's row.
#[derive(Debug, Clone)]
pub struct ObjectRow {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Plaintext size.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// Content-Type given at PUT.
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`), JSON object.
    pub metadata: String,
    /// Checksums given at PUT (JSON object, algorithm → base64).
    pub checksums: String,
    /// Unix seconds.
    pub modified: i64,
    /// Number of multipart parts (0 for a simple object).
    pub parts: u32,
}

/// A pending multipart upload.
#[derive(Debug, Clone)]
pub struct UploadRow {
    /// Upload id.
    pub id: String,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Access key that created it.
    pub key_id: String,
    /// Content-Type for the object.
    pub content_type: Option<String>,
    /// Metadata for the object (JSON).
    pub metadata: String,
    /// Unix seconds.
    pub created: i64,
    /// The user who created it, who alone (with the bucket's
    /// administrators) may act on it; None for uploads from before
    /// schema version 3 (their access key's user).
    pub initiator: Option<i64>,
}

/// A part of a pending upload.
#[derive(Debug, Clone)]
pub struct PartRow {
    /// Part number, 1..=10000.
    pub number: u32,
    /// The part's segments (a part copied from a multipart object may have several).
    pub segments: Vec<Segment>,
    /// Plaintext size.
    pub size: u64,
    /// MD5 of the part, hex.
    pub md5: String,
    /// Unix seconds.
    pub modified: i64,
}

/// A file the REST API knows: uploaded through `POST /v1/files` (then
/// `key_id` names the gateway key that opens it), or any file whose
/// metadata was set with `PATCH /v1/files/{cid}/metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// Manifest CID (string form).
    pub cid: String,
    /// The gateway key the data key is wrapped for (None: not uploaded here).
    pub key_id: Option<String>,
    /// File name.
    pub name: Option<String>,
    /// MIME type.
    pub content_type: Option<String>,
    /// User tags, a JSON object of strings.
    pub tags: String,
    /// Plaintext bytes.
    pub size: u64,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub updated: i64,
}

/// A share link: a read capability for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRow {
    /// The unguessable id in the link.
    pub id: String,
    /// The file (manifest CID).
    pub cid: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds after which the link is dead.
    pub expires_at: Option<i64>,
    /// Downloads allowed.
    pub max_downloads: Option<u64>,
    /// Whole downloads counted so far: bytes served, over the file's size.
    pub downloads: u64,
    /// Bytes served towards the next whole download (below the file's size).
    pub partial: u64,
    /// PHC string (Argon2id) of the password, if one is needed.
    pub password_hash: Option<String>,
    /// Revoked by its owner.
    pub revoked: bool,
}

/// Why a share download was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareRefusal {
    /// No such share.
    Unknown,
    /// Revoked.
    Revoked,
    /// Past `expires_at`.
    Expired,
    /// `max_downloads` reached.
    Exhausted,
}

/// A listing page.
#[derive(Debug, Default)]
pub struct Listing {
    /// Objects, in key order.
    pub objects: Vec<ObjectRow>,
    /// Common prefixes, in order.
    pub prefixes: Vec<String>,
    /// The last key or prefix returned when the listing was cut short.
    pub next: Option<String>,
}

/// The database. Cheap to clone; calls block, so async callers use
/// [`Index::run`].
#[derive(Clone)]
pub struct Index {
    conn: Arc<Mutex<Connection>>,
}

fn now() -> i64 {
    datamesh_core::clock::unix_secs() as i64
}

impl Index {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn memory() -> Result<Index, IndexError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Index, IndexError> {
        // WAL: readers do not wait for the writer; NORMAL sync is durable at
        // checkpoints and never corrupts, and an object whose row is lost in
        // a crash is only a pinned file, found again by the pin list.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if v > SCHEMA_VERSION {
            return Err(IndexError::TooNew(v));
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS access_keys (
                id TEXT PRIMARY KEY, secret BLOB NOT NULL, user_key BLOB NOT NULL, created_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS objects (
                bucket TEXT NOT NULL REFERENCES buckets(name), key BLOB NOT NULL, size INTEGER NOT NULL,
                etag TEXT NOT NULL, content_type TEXT, metadata TEXT NOT NULL, checksums TEXT NOT NULL,
                modified INTEGER NOT NULL, parts INTEGER NOT NULL, PRIMARY KEY (bucket, key));
             CREATE TABLE IF NOT EXISTS segments (
                bucket TEXT NOT NULL, key BLOB NOT NULL, seq INTEGER NOT NULL, manifest TEXT NOT NULL,
                size INTEGER NOT NULL, key_id TEXT NOT NULL, PRIMARY KEY (bucket, key, seq),
                FOREIGN KEY (bucket, key) REFERENCES objects(bucket, key) ON DELETE CASCADE);
             CREATE INDEX IF NOT EXISTS segments_manifest ON segments(manifest);
             CREATE TABLE IF NOT EXISTS uploads (
                id TEXT PRIMARY KEY, bucket TEXT NOT NULL REFERENCES buckets(name), key BLOB NOT NULL,
                key_id TEXT NOT NULL, content_type TEXT, metadata TEXT NOT NULL, created INTEGER NOT NULL,
                last_active INTEGER NOT NULL, initiator INTEGER);
             CREATE TABLE IF NOT EXISTS parts (
                upload TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE, number INTEGER NOT NULL,
                size INTEGER NOT NULL, md5 TEXT NOT NULL, modified INTEGER NOT NULL, PRIMARY KEY (upload, number));
             CREATE TABLE IF NOT EXISTS part_segments (
                upload TEXT NOT NULL, number INTEGER NOT NULL, seq INTEGER NOT NULL, manifest TEXT NOT NULL,
                size INTEGER NOT NULL, key_id TEXT NOT NULL, PRIMARY KEY (upload, number, seq),
                FOREIGN KEY (upload, number) REFERENCES parts(upload, number) ON DELETE CASCADE);
             CREATE INDEX IF NOT EXISTS part_segments_manifest ON part_segments(manifest);
             CREATE TABLE IF NOT EXISTS gateway_keys (
                name TEXT PRIMARY KEY, sealed BLOB NOT NULL, created_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS files (
                cid TEXT PRIMARY KEY, key_id TEXT, name TEXT, content_type TEXT, tags TEXT NOT NULL,
                size INTEGER NOT NULL, created INTEGER NOT NULL, updated INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS shares (
                id TEXT PRIMARY KEY, cid TEXT NOT NULL, created INTEGER NOT NULL, expires_at INTEGER,
                max_downloads INTEGER, downloads INTEGER NOT NULL DEFAULT 0, password_hash TEXT,
                revoked INTEGER NOT NULL DEFAULT 0, partial INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS shares_cid ON shares(cid);",
        )?;
        // Version 3's columns, missing from older tables.
        for (table, column, ty) in
            [("shares", "partial", "INTEGER NOT NULL DEFAULT 0"), ("uploads", "initiator", "INTEGER")]
        {
            let has: bool = conn.query_row(
                &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{column}'"),
                [],
                |r| r.get::<_, i64>(0).map(|n| n > 0),
            )?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
            }
        }
        if v < 4 {
            // Counted once, in the same transaction that starts the triggers
            // keeping the count.
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS object_totals (
                    id INTEGER PRIMARY KEY CHECK (id = 0), objects INTEGER NOT NULL, bytes INTEGER NOT NULL);
                 INSERT OR REPLACE INTO object_totals SELECT 0, COUNT(*), COALESCE(SUM(size), 0) FROM objects;
                 CREATE TRIGGER IF NOT EXISTS object_totals_insert AFTER INSERT ON objects BEGIN
                    UPDATE object_totals SET objects = objects + 1, bytes = bytes + NEW.size WHERE id = 0; END;
                 CREATE TRIGGER IF NOT EXISTS object_totals_delete AFTER DELETE ON objects BEGIN
                    UPDATE object_totals SET objects = objects - 1, bytes = bytes - OLD.size WHERE id = 0; END;
                 CREATE TRIGGER IF NOT EXISTS object_totals_resize AFTER UPDATE OF size ON objects BEGIN
                    UPDATE object_totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0; END;
                 COMMIT;",
            )?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Index { conn: Arc::new(Mutex::new(conn)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements
        // are atomic); recover the guard.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a blocking thread.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Index) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me)).await.map_err(|e| IndexError::Join(e.to_string()))?
    }

    // ---- access keys ----

    /// Adds an access key.
    pub fn put_key(&self, row: &KeyRow) -> Result<(), IndexError> {
        self.lock().execute(
            "INSERT INTO access_keys (id, secret, user_key, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![row.id, row.sealed_secret, row.sealed_user_key, row.created_at],
        )?;
        Ok(())
    }

    /// Replaces an access key's sealed user key (resealed in a newer format).
    pub fn set_key_user_key(&self, id: &str, sealed: &[u8]) -> Result<(), IndexError> {
        self.lock().execute("UPDATE access_keys SET user_key = ?1 WHERE id = ?2", params![sealed, id])?;
        Ok(())
    }

    /// The connection, for tests that plant rows the API would not write.
    #[cfg(test)]
    pub(crate) fn lock_for_tests(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.lock()
    }

    /// Erases a legacy access key's sealed secret (moved to the accounts
    /// database); its user key stays.
    pub fn clear_key_secret(&self, id: &str) -> Result<(), IndexError> {
        self.lock().execute("UPDATE access_keys SET secret = X'' WHERE id = ?1", [id])?;
        Ok(())
    }

    /// All access keys.
    pub fn keys(&self) -> Result<Vec<KeyRow>, IndexError> {
        let c = self.lock();
        let mut st = c.prepare("SELECT id, secret, user_key, created_at FROM access_keys ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok(KeyRow { id: r.get(0)?, sealed_secret: r.get(1)?, sealed_user_key: r.get(2)?, created_at: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- gateway keys ----

    /// A sealed key the gateway holds (the REST upload key), by name.
    pub fn gateway_key(&self, name: &str) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self.lock().query_row("SELECT sealed FROM gateway_keys WHERE name = ?1", [name], |r| r.get(0)).optional()?)
    }

    /// Stores a sealed gateway key unless one of that name exists; returns
    /// the one stored (so two starts racing agree on one key).
    pub fn put_gateway_key(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, IndexError> {
        let c = self.lock();
        c.execute(
            "INSERT OR IGNORE INTO gateway_keys (name, sealed, created_at) VALUES (?1, ?2, ?3)",
            params![name, sealed, now()],
        )?;
        Ok(c.query_row("SELECT sealed FROM gateway_keys WHERE name = ?1", [name], |r| r.get(0))?)
    }
}
