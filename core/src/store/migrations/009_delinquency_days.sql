-- Version 9: the delinquency count kept once a day per ward, for the records office's trend.
-- What was delinquent on a past day cannot be read back from the charts, so each day is
-- counted as it passes (core/src/store/delinquency.rs); the server recounts today every hour.
CREATE TABLE delinquency_days (
    day            TEXT NOT NULL,     -- YYYY-MM-DD, UTC
    ward           TEXT NOT NULL,
    delinquent     INTEGER NOT NULL,  -- discharged charts overdue for record completion
    coding_backlog INTEGER NOT NULL,  -- discharged charts whose coding is not final
    PRIMARY KEY (day, ward)
) STRICT, WITHOUT ROWID;
