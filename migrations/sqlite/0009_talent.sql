-- Talent (service "talent"). Times are ms since the epoch.
-- One profile per user (deleted with the user). `skills` is a JSON array of lower-case tags; `availability` the JSON
-- of the weekly rules and dated exceptions, on the wall clock of `timezone` (IANA).
CREATE TABLE IF NOT EXISTS service_talent_profile (
    id               TEXT PRIMARY KEY NOT NULL,
    user_id          TEXT NOT NULL UNIQUE REFERENCES service_user_master (id) ON DELETE CASCADE,
    headline         TEXT NOT NULL,
    bio              TEXT NOT NULL,
    skills           TEXT NOT NULL,
    hourly_rate_sku  TEXT,
    timezone         TEXT NOT NULL,
    visibility       TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    availability     TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS service_talent_profile_visibility_idx
    ON service_talent_profile (visibility, id);

-- Bookings of a profile by a client, `[start_ms, end_ms)`. Requested and confirmed ones hold
-- their time: no two of one talent overlap (on SQLite the check and the insert share one
-- `BEGIN IMMEDIATE` transaction; Postgres also has an exclusion constraint).
CREATE TABLE IF NOT EXISTS service_talent_booking (
    id          TEXT PRIMARY KEY NOT NULL,
    talent_id   TEXT NOT NULL REFERENCES service_talent_profile (id) ON DELETE CASCADE,
    client_id   TEXT NOT NULL,
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER NOT NULL,
    status      TEXT NOT NULL
                CHECK (status IN ('requested', 'confirmed', 'completed', 'declined', 'cancelled')),
    note        TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    CHECK (end_ms > start_ms)
);
CREATE INDEX IF NOT EXISTS service_talent_booking_talent_idx
    ON service_talent_booking (talent_id, start_ms);
CREATE INDEX IF NOT EXISTS service_talent_booking_client_idx
    ON service_talent_booking (client_id, id);

-- Everyone reads public profiles and free slots; users keep their own profile (`write`) and
-- book others (`book`); admins (`*`) also `manage` every profile and booking.
INSERT OR IGNORE INTO service_security_policy (role, resource, action) VALUES
    ('anonymous', 'talent', 'read'),
    ('user', 'talent', 'read'),
    ('user', 'talent', 'write'),
    ('user', 'talent', 'book');
