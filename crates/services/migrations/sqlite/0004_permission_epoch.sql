-- Version 4 (SQLite): the permission epoch, a counter that moves whenever a
-- permission could have been narrowed: an owner changed, a resource made
-- private or deleted, a grant lowered or removed (cascades included, and
-- raw edits alike: triggers, not application code, keep it). Every
-- authentication reads it with the credential, so a gateway may reuse a
-- permission it read under the same epoch (services' perm_cache) and a
-- narrowing made on any gateway holds from the next request everywhere.
-- Kept in step with ../postgres/0004_permission_epoch.sql.
CREATE TABLE perm_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    n  INTEGER NOT NULL
);
INSERT INTO perm_epoch (id, n) VALUES (0, 0);
CREATE TRIGGER resources_update_perm_epoch AFTER UPDATE ON resources
BEGIN UPDATE perm_epoch SET n = n + 1 WHERE id = 0; END;
CREATE TRIGGER resources_delete_perm_epoch AFTER DELETE ON resources
BEGIN UPDATE perm_epoch SET n = n + 1 WHERE id = 0; END;
CREATE TRIGGER grants_update_perm_epoch AFTER UPDATE ON grants
BEGIN UPDATE perm_epoch SET n = n + 1 WHERE id = 0; END;
CREATE TRIGGER grants_delete_perm_epoch AFTER DELETE ON grants
BEGIN UPDATE perm_epoch SET n = n + 1 WHERE id = 0; END;
