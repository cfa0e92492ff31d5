//! Buckets and objects: rows, segments, listings.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Index {
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
}

/// Replaces the object row of `row.bucket`/`row.key` and its segment rows.
pub(super) fn replace_object_rows(
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

pub(super) fn segments_of(c: &Connection, bucket: &str, key: &str) -> rusqlite::Result<Vec<Segment>> {
    let mut st =
        c.prepare_cached("SELECT manifest, size, key_id FROM segments WHERE bucket = ?1 AND key = ?2 ORDER BY seq")?;
    let rows = st.query_map(params![bucket, key.as_bytes()], |r| {
        Ok(Segment { manifest: r.get(0)?, size: r.get::<_, i64>(1)? as u64, key_id: r.get(2)? })
    })?;
    rows.collect()
}

/// Of `manifests`, those no object segment or pending part names.
pub(super) fn unreferenced_in(
    c: &Connection,
    manifests: impl Iterator<Item = String>,
) -> rusqlite::Result<Vec<String>> {
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
