-- Version 16: FHIR Bulk Data export (docs/fhir.md, "Bulk Data export"), the server's.

-- The systems that may export (SMART Backend Services): each signs its token requests with a
-- key whose public half is here (a JWK Set). `purpose`: `operations` (the hospital's own
-- analytics: not a disclosure) or `disclosure` (an exchange partner: each chart exported is a
-- disclosure to `recipient`, in the patient's accounting).
CREATE TABLE bulk_clients (
    client_id         TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    jwks              TEXT NOT NULL,           -- {"keys": [...]}, public keys only
    purpose           TEXT NOT NULL,
    recipient         TEXT,
    recipient_address TEXT,
    registered_by     TEXT NOT NULL,
    registered_at     INTEGER NOT NULL,
    revoked_at        INTEGER
) STRICT, WITHOUT ROWID;

-- Client assertions used: each `jti` once, until its `exp`.
CREATE TABLE bulk_assertions (
    client_id TEXT NOT NULL,
    jti       TEXT NOT NULL,
    exp       INTEGER NOT NULL,                -- seconds since the epoch
    PRIMARY KEY (client_id, jti)
) STRICT, WITHOUT ROWID;

-- Export jobs, and their NDJSON files (in the store: encrypted at rest with it).
CREATE TABLE bulk_jobs (
    id               TEXT PRIMARY KEY,
    client_id        TEXT NOT NULL,
    request          TEXT NOT NULL,            -- the kick-off URL
    ward             TEXT,                     -- a Group export's ward
    since            INTEGER,                  -- `_since`, milliseconds
    types            TEXT,                     -- `_type`, comma-separated
    status           TEXT NOT NULL,            -- running, done, failed, cancelled
    done             INTEGER NOT NULL DEFAULT 0,
    total            INTEGER NOT NULL DEFAULT 0,
    transaction_time INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    error            TEXT
) STRICT, WITHOUT ROWID;

CREATE TABLE bulk_files (
    job   TEXT NOT NULL REFERENCES bulk_jobs (id),
    name  TEXT NOT NULL,                       -- Patient.ndjson, Observation.ndjson, ...
    type  TEXT NOT NULL,
    count INTEGER NOT NULL,
    data  BLOB NOT NULL,
    PRIMARY KEY (job, name)
) STRICT, WITHOUT ROWID;

-- Disclosures made by exports to a client whose exports are disclosures: one row per chart
-- and export, in the patient's accounting (45 CFR 164.528) beside those the chart records.
-- Kept here rather than written into each chart, which would make every chart exported
-- "changed" for the next export's `_since`.
CREATE TABLE bulk_disclosures (
    chart_id          TEXT NOT NULL,
    job               TEXT NOT NULL,
    at                INTEGER NOT NULL,
    recipient         TEXT NOT NULL,
    recipient_address TEXT NOT NULL,
    description       TEXT NOT NULL,
    purpose           TEXT NOT NULL,
    by_client         TEXT NOT NULL,
    PRIMARY KEY (chart_id, job)
) STRICT, WITHOUT ROWID;
