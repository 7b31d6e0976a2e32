-- Version 15: retention, legal holds and destruction (docs/records-office.md, "Retention,
-- legal holds and destruction"). The server's; a tablet has them empty.

-- How long a record class is kept. `class` is an encounter class (inpatient, observation,
-- emergency, day_case) or 'default'. A chart is kept until the later of its discharge plus
-- `years_after_discharge` and the patient's `until_age` birthday. 42 CFR 482.24(b): never
-- fewer than 5 years (the store refuses less).
CREATE TABLE retention_rules (
    class                 TEXT PRIMARY KEY,
    years_after_discharge INTEGER NOT NULL,
    until_age             INTEGER,                -- NULL: no age rule
    citation              TEXT NOT NULL,          -- the rule's source, as certificates name it
    set_by                TEXT NOT NULL,
    set_at                INTEGER NOT NULL        -- milliseconds since the epoch
) STRICT, WITHOUT ROWID;

-- Legal holds: a patient's records (by MRN) or one chart kept whatever retention says, from
-- when a records supervisor places the hold until one lifts it, each with a reason.
CREATE TABLE legal_holds (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    mrn         TEXT,
    chart_id    TEXT,
    reason      TEXT NOT NULL,
    placed_by   TEXT NOT NULL,
    placed_at   INTEGER NOT NULL,
    lifted_by   TEXT,
    lifted_at   INTEGER,
    lift_reason TEXT,
    CHECK ((mrn IS NULL) <> (chart_id IS NULL))
) STRICT;

CREATE INDEX legal_holds_by_mrn ON legal_holds (mrn) WHERE lifted_at IS NULL;
CREATE INDEX legal_holds_by_chart ON legal_holds (chart_id) WHERE lifted_at IS NULL;

-- A destruction: proposed (the charts past retention and under no hold, as of `as_of`), then
-- approved by a records supervisor, when each chart is checked again and destroyed.
CREATE TABLE destruction_batches (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    as_of       INTEGER NOT NULL,
    proposed_by TEXT NOT NULL,
    proposed_at INTEGER NOT NULL,
    decided_by  TEXT,
    decided_at  INTEGER,
    status      TEXT NOT NULL                     -- proposed, approving, destroyed, cancelled
) STRICT;

-- The certificate of destruction, one row per chart of a batch, kept for good: what (the
-- chart, MRN, stay, and the heads destroyed), when, by whom (the batch), under which rule.
CREATE TABLE destruction_items (
    batch           INTEGER NOT NULL REFERENCES destruction_batches (id),
    chart_id        TEXT NOT NULL,
    mrn             TEXT NOT NULL,
    encounter_class TEXT,
    admitted_at     TEXT NOT NULL,
    discharged_at   TEXT NOT NULL,
    retain_until    TEXT NOT NULL,                -- YYYY-MM-DD
    rule            TEXT NOT NULL,                -- the rule as applied, in words
    outcome         TEXT NOT NULL,                -- proposed, destroyed, kept
    note            TEXT,                         -- why kept
    heads           BLOB,                         -- what was destroyed
    destroyed_at    INTEGER,
    PRIMARY KEY (batch, chart_id)
) STRICT, WITHOUT ROWID;

-- Charts destroyed: never stored again, under their id or (by their first change) another.
CREATE TABLE destroyed_charts (
    chart_id     TEXT PRIMARY KEY,
    origin       BLOB,
    batch        INTEGER NOT NULL,
    destroyed_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX destroyed_charts_by_origin ON destroyed_charts (origin) WHERE origin IS NOT NULL;
