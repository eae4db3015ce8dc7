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
    payload       JSONB NOT NULL,
    spec          JSONB NOT NULL,
    at_ms         BIGINT,
    cron          TEXT,
    timezone      TEXT,
    skip_missed   BOOLEAN NOT NULL,
    max_attempts  BIGINT NOT NULL CHECK (max_attempts >= 1),
    status        TEXT NOT NULL CHECK (status IN ('active', 'paused', 'done', 'failed')),
    next_run_at   BIGINT,
    attempts      BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_run_at   BIGINT,
    last_outcome  TEXT CHECK (last_outcome IN ('running', 'succeeded', 'failed', 'skipped')),
    last_error    TEXT,
    lease_owner   TEXT,
    lease_until   BIGINT,
    fence         BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
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
    attempt      BIGINT NOT NULL CHECK (attempt >= 1),
    fence        BIGINT NOT NULL,
    due_at       BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    outcome      TEXT NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'skipped')),
    error        TEXT,
    node         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_scheduler_run_job_idx ON service_scheduler_run (job_id, id);

-- Campaign managers read the jobs of their campaigns and (through the campaign service)
-- register them; admins (`*`) also pause, resume and trigger them.
INSERT INTO service_security_policy (role, resource, action) VALUES
    ('campaign_manager', 'scheduler', 'read'),
    ('campaign_manager', 'scheduler', 'register')
ON CONFLICT DO NOTHING;
