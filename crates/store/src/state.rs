//! The node's own state: small named records beside the content-addressed
//! objects (the node keeps its location records, tombstones and peer
//! reputations here).
//!
//! A record is a value of at most [`MAX_STATE_VALUE`] bytes under a *kind*
//! and a *key*, both file names (ASCII letters, digits, `-`, `_`, `.`; not
//! starting with `.`; at most 128 bytes), kept in one file:
//!
//! ```text
//! <dir>/state/<kind>/<key>
//!
//! State record v1   [1][written_at u64 LE][value][BLAKE3-256 of all the bytes before]
//! ```
//!
//! `written_at` is when the record was last put, in unix milliseconds (for
//! an imported file: its modification time); the node's leases run on it.
//! The value is the caller's own encoding, versioned by the caller.
//!
//! **Architecture invariant:** a record is replaced whole: written to
//! `tmp/`, fsynced, renamed over the old one, and the kind's directory
//! fsynced, through the same `Io` layer (and crash tests) as shards. A
//! reader sees the old record or the new one, never a mix; a put or remove
//! that returned `Ok` survives kill -9 and power loss. Decoding never
//! panics, and a record whose checksum does not match is an error, not a
//! value.
//!
//! **Records count against the capacity budget** like shards and manifests
//! (their bytes on disk, measured at open and kept up to date by every
//! put and remove), so peers cannot fill a node's disk with records. A put
//! that grows the total past the budget is refused with
//! [`StoreError::CapacityExceeded`], except through
//! [`Store::put_state_freeing`]: a record that lets the node free space (an
//! owner's tombstone) may use a small headroom beyond the budget
//! ([`headroom`]), since a full node must still take what empties it. A
//! rewrite no larger than the record it replaces (a lease renewal) never
//! needs room.
//!
//! Older data dirs kept this state in files of their own; [`Store::import_state_dir`]
//! and [`Store::import_state_file`] move such files in (durably, then remove them).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{StoreError, io_error};
use crate::io::{Commit, write_file};
use crate::record::RecordError;
use crate::store::STATE_DIR;
use crate::{Store, lock};

type Result<T> = std::result::Result<T, StoreError>;

/// Version byte of the [`StateRecord`] encoding this build writes.
pub const STATE_RECORD_VERSION: u8 = 1;
/// Largest value a state record may hold, in bytes.
pub const MAX_STATE_VALUE: usize = 4 << 20;
/// Longest kind or key, in bytes.
pub const MAX_STATE_NAME: usize = 128;

/// Stripes of the per-record locks (see `Inner::state_stripes`).
pub(crate) const STATE_STRIPES: usize = 64;

const HEADER_LEN: usize = 1 + 8;
const HASH_LEN: usize = 32;

/// One state record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    /// The caller's bytes.
    pub value: Vec<u8>,
    /// When it was last put (unix milliseconds).
    pub written_at: u64,
}

impl StateRecord {
    /// The version-1 encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.value.len() + HASH_LEN);
        out.push(STATE_RECORD_VERSION);
        out.extend_from_slice(&self.written_at.to_le_bytes());
        out.extend_from_slice(&self.value);
        let hash = blake3::hash(&out);
        out.extend_from_slice(hash.as_bytes());
        out
    }

    /// Decodes untrusted bytes (a record file's contents). Never panics.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, RecordError> {
        let (&version, _) = bytes.split_first().ok_or(RecordError::Empty)?;
        if version != STATE_RECORD_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        if bytes.len() < HEADER_LEN + HASH_LEN {
            return Err(RecordError::Truncated);
        }
        if bytes.len() > HEADER_LEN + MAX_STATE_VALUE + HASH_LEN {
            return Err(RecordError::Malformed("state record is larger than any this build writes"));
        }
        let (body, hash) = bytes.split_at(bytes.len() - HASH_LEN);
        if blake3::hash(body).as_bytes() != hash {
            return Err(RecordError::Malformed("state record checksum does not match"));
        }
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&body[1..HEADER_LEN]);
        Ok(StateRecord { value: body[HEADER_LEN..].to_vec(), written_at: u64::from_le_bytes(stamp) })
    }
}

