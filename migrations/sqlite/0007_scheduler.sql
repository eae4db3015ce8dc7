-- Scheduler (service "scheduler"). Times are ms since the epoch.
-- One row per job an entity declares (`metadata.scheduling.jobs`), unique by owner and name.
-- A one-off job has `at_ms` (a relative job's time, resolved), a cron job `cron` and
-- `timezone`. `spec` is the declaration as registered (JSON), `payload` what the handler gets.
-- A claim leases the row to a node (`lease_owner` until `lease_until`) and increments
-- `fence`: a completion is accepted only with the fence of its claim. `attempts` counts the
-- failed attempts of the current occurrence.
CREATE TABLE IF NOT EXISTS service_scheduler_job (
    id            TEXT PRIMARY KEY NOT NULL,
    entity_type   TEXT NOT NULL,
    entity_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    spec          TEXT NOT NULL,
    at_ms         INTEGER,
    cron          TEXT,
    timezone      TEXT,
    skip_missed   INTEGER NOT NULL CHECK (skip_missed IN (0, 1)),
    max_attempts  INTEGER NOT NULL CHECK (max_attempts >= 1),
    status        TEXT NOT NULL CHECK (status IN ('active', 'paused', 'done', 'failed')),
    next_run_at   INTEGER,
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_run_at   INTEGER,
    last_outcome  TEXT CHECK (last_outcome IN ('running', 'succeeded', 'failed', 'skipped')),
    last_error    TEXT,
    lease_owner   TEXT,
    lease_until   INTEGER,
    fence         INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    CHECK ((at_ms IS NULL) <> (cron IS NULL)),
    UNIQUE (entity_type, entity_id, name)
);
-- Claims: due active jobs, oldest first.
CREATE INDEX IF NOT EXISTS service_scheduler_job_due_idx
    ON service_scheduler_job (status, next_run_at);
CREATE INDEX IF NOT EXISTS service_scheduler_job_kind_idx
    ON service_scheduler_job (kind, id);

-- One row per run (and per skipped missed occurrence): `running` from its claim until it
-- ends; `fence` is the claim's token.
CREATE TABLE IF NOT EXISTS service_scheduler_run (
    id           TEXT PRIMARY KEY NOT NULL,
    job_id       TEXT NOT NULL REFERENCES service_scheduler_job (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL CHECK (attempt >= 1),
    fence        INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    outcome      TEXT NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'skipped')),
    error        TEXT,
    node         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_scheduler_run_job_idx ON service_scheduler_run (job_id, id);

-- Campaign managers read the jobs of their campaigns and (through the campaign service)
-- register them; admins (`*`) also pause, resume and trigger them.
INSERT OR IGNORE INTO service_security_policy (role, resource, action) VALUES
    ('campaign_manager', 'scheduler', 'read'),
    ('campaign_manager', 'scheduler', 'register');
