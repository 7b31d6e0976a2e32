-- Version 17: scanned documents' files, as migrations/017_attachments.sql (SQLite) says.
CREATE TABLE attachments (
    hash       TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    size       BIGINT NOT NULL,
    parts      BIGINT NOT NULL,
    complete   BIGINT NOT NULL,
    stored_at  BIGINT NOT NULL
);

CREATE TABLE attachment_parts (
    hash TEXT NOT NULL REFERENCES attachments (hash),
    part BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (hash, part)
);

CREATE TABLE chart_attachments (
    chart_id TEXT NOT NULL,
    hash     TEXT NOT NULL REFERENCES attachments (hash),
    PRIMARY KEY (chart_id, hash)
);
CREATE INDEX chart_attachments_by_hash ON chart_attachments (hash);
