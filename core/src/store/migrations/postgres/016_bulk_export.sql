-- Version 16: FHIR Bulk Data export, as migrations/016_bulk_export.sql (SQLite) says.
CREATE TABLE bulk_clients (
    client_id         TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    jwks              TEXT NOT NULL,
    purpose           TEXT NOT NULL,
    recipient         TEXT,
    recipient_address TEXT,
    registered_by     TEXT NOT NULL,
    registered_at     BIGINT NOT NULL,
    revoked_at        BIGINT
);

CREATE TABLE bulk_assertions (
    client_id TEXT NOT NULL,
    jti       TEXT NOT NULL,
    exp       BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);

CREATE TABLE bulk_jobs (
    id               TEXT PRIMARY KEY,
    client_id        TEXT NOT NULL,
    request          TEXT NOT NULL,
    ward             TEXT,
    since            BIGINT,
    types            TEXT,
    status           TEXT NOT NULL,
    done             BIGINT NOT NULL DEFAULT 0,
    total            BIGINT NOT NULL DEFAULT 0,
    transaction_time BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    error            TEXT
);

CREATE TABLE bulk_files (
    job   TEXT NOT NULL REFERENCES bulk_jobs (id),
    name  TEXT NOT NULL,
    type  TEXT NOT NULL,
    count BIGINT NOT NULL,
    data  BYTEA NOT NULL,
    PRIMARY KEY (job, name)
);

-- Disclosures made by exports to a client whose exports are disclosures: one row per chart
-- and export, in the patient's accounting (45 CFR 164.528) beside those the chart records.
-- Kept here rather than written into each chart, which would make every chart exported
-- "changed" for the next export's `_since`.
CREATE TABLE bulk_disclosures (
    chart_id          TEXT NOT NULL,
    job               TEXT NOT NULL,
    at                BIGINT NOT NULL,
    recipient         TEXT NOT NULL,
    recipient_address TEXT NOT NULL,
    description       TEXT NOT NULL,
    purpose           TEXT NOT NULL,
    by_client         TEXT NOT NULL,
    PRIMARY KEY (chart_id, job)
);