/// Whether `s` may be a kind or a key: a plain file name.
fn valid_name(s: &str) -> bool {
    (1..=MAX_STATE_NAME).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Store {
    /// Stores `value` as the record `kind`/`key`, replacing any record
    /// there, stamped now. Durable and atomic when it returns.
    pub fn put_state(&self, kind: &str, key: &str, value: &[u8]) -> Result<()> {
        self.put_state_at(kind, key, value, now_ms())
    }

    /// [`Store::put_state`] with the given `written_at` (unix milliseconds).
    pub fn put_state_at(&self, kind: &str, key: &str, value: &[u8], written_at: u64) -> Result<()> {
        self.put_state_within(kind, key, value, written_at, 0)
    }

    /// [`Store::put_state`] for a record that lets this node free space
    /// (an owner's tombstone): it may go up to [`headroom`] bytes beyond
    /// the capacity budget, so that a full node still takes it.
    pub fn put_state_freeing(&self, kind: &str, key: &str, value: &[u8]) -> Result<()> {
        self.put_state_within(kind, key, value, now_ms(), headroom(self.inner.cfg.capacity_bytes))
    }

    fn put_state_within(&self, kind: &str, key: &str, value: &[u8], written_at: u64, beyond: u64) -> Result<()> {
        let dst = self.state_path(kind, key)?;
        if value.len() > MAX_STATE_VALUE {
            return Err(bad_state(kind, key, format!("{} bytes, more than {MAX_STATE_VALUE}", value.len())));
        }
        self.state_kind_dir(kind)?;
        let bytes = StateRecord { value: value.to_vec(), written_at }.encode();
        let inner = &*self.inner;
        // The record's stripe is held from measuring the record replaced to
        // counting the new one, so two writers of one key count it once.
        let _stripe = lock(&inner.state_stripes[stripe(kind, key)]);
        let old = inner.io.file_len(&dst).map_err(|e| io_error(&inner.dir, "stat", &dst, e))?;
        let new = bytes.len() as u64;
        let grow = new.saturating_sub(old.unwrap_or(0));
        if grow > 0 {
            let mut u = lock(&inner.usage);
            let budget = inner.cfg.capacity_bytes.saturating_add(beyond);
            let available = budget.saturating_sub(u.used() + u.reserved);
            if grow > available {
                return Err(StoreError::CapacityExceeded { needed: grow, available });
            }
            u.reserved += grow;
        }
        let tmp = self.tmp_path("state");
        let r = write_file(&*inner.io, (&tmp, &dst), &bytes, false, Commit::Durable)
            .map_err(|(op, e)| io_error(&inner.dir, op, if matches!(op, "create" | "write") { &tmp } else { &dst }, e));
        let mut u = lock(&inner.usage);
        u.reserved = u.reserved.saturating_sub(grow);
        if r.is_ok() {
            count(&mut u, old, Some(new));
        }
        r
    }

    /// The record `kind`/`key`, if there is one. A record that does not
    /// decode (a damaged file, or one written by a newer build) is
    /// [`StoreError::BadRecord`].
    pub fn get_state(&self, kind: &str, key: &str) -> Result<Option<StateRecord>> {
        let path = self.state_path(kind, key)?;
        let inner = &*self.inner;
        let limit = (HEADER_LEN + MAX_STATE_VALUE + HASH_LEN + 1) as u64;
        match inner.io.read(&path, limit) {
            Ok(bytes) => StateRecord::decode(&bytes)
                .map(Some)
                .map_err(|e| StoreError::BadRecord { key: format!("{STATE_DIR}/{kind}/{key}"), source: e }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&inner.dir, "read", &path, e)),
        }
    }

    /// Removes the record `kind`/`key`; `Ok(false)` if there was none.
    /// Durable when it returns.
    pub fn remove_state(&self, kind: &str, key: &str) -> Result<bool> {
        let path = self.state_path(kind, key)?;
        let inner = &*self.inner;
        let _stripe = lock(&inner.state_stripes[stripe(kind, key)]);
        let old = inner.io.file_len(&path).map_err(|e| io_error(&inner.dir, "stat", &path, e))?;
        match inner.io.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(&inner.dir, "remove", &path, e)),
        }
        count(&mut lock(&inner.usage), old, None);
        let dir = inner.dir.join(STATE_DIR).join(kind);
        inner.io.sync_dir(&dir).map_err(|e| io_error(&inner.dir, "fsync", &dir, e))?;
        Ok(true)
    }

    /// The keys of every record of `kind`.
    pub fn list_state(&self, kind: &str) -> Result<Vec<String>> {
        if !valid_name(kind) {
            return Err(bad_state(kind, "", "the kind is not a plain file name".into()));
        }
        let inner = &*self.inner;
        let dir = inner.dir.join(STATE_DIR).join(kind);
        match inner.io.list_dir(&dir) {
            Ok(entries) => {
                Ok(entries.into_iter().filter(|e| !e.is_dir && valid_name(&e.name)).map(|e| e.name).collect())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_error(&inner.dir, "list", &dir, e)),
        }
    }

    /// Moves the files of `legacy` (a directory of an older data-dir
    /// layout, one file per record, named by its key) into records of
    /// `kind`. `convert(key, bytes)` gives each file's record value, or
    /// `None` to drop the file. Each record keeps the file's modification
    /// time as `written_at`. The records are made durable before any file
    /// is removed; the directory goes too once empty. A crash in between
    /// leaves files that the next import moves again. Returns how many
    /// records were imported; a missing `legacy` imports none.
    pub fn import_state_dir(
        &self,
        kind: &str,
        legacy: &Path,
        mut convert: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>,
    ) -> Result<usize> {
        let inner = &*self.inner;
        let entries = match inner.io.list_dir(legacy) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(&inner.dir, "list", legacy, e)),
        };
        let files = entries.into_iter().filter(|e| !e.is_dir).map(|e| (e.name, e.path)).collect();
        let n = self.import_state(kind, files, &mut convert)?;
        // Best effort: an empty directory left behind holds nothing.
        if inner.io.remove_dir(legacy).is_ok()
            && let Some(parent) = legacy.parent()
        {
            let _ = inner.io.sync_dir(parent);
        }
        Ok(n)
    }

    /// Moves the single file `legacy` of an older layout into the record
    /// `kind`/`key`, as [`Store::import_state_dir`] does. Returns whether a
    /// record was imported.
    pub fn import_state_file(
        &self,
        kind: &str,
        key: &str,
        legacy: &Path,
        convert: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>,
    ) -> Result<bool> {
        let mut convert = Some(convert);
        let files = vec![(key.to_string(), legacy.to_path_buf())];
        Ok(self.import_state(kind, files, &mut |_, b| convert.take().and_then(|f| f(b)))? > 0)
    }

    fn import_state(&self, kind: &str, files: Vec<(String, PathBuf)>, convert: &mut Convert<'_>) -> Result<usize> {
        let inner = &*self.inner;
        let io = &*inner.io;
        let ioe = |op: &'static str, p: &Path, e: io::Error| io_error(&inner.dir, op, p, e);
        let mut imported = 0;
        let mut kind_dir = None;
        let mut olds = Vec::new();
        for (key, path) in files {
            let bytes = match io.read(&path, MAX_STATE_VALUE as u64 + 1) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ioe("read", &path, e)),
            };
            let written_at = io.modified(&path).map_err(|e| ioe("stat", &path, e))?.map_or_else(now_ms, to_ms);
            let value = (bytes.len() <= MAX_STATE_VALUE && valid_name(&key)).then(|| convert(&key, bytes)).flatten();
            if let Some(value) = value {
                let dst = self.state_path(kind, &key)?;
                let dir = self.state_kind_dir(kind)?;
                let tmp = self.tmp_path("state");
                let encoded = StateRecord { value, written_at }.encode();
                // Already on this disk in the old layout: counted, not refused.
                let _stripe = lock(&inner.state_stripes[stripe(kind, &key)]);
                let old = io.file_len(&dst).map_err(|e| ioe("stat", &dst, e))?;
                write_file(io, (&tmp, &dst), &encoded, false, Commit::Renamed).map_err(|(op, e)| ioe(op, &dst, e))?;
                count(&mut lock(&inner.usage), old, Some(encoded.len() as u64));
                imported += 1;
                kind_dir = Some(dir);
            }
            olds.push(path);
        }
        // The records first: only once they are durable may the old files go.
        if let Some(d) = &kind_dir {
            io.sync_dir(d).map_err(|e| ioe("fsync", d, e))?;
        }
        let mut parents = HashSet::new();
        for p in &olds {
            match io.remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(ioe("remove", p, e)),
                _ => {}
            }
            if let Some(parent) = p.parent() {
                parents.insert(parent.to_path_buf());
            }
        }
        for d in &parents {
            io.sync_dir(d).map_err(|e| ioe("fsync", d, e))?;
        }
        Ok(imported)
    }

    /// `<dir>/state/<kind>/<key>`, once both are checked to be plain names.
    fn state_path(&self, kind: &str, key: &str) -> Result<PathBuf> {
        if !valid_name(kind) || !valid_name(key) {
            return Err(bad_state(kind, key, "a kind and a key are plain file names".into()));
        }
        Ok(self.inner.dir.join(STATE_DIR).join(kind).join(key))
    }

    /// The kind's directory, created and made durable the first time a
    /// record of the kind is written after open.
    fn state_kind_dir(&self, kind: &str) -> Result<PathBuf> {
        let inner = &*self.inner;
        let state = inner.dir.join(STATE_DIR);
        let dir = state.join(kind);
        let mut ready = lock(&inner.state_dirs);
        if !ready.contains(kind) {
            inner.io.create_dir(&dir).map_err(|e| io_error(&inner.dir, "create", &dir, e))?;
            // Even if it existed: a crash may have cut its creation short of
            // this fsync, and a record renamed into it must not vanish with it.
            inner.io.sync_dir(&state).map_err(|e| io_error(&inner.dir, "fsync", &state, e))?;
            ready.insert(kind.to_string());
        }
        Ok(dir)
    }
}

