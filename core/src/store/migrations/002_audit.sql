-- chartsync store, version 2: the audit trail (45 CFR 164.312(b)), and the store's own facts.
-- The trail: who read, wrote, was denied or had changes refused, on which chart, with which
-- change hashes, when. Rows are only ever inserted: the store has no call that updates or
-- deletes them.
CREATE TABLE audit_events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,  -- milliseconds since the epoch, the store's clock
    user      TEXT NOT NULL,
    role      TEXT NOT NULL,
    device    TEXT NOT NULL,     -- the peer id, or the client that made the request
    action    TEXT NOT NULL,     -- read, list, write, create, deny, reject
    chart_id  TEXT,              -- the document id, when the event is about one chart
    changes   TEXT,              -- hex change hashes, space-separated, for writes
    detail    TEXT               -- ids and reasons only, never chart content
) STRICT;

CREATE INDEX audit_events_by_chart ON audit_events (chart_id, seq);

-- Facts about the store itself, e.g. its storage id: what sync peers key their state for this
-- store by (automerge-repo's `storageId`).
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Ward census documents: automerge documents the server writes (and devices only read) that
-- list a ward's charts, so that a tablet discovers them over its sync connection.
CREATE TABLE census_docs (
    ward  TEXT PRIMARY KEY NOT NULL,
    id    TEXT NOT NULL UNIQUE,  -- the census's document id, derived from the ward
    data  BLOB NOT NULL          -- automerge save()
) STRICT;
