-- Version 13 brings PostgreSQL's single-writer lease and its queue of charts due a compaction
-- (migrations/postgres/013_lease.sql): work one server node does for every node. A SQLite store
-- is one process's, which does that work itself; it has nothing to add at this version.
SELECT 1;
