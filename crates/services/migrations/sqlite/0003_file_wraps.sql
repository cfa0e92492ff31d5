-- Version 3 (SQLite): a file's data key wrapped for a user it was shared
-- with (`datamesh share CID --to USER`): opaque bytes the owner's client
-- made with the recipient's published public key. Kept in step with
-- ../postgres/0003_file_wraps.sql.
CREATE TABLE file_wraps (
    resource_id  INTEGER NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    recipient_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    wrapped      BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (resource_id, recipient_id)
);
