-- Notification (service "notification"). Times are ms since the epoch.
-- Templates: subject, text and HTML per key and locale (a BCP 47 tag in canonical form), in
-- MiniJinja syntax, checked by the service before they are stored.
CREATE TABLE IF NOT EXISTS service_notification_template (
    template_key TEXT NOT NULL,
    locale       TEXT NOT NULL,
    category     TEXT NOT NULL CHECK (category IN ('transactional', 'marketing')),
    subject      TEXT NOT NULL,
    body_text    TEXT NOT NULL,
    body_html    TEXT,
    updated_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (template_key, locale)
);

-- One row per notification and recipient, rendered once in the recipient's locale. `channels`
-- is the JSON array the sender asked for; rows with `in_inbox` = 1 are the user's inbox.
CREATE TABLE IF NOT EXISTS service_notification_master (
    id           TEXT PRIMARY KEY NOT NULL,
    batch_id     TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES service_user_master (id) ON DELETE CASCADE,
    template_key TEXT NOT NULL,
    locale       TEXT NOT NULL,
    category     TEXT NOT NULL CHECK (category IN ('transactional', 'marketing')),
    subject      TEXT NOT NULL,
    body_text    TEXT NOT NULL,
    body_html    TEXT,
    data         TEXT NOT NULL CHECK (json_valid(data)),
    channels     TEXT NOT NULL CHECK (json_valid(channels)),
    campaign_id  TEXT,
    in_inbox     INTEGER NOT NULL CHECK (in_inbox IN (0, 1)),
    read_at      INTEGER,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS service_notification_inbox_idx
    ON service_notification_master (user_id, in_inbox, id);
CREATE INDEX IF NOT EXISTS service_notification_batch_idx
    ON service_notification_master (batch_id);

-- The outbox: one row per notification and delivery channel (and webhook), drained by the
-- delivery workers of every node. A worker claims a row by setting `lease_until`/`lease_owner`
-- and raising `fence`; only the holder of the current fence may record the outcome.
CREATE TABLE IF NOT EXISTS service_notification_delivery (
    id              TEXT PRIMARY KEY NOT NULL,
    notification_id TEXT NOT NULL REFERENCES service_notification_master (id) ON DELETE CASCADE,
    channel         TEXT NOT NULL CHECK (channel IN ('realtime', 'email', 'webhook')),
    target          TEXT NOT NULL,
    webhook_id      TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    lease_owner     TEXT,
    fence           INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS service_notification_delivery_due_idx
    ON service_notification_delivery (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS service_notification_delivery_notification_idx
    ON service_notification_delivery (notification_id);

-- Opt-outs per user and channel (only `marketing` notifications respect them).
CREATE TABLE IF NOT EXISTS service_notification_preference (
    user_id    TEXT NOT NULL REFERENCES service_user_master (id) ON DELETE CASCADE,
    channel    TEXT NOT NULL CHECK (channel IN ('in_app', 'realtime', 'email', 'webhook')),
    enabled    INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, channel)
);

-- Webhook endpoints, registered by a user for their own notifications or by a campaign
-- manager for a campaign's. `secret` signs every delivery (HMAC-SHA256).
CREATE TABLE IF NOT EXISTS service_notification_webhook (
    id         TEXT PRIMARY KEY NOT NULL,
    owner_type TEXT NOT NULL CHECK (owner_type IN ('user', 'campaign')),
    owner_id   TEXT NOT NULL,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    active     INTEGER NOT NULL CHECK (active IN (0, 1)),
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS service_notification_webhook_owner_idx
    ON service_notification_webhook (owner_type, owner_id);

-- The user's locale (a BCP 47 tag; NULL: the default locale), for notifications and formats.
ALTER TABLE service_user_master ADD COLUMN locale TEXT;

-- Everyone reads their own inbox and preferences; managers and admins send and keep templates.
INSERT OR IGNORE INTO service_security_policy (role, resource, action) VALUES
    ('user', 'notification', 'inbox'),
    ('campaign_manager', 'notification', 'inbox'),
    ('admin', 'notification', 'inbox'),
    ('localization_manager', 'notification', 'inbox'),
    ('pricing_manager', 'notification', 'inbox'),
    ('campaign_manager', 'notification', 'send'),
    ('admin', 'notification', 'send'),
    ('campaign_manager', 'notification', 'templates'),
    ('admin', 'notification', 'templates'),
    ('localization_manager', 'notification', 'templates');
