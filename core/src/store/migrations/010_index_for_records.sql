-- Version 10: what the records office's coding queue, chart search, patient-index checks and
-- audit trails read from indexes rather than from every chart or row: the attending
-- physician, the encounter's class, the discharge disposition, and the patient's date of
-- birth and sex. Kept with every commit; the charts already in the store get them from the
-- rebuild that the `index_fields` version below asks for (core/src/store/records.rs).
ALTER TABLE charts ADD COLUMN attending TEXT;        -- a staff id
ALTER TABLE charts ADD COLUMN encounter_class TEXT;  -- inpatient, emergency, ...
ALTER TABLE charts ADD COLUMN disposition TEXT;      -- as the discharge recorded it
ALTER TABLE charts ADD COLUMN birth_date TEXT;       -- YYYY-MM-DD
ALTER TABLE charts ADD COLUMN sex TEXT;              -- as the chart's token
CREATE INDEX charts_by_birth_date ON charts (birth_date) WHERE birth_date IS NOT NULL;
CREATE INDEX charts_by_family_name ON charts (family_name COLLATE NOCASE);

-- A person's audit trail (what one user did), as the records office reads it.
CREATE INDEX audit_events_by_user ON audit_events (user, seq);

INSERT INTO store_meta (key, value) VALUES ('index_fields', '0')
    ON CONFLICT (key) DO UPDATE SET value = '0';
