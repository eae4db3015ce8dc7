-- Nexus (service "nexus"): pattern versions, durable runs and their steps. Times are ms
-- since the epoch; JSON is stored as text.

-- Every version of every pattern: `builtin` ones are written at start-up when their
-- definition changed, `api` ones by admins.
CREATE TABLE IF NOT EXISTS service_nexus_pattern (
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('builtin', 'api')),
    definition  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

-- A run of one pattern version. The node in `claimed_by` works on it until `lease_until`;
-- each claim moves `fence` on and every write of the run is conditional on it. A run waits
-- for its next attempt until `next_at`. `caller_roles` is NULL for runs of the system.
CREATE TABLE IF NOT EXISTS service_nexus_run (
    id               TEXT PRIMARY KEY NOT NULL,
    pattern          TEXT NOT NULL,
    version          BIGINT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('running', 'compensating', 'succeeded',
                                                     'compensated', 'failed')),
    trigger_kind     TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL UNIQUE,
    input            TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    caller_id        TEXT,
    caller_roles     TEXT,
    started_by       TEXT NOT NULL,
    claimed_by       TEXT,
    lease_until      BIGINT,
    fence            BIGINT NOT NULL,
    next_at          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    FOREIGN KEY (pattern, version) REFERENCES service_nexus_pattern (name, version)
);
CREATE INDEX IF NOT EXISTS service_nexus_run_due_idx ON service_nexus_run (status, next_at);
CREATE INDEX IF NOT EXISTS service_nexus_run_pattern_idx ON service_nexus_run (pattern, id);
CREATE INDEX IF NOT EXISTS service_nexus_run_starter_idx ON service_nexus_run (started_by, id);

-- One step of a run, in run order (`position`), with its attempts and its compensation's.
CREATE TABLE IF NOT EXISTS service_nexus_step (
    run_id          TEXT NOT NULL REFERENCES service_nexus_run (id),
    name            TEXT NOT NULL,
    position        BIGINT NOT NULL,
    operation       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed',
                                                    'compensated', 'compensation_failed',
                                                    'skipped')),
    attempts        BIGINT NOT NULL,
    input           TEXT,
    output          TEXT,
    error           TEXT,
    started_at      BIGINT,
    finished_at     BIGINT,
    comp_attempts   BIGINT NOT NULL,
    comp_error      TEXT,
    compensated_at  BIGINT,
    PRIMARY KEY (run_id, name)
);

-- Patterns and runs are read by campaign managers and admins (`*`); admins register
-- patterns (`write`); every role may start runs (`run`): each step is authorised again by
-- its own service, as the caller who started the run.
INSERT OR IGNORE INTO service_security_policy (role, resource, action) VALUES
    ('user', 'nexus', 'run'),
    ('campaign_manager', 'nexus', 'run'),
    ('campaign_manager', 'nexus', 'read'),
    ('localization_manager', 'nexus', 'run'),
    ('pricing_manager', 'nexus', 'run');

-- The messages of the shipped patterns (in-app and real-time), in English; editable.
INSERT INTO service_notification_template
    (template_key, locale, category, subject, body_text, body_html, updated_by, created_at, updated_at)
VALUES
    ('campaign.launched', 'en', 'transactional',
     '{{ name }} is coming',
     'A campaign you follow, {{ name }}, starts at {{ starts_at }}.',
     NULL, 'system', 0, 0),
    ('referral.joined', 'en', 'transactional',
     'Welcome: your referral reward is in',
     'You joined with the code {{ code }}: your referral reward was credited to you.',
     NULL, 'system', 0, 0),
    ('talent.booked', 'en', 'transactional',
     'Your booking is confirmed',
     'Your booking from {{ start }} to {{ end }} is confirmed; its order awaits payment.',
     NULL, 'system', 0, 0)
ON CONFLICT (template_key, locale) DO NOTHING;
