-- chartsync store, version 1. Released migrations are never edited: a change to the schema is
-- a new numbered file (core/src/store/schema.rs lists them, and a test pins their contents).

-- One row per chart: where its bytes are and the fields a listing needs, so that a ward's
-- census never loads a document. Kept in the same transaction as every change to the chart.
CREATE TABLE charts (
    key               INTEGER PRIMARY KEY,        -- what the other tables refer to: 8 bytes, not 28
    id                TEXT NOT NULL UNIQUE,       -- automerge-repo document id (base58check)
    mrn               TEXT NOT NULL,
    family_name       TEXT NOT NULL,
    given_names       TEXT NOT NULL,
    ward              TEXT NOT NULL,
    bed               TEXT,
    status            TEXT NOT NULL,              -- encounter status token: active, discharged
    admitted_at       TEXT NOT NULL,              -- RFC 3339 UTC, as in the chart
    discharged_at     TEXT,
    open_deficiencies INTEGER NOT NULL DEFAULT 0,
    heads             BLOB NOT NULL,              -- the document's heads, 32 bytes each, sorted
    modified_at       INTEGER NOT NULL,           -- store clock, milliseconds since the epoch
    snapshot_bytes    INTEGER NOT NULL,
    incremental_bytes INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX charts_by_ward ON charts (ward, status, bed);
CREATE INDEX charts_by_mrn ON charts (mrn);
CREATE INDEX charts_by_status ON charts (status, modified_at);
CREATE INDEX charts_by_modified ON charts (modified_at);

-- The compacted document (automerge save()).
CREATE TABLE chart_snapshots (
    chart INTEGER PRIMARY KEY REFERENCES charts (key),
    data  BLOB NOT NULL
) STRICT;

-- Changes appended since the snapshot (automerge incremental saves), one row per commit.
-- AUTOINCREMENT: sequence numbers are never reused, so compaction can delete "everything up to
-- the sequence number it read" while new commits arrive.
CREATE TABLE chart_changes (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    chart INTEGER NOT NULL REFERENCES charts (key),
    data  BLOB NOT NULL
) STRICT;

CREATE INDEX chart_changes_by_chart ON chart_changes (chart, seq);

-- What each deficiency rule found, per record, so counts and worklists need no document.
CREATE TABLE deficiencies (
    chart       INTEGER NOT NULL REFERENCES charts (key),
    section     TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    responsible TEXT,
    detail      TEXT
) STRICT;

CREATE INDEX deficiencies_by_record ON deficiencies (chart, section, record_id);
CREATE INDEX deficiencies_by_kind ON deficiencies (kind, chart);

-- automerge sync state per (peer, chart): what the peer is known to have, so a reconnect
-- sends only what changed. `peer` is the peer's storage id, or its peer id if it has none.
-- Keyed by document id: a peer may announce a chart before this store has it.
CREATE TABLE sync_states (
    peer       TEXT NOT NULL,
    chart_id   TEXT NOT NULL,
    state      BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (peer, chart_id)
) STRICT, WITHOUT ROWID;
