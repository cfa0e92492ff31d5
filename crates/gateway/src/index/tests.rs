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
        initiator: Some(1),
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
        partial: 0,
        password_hash: None,
        revoked: false,
    };
    ix.create_share(&share("two", None, Some(2))).unwrap();
    ix.create_share(&share("old", Some(100), None)).unwrap();
    assert!(ix.count_share_download("two", 50, 10, 10).unwrap().is_ok());
    assert_eq!(ix.count_share_download("two", 50, 10, 10).unwrap().unwrap().0.downloads, 2);
    assert_eq!(ix.count_share_download("two", 50, 10, 10).unwrap(), Err(ShareRefusal::Exhausted));
    assert_eq!(ix.count_share_download("two", 50, 0, 10).unwrap(), Err(ShareRefusal::Exhausted));
    assert!(ix.count_share_download("old", 99, 1, 1).unwrap().is_ok());
    assert_eq!(ix.count_share_download("old", 100, 1, 1).unwrap(), Err(ShareRefusal::Expired));
    assert!(ix.revoke_share("old").unwrap());
    assert_eq!(ix.count_share_download("old", 0, 1, 1).unwrap(), Err(ShareRefusal::Revoked));
    assert_eq!(ix.count_share_download("nope", 0, 1, 1).unwrap(), Err(ShareRefusal::Unknown));
    assert_eq!(ix.share("two").unwrap().unwrap().downloads, 2);
}

/// Ranges add up to whole downloads; a HEAD (0 bytes) counts nothing; a
/// cut-off transfer's unsent bytes are given back.
#[test]
fn share_downloads_count_bytes_as_whole_transfers() {
    let ix = Index::memory().unwrap();
    ix.create_share(&ShareRow {
        id: "r".into(),
        cid: "c".into(),
        created: 0,
        expires_at: None,
        max_downloads: Some(1),
        downloads: 0,
        partial: 0,
        password_hash: None,
        revoked: false,
    })
    .unwrap();
    let (r, done) = ix.count_share_download("r", 0, 0, 100).unwrap().unwrap();
    assert_eq!((r.downloads, r.partial, done), (0, 0, 0));
    let (r, done) = ix.count_share_download("r", 0, 60, 100).unwrap().unwrap();
    assert_eq!((r.downloads, r.partial, done), (0, 60, 0));
    ix.refund_share_bytes("r", 30, 100).unwrap();
    let (r, done) = ix.count_share_download("r", 0, 70, 100).unwrap().unwrap();
    assert_eq!((r.downloads, r.partial, done), (1, 0, 1));
    assert_eq!(ix.count_share_download("r", 0, 1, 100).unwrap(), Err(ShareRefusal::Exhausted));
    ix.refund_share_bytes("r", 10, 100).unwrap();
    let r = ix.share("r").unwrap().unwrap();
    assert_eq!((r.downloads, r.partial), (0, 90));
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
    assert_eq!(ix.totals().unwrap(), (1, 5), "version 3 counts what was there");
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

/// `totals` (what `/metrics` shows) follows every write without counting
/// the table: the triggers keep it, through puts, overwrites and deletes.
#[test]
fn object_totals_follow_writes() {
    let ix = Index::memory().unwrap();
    assert_eq!(ix.totals().unwrap(), (0, 0));
    ix.create_bucket("b").unwrap();
    ix.put_object(&ObjectRow { size: 10, ..obj("b", "x") }, &[seg("m1")]).unwrap();
    ix.put_object(&ObjectRow { size: 7, ..obj("b", "y") }, &[seg("m2")]).unwrap();
    assert_eq!(ix.totals().unwrap(), (2, 17));
    ix.put_object(&ObjectRow { size: 3, ..obj("b", "x") }, &[seg("m3")]).unwrap();
    assert_eq!(ix.totals().unwrap(), (2, 10), "an overwrite replaces its size");
    ix.delete_object("b", "y").unwrap();
    ix.delete_object("b", "missing").unwrap();
    assert_eq!(ix.totals().unwrap(), (1, 3));
    // Read from the one-row table the triggers keep, not counted.
    let kept: (i64, i64) =
        ix.lock().query_row("SELECT objects, bytes FROM object_totals", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(kept, (1, 3));
}

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
