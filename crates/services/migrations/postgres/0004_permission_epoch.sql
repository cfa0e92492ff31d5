-- Version 4 (PostgreSQL): the permission epoch, a counter that moves
-- whenever a permission could have been narrowed: an owner changed, a
-- resource made private or deleted, a grant lowered or removed (cascades
-- included, and raw edits alike: triggers, not application code, keep it).
-- Every authentication reads it with the credential, so a gateway may reuse
-- a permission it read under the same epoch (services' perm_cache) and a
-- narrowing made on any gateway holds from the next request everywhere.
-- Kept in step with ../sqlite/0004_permission_epoch.sql.
CREATE TABLE perm_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    n  BIGINT NOT NULL
);
INSERT INTO perm_epoch (id, n) VALUES (0, 0);
CREATE FUNCTION bump_perm_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE perm_epoch SET n = n + 1 WHERE id = 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER resources_perm_epoch AFTER UPDATE OR DELETE ON resources
    FOR EACH STATEMENT EXECUTE FUNCTION bump_perm_epoch();
CREATE TRIGGER grants_perm_epoch AFTER UPDATE OR DELETE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION bump_perm_epoch();
