-- The single-writer lease (docs/adr/0011): one server node at a time keeps the ward censuses,
-- compacts charts and runs the sweeps. Holding it is holding an advisory lock on a connection
-- of its own; this row says who holds it, and its epoch, raised at each change of hands, fences
-- a holder that lost the lock without knowing yet: what it writes as holder checks the epoch
-- in the same transaction.
CREATE TABLE chartsync_lease (
    name  TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    node  TEXT NOT NULL,   -- the holder's node id (its store's, logged as it starts)
    since BIGINT NOT NULL  -- milliseconds since the epoch
);

-- Charts a node found due a compaction while another holds the lease: the holder takes them
-- from here, and so does the next holder should this one die first.
CREATE TABLE compaction_due (
    chart_id TEXT PRIMARY KEY,
    at       BIGINT NOT NULL
);
