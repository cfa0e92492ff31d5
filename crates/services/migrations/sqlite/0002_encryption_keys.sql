-- Version 2 (SQLite): the public encryption keys a user publishes so that
-- others can share encrypted files with them (X25519, and X-Wing for
-- post-quantum sharing). Kept in step with ../postgres/0002_encryption_keys.sql.
CREATE TABLE encryption_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    algorithm  TEXT NOT NULL CHECK (algorithm IN ('x25519', 'x-wing')),
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (user_id, algorithm, public_key)
);
