-- Users (service "user"): accounts and their roles.
CREATE TABLE IF NOT EXISTS service_user_master (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS service_user_role (
    user_id  TEXT NOT NULL REFERENCES service_user_master (id) ON DELETE CASCADE,
    role     TEXT NOT NULL CHECK (role IN ('user', 'campaign_manager', 'admin')),
    PRIMARY KEY (user_id, role)
);
CREATE INDEX IF NOT EXISTS service_user_role_role_idx ON service_user_role (role, user_id);

-- Security (service "security"): the audit log, one row per mutating call, written in the
-- transaction of the change; and the RBAC policies (role -> action on resource).
CREATE TABLE IF NOT EXISTS service_security_audit (
    id           TEXT PRIMARY KEY NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    entity_type  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    before       JSONB,
    after        JSONB,
    client_addr  TEXT,
    at           BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_security_audit_actor_idx ON service_security_audit (actor, id);
CREATE INDEX IF NOT EXISTS service_security_audit_entity_idx ON service_security_audit (entity_type, entity_id, id);
CREATE INDEX IF NOT EXISTS service_security_audit_at_idx ON service_security_audit (at);

CREATE TABLE IF NOT EXISTS service_security_policy (
    role      TEXT NOT NULL,
    resource  TEXT NOT NULL,
    action    TEXT NOT NULL,
    PRIMARY KEY (role, resource, action)
);

INSERT INTO service_security_policy (role, resource, action) VALUES
    ('anonymous', 'campaign', 'read'),
    ('anonymous', 'content', 'read'),
    ('user', 'campaign', 'read'),
    ('user', 'content', 'read'),
    ('user', 'content', 'create'),
    ('user', 'content', 'comment'),
    ('user', 'content', 'react'),
    ('campaign_manager', 'campaign', 'read'),
    ('campaign_manager', 'campaign', 'create'),
    ('campaign_manager', 'campaign', 'update'),
    ('campaign_manager', 'campaign', 'delete'),
    ('campaign_manager', 'campaign', 'watch'),
    ('campaign_manager', 'broadcast', 'publish'),
    ('campaign_manager', 'broadcast', 'subscribe'),
    ('campaign_manager', 'content', 'read'),
    ('campaign_manager', 'content', 'create'),
    ('campaign_manager', 'content', 'comment'),
    ('campaign_manager', 'content', 'react'),
    ('admin', '*', '*')
ON CONFLICT DO NOTHING;

-- Campaign schedule (service "campaign"): optional start and end times, ms since the epoch.
ALTER TABLE service_campaign_main ADD COLUMN IF NOT EXISTS starts_at BIGINT;
ALTER TABLE service_campaign_main ADD COLUMN IF NOT EXISTS ends_at BIGINT;
