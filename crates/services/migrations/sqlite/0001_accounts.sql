-- Accounts and tenancy, version 1 (SQLite). Kept column for column in step
-- with ../postgres/0001_accounts.sql: only the types differ (INTEGER/BLOB
-- here, BIGINT/BYTEA there). Times are Unix seconds; sizes are bytes.

-- The tier table is data: the admin edits it. NULL means unlimited.
CREATE TABLE tiers (
    name               TEXT PRIMARY KEY,
    max_stored_bytes   INTEGER,
    max_transfer_bytes INTEGER,
    max_calls_per_hour INTEGER,
    max_file_bytes     INTEGER,
    max_files          INTEGER,
    sla                INTEGER NOT NULL DEFAULT 0
);
INSERT INTO tiers VALUES ('free', 5000000000, 50000000000, 100, 100000000, 1000, 0);
INSERT INTO tiers VALUES ('premium', 100000000000, 1000000000000, 10000, NULL, NULL, 0);
INSERT INTO tiers VALUES ('enterprise', NULL, NULL, NULL, NULL, NULL, 1);

-- AUTOINCREMENT: an id is never reused, so an audit row or a cached id
-- never comes to name a later user.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    password_hash TEXT,
    tier          TEXT NOT NULL REFERENCES tiers (name),
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_name ON users (lower(name));

CREATE TABLE login_failures (
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    failures     INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    last_failure INTEGER NOT NULL,
    PRIMARY KEY (kind, subject)
);

CREATE TABLE tokens (
    hash       BLOB PRIMARY KEY,
    kind       TEXT NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family     BLOB NOT NULL,
    csrf_hash  BLOB,
    via        TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER
);
CREATE INDEX tokens_family ON tokens (family);
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE user_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    public_key BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE challenges (
    nonce      BLOB PRIMARY KEY,
    audience   TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);

CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id        TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL CHECK (kind IN ('api', 's3')),
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    secret_hash   BLOB UNIQUE,
    sealed_secret BLOB,
    seal_key_id   TEXT,
    ops           INTEGER NOT NULL,
    targets       TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE resources (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    bucket      TEXT,
    owner_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    public_read INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    UNIQUE (kind, name)
);
CREATE INDEX resources_bucket ON resources (bucket, kind);
CREATE INDEX resources_owner ON resources (owner_id);

CREATE TABLE grants (
    resource_id INTEGER NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    grantee_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    level       INTEGER NOT NULL,
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (resource_id, grantee_id)
);
CREATE INDEX grants_grantee ON grants (grantee_id);

CREATE TABLE usage (
    user_id          INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    stored_bytes     INTEGER NOT NULL DEFAULT 0,
    files            INTEGER NOT NULL DEFAULT 0,
    reserved_bytes   INTEGER NOT NULL DEFAULT 0,
    reserved_files   INTEGER NOT NULL DEFAULT 0,
    downloaded_bytes INTEGER NOT NULL DEFAULT 0,
    download_month   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE reservations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    bytes      INTEGER NOT NULL,
    files      INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX reservations_expiry ON reservations (expires_at);

-- Append-only and hash-chained: no foreign key, so a deleted user's
-- history stays.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor_id  INTEGER,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    source    TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head VALUES (1, 0, zeroblob(32));
