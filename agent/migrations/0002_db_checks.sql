-- The latest replication check of each database of each site (the whole report as JSON,
-- schema in agent::db::Report); history keeps the verdict changes.
CREATE TABLE db_check (
    site       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    checked_at INTEGER NOT NULL,
    verdict    TEXT    NOT NULL CHECK (verdict IN ('healthy', 'lagging', 'broken')),
    report     TEXT    NOT NULL,
    PRIMARY KEY (site, name)
) STRICT;
