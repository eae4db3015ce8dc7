-- Campaigns (service "campaign", entity "main"). Metadata and state are JSON text.
CREATE TABLE IF NOT EXISTS service_campaign_main (
    id          TEXT PRIMARY KEY NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('draft', 'active', 'ended')),
    metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    state       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(state)),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS service_campaign_main_status_idx ON service_campaign_main (status, id);
