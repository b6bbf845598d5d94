-- Per site, on its standby: whether automatic failover is armed (one per site until
-- `orch ack`), and the takeover under way. The intent is written before the DNS lock is
-- asked for and cleared once the takeover has ended, so that an agent killed at any
-- moment resumes it to one end at its next start (JSON, schema in the orchestrator's
-- daemon::failover::Intent).
CREATE TABLE failover (
    site        TEXT    PRIMARY KEY NOT NULL,
    armed       INTEGER NOT NULL CHECK (armed IN (0, 1)),
    intent      TEXT,
    updated_at  INTEGER NOT NULL              -- unix milliseconds
) STRICT;
