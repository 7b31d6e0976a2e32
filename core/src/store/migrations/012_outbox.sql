-- Version 12 brings PostgreSQL's chart_outbox (migrations/postgres/012_outbox.sql): the fan-out
-- between server nodes on one database. A SQLite store has one writer in one process, whose
-- change feed tells everything; it has nothing to add at this version.
SELECT 1;
