-- Campaigns (service "campaign", entity "main"). Metadata and state are jsonb.
CREATE TABLE IF NOT EXISTS service_campaign_main (
    id          TEXT PRIMARY KEY NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('draft', 'active', 'ended')),
    metadata    JSONB NOT NULL DEFAULT '{}'::jsonb,
    state       JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS service_campaign_main_status_idx ON service_campaign_main (status, id);
CREATE INDEX IF NOT EXISTS service_campaign_main_metadata_gin ON service_campaign_main USING GIN (metadata);
