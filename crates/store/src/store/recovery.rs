//! Opening a store: the format check, the index, and the reconciliation of
//! the index with the files (crash recovery).

#[allow(clippy::wildcard_imports)]
use super::*;

impl Store {
    /// Opens (creating if needed) the data dir `dir`.
    ///
    /// Takes the dir's lock, checks its format version, removes leftover
    /// temp files, then reconciles the index with the files: files without
    /// an entry are removed, entries without a file are dropped, files of
    /// the wrong size are quarantined. What was done is in the report.
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<(Store, OpenReport)> {
        Self::open_with(dir, cfg, Arc::new(RealIo), Options::default())
    }

    pub(crate) fn open_with(
        dir: &Path,
        cfg: StoreConfig,
        io: Arc<dyn Io>,
        opts: Options,
    ) -> Result<(Store, OpenReport)> {
        let dir = dir.to_path_buf();
        let ioe = |op: &'static str, p: &Path| {
            let (d, p) = (dir.clone(), p.to_path_buf());
            move |e: io::Error| io_error(&d, op, &p, e)
        };
        io.create_dir_all(&dir).map_err(ioe("create", &dir))?;
        let held = io.lock(&dir, &dir.join(LOCK_FILE))?;
        let format_temp_removed = check_format(&*io, &dir)?;

        // The fixed directory tree, created once and made durable before any
        // file is renamed into it; puts never create directories, so they
        // never need to fsync a parent they did not write to.
        let mut created = false;
        for sub in [SHARDS_DIR, MANIFESTS_DIR, TMP_DIR, QUARANTINE_DIR, STATE_DIR] {
            let p = dir.join(sub);
            created |= io.create_dir(&p).map_err(ioe("create", &p))?;
        }
        if created {
            io.sync_dir(&dir).map_err(ioe("fsync", &dir))?;
        }
        for kind in Kind::ALL {
            let kdir = dir.join(kind.dir());
            let have: HashSet<String> = io
                .list_dir(&kdir)
                .map_err(ioe("list", &kdir))?
                .into_iter()
                .filter(|e| e.is_dir)
                .map(|e| e.name)
                .collect();
            let mut created = false;
            for b in 0..=255u8 {
                let name = format!("{b:02x}");
                if !have.contains(&name) {
                    let p = kdir.join(&name);
                    created |= io.create_dir(&p).map_err(ioe("create", &p))?;
                }
            }
            if created {
                io.sync_dir(&kdir).map_err(ioe("fsync", &kdir))?;
            }
        }

        let mut report = OpenReport { temp_removed: format_temp_removed, ..OpenReport::default() };
        let tmp = dir.join(TMP_DIR);
        for e in io.list_dir(&tmp).map_err(ioe("list", &tmp))? {
            if !e.is_dir {
                io.remove_file(&e.path).map_err(ioe("remove", &e.path))?;
                report.temp_removed += 1;
            }
        }

        let db = open_index(&*io, &dir)?;
        let mut usage = reconcile(&*io, &dir, &db, &mut report)?;
        (usage.state_records, usage.state_bytes) = crate::state::measure(&*io, &dir)?;

        let inner = Inner {
            dir,
            cfg,
            io,
            db,
            mutation: RwLock::new(()),
            inflight: Mutex::new(HashMap::new()),
            usage: Mutex::new(usage),
            guards: Arc::new(GuardSet::default()),
            pin_epoch: AtomicU64::new(0),
            gc_lock: Mutex::new(()),
            commit_failed: AtomicBool::new(false),
            pending_access: Mutex::new(HashMap::new()),
            state_dirs: Mutex::new(HashSet::new()),
            state_stripes: std::array::from_fn(|_| Mutex::new(())),
            access_interval: opts.access_interval_secs,
            cache: new_cache(cfg.cache_bytes),
            seq: AtomicU64::new(0),
            _lock: held,
        };
        Ok((Store { inner: Arc::new(inner) }, report))
    }
}

/// Name of the temp file `FORMAT` is written through.
pub(super) const FORMAT_TMP: &str = "FORMAT.tmp";

