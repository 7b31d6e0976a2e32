-- Version 11: requests for an accounting of disclosures (45 CFR 164.528). A request is a
-- patient's (an MRN's), across all their charts, so the store keeps it beside the index
-- rather than in a chart: tracked to its 60-day deadline and one 30-day extension, and each
-- accounting given kept exactly as it was given (164.528(d)), six years like the audit rows.
CREATE TABLE accounting_requests (
    id               TEXT PRIMARY KEY,     -- a UUID
    mrn              TEXT NOT NULL,
    requester        TEXT NOT NULL,        -- the patient, or who asks for them
    address          TEXT NOT NULL,        -- where the accounting goes
    since            TEXT,                 -- RFC 3339 UTC: a shorter period the patient asked for
    received_at      TEXT NOT NULL,
    received_by      TEXT NOT NULL,
    due_at           TEXT NOT NULL,
    fee_cents        INTEGER NOT NULL CHECK (fee_cents >= 0),
    first_in_year    INTEGER NOT NULL CHECK (first_in_year IN (0, 1)),
    extended_at      TEXT,
    extended_by      TEXT,
    extension_reason TEXT,
    original_due_at  TEXT,
    status           TEXT NOT NULL CHECK (status IN ('open', 'provided')),
    provided_at      TEXT,
    provided_by      TEXT,
    accounting       TEXT                  -- the accounting given, as JSON
) STRICT;

CREATE INDEX accounting_requests_open ON accounting_requests (due_at) WHERE status = 'open';
CREATE INDEX accounting_requests_by_mrn ON accounting_requests (mrn, received_at);
