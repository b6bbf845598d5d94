-- One row per push run (written by the push engine; read by reports, status and history).
CREATE TABLE push_run (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    site           TEXT    NOT NULL,
    job            TEXT    NOT NULL,
    started_at     INTEGER NOT NULL,        -- unix milliseconds
    duration_ms    INTEGER NOT NULL,
    outcome        TEXT    NOT NULL CHECK (outcome IN ('ok', 'warn', 'fail', 'info')),
    files_total    INTEGER NOT NULL,
    files_changed  INTEGER NOT NULL,
    bytes_total    INTEGER NOT NULL,
    bytes_sent     INTEGER NOT NULL,
    deletions      INTEGER NOT NULL,
    diverged       INTEGER NOT NULL,        -- files moved aside into diverged/
    errors         TEXT    NOT NULL         -- JSON array of strings
) STRICT;
CREATE INDEX push_run_by_job ON push_run (site, job, id);

-- Alerts that are on now (or were), so that one lasting alert mails at most hourly and
-- its end mails once, across agent restarts.
CREATE TABLE alert (
    key           TEXT    PRIMARY KEY NOT NULL,   -- e.g. "db:alice-web:app", "tunnel"
    site          TEXT,
    active        INTEGER NOT NULL CHECK (active IN (0, 1)),
    summary       TEXT    NOT NULL,
    since         INTEGER NOT NULL,               -- when it started (unix ms)
    notified      INTEGER NOT NULL CHECK (notified IN (0, 1)),  -- this episode was mailed
    last_sent_at  INTEGER NOT NULL                -- the last alert mail of this key
) STRICT;

-- A message offered to the peer's agent (hand-off): from then on only the peer may send
-- it, so it is re-offered (the peer keeps ids, a repeat is harmless) and never sent here.
ALTER TABLE outbox ADD COLUMN offered_at INTEGER;