/// Checks `FORMAT`, or writes it into a fresh directory. Returns how many
/// leftover temp files it removed (from a crash during a first open).
pub(super) fn check_format(io: &dyn Io, dir: &Path) -> Result<usize> {
    let path = dir.join(FORMAT_FILE);
    let ioe = |op: &'static str, p: &Path, e: io::Error| io_error(dir, op, p, e);
    let not_a_store = |reason: String| StoreError::NotAStore { dir: dir.to_path_buf(), reason };
    match io.read(&path, 4096) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let version = text.trim().strip_prefix("datamesh-store ").and_then(|v| v.trim().parse::<u32>().ok());
            match version {
                Some(v) if v > FORMAT_VERSION => {
                    Err(StoreError::FormatTooNew { dir: dir.to_path_buf(), found: v, supported: FORMAT_VERSION })
                }
                Some(v) if v >= 1 => Ok(0),
                _ => Err(not_a_store(format!(
                    "its FORMAT file says {:?}, not \"datamesh-store <version>\"",
                    text.chars().take(64).collect::<String>()
                ))),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No FORMAT: only a fresh directory, or one where a first open
            // was cut short (a LOCK, and a tmp/ holding at most FORMAT.tmp),
            // may become a store. Anything else is someone else's data.
            let entries = io.list_dir(dir).map_err(|e| ioe("list", dir, e))?;
            let foreign: Vec<&str> =
                entries.iter().map(|e| e.name.as_str()).filter(|n| *n != LOCK_FILE && *n != TMP_DIR).collect();
            if !foreign.is_empty() {
                return Err(not_a_store(format!(
                    "it has no FORMAT file but is not empty (it holds {})",
                    foreign.iter().take(3).copied().collect::<Vec<_>>().join(", ")
                )));
            }
            let tmpdir = dir.join(TMP_DIR);
            let mut removed = 0;
            if entries.iter().any(|e| e.name == TMP_DIR) {
                for e in io.list_dir(&tmpdir).map_err(|e| ioe("list", &tmpdir, e))? {
                    if e.name != FORMAT_TMP || e.is_dir {
                        return Err(not_a_store(format!("it has no FORMAT file and its tmp/ holds {}", e.name)));
                    }
                    io.remove_file(&e.path).map_err(|err| ioe("remove", &e.path, err))?;
                    removed += 1;
                }
            }
            // FORMAT goes first, written atomically, so a directory with our
            // files in it always has a FORMAT.
            if io.create_dir(&tmpdir).map_err(|e| ioe("create", &tmpdir, e))? {
                io.sync_dir(dir).map_err(|e| ioe("fsync", dir, e))?;
            }
            let tmp = tmpdir.join(FORMAT_TMP);
            let text = format!("datamesh-store {FORMAT_VERSION}\n");
            write_file(io, (&tmp, &path), text.as_bytes(), false, Commit::Durable)
                .map_err(|(_, e)| ioe("write", &path, e))?;
            Ok(removed)
        }
        Err(e) => Err(ioe("read", &path, e)),
    }
}

/// Opens the index, creating it atomically (in tmp/, then renamed) so a
/// crash during creation never leaves a half-initialized database behind.
pub(super) fn open_index(io: &dyn Io, dir: &Path) -> Result<Database> {
    let path = dir.join(INDEX_FILE);
    let ioe = |op: &'static str, p: &Path| {
        let (d, p) = (dir.to_path_buf(), p.to_path_buf());
        move |e: io::Error| io_error(&d, op, &p, e)
    };
    let mut builder = Database::builder();
    builder.set_cache_size(INDEX_CACHE_BYTES);
    if io.file_len(&path).map_err(ioe("stat", &path))?.is_none() {
        let tmp = dir.join(TMP_DIR).join("index.redb.new");
        let mut f = io.create_new(&tmp).map_err(ioe("create", &tmp))?;
        f.sync().map_err(ioe("fsync", &tmp))?;
        drop(f);
        {
            let backend = io.db_backend(&tmp).map_err(ioe("open", &tmp))?;
            let db = builder
                .create_with_backend(DynBackend(backend))
                .map_err(|e| index_error(dir, "creating the index", e))?;
            create_tables(dir, &db)?;
        }
        io.rename(&tmp, &path).map_err(ioe("rename", &path))?;
        io.sync_dir(dir).map_err(ioe("fsync", dir))?;
    }
    let backend = io.db_backend(&path).map_err(ioe("open", &path))?;
    let db = builder.create_with_backend(DynBackend(backend)).map_err(|e| index_error(dir, "opening the index", e))?;
    create_tables(dir, &db)?;
    Ok(db)
}

