-- chartsync store, version 3: the chart audit's due dates, and the principal diagnosis for the
-- coding queue. The audit's rules live in core/src/chart/deficiency.rs.

-- When each deficiency must be put right (RFC 3339 UTC, as in the chart); NULL while it has no
-- due date (the patient is still in). Worklists ask "what is overdue on this ward".
ALTER TABLE deficiencies ADD COLUMN due_at TEXT;
CREATE INDEX deficiencies_by_due ON deficiencies (due_at, chart) WHERE due_at IS NOT NULL;

-- The principal ICD-10-CM diagnosis as coded so far (the final one if there is one), so the
-- coding queue lists it without loading the chart.
ALTER TABLE charts ADD COLUMN principal_diagnosis TEXT;
CREATE INDEX charts_by_discharge ON charts (status, discharged_at);

-- Which version of the audit rules built the deficiency rows and the fields above. A store
-- that opens with newer rules rebuilds them from the documents; version 1 had no due dates.
INSERT INTO store_meta (key, value) VALUES ('deficiency_rules', '1')
    ON CONFLICT (key) DO NOTHING;
