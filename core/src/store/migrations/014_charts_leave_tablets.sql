-- Version 14: charts leave tablets (docs/records-office.md, "Charts leave tablets").

-- Device: when a chart that left this device's wards is removed from its store, as the server
-- said (the discharge or transfer time plus the server's purge delay; at once for a revoked
-- tablet). NULL: kept read-only, as before this version.
ALTER TABLE device_departures ADD COLUMN purge_at INTEGER;  -- milliseconds since the epoch

-- Device: the charts removed from this store. Ids, reasons and heads only: nothing of the
-- chart. A chart removed here is not fetched again unless a ward list this device follows
-- names it again (its access returned). `reported_at` is set once the server recorded the
-- removal; until then the report is sent on every connection.
CREATE TABLE purged_charts (
    chart_id    TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,                   -- transferred, discharged, revoked
    heads       BLOB NOT NULL,                   -- what the device held, 32 bytes each, sorted
    purged_at   INTEGER NOT NULL,                -- milliseconds since the epoch
    reported_at INTEGER
) STRICT, WITHOUT ROWID;

-- Server: every removal a device reported, kept with the audit trail's row for it. A device's
-- sync state and departure for the chart go when the removal is recorded.
CREATE TABLE device_purges (
    storage     TEXT NOT NULL,                   -- the device's storage id (or peer id)
    device      TEXT,                            -- the enrolled tablet's id (hex), if one
    chart_id    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    heads       BLOB NOT NULL,
    purged_at   INTEGER NOT NULL,                -- the device's clock
    recorded_at INTEGER NOT NULL,                -- the server's clock
    PRIMARY KEY (storage, chart_id, purged_at)
) STRICT, WITHOUT ROWID;

CREATE INDEX device_purges_by_device ON device_purges (device, recorded_at);
CREATE INDEX device_purges_by_chart ON device_purges (chart_id);
