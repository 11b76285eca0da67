"""The SQLite backend's schema: every table in one place, like `keys.py` for Redis.

One file holds everything the backend interface holds. Times are wall-clock seconds
(`time.time()`), because several processes on one box compare leases and expiries.
`expires_at` is NULL while a job runs; a terminal save sets it to now + the job TTL, and every
read treats an expired job as gone until the periodic prune deletes it with all it owns.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

# Per connection: WAL lets readers run beside the one writer (other processes included);
# synchronous=NORMAL in WAL mode survives a killed process (a commit is in the WAL before it
# returns) and, on power loss, can only lose the last commits, never corrupt the file.
CONNECTION_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA temp_store=MEMORY",
)

TABLES = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    idem_key TEXT UNIQUE,
    expires_at REAL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
-- AUTOINCREMENT: ids never go back after a delete, so "events since id N" finds every
-- append another process made (cross-process wake-ups).
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT,
    payload TEXT NOT NULL,
    UNIQUE (job_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_key ON events (job_id, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL,
    agent INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, agent)
);
CREATE TABLE IF NOT EXISTS sources (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    url TEXT NOT NULL,
    title TEXT NOT NULL,
    PRIMARY KEY (job_id, n),
    UNIQUE (job_id, url)
);
CREATE TABLE IF NOT EXISTS cancels (
    job_id TEXT PRIMARY KEY
);
-- The queue: a row per job from enqueue to ack. worker IS NULL = waiting (ordered by pos);
-- otherwise claimed until lease_until, after which any claim may take it over.
CREATE TABLE IF NOT EXISTS queue (
    job_id TEXT PRIMARY KEY,
    pos INTEGER NOT NULL,
    worker TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS queue_waiting ON queue (pos) WHERE worker IS NULL;
CREATE INDEX IF NOT EXISTS queue_leases ON queue (lease_until) WHERE worker IS NOT NULL;
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS locks (
    key TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL
);
-- The LLM limiter shared by the processes on the file (workers/backend/sqlite_limiter.py): the
-- holders of each endpoint's in-flight places, and each endpoint's pace (GCRA arrival time).
CREATE TABLE IF NOT EXISTS limiter_slots (
    endpoint TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (endpoint, token)
);
CREATE TABLE IF NOT EXISTS limiter_pace (
    endpoint TEXT PRIMARY KEY,
    tat REAL NOT NULL
);
-- Callers refused a place, in the order places go to them (first ask), until they lapse.
CREATE TABLE IF NOT EXISTS limiter_queue (
    endpoint TEXT NOT NULL,
    token TEXT NOT NULL,
    asked_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (endpoint, token)
);
-- Uploaded files (POST /v1/files): the FileRecord as JSON beside the bytes; created by this
-- statement on the next open of an older file too (no schema change for what was there).
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    record TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_expiry ON files (expires_at);
-- Jobs by status, kept by triggers so a metrics scrape reads six rows instead of counting
-- the jobs. A file made before this table gets it counted once, here, when first opened.
CREATE TABLE IF NOT EXISTS job_counts (
    status TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
INSERT INTO job_counts (status, n)
    SELECT status, COUNT(*) FROM jobs
    WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = 'job_counts') GROUP BY status;
INSERT OR IGNORE INTO meta (key, value) VALUES ('job_counts', '1');
CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF status ON jobs
    WHEN OLD.status <> NEW.status BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
    INSERT INTO job_counts (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
END;
"""

# Everything a job owns, deleted with it (the queue row is the worker's to ack).
JOB_TABLES = ("events", "checkpoints", "sources", "cancels")