/// What an import does with an old file: its record value, or `None` to drop it.
type Convert<'a> = dyn FnMut(&str, Vec<u8>) -> Option<Vec<u8>> + 'a;

/// How far beyond the capacity budget a record that frees space may take
/// the store: 1 % of the budget, at least 1 MiB and at most 64 MiB (a
/// tombstone is a few hundred bytes; this is thousands of them).
pub fn headroom(capacity: u64) -> u64 {
    (capacity / 100).clamp(1 << 20, 64 << 20)
}

/// Replaces a record of `old` bytes (none: there was none) by one of `new`
/// bytes (none: removed) in the usage.
fn count(u: &mut crate::store::Usage, old: Option<u64>, new: Option<u64>) {
    if let Some(o) = old {
        u.state_records = u.state_records.saturating_sub(1);
        u.state_bytes = u.state_bytes.saturating_sub(o);
    }
    if let Some(n) = new {
        u.state_records += 1;
        u.state_bytes += n;
    }
}

fn stripe(kind: &str, key: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one((kind, key));
    (h % STATE_STRIPES as u64) as usize
}

/// The records under `dir/state/` and their bytes, for the usage at open.
pub(crate) fn measure(io: &dyn crate::io::Io, dir: &Path) -> Result<(u64, u64)> {
    let state = dir.join(STATE_DIR);
    let kinds = match io.list_dir(&state) {
        Ok(k) => k,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io_error(dir, "list", &state, e)),
    };
    let (mut records, mut bytes) = (0, 0);
    for k in kinds.into_iter().filter(|k| k.is_dir) {
        for e in io.list_dir(&k.path).map_err(|e| io_error(dir, "list", &k.path, e))? {
            if !e.is_dir {
                records += 1;
                bytes += e.len;
            }
        }
    }
    Ok((records, bytes))
}

