-- Amadeus (service "amadeus"): curator annotations of the knowledge graph. The graph's facts
-- are generated from the code; what people add (owners, notes, decisions) is kept here, by
-- the JSON pointer of the node it annotates. Times are ms since the epoch.
CREATE TABLE IF NOT EXISTS service_amadeus_annotation (
    pointer     TEXT PRIMARY KEY NOT NULL,
    annotation  TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Every annotation replaced, kept before the change (NULL: there was none).
CREATE TABLE IF NOT EXISTS service_amadeus_annotation_backup (
    id           TEXT PRIMARY KEY NOT NULL,
    pointer      TEXT NOT NULL,
    annotation   TEXT,
    replaced_by  TEXT NOT NULL,
    replaced_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_amadeus_annotation_backup_pointer_idx
    ON service_amadeus_annotation_backup (pointer, replaced_at);
