-- Localization (service "localization"): Fluent messages by namespace, key and locale (a BCP 47
-- tag in canonical form). `value` is the Fluent pattern of the message (checked by the service
-- before it is stored). Times are ms since the epoch.
CREATE TABLE IF NOT EXISTS service_localization_message (
    namespace    TEXT NOT NULL,
    message_key  TEXT NOT NULL,
    locale       TEXT NOT NULL,
    value        TEXT NOT NULL,
    updated_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (namespace, locale, message_key)
);
CREATE INDEX IF NOT EXISTS service_localization_message_key_idx
    ON service_localization_message (namespace, message_key, locale);

-- Babel pricing (service "babel"): markets (a currency and the countries it covers; a country
-- belongs to one market at most), and price rules per market and SKU or category. Amounts are
-- integer minor units of the market's currency; multipliers and tax rates are basis points.
CREATE TABLE IF NOT EXISTS service_babel_market (
    code        TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    currency    TEXT NOT NULL,
    locale      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS service_babel_market_country (
    country     TEXT PRIMARY KEY NOT NULL,
    market      TEXT NOT NULL REFERENCES service_babel_market (code) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS service_babel_market_country_market_idx
    ON service_babel_market_country (market, country);

CREATE TABLE IF NOT EXISTS service_babel_price_rule (
    id             TEXT PRIMARY KEY NOT NULL,
    market         TEXT NOT NULL REFERENCES service_babel_market (code),
    sku            TEXT,
    category       TEXT,
    kind           TEXT NOT NULL CHECK (kind IN ('explicit', 'multiplier')),
    amount         INTEGER CHECK (amount IS NULL OR amount >= 0),
    multiplier_bp  INTEGER CHECK (multiplier_bp IS NULL OR multiplier_bp > 0),
    rounding       TEXT NOT NULL CHECK (rounding IN ('none', 'to_99', 'whole')),
    tax_rate_bp    INTEGER NOT NULL CHECK (tax_rate_bp >= 0),
    tax_included   INTEGER NOT NULL CHECK (tax_included IN (0, 1)),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CHECK ((sku IS NULL) <> (category IS NULL)),
    CHECK ((kind = 'explicit' AND amount IS NOT NULL AND multiplier_bp IS NULL)
        OR (kind = 'multiplier' AND multiplier_bp IS NOT NULL AND amount IS NULL)),
    UNIQUE (market, sku),
    UNIQUE (market, category)
);

-- Two roles: translators and pricing managers. SQLite cannot change a CHECK constraint in
-- place, so the role table is rebuilt with the longer list.
CREATE TABLE service_user_role_new (
    user_id  TEXT NOT NULL REFERENCES service_user_master (id) ON DELETE CASCADE,
    role     TEXT NOT NULL CHECK (role IN ('user', 'campaign_manager', 'admin',
                                           'localization_manager', 'pricing_manager')),
    PRIMARY KEY (user_id, role)
);
INSERT INTO service_user_role_new (user_id, role) SELECT user_id, role FROM service_user_role;
DROP TABLE service_user_role;
ALTER TABLE service_user_role_new RENAME TO service_user_role;
CREATE INDEX IF NOT EXISTS service_user_role_role_idx ON service_user_role (role, user_id);

-- Messages, markets and prices are public; price rules are read by those who set them.
INSERT OR IGNORE INTO service_security_policy (role, resource, action) VALUES
    ('anonymous', 'localization', 'read'),
    ('user', 'localization', 'read'),
    ('campaign_manager', 'localization', 'read'),
    ('localization_manager', 'localization', 'read'),
    ('localization_manager', 'localization', 'write'),
    ('pricing_manager', 'localization', 'read'),
    ('anonymous', 'babel', 'price'),
    ('anonymous', 'babel', 'read'),
    ('user', 'babel', 'price'),
    ('user', 'babel', 'read'),
    ('campaign_manager', 'babel', 'price'),
    ('campaign_manager', 'babel', 'read'),
    ('localization_manager', 'babel', 'price'),
    ('localization_manager', 'babel', 'read'),
    ('pricing_manager', 'babel', 'price'),
    ('pricing_manager', 'babel', 'read'),
    ('pricing_manager', 'babel', 'read_rules'),
    ('pricing_manager', 'babel', 'write');
