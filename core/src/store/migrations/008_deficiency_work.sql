-- Version 8: the records office's own work on the chart audit's deficiencies, which the
-- charts do not carry: the person a deficiency is routed to (a physician, not a role), and an
-- acknowledgement of one that cannot be put right (an H&P that came late stays late).
-- A row names a deficiency as the audit finds it (chart, kind, record, detail); once the
-- chart is put right the deficiency goes and its row is no longer shown.
CREATE TABLE deficiency_work (
    chart           INTEGER NOT NULL REFERENCES charts (key),
    kind            TEXT NOT NULL,
    section         TEXT NOT NULL,
    record_id       TEXT NOT NULL,
    detail          TEXT NOT NULL,        -- '' when the deficiency has none
    assignee        TEXT,                 -- a user id from the staff directory
    assigned_by     TEXT,
    assigned_at     TEXT,                 -- RFC 3339 UTC
    acknowledged_by TEXT,
    acknowledged_at TEXT,
    acknowledgement TEXT,                 -- the reason given
    PRIMARY KEY (chart, kind, section, record_id, detail)
) STRICT, WITHOUT ROWID;

CREATE INDEX deficiency_work_by_assignee ON deficiency_work (assignee) WHERE assignee IS NOT NULL;
