//! REST files and share links, and the totals the metrics report.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Index {
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

    /// Counts `bytes` served by a share link if it is still live at `now`
    /// (unix seconds), for a file of `size` bytes: a link counts whole
    /// downloads, so ranges and resumed transfers add up to one download
    /// per `size` bytes, and a request is let through while fewer than
    /// `max_downloads` whole downloads were served. `bytes` 0 (a HEAD) only
    /// checks that the link is live. One statement under the connection's
    /// lock, so concurrent downloads can never count past the limit.
    /// Returns the row after counting and how many whole downloads this
    /// request completed.
    pub fn count_share_download(
        &self,
        id: &str,
        now: i64,
        bytes: u64,
        size: u64,
    ) -> Result<Result<(ShareRow, u64), ShareRefusal>, IndexError> {
        let c = self.lock();
        let before =
            c.query_row("SELECT downloads FROM shares WHERE id = ?1", [id], |r| r.get::<_, i64>(0)).optional()?;
        let (bytes, size) = (bytes.min(i64::MAX as u64 / 2) as i64, size.clamp(1, i64::MAX as u64 / 2) as i64);
        let n = c.execute(
            "UPDATE shares SET downloads = downloads + (partial + ?3) / ?4, partial = (partial + ?3) % ?4
             WHERE id = ?1 AND revoked = 0
               AND (expires_at IS NULL OR expires_at > ?2)
               AND (max_downloads IS NULL OR downloads < max_downloads)",
            params![id, now, bytes, size],
        )?;
        let row = c.query_row(&format!("{SHARE_COLUMNS} WHERE id = ?1"), [id], share_row).optional()?;
        Ok(match row {
            None => Err(ShareRefusal::Unknown),
            Some(r) if n == 1 => {
                let done = r.downloads.saturating_sub(before.unwrap_or(0).max(0) as u64);
                Ok((r, done))
            }
            Some(r) => Err(r.refusal(now).unwrap_or(ShareRefusal::Exhausted)),
        })
    }

    /// Gives back `bytes` a share link was counted for but did not send (a
    /// transfer cut off), so that a resumed transfer counts once in all.
    pub fn refund_share_bytes(&self, id: &str, bytes: u64, size: u64) -> Result<(), IndexError> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let row = tx.query_row(&format!("{SHARE_COLUMNS} WHERE id = ?1"), [id], share_row).optional()?;
        if let Some(r) = row {
            let size = u128::from(size.max(1));
            let served = (u128::from(r.downloads) * size + u128::from(r.partial)).saturating_sub(u128::from(bytes));
            let (downloads, partial) = ((served / size) as i64, (served % size) as i64);
            tx.execute(
                "UPDATE shares SET downloads = ?2, partial = ?3 WHERE id = ?1",
                params![id, downloads, partial],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Number of objects and their total size (for metrics): one row the
    /// triggers keep, never a count of the table.
    pub fn totals(&self) -> Result<(u64, u64), IndexError> {
        Ok(self.lock().query_row("SELECT objects, bytes FROM object_totals WHERE id = 0", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?)
    }
}

pub(super) const SHARE_COLUMNS: &str =
    "SELECT id, cid, created, expires_at, max_downloads, downloads, password_hash, revoked, partial FROM shares";

pub(super) fn share_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ShareRow> {
    Ok(ShareRow {
        id: r.get(0)?,
        cid: r.get(1)?,
        created: r.get(2)?,
        expires_at: r.get(3)?,
        max_downloads: r.get::<_, Option<i64>>(4)?.map(|m| m.max(0) as u64),
        downloads: r.get::<_, i64>(5)?.max(0) as u64,
        password_hash: r.get(6)?,
        revoked: r.get(7)?,
        partial: r.get::<_, i64>(8)?.max(0) as u64,
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