pub(super) fn create_tables(dir: &Path, db: &Database) -> Result<()> {
    let ix = |e: redb::Error| index_error(dir, "creating tables", e);
    let txn = begin_write(dir, db)?;
    for t in [SHARDS, MANIFESTS, PINS, ALIASES] {
        txn.open_table(t).map_err(|e| ix(e.into()))?;
    }
    txn.commit().map_err(|e| ix(e.into()))
}

/// Makes the index and the files agree; returns the usage of what remains.
pub(super) fn reconcile(io: &dyn Io, dir: &Path, db: &Database, report: &mut OpenReport) -> Result<Usage> {
    let ix = |e: redb::Error| index_error(dir, "checking the index against the files", e);
    let ioe = |op: &'static str, p: &Path, e: io::Error| io_error(dir, op, p, e);
    let mut usage = Usage::default();
    for kind in Kind::ALL {
        let mut index: HashMap<Cid, u64> = HashMap::new();
        let mut drop_keys: Vec<Vec<u8>> = Vec::new();
        {
            let txn = db.begin_read().map_err(|e| ix(e.into()))?;
            let t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
            for row in t.iter().map_err(|e| ix(e.into()))? {
                let (k, v) = row.map_err(|e| ix(e.into()))?;
                match (Cid::from_bytes(k.value()), kind.record_size(v.value())) {
                    (Ok(c), Ok(size)) => {
                        index.insert(c, size);
                    }
                    _ => {
                        drop_keys.push(k.value().to_vec());
                        report.missing_dropped += 1;
                    }
                }
            }
        }
        let kdir = dir.join(kind.dir());
        let mut present: HashSet<Cid> = HashSet::new();
        for sub in io.list_dir(&kdir).map_err(|e| ioe("list", &kdir, e))? {
            if !sub.is_dir {
                continue;
            }
            for f in io.list_dir(&sub.path).map_err(|e| ioe("list", &sub.path, e))? {
                if f.is_dir {
                    continue;
                }
                let known = f
                    .name
                    .parse::<Cid>()
                    .ok()
                    .filter(|c| object_path(dir, kind, c) == f.path)
                    .and_then(|c| index.get(&c).map(|s| (c, *s)));
                match known {
                    None => {
                        io.remove_file(&f.path).map_err(|e| ioe("remove", &f.path, e))?;
                        report.orphans_removed += 1;
                    }
                    Some((c, size)) if size != f.len => {
                        let n = report.corrupt_quarantined;
                        let q = dir.join(QUARANTINE_DIR).join(format!("{}-{c}-{}-open{n}", kind.what(), now()));
                        io.rename(&f.path, &q).map_err(|e| ioe("quarantine", &f.path, e))?;
                        report.corrupt_quarantined += 1;
                        index.remove(&c);
                        drop_keys.push(c.to_bytes());
                    }
                    Some((c, _)) => {
                        present.insert(c);
                    }
                }
            }
        }
        index.retain(|c, _| {
            let keep = present.contains(c);
            if !keep {
                drop_keys.push(c.to_bytes());
                report.missing_dropped += 1;
            }
            keep
        });
        if !drop_keys.is_empty() {
            let txn = begin_write(dir, db)?;
            {
                let mut t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
                for k in &drop_keys {
                    t.remove(k.as_slice()).map_err(|e| ix(e.into()))?;
                }
            }
            txn.commit().map_err(|e| ix(e.into()))?;
        }
        usage.add(kind, index.len() as u64, index.values().sum());
    }
    Ok(usage)
}
