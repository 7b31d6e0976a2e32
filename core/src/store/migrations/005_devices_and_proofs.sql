-- chartsync store, version 5: shared ward tablets (docs/adr/0008-shared-tablets.md). The server
-- keeps a staff directory, the tablets it enrolled, the certificates it issued to people on
-- them, revocations, the proof of authorship of every change it accepted from a tablet, and
-- break-glass grants. A tablet keeps its enrolment, the certificates and sealed signing keys of
-- the people who signed in on it, and the proofs of the changes made on it.

-- Server: the staff directory. Wards as a JSON array of ward ids (`*`: every ward).
CREATE TABLE staff (
    user       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    wards      TEXT NOT NULL,
    password   TEXT,                             -- Argon2id PHC string; NULL: no password set
    status     TEXT NOT NULL DEFAULT 'active',   -- active, revoked
    source     TEXT NOT NULL DEFAULT 'local',    -- local, import
    updated_at INTEGER NOT NULL,                 -- milliseconds since the epoch
    updated_by TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Server: enrolled tablets, known by their public key.
CREATE TABLE devices (
    id          BLOB PRIMARY KEY,                -- 16 bytes: SHA-256(public key)[..16]
    public_key  BLOB NOT NULL,                   -- 32 bytes, Ed25519
    label       TEXT NOT NULL,                   -- what is written on the tablet, e.g. T-07
    wards       TEXT NOT NULL,                   -- JSON array
    status      TEXT NOT NULL DEFAULT 'active',  -- active, revoked
    enrolled_at INTEGER NOT NULL,
    enrolled_by TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Server: one-time enrolment codes, kept by hash only.
CREATE TABLE enrolment_codes (
    code_hash   BLOB PRIMARY KEY,                -- SHA-256 of the code as printed
    label       TEXT NOT NULL,
    wards       TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    redeemed_at INTEGER,
    device      BLOB                             -- the device that redeemed it
) STRICT, WITHOUT ROWID;

-- Server and tablet: certificates issued (server) or held (tablet), as signed.
CREATE TABLE certificates (
    serial     BLOB PRIMARY KEY,                 -- 16 bytes
    user       TEXT NOT NULL,
    role       TEXT NOT NULL,
    device     BLOB NOT NULL,
    not_before INTEGER NOT NULL,                 -- seconds since the epoch
    not_after  INTEGER NOT NULL,
    issued_at  INTEGER NOT NULL,
    data       BLOB NOT NULL                     -- the signed certificate's wire form
) STRICT, WITHOUT ROWID;

CREATE INDEX certificates_by_user ON certificates (user, device);
CREATE INDEX certificates_by_device ON certificates (device);

-- Server: revocations of a person, a certificate or a device, from an effective time. Changes
-- proven by a revoked credential are held for review, never merged silently, never dropped.
CREATE TABLE revocations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,                  -- person, certificate, device
    subject      TEXT NOT NULL,                  -- user id, serial (hex) or device id (hex)
    severity     TEXT NOT NULL,                  -- administrative, compromised
    effective_at INTEGER NOT NULL,               -- milliseconds since the epoch
    reason       TEXT NOT NULL,
    revoked_by   TEXT NOT NULL,
    entered_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX revocations_by_subject ON revocations (kind, subject);

-- Server and tablet: who proved each change, as signed, so the proof can be checked again
-- later. Several proofs may stand for one change.
CREATE TABLE change_proofs (
    hash        BLOB NOT NULL,                   -- 32 bytes
    serial      BLOB NOT NULL,                   -- the certificate's
    chart_id    TEXT NOT NULL,
    signed_at   INTEGER NOT NULL,                -- seconds since the epoch, the tablet's clock
    signature   BLOB NOT NULL,                   -- 64 bytes
    received_at INTEGER,                         -- server: when it arrived (ms); tablet: NULL
    PRIMARY KEY (hash, serial)
) STRICT, WITHOUT ROWID;

CREATE INDEX change_proofs_by_chart ON change_proofs (chart_id);

-- Server and tablet: break-glass access to a chart outside a person's wards, for a limited
-- time, for a privacy officer to review.
CREATE TABLE break_glass (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user        TEXT NOT NULL,
    role        TEXT NOT NULL,
    chart_id    TEXT NOT NULL,
    reason_code TEXT NOT NULL,                   -- ETREAT, BTG
    reason_text TEXT NOT NULL,
    starts_at   INTEGER NOT NULL,                -- milliseconds since the epoch
    ends_at     INTEGER NOT NULL,
    granted     TEXT NOT NULL,                   -- online, offline
    device      TEXT,                            -- the tablet's id (hex), if on a tablet
    serial      BLOB,                            -- the certificate that signed an offline grant
    signature   BLOB,
    filed_at    INTEGER,                         -- when the server filed it (tablet: NULL until sent)
    ended_at    INTEGER,
    reviewed_by TEXT,
    reviewed_at INTEGER,
    review_note TEXT
) STRICT;

CREATE INDEX break_glass_by_review ON break_glass (reviewed_at, starts_at);
CREATE INDEX break_glass_by_chart ON break_glass (chart_id);
-- A signed request is filed once, however often it is sent.
CREATE UNIQUE INDEX break_glass_by_signature ON break_glass (signature)
    WHERE signature IS NOT NULL;

-- Server: held changes keep the proofs they came with, and who signed them.
ALTER TABLE held_changes ADD COLUMN proofs BLOB;
ALTER TABLE held_changes ADD COLUMN signer TEXT;

-- Tablet: its enrolment. The device key stays in the app's key store; this keeps what the
-- server said about it and the issuer keys it pinned.
CREATE TABLE device_identity (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    device      BLOB NOT NULL,
    server      TEXT NOT NULL,                   -- the server's base URL
    label       TEXT NOT NULL,
    wards       TEXT NOT NULL,                   -- JSON array
    issuer_keys BLOB NOT NULL,                   -- the server's issuer public keys, 32 bytes each
    policy      TEXT NOT NULL,                   -- JSON: idle lock, PIN attempts, ...
    enrolled_at INTEGER NOT NULL
) STRICT;

-- Tablet: the people who signed in here, with their sealed keys.
CREATE TABLE local_credentials (
    user            TEXT PRIMARY KEY,
    serial          BLOB NOT NULL,               -- the current certificate's
    sealed          BLOB,                        -- NULL once erased
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    last_unlock     INTEGER,
    erased_at       INTEGER,
    erased_why      TEXT                         -- pin_attempts, revoked, signed_out
) STRICT, WITHOUT ROWID;
