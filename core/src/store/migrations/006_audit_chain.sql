-- chartsync store, version 6: a tamper-evident audit trail. Each row carries SHA-256 over the
-- row before it's `chain` and its own fields (core/src/store/audit.rs, `chain_hash`), so an edit,
-- a deletion or a reordering anywhere in the trail breaks every link after it, and
-- `chartsync-records verify` names the first broken row. Rows written before this version get
-- their links when the store is next opened, in order.
ALTER TABLE audit_events ADD COLUMN chain BLOB;
