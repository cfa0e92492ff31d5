//! Multipart uploads and their parts, and the reference check that decides
//! when a segment's manifest may be unpinned.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Index {
    // ---- multipart uploads ----

    /// Records a new multipart upload.
    pub fn create_upload(&self, u: &UploadRow) -> Result<(), IndexError> {
        self.lock().execute(
            "INSERT INTO uploads (id, bucket, key, key_id, content_type, metadata, created, last_active, initiator)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
            params![u.id, u.bucket, u.key.as_bytes(), u.key_id, u.content_type, u.metadata, u.created, u.initiator],
        )?;
        Ok(())
    }

    /// A pending upload.
    pub fn upload(&self, id: &str) -> Result<Option<UploadRow>, IndexError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, bucket, key, key_id, content_type, metadata, created, initiator FROM uploads WHERE id = ?1",
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
            "SELECT id, bucket, key, key_id, content_type, metadata, created, initiator FROM uploads
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
}

pub(super) fn upload_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRow> {
    let key: Vec<u8> = r.get(2)?;
    Ok(UploadRow {
        id: r.get(0)?,
        bucket: r.get(1)?,
        key: String::from_utf8_lossy(&key).into_owned(),
        key_id: r.get(3)?,
        content_type: r.get(4)?,
        metadata: r.get(5)?,
        created: r.get(6)?,
        initiator: r.get(7)?,
    })
}

pub(super) fn part_segments(c: &Connection, upload: &str, number: u32) -> rusqlite::Result<Vec<Segment>> {
    let mut st = c.prepare_cached(
        "SELECT manifest, size, key_id FROM part_segments WHERE upload = ?1 AND number = ?2 ORDER BY seq",
    )?;
    let rows = st.query_map(params![upload, number], |r| {
        Ok(Segment { manifest: r.get(0)?, size: r.get::<_, i64>(1)? as u64, key_id: r.get(2)? })
    })?;
    rows.collect()
}
