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
//! Schema version 2; `PRAGMA user_version` records it. Version 2 added the
//! `gateway_keys`, `files` and `shares` tables; a version 1 database is
//! upgraded in place on open (the new tables are created, nothing else
//! changes).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

/// Schema version this build writes.
const SCHEMA_VERSION: i64 = 2;

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
    /// Downloads counted so far.
    pub downloads: u64,
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
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
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
                last_active INTEGER NOT NULL);
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
                revoked INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS shares_cid ON shares(cid);",
        )?;
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

    /// All access keys.
    pub fn keys(&self) -> Result<Vec<KeyRow>, IndexError> {
        let c = self.lock();
        let mut st = c.prepare("SELECT id, secret, user_key, created_at FROM access_keys ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok(KeyRow { id: r.get(0)?, sealed_secret: r.get(1)?, sealed_user_key: r.get(2)?, created_at: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- buckets ----

    /// Creates a bucket; false if it exists.
    pub fn create_bucket(&self, name: &str) -> Result<bool, IndexError> {
        let n = self
            .lock()
            .execute("INSERT OR IGNORE INTO buckets (name, created_at) VALUES (?1, ?2)", params![name, now()])?;
        Ok(n == 1)
    }

    /// Whether a bucket exists.
    pub fn bucket_exists(&self, name: &str) -> Result<bool, IndexError> {
        Ok(self.lock().query_row("SELECT 1 FROM buckets WHERE name = ?1", [name], |_| Ok(())).optional()?.is_some())
    }

    /// Buckets with their creation time.
    pub fn buckets(&self) -> Result<Vec<(String, i64)>, IndexError> {
        let c = self.lock();
        let mut st = c.prepare("SELECT name, created_at FROM buckets ORDER BY name")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes an empty bucket. `Ok(None)` = no such bucket, `Ok(Some(false))` = not empty.
    pub fn delete_bucket(&self, name: &str) -> Result<Option<bool>, IndexError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        if tx.query_row("SELECT 1 FROM buckets WHERE name = ?1", [name], |_| Ok(())).optional()?.is_none() {
            return Ok(None);
        }
        let busy =
            tx.query_row("SELECT 1 FROM objects WHERE bucket = ?1 LIMIT 1", [name], |_| Ok(())).optional()?.is_some()
                || tx
                    .query_row("SELECT 1 FROM uploads WHERE bucket = ?1 LIMIT 1", [name], |_| Ok(()))
                    .optional()?
                    .is_some();
        if busy {
            return Ok(Some(false));
        }
        tx.execute("DELETE FROM buckets WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(Some(true))
    }

    // ---- objects ----

    /// Writes (replacing) an object and its segments. Returns the manifests the
    /// replaced object named that nothing names any more (to unpin).
    pub fn put_object(&self, row: &ObjectRow, segments: &[Segment]) -> Result<Vec<String>, IndexError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let old = segments_of(&tx, &row.bucket, &row.key)?;
        replace_object_rows(&tx, row, segments)?;
        let gone = unreferenced_in(&tx, old.iter().map(|s| s.manifest.clone()))?;
        tx.commit()?;
        Ok(gone)
    }

    /// An object and its segments.
    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<(ObjectRow, Vec<Segment>)>, IndexError> {
        let c = self.lock();
        let row = c
            .query_row(
                "SELECT size, etag, content_type, metadata, checksums, modified, parts FROM objects
                 WHERE bucket = ?1 AND key = ?2",
                params![bucket, key.as_bytes()],
                |r| {
                    Ok(ObjectRow {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                        size: r.get::<_, i64>(0)? as u64,
                        etag: r.get(1)?,
                        content_type: r.get(2)?,
                        metadata: r.get(3)?,
                        checksums: r.get(4)?,
                        modified: r.get(5)?,
                        parts: r.get(6)?,
                    })
                },
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some(row) => {
                let segs = segments_of(&c, bucket, key)?;
                Ok(Some((row, segs)))
            }
        }
    }

    /// Deletes an object. Returns whether it existed and the manifests nothing
    /// names any more.
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<(bool, Vec<String>), IndexError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let old = segments_of(&tx, bucket, key)?;
        let n = tx.execute("DELETE FROM objects WHERE bucket = ?1 AND key = ?2", params![bucket, key.as_bytes()])?;
        let gone = unreferenced_in(&tx, old.iter().map(|s| s.manifest.clone()))?;
        tx.commit()?;
        Ok((n == 1, gone))
    }

    /// Lists objects of `bucket` whose key starts with `prefix`, after
    /// `after`, folding keys that contain `delimiter` after the prefix into
    /// common prefixes; at most `max` entries (objects + prefixes).
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Listing, IndexError> {
        let c = self.lock();
        let mut out = Listing::default();
        if max == 0 {
            return Ok(out);
        }
        // Cursor as bytes: strictly greater than `after`.
        let mut cursor: Vec<u8> = match after {
            Some(a) if a.as_bytes() >= prefix.as_bytes() => a.as_bytes().to_vec(),
            _ => prefix.as_bytes().to_vec(),
        };
        let mut inclusive = after.is_none_or(|a| a.as_bytes() < prefix.as_bytes());
        // Resuming after a common prefix skips everything under it.
        if let (Some(a), Some(d)) = (after, delimiter.filter(|d| !d.is_empty()))
            && !inclusive
            && a.len() > prefix.len()
            && a.ends_with(d)
        {
            cursor.push(0xFF);
        }
        let mut st = c.prepare(
            "SELECT key, size, etag, content_type, metadata, checksums, modified, parts FROM objects
             WHERE bucket = ?1 AND (key > ?2 OR (?3 AND key = ?2)) ORDER BY key LIMIT 256",
        )?;
        'outer: loop {
            let rows: Vec<ObjectRow> = st
                .query_map(params![bucket, cursor, inclusive], |r| {
                    let key: Vec<u8> = r.get(0)?;
                    Ok(ObjectRow {
                        bucket: bucket.to_string(),
                        key: String::from_utf8_lossy(&key).into_owned(),
                        size: r.get::<_, i64>(1)? as u64,
                        etag: r.get(2)?,
                        content_type: r.get(3)?,
                        metadata: r.get(4)?,
                        checksums: r.get(5)?,
                        modified: r.get(6)?,
                        parts: r.get(7)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            inclusive = false;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                if !row.key.starts_with(prefix) {
                    break 'outer;
                }
                if out.objects.len() + out.prefixes.len() >= max {
                    out.next = out.prefixes.last().cloned().max(out.objects.last().map(|o| o.key.clone()));
                    break 'outer;
                }
                let rest = &row.key[prefix.len()..];
                if let Some(d) = delimiter.filter(|d| !d.is_empty())
                    && let Some(pos) = rest.find(d)
                {
                    let p = format!("{prefix}{}", &rest[..pos + d.len()]);
                    // Skip every key under this prefix in one step.
                    cursor = p.as_bytes().to_vec();
                    cursor.push(0xFF);
                    out.prefixes.push(p);
                    continue 'outer;
                }
                cursor = row.key.as_bytes().to_vec();
                out.objects.push(row);
            }
        }
        Ok(out)
    }

    // ---- multipart uploads ----

    /// Records a new multipart upload.
    pub fn create_upload(&self, u: &UploadRow) -> Result<(), IndexError> {
        self.lock().execute(
            "INSERT INTO uploads (id, bucket, key, key_id, content_type, metadata, created, last_active)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![u.id, u.bucket, u.key.as_bytes(), u.key_id, u.content_type, u.metadata, u.created],
        )?;
        Ok(())
    }

    /// A pending upload.
    pub fn upload(&self, id: &str) -> Result<Option<UploadRow>, IndexError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, bucket, key, key_id, content_type, metadata, created FROM uploads WHERE id = ?1",
                [id],
                upload_row,
            )
            .optional()?)
    }

    /// One page of the pending uploads of a bucket whose key starts with
    /// `prefix`, in S3's order (key, then initiation: the creation second,
    /// then the row's insertion order), at most `max`. Paging is S3's: uploads after
    /// `key_marker` (all of that key's uploads are skipped), or, with
    /// `upload_id_marker` too, after that upload of that key. Returns the
    /// page and whether more follow.
    pub fn uploads_page(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: Option<&str>,
        upload_id_marker: Option<&str>,
        max: usize,
    ) -> Result<(Vec<UploadRow>, bool), IndexError> {
        let c = self.lock();
        let marker = key_marker.unwrap_or("").as_bytes();
        // Where the marker upload sits in the order; an unknown id (or
        // none) resumes after every upload of the marker key.
        let pos: Option<(i64, i64)> = match (key_marker, upload_id_marker) {
            (Some(k), Some(id)) => c
                .query_row(
                    "SELECT created, rowid FROM uploads WHERE id = ?1 AND bucket = ?2 AND key = ?3",
                    params![id, bucket, k.as_bytes()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
            _ => None,
        };
        let (created, row) = pos.unwrap_or((i64::MAX, i64::MAX));
        let mut st = c.prepare(
            "SELECT id, bucket, key, key_id, content_type, metadata, created FROM uploads
             WHERE bucket = ?1 AND substr(key, 1, length(?2)) = ?2
               AND (key > ?3 OR (key = ?3 AND (created > ?4 OR (created = ?4 AND rowid > ?5))))
             ORDER BY key, created, rowid LIMIT ?6",
        )?;
        let limit = max.saturating_add(1).min(i64::MAX as usize) as i64;
        let rows = st.query_map(params![bucket, prefix.as_bytes(), marker, created, row, limit], upload_row)?;
        let mut page: Vec<UploadRow> = rows.collect::<Result<_, _>>()?;
        let truncated = page.len() > max;
        page.truncate(max);
        Ok((page, truncated))
    }

    /// Uploads idle since before `cutoff` (unix seconds).
    pub fn idle_uploads(&self, cutoff: i64) -> Result<Vec<String>, IndexError> {
        let c = self.lock();
        let mut st = c.prepare("SELECT id FROM uploads WHERE last_active < ?1")?;
        let rows = st.query_map([cutoff], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a part (replacing one with the same number). Returns manifests
    /// nothing names any more. `Ok(None)` when the upload is gone.
    pub fn put_part(&self, upload: &str, part: &PartRow) -> Result<Option<Vec<String>>, IndexError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let n = tx.execute("UPDATE uploads SET last_active = ?2 WHERE id = ?1", params![upload, now()])?;
        if n == 0 {
            return Ok(None);
        }
        let old = part_segments(&tx, upload, part.number)?;
        tx.execute("DELETE FROM parts WHERE upload = ?1 AND number = ?2", params![upload, part.number])?;
        tx.execute(
            "INSERT INTO parts (upload, number, size, md5, modified) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![upload, part.number, part.size as i64, part.md5, part.modified],
        )?;
        for (i, s) in part.segments.iter().enumerate() {
            tx.execute(
                "INSERT INTO part_segments (upload, number, seq, manifest, size, key_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![upload, part.number, i as i64, s.manifest, s.size as i64, s.key_id],
            )?;
        }
        let gone = unreferenced_in(&tx, old.iter().map(|s| s.manifest.clone()))?;
        tx.commit()?;
        Ok(Some(gone))
    }

    /// Parts of an upload, by number.
    pub fn parts(&self, upload: &str) -> Result<Vec<PartRow>, IndexError> {
        let c = self.lock();
        let mut st = c.prepare("SELECT number, size, md5, modified FROM parts WHERE upload = ?1 ORDER BY number")?;
        let rows: Vec<(u32, i64, String, i64)> =
            st.query_map([upload], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (number, size, md5, modified) in rows {
            out.push(PartRow {
                number,
                segments: part_segments(&c, upload, number)?,
                size: size as u64,
                md5,
                modified,
            });
        }
        Ok(out)
    }

    /// Removes an upload and its parts. Returns whether it existed and the
    /// manifests nothing names any more.
    pub fn delete_upload(&self, upload: &str) -> Result<(bool, Vec<String>), IndexError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let old: Vec<String> = {
            let mut st = tx.prepare("SELECT manifest FROM part_segments WHERE upload = ?1")?;
            st.query_map([upload], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        let n = tx.execute("DELETE FROM uploads WHERE id = ?1", [upload])?;
        let gone = unreferenced_in(&tx, old.into_iter())?;
        tx.commit()?;
        Ok((n == 1, gone))
    }

    /// Completes an upload: writes the object and removes the upload, in one
    /// transaction. Returns the manifests nothing names any more (parts left
    /// out of the object, and the object it replaced).
    pub fn complete_upload(
        &self,
        upload: &str,
        row: &ObjectRow,
        segments: &[Segment],
    ) -> Result<Option<Vec<String>>, IndexError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let mut old: Vec<String> = {
            let mut st = tx.prepare("SELECT manifest FROM part_segments WHERE upload = ?1")?;
            st.query_map([upload], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        if tx.execute("DELETE FROM uploads WHERE id = ?1", [upload])? == 0 {
            return Ok(None);
        }
        old.extend(segments_of(&tx, &row.bucket, &row.key)?.into_iter().map(|s| s.manifest));
        replace_object_rows(&tx, row, segments)?;
        let gone = unreferenced_in(&tx, old.into_iter())?;
        tx.commit()?;
        Ok(Some(gone))
    }

    /// Whether any object or part names `manifest`.
    pub fn referenced(&self, manifest: &str) -> Result<bool, IndexError> {
        let c = self.lock();
        Ok(!unreferenced_in(&c, std::iter::once(manifest.to_string()))?.contains(&manifest.to_string()))
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

    // ---- REST files ----

    /// Writes (replacing) a file row.
    pub fn put_file(&self, f: &FileRow) -> Result<(), IndexError> {
        self.lock().execute(
            "INSERT OR REPLACE INTO files (cid, key_id, name, content_type, tags, size, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![f.cid, f.key_id, f.name, f.content_type, f.tags, f.size as i64, f.created, f.updated],
        )?;
        Ok(())
    }

    /// A file row.
    pub fn file(&self, cid: &str) -> Result<Option<FileRow>, IndexError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT cid, key_id, name, content_type, tags, size, created, updated FROM files WHERE cid = ?1",
                [cid],
                |r| {
                    Ok(FileRow {
                        cid: r.get(0)?,
                        key_id: r.get(1)?,
                        name: r.get(2)?,
                        content_type: r.get(3)?,
                        tags: r.get(4)?,
                        size: r.get::<_, i64>(5)? as u64,
                        created: r.get(6)?,
                        updated: r.get(7)?,
                    })
                },
            )
            .optional()?)
    }

    /// Forgets a file: its row and its share links. Returns whether it had a row.
    pub fn delete_file(&self, cid: &str) -> Result<bool, IndexError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let n = tx.execute("DELETE FROM files WHERE cid = ?1", [cid])?;
        tx.execute("DELETE FROM shares WHERE cid = ?1", [cid])?;
        tx.commit()?;
        Ok(n == 1)
    }

    // ---- shares ----

    /// Records a new share link.
    pub fn create_share(&self, s: &ShareRow) -> Result<(), IndexError> {
        self.lock().execute(
            "INSERT INTO shares (id, cid, created, expires_at, max_downloads, downloads, password_hash, revoked)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                s.id,
                s.cid,
                s.created,
                s.expires_at,
                s.max_downloads.map(|m| m.min(i64::MAX as u64) as i64),
                s.downloads as i64,
                s.password_hash,
                s.revoked
            ],
        )?;
        Ok(())
    }

    /// A share link.
    pub fn share(&self, id: &str) -> Result<Option<ShareRow>, IndexError> {
        let c = self.lock();
        Ok(c.query_row(&format!("{SHARE_COLUMNS} WHERE id = ?1"), [id], share_row).optional()?)
    }

    /// Every share link, newest first (at most `max`).
    pub fn shares(&self, max: usize) -> Result<Vec<ShareRow>, IndexError> {
        let c = self.lock();
        let mut st = c.prepare(&format!("{SHARE_COLUMNS} ORDER BY created DESC, id LIMIT ?1"))?;
        let rows = st.query_map([max.min(i64::MAX as usize) as i64], share_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a share link; false if there is none.
    pub fn revoke_share(&self, id: &str) -> Result<bool, IndexError> {
        Ok(self.lock().execute("UPDATE shares SET revoked = 1 WHERE id = ?1", [id])? == 1)
    }

    /// Counts one download of a share link if it is still live at `now`
    /// (unix seconds). One statement under the connection's lock, so
    /// concurrent downloads can never count past `max_downloads`.
    pub fn count_share_download(&self, id: &str, now: i64) -> Result<Result<ShareRow, ShareRefusal>, IndexError> {
        let c = self.lock();
        let n = c.execute(
            "UPDATE shares SET downloads = downloads + 1 WHERE id = ?1 AND revoked = 0
               AND (expires_at IS NULL OR expires_at > ?2)
               AND (max_downloads IS NULL OR downloads < max_downloads)",
            params![id, now],
        )?;
        let row = c.query_row(&format!("{SHARE_COLUMNS} WHERE id = ?1"), [id], share_row).optional()?;
        Ok(match row {
            None => Err(ShareRefusal::Unknown),
            Some(r) if n == 1 => Ok(r),
            Some(r) => Err(r.refusal(now).unwrap_or(ShareRefusal::Exhausted)),
        })
    }

    /// Number of objects and their total size (for metrics).
    pub fn totals(&self) -> Result<(u64, u64), IndexError> {
        Ok(self.lock().query_row("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?)
    }
}

const SHARE_COLUMNS: &str =
    "SELECT id, cid, created, expires_at, max_downloads, downloads, password_hash, revoked FROM shares";

fn share_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ShareRow> {
    Ok(ShareRow {
        id: r.get(0)?,
        cid: r.get(1)?,
        created: r.get(2)?,
        expires_at: r.get(3)?,
        max_downloads: r.get::<_, Option<i64>>(4)?.map(|m| m.max(0) as u64),
        downloads: r.get::<_, i64>(5)?.max(0) as u64,
        password_hash: r.get(6)?,
        revoked: r.get(7)?,
    })
}

impl ShareRow {
    /// Why the link is dead at `now`, if it is.
    pub fn refusal(&self, now: i64) -> Option<ShareRefusal> {
        if self.revoked {
            Some(ShareRefusal::Revoked)
        } else if self.expires_at.is_some_and(|e| e <= now) {
            Some(ShareRefusal::Expired)
        } else if self.max_downloads.is_some_and(|m| self.downloads >= m) {
            Some(ShareRefusal::Exhausted)
        } else {
            None
        }
    }
}

fn upload_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRow> {
    let key: Vec<u8> = r.get(2)?;
    Ok(UploadRow {
        id: r.get(0)?,
        bucket: r.get(1)?,
        key: String::from_utf8_lossy(&key).into_owned(),
        key_id: r.get(3)?,
        content_type: r.get(4)?,
        metadata: r.get(5)?,
        created: r.get(6)?,
    })
}

/// Replaces the object row of `row.bucket`/`row.key` and its segment rows.
fn replace_object_rows(
    tx: &rusqlite::Transaction<'_>,
    row: &ObjectRow,
    segments: &[Segment],
) -> Result<(), IndexError> {
    tx.execute("DELETE FROM objects WHERE bucket = ?1 AND key = ?2", params![row.bucket, row.key.as_bytes()])?;
    tx.execute(
        "INSERT INTO objects (bucket, key, size, etag, content_type, metadata, checksums, modified, parts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            row.bucket,
            row.key.as_bytes(),
            row.size as i64,
            row.etag,
            row.content_type,
            row.metadata,
            row.checksums,
            row.modified,
            row.parts
        ],
    )?;
    for (i, s) in segments.iter().enumerate() {
        tx.execute(
            "INSERT INTO segments (bucket, key, seq, manifest, size, key_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![row.bucket, row.key.as_bytes(), i as i64, s.manifest, s.size as i64, s.key_id],
        )?;
    }
    Ok(())
}

fn segments_of(c: &Connection, bucket: &str, key: &str) -> rusqlite::Result<Vec<Segment>> {
    let mut st =
        c.prepare_cached("SELECT manifest, size, key_id FROM segments WHERE bucket = ?1 AND key = ?2 ORDER BY seq")?;
    let rows = st.query_map(params![bucket, key.as_bytes()], |r| {
        Ok(Segment { manifest: r.get(0)?, size: r.get::<_, i64>(1)? as u64, key_id: r.get(2)? })
    })?;
    rows.collect()
}

fn part_segments(c: &Connection, upload: &str, number: u32) -> rusqlite::Result<Vec<Segment>> {
    let mut st = c.prepare_cached(
        "SELECT manifest, size, key_id FROM part_segments WHERE upload = ?1 AND number = ?2 ORDER BY seq",
    )?;
    let rows = st.query_map(params![upload, number], |r| {
        Ok(Segment { manifest: r.get(0)?, size: r.get::<_, i64>(1)? as u64, key_id: r.get(2)? })
    })?;
    rows.collect()
}

/// Of `manifests`, those no object segment or pending part names.
fn unreferenced_in(c: &Connection, manifests: impl Iterator<Item = String>) -> rusqlite::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut a = c.prepare_cached("SELECT 1 FROM segments WHERE manifest = ?1 LIMIT 1")?;
    let mut b = c.prepare_cached("SELECT 1 FROM part_segments WHERE manifest = ?1 LIMIT 1")?;
    for m in manifests {
        if out.contains(&m) {
            continue;
        }
        let used =
            a.query_row([&m], |_| Ok(())).optional()?.is_some() || b.query_row([&m], |_| Ok(())).optional()?.is_some();
        if !used {
            out.push(m);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn obj(bucket: &str, key: &str) -> ObjectRow {
        ObjectRow {
            bucket: bucket.into(),
            key: key.into(),
            size: 1,
            etag: "e".into(),
            content_type: None,
            metadata: "{}".into(),
            checksums: "{}".into(),
            modified: 0,
            parts: 0,
        }
    }

    fn seg(m: &str) -> Segment {
        Segment { manifest: m.into(), size: 1, key_id: "k".into() }
    }

    #[test]
    fn listing_folds_prefixes_and_pages() {
        let ix = Index::memory().unwrap();
        ix.create_bucket("b").unwrap();
        for k in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"] {
            ix.put_object(&obj("b", k), &[seg(k)]).unwrap();
        }
        let l = ix.list("b", "", Some("/"), None, 100).unwrap();
        assert_eq!(l.prefixes, vec!["a/", "c/"]);
        assert_eq!(l.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), vec!["b", "d"]);
        let p1 = ix.list("b", "", None, None, 2).unwrap();
        assert_eq!(p1.objects.len(), 2);
        assert_eq!(p1.next.as_deref(), Some("a/2"));
        let p2 = ix.list("b", "", None, p1.next.as_deref(), 10).unwrap();
        assert_eq!(p2.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), vec!["b", "c/x/1", "c/y", "d"]);
        let c = ix.list("b", "c/", Some("/"), None, 10).unwrap();
        assert_eq!(c.prefixes, vec!["c/x/"]);
        assert_eq!(c.objects[0].key, "c/y");
        // A page cut after a common prefix resumes after everything under it.
        let q1 = ix.list("b", "", Some("/"), None, 1).unwrap();
        assert_eq!(q1.next.as_deref(), Some("a/"));
        let q2 = ix.list("b", "", Some("/"), Some("a/"), 1).unwrap();
        assert_eq!(q2.objects[0].key, "b");
    }

    fn upload(id: &str, key: &str, created: i64) -> UploadRow {
        UploadRow {
            id: id.into(),
            bucket: "b".into(),
            key: key.into(),
            key_id: "k".into(),
            content_type: None,
            metadata: "{}".into(),
            created,
        }
    }

    #[test]
    fn multipart_uploads_page_by_key_and_upload_id_markers() {
        let ix = Index::memory().unwrap();
        ix.create_bucket("b").unwrap();
        // Same second: insertion order decides ("u9" before "u0").
        for (id, key, created) in
            [("u3", "a", 1), ("u1", "a", 2), ("u9", "b", 1), ("u0", "b", 1), ("u4", "c", 1), ("u5", "x/d", 1)]
        {
            ix.create_upload(&upload(id, key, created)).unwrap();
        }
        let ids = |v: &[UploadRow]| v.iter().map(|u| u.id.clone()).collect::<Vec<_>>();
        let (p1, more) = ix.uploads_page("b", "", None, None, 2).unwrap();
        assert_eq!((ids(&p1), more), (vec!["u3".to_string(), "u1".into()], true));
        let (p2, more) = ix.uploads_page("b", "", Some("a"), Some("u1"), 2).unwrap();
        assert_eq!((ids(&p2), more), (vec!["u9".to_string(), "u0".into()], true));
        let (p3, more) = ix.uploads_page("b", "", Some("b"), Some("u0"), 2).unwrap();
        assert_eq!((ids(&p3), more), (vec!["u4".to_string(), "u5".into()], false));
        let (p, _) = ix.uploads_page("b", "", Some("b"), Some("u9"), 1).unwrap();
        assert_eq!(ids(&p), vec!["u0".to_string()]);
        // Mid-key: after the first upload of "a" comes the second.
        let (p, _) = ix.uploads_page("b", "", Some("a"), Some("u3"), 1).unwrap();
        assert_eq!(ids(&p), vec!["u1".to_string()]);
        // A key marker alone skips every upload of that key.
        let (p, _) = ix.uploads_page("b", "", Some("a"), None, 10).unwrap();
        assert_eq!(ids(&p), vec!["u9".to_string(), "u0".into(), "u4".into(), "u5".into()]);
        let (p, more) = ix.uploads_page("b", "x/", None, None, 10).unwrap();
        assert_eq!((ids(&p), more), (vec!["u5".to_string()], false));
    }

    #[test]
    fn share_downloads_stop_at_the_limit_and_on_revoke_or_expiry() {
        let ix = Index::memory().unwrap();
        let share = |id: &str, expires_at, max_downloads| ShareRow {
            id: id.into(),
            cid: "c".into(),
            created: 0,
            expires_at,
            max_downloads,
            downloads: 0,
            password_hash: None,
            revoked: false,
        };
        ix.create_share(&share("two", None, Some(2))).unwrap();
        ix.create_share(&share("old", Some(100), None)).unwrap();
        assert!(ix.count_share_download("two", 50).unwrap().is_ok());
        assert_eq!(ix.count_share_download("two", 50).unwrap().unwrap().downloads, 2);
        assert_eq!(ix.count_share_download("two", 50).unwrap(), Err(ShareRefusal::Exhausted));
        assert!(ix.count_share_download("old", 99).unwrap().is_ok());
        assert_eq!(ix.count_share_download("old", 100).unwrap(), Err(ShareRefusal::Expired));
        assert!(ix.revoke_share("old").unwrap());
        assert_eq!(ix.count_share_download("old", 0).unwrap(), Err(ShareRefusal::Revoked));
        assert_eq!(ix.count_share_download("nope", 0).unwrap(), Err(ShareRefusal::Unknown));
        assert_eq!(ix.share("two").unwrap().unwrap().downloads, 2);
    }

    /// A database written by schema version 1 (the first release) opens,
    /// keeps its rows, and gains the version 2 tables.
    #[test]
    fn a_version_1_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(V1_FIXTURE).unwrap();
        }
        let ix = Index::open(&path).unwrap();
        let v: i64 = ix.lock().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let (row, segs) = ix.object("old", "k").unwrap().unwrap();
        assert_eq!((row.size, segs.len()), (5, 1));
        ix.put_file(&FileRow {
            cid: "c".into(),
            key_id: None,
            name: None,
            content_type: None,
            tags: "{}".into(),
            size: 1,
            created: 0,
            updated: 0,
        })
        .unwrap();
        assert!(ix.file("c").unwrap().is_some());
    }

    /// The schema and a row as version 1 wrote them.
    const V1_FIXTURE: &str = "
        CREATE TABLE access_keys (
           id TEXT PRIMARY KEY, secret BLOB NOT NULL, user_key BLOB NOT NULL, created_at INTEGER NOT NULL);
        CREATE TABLE buckets (name TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
        CREATE TABLE objects (
           bucket TEXT NOT NULL REFERENCES buckets(name), key BLOB NOT NULL, size INTEGER NOT NULL,
           etag TEXT NOT NULL, content_type TEXT, metadata TEXT NOT NULL, checksums TEXT NOT NULL,
           modified INTEGER NOT NULL, parts INTEGER NOT NULL, PRIMARY KEY (bucket, key));
        CREATE TABLE segments (
           bucket TEXT NOT NULL, key BLOB NOT NULL, seq INTEGER NOT NULL, manifest TEXT NOT NULL,
           size INTEGER NOT NULL, key_id TEXT NOT NULL, PRIMARY KEY (bucket, key, seq),
           FOREIGN KEY (bucket, key) REFERENCES objects(bucket, key) ON DELETE CASCADE);
        CREATE INDEX segments_manifest ON segments(manifest);
        CREATE TABLE uploads (
           id TEXT PRIMARY KEY, bucket TEXT NOT NULL REFERENCES buckets(name), key BLOB NOT NULL,
           key_id TEXT NOT NULL, content_type TEXT, metadata TEXT NOT NULL, created INTEGER NOT NULL,
           last_active INTEGER NOT NULL);
        CREATE TABLE parts (
           upload TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE, number INTEGER NOT NULL,
           size INTEGER NOT NULL, md5 TEXT NOT NULL, modified INTEGER NOT NULL, PRIMARY KEY (upload, number));
        CREATE TABLE part_segments (
           upload TEXT NOT NULL, number INTEGER NOT NULL, seq INTEGER NOT NULL, manifest TEXT NOT NULL,
           size INTEGER NOT NULL, key_id TEXT NOT NULL, PRIMARY KEY (upload, number, seq),
           FOREIGN KEY (upload, number) REFERENCES parts(upload, number) ON DELETE CASCADE);
        CREATE INDEX part_segments_manifest ON part_segments(manifest);
        INSERT INTO buckets VALUES ('old', 1);
        INSERT INTO objects VALUES ('old', CAST('k' AS BLOB), 5, 'e', NULL, '{}', '{}', 1, 0);
        INSERT INTO segments VALUES ('old', CAST('k' AS BLOB), 0, 'm', 5, 'DMKEY');
        PRAGMA user_version = 1;";

    #[test]
    fn shared_segments_are_released_only_when_unreferenced() {
        let ix = Index::memory().unwrap();
        ix.create_bucket("b").unwrap();
        assert!(ix.put_object(&obj("b", "x"), &[seg("m1")]).unwrap().is_empty());
        assert!(ix.put_object(&obj("b", "copy"), &[seg("m1")]).unwrap().is_empty());
        assert_eq!(ix.delete_object("b", "x").unwrap(), (true, vec![]));
        assert_eq!(ix.delete_object("b", "copy").unwrap(), (true, vec!["m1".to_string()]));
        assert_eq!(ix.put_object(&obj("b", "y"), &[seg("m2")]).unwrap(), Vec::<String>::new());
        assert_eq!(ix.put_object(&obj("b", "y"), &[seg("m3")]).unwrap(), vec!["m2".to_string()]);
        assert_eq!(ix.delete_bucket("b").unwrap(), Some(false));
    }
}
