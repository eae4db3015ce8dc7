-- Users (service "user"): accounts and their roles.
CREATE TABLE IF NOT EXISTS service_user_master (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
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
    before       TEXT CHECK (before IS NULL OR json_valid(before)),
    after        TEXT CHECK (after IS NULL OR json_valid(after)),
    client_addr  TEXT,
    at           INTEGER NOT NULL
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

INSERT OR IGNORE INTO service_security_policy (role, resource, action) VALUES
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
    ('admin', '*', '*');

-- Campaign schedule (service "campaign"): optional start and end times, ms since the epoch.
ALTER TABLE service_campaign_main ADD COLUMN starts_at INTEGER;
ALTER TABLE service_campaign_main ADD COLUMN ends_at INTEGER;
