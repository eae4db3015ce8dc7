-- Referral (service "referral"). Times are ms since the epoch.

-- A referral code of a user: for one campaign (its `custom_rules` say the reward) or global
-- (`campaign_id` NULL: attributes sign-ups, rewards nothing). `owner_addr` and
-- `owner_device` are the client address and device fingerprint the owner created it from,
-- compared with the referees' (fraud rule `same_address` / `same_device`).
CREATE TABLE IF NOT EXISTS service_referral_code (
    code          TEXT PRIMARY KEY NOT NULL,
    owner_id      TEXT NOT NULL,
    campaign_id   TEXT,
    active        BOOLEAN NOT NULL,
    owner_addr    TEXT,
    owner_device  TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_referral_code_owner_idx
    ON service_referral_code (owner_id, code);

-- One sign-up attributed to a code (a user is referred at most once). `status`: `pending`
-- (waiting for the reward's condition), `held` (a fraud rule fired: `reasons`, for review),
-- `rewarded` (paid once: `reward_movement` is the ledger movement), `rejected` (by a
-- reviewer), `attributed` (no reward configured). The reward's terms are copied from the
-- campaign's rules at sign-up.
CREATE TABLE IF NOT EXISTS service_referral_referral (
    id               TEXT PRIMARY KEY NOT NULL,
    code             TEXT NOT NULL REFERENCES service_referral_code (code),
    referrer_id      TEXT NOT NULL,
    referee_id       TEXT NOT NULL UNIQUE,
    campaign_id      TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'held', 'rewarded', 'rejected',
                                                     'attributed')),
    reasons          TEXT NOT NULL,
    referee_addr     TEXT,
    referee_device   TEXT,
    reward_amount    BIGINT,
    reward_currency  TEXT,
    reward_on        TEXT CHECK (reward_on IN ('signup', 'first_paid_order')),
    converted_at     BIGINT,
    reward_movement  TEXT,
    decided_by       TEXT,
    decision_note    TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_referral_referral_code_idx
    ON service_referral_referral (code, created_at);
CREATE INDEX IF NOT EXISTS service_referral_referral_referrer_idx
    ON service_referral_referral (referrer_id, id);
CREATE INDEX IF NOT EXISTS service_referral_referral_campaign_idx
    ON service_referral_referral (campaign_id, status);

-- Commerce: movements written once per reference (`referral:<id>`): a second credit of the
-- same reference finds the row and writes nothing.
CREATE TABLE IF NOT EXISTS service_commerce_movement_ref (
    reference   TEXT PRIMARY KEY NOT NULL,
    movement    TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Users create codes and read their own (`refer`); campaign managers and admins (`*`)
-- `manage` every code and referral: review held ones, read the stats.
INSERT INTO service_security_policy (role, resource, action) VALUES
    ('user', 'referral', 'refer'),
    ('campaign_manager', 'referral', 'refer'),
    ('campaign_manager', 'referral', 'manage')
ON CONFLICT DO NOTHING;

-- The messages the referrer gets (in-app and real-time), in English; editable.
INSERT INTO service_notification_template
    (template_key, locale, category, subject, body_text, body_html, updated_by, created_at, updated_at)
VALUES
    ('referral.rewarded', 'en', 'transactional',
     'Your referral reward of {{ amount }}',
     'Someone you referred ({{ referee }}) joined with your code {{ code }}: {{ amount }} was credited to you.',
     NULL, 'system', 0, 0),
    ('referral.held', 'en', 'transactional',
     'Your referral reward is under review',
     'The reward for a sign-up with your code {{ code }} is held for review: {{ reasons }}.',
     NULL, 'system', 0, 0)
ON CONFLICT (template_key, locale) DO NOTHING;
