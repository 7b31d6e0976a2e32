-- chartsync store, version 4: what happens to an edit the server will not merge on its own.
-- A refusal is per chart, never per connection (docs/protocol.md, ADR 0007): the server keeps
-- what it refused for a records supervisor to accept or reject, and the device keeps the chart
-- held, and says so, until the decision reaches it.

-- Server: the holding area. One row per refused batch of changes to one chart from one device;
-- the changes are not merged, not sent to other devices, and never deleted.
CREATE TABLE held_changes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    chart_id        TEXT NOT NULL,               -- automerge-repo document id
    device          TEXT NOT NULL,               -- the device's peer id
    storage         TEXT,                        -- the device's storage id, when it has one
    user            TEXT NOT NULL,               -- who was signed in on the connection
    role            TEXT NOT NULL,
    reason          TEXT NOT NULL,               -- a HoldReason token
    summary         TEXT NOT NULL,               -- why, in ids and paths only: never chart content
    changes         BLOB NOT NULL,               -- the automerge changes, as sent
    hashes          TEXT NOT NULL,               -- their hashes, hex, space-separated
    bytes           INTEGER NOT NULL,
    held_at         INTEGER NOT NULL,            -- milliseconds since the epoch
    status          TEXT NOT NULL DEFAULT 'pending',  -- pending, accepted, rejected
    decided_by      TEXT,
    decided_at      INTEGER,
    decision_reason TEXT
) STRICT;

CREATE INDEX held_changes_by_chart ON held_changes (chart_id, status);
CREATE INDEX held_changes_by_user ON held_changes (user, status);
CREATE INDEX held_changes_by_status ON held_changes (status, held_at);

-- Each held change once: a device that sends a held change again (a reconnect) is told it is
-- held, and nothing is added.
CREATE TABLE held_change_hashes (
    hash BLOB PRIMARY KEY,                       -- 32 bytes
    held INTEGER NOT NULL REFERENCES held_changes (id)
) STRICT, WITHOUT ROWID;

-- Device: charts the server holds changes of, as it last said, so the tablet shows them held
-- while offline and after a restart.
CREATE TABLE device_holds (
    chart_id TEXT PRIMARY KEY,
    hold     INTEGER,                            -- the server's held_changes id, if it gave one
    reason   TEXT NOT NULL,                      -- a HoldReason token
    summary  TEXT NOT NULL,
    since    INTEGER NOT NULL,                   -- milliseconds since the epoch
    heads    BLOB NOT NULL,                      -- the chart's heads when it was held
    rejected TEXT                                -- the supervisor's reason, once rejected
) STRICT, WITHOUT ROWID;

-- Device: the heads of each chart the server has acknowledged (it stores changes before it
-- says it has them), so the changes still to send are counted while offline too.
CREATE TABLE acknowledged_heads (
    chart_id TEXT PRIMARY KEY,
    heads    BLOB NOT NULL                       -- 32 bytes each, sorted
) STRICT, WITHOUT ROWID;

-- Device: charts that left this device's wards (a transfer, or a discharge for ward staff), as
-- the server said once it had every change the device made to them. They stay on the device,
-- read-only, and leave its ward lists.
CREATE TABLE device_departures (
    chart_id TEXT PRIMARY KEY,
    reason   TEXT NOT NULL,                      -- transferred, discharged
    at       INTEGER NOT NULL                    -- milliseconds since the epoch
) STRICT, WITHOUT ROWID;

-- Server: which device storage was told which chart left its wards, and the heads it had then.
-- A change from that device building on those heads was made after it knew: held, however
-- soon it arrives (a client that ignores the notice gets no 72 hours of grace).
CREATE TABLE departures_told (
    storage  TEXT NOT NULL,                      -- the device's storage id (or peer id)
    chart_id TEXT NOT NULL,
    heads    BLOB NOT NULL,                      -- 32 bytes each, sorted
    at       INTEGER NOT NULL,
    PRIMARY KEY (storage, chart_id)
) STRICT, WITHOUT ROWID;

-- Device: a chart whose changes made here a records supervisor rejected is set aside whole
-- (this device's copy, with every change in it, the rejected ones and any made since) and
-- fetched afresh from the record. The copy stays here, listed for the staff to re-enter what
-- is still needed; nothing is deleted.
CREATE TABLE set_aside_charts (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    chart_id TEXT NOT NULL,
    reason   TEXT NOT NULL,                      -- the records supervisor's
    at       INTEGER NOT NULL,                   -- milliseconds since the epoch
    data     BLOB NOT NULL                       -- this device's copy (automerge save)
) STRICT;

CREATE INDEX set_aside_by_chart ON set_aside_charts (chart_id);

-- The first change of each chart's history (its admission, or the least root hash where a
-- history has several): the same chart imported or sent again under another id is refused.
-- Charts stored before this version have none until they are imported again.
ALTER TABLE charts ADD COLUMN origin BLOB;
CREATE INDEX charts_by_origin ON charts (origin) WHERE origin IS NOT NULL;
