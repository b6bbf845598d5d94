-- What each side of a push job knew after its last confirmed push (agent::sync::Manifest,
-- zstd-compressed JSON): the sender's of its source, the receiver's of its replica.
CREATE TABLE sync_manifest (
    site        TEXT    NOT NULL,
    job         TEXT    NOT NULL,
    side        TEXT    NOT NULL CHECK (side IN ('send', 'receive')),
    generation  TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,           -- unix milliseconds
    data        BLOB    NOT NULL,
    PRIMARY KEY (site, job, side)
) STRICT;
