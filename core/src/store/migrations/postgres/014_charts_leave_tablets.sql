-- Version 14: charts leave tablets, as migrations/014_charts_leave_tablets.sql (SQLite) says.
-- The device's tables are kept in step, as every table is, though only a tablet writes them.
ALTER TABLE device_departures ADD COLUMN purge_at BIGINT;

CREATE TABLE purged_charts (
    chart_id    TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    heads       BYTEA NOT NULL,
    purged_at   BIGINT NOT NULL,
    reported_at BIGINT
);

CREATE TABLE device_purges (
    storage     TEXT NOT NULL,
    device      TEXT,
    chart_id    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    heads       BYTEA NOT NULL,
    purged_at   BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (storage, chart_id, purged_at)
);

CREATE INDEX device_purges_by_device ON device_purges (device, recorded_at);
CREATE INDEX device_purges_by_chart ON device_purges (chart_id);