fn bad_state(kind: &str, key: &str, reason: String) -> StoreError {
    StoreError::BadState { kind: kind.to_string(), key: key.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn state_record_round_trips_and_is_stable() {
        let r = StateRecord { value: b"hi".to_vec(), written_at: 1_700_000_000_123 };
        let bytes = r.encode();
        assert_eq!(StateRecord::decode(&bytes).unwrap(), r);
        // A fixture of the v1 layout: if this changes, existing data dirs no
        // longer decode.
        let head = concat!("01", "7b68e5cf8b010000", "6869");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert!(hex.starts_with(head), "{hex}");
        assert_eq!(&bytes[11..], blake3::hash(&bytes[..11]).as_bytes());
    }

    #[test]
    fn decoding_names_the_problem() {
        let bytes = StateRecord { value: vec![7; 100], written_at: 5 }.encode();
        assert_eq!(StateRecord::decode(&[]), Err(RecordError::Empty));
        assert_eq!(StateRecord::decode(&[2, 0, 0]), Err(RecordError::UnknownVersion(2)));
        assert_eq!(StateRecord::decode(&bytes[..20]), Err(RecordError::Truncated));
        for cut in [bytes.len() - 1, 60] {
            assert!(matches!(StateRecord::decode(&bytes[..cut]), Err(RecordError::Malformed(_))), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 4;
        assert!(matches!(StateRecord::decode(&flipped), Err(RecordError::Malformed(_))));
    }

    #[test]
    fn names_are_plain_file_names() {
        for ok in ["locations", "bafyrei-x_1.2", "a"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "é", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    proptest! {
        /// Random bytes, and valid records with bits flipped and cut short
        /// (those reach deeper than random bytes).
        #[test]
        fn decode_never_panics(
            raw in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..300),
            flips in proptest::collection::vec(any::<usize>(), 0..4),
            cut in any::<usize>(),
        ) {
            let _ = StateRecord::decode(&raw);
            let mut bytes = StateRecord { value, written_at: 42 }.encode();
            for f in flips {
                let bit = f % (bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = StateRecord::decode(&bytes);
        }

        #[test]
        fn round_trips(value in proptest::collection::vec(any::<u8>(), 0..300), at in any::<u64>()) {
            let r = StateRecord { value, written_at: at };
            prop_assert_eq!(StateRecord::decode(&r.encode()).unwrap(), r);
        }
    }
}
