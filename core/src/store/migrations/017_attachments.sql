-- Version 17: scanned documents' files (docs/records-office.md, "Scanned documents"), kept
-- outside the charts' history and named by the SHA-256 of their bytes. On the server every
-- file is complete; on a tablet a file is here only once someone opened it, and is complete
-- once every part came and the whole hashed to its name.
CREATE TABLE attachments (
    hash       TEXT PRIMARY KEY,               -- hex SHA-256 of the whole file
    media_type TEXT NOT NULL,                  -- application/pdf, image/jpeg, image/png
    size       INTEGER NOT NULL,               -- bytes
    parts      INTEGER NOT NULL,               -- of 256 KiB each, the last one shorter
    complete   INTEGER NOT NULL,
    stored_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The bytes, a part a row (a rowid table: its rows are large).
CREATE TABLE attachment_parts (
    hash TEXT NOT NULL REFERENCES attachments (hash),
    part INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (hash, part)
) STRICT;

-- Which charts name which files: a file goes with the last chart that names it.
CREATE TABLE chart_attachments (
    chart_id TEXT NOT NULL,
    hash     TEXT NOT NULL REFERENCES attachments (hash),
    PRIMARY KEY (chart_id, hash)
) STRICT, WITHOUT ROWID;
CREATE INDEX chart_attachments_by_hash ON chart_attachments (hash);
