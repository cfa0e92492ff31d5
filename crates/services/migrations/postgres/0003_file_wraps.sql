-- Version 3 (PostgreSQL): a file's data key wrapped for a user it was
-- shared with (`datamesh share CID --to USER`): opaque bytes the owner's
-- client made with the recipient's published public key. Kept in step with
-- ../sqlite/0003_file_wraps.sql.
CREATE TABLE file_wraps (
    resource_id  BIGINT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    recipient_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    wrapped      BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (resource_id, recipient_id)
);
