-- Per site: who is master, under which epoch. Epochs only ever grow.
CREATE TABLE site_state (
    site        TEXT PRIMARY KEY NOT NULL,
    master      TEXT NOT NULL,
    epoch       INTEGER NOT NULL CHECK (epoch >= 0),
    updated_at  INTEGER NOT NULL            -- unix milliseconds
);

-- What happened: pushes, checks, failovers, alerts, agent starts and stops.
CREATE TABLE history (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,              -- unix milliseconds
    site     TEXT,                          -- NULL for node-wide events
    kind     TEXT NOT NULL,
    outcome  TEXT NOT NULL CHECK (outcome IN ('ok', 'warn', 'fail', 'info')),
    summary  TEXT NOT NULL,
    detail   TEXT                           -- JSON, shape depends on kind
);
CREATE INDEX history_by_site ON history (site, at);
CREATE INDEX history_by_time ON history (at);

-- Mail waiting to go out. A message id is unique across both nodes, so a message
-- handed to the peer is never sent twice.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT NOT NULL UNIQUE,
    created_at       INTEGER NOT NULL,
    origin           TEXT NOT NULL,         -- node that wrote the message
    site             TEXT,
    subject          TEXT NOT NULL,
    message          BLOB NOT NULL,         -- the complete RFC 5322 message
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'sent', 'handed_off')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    done_at          INTEGER
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
