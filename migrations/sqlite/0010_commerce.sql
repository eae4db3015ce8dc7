-- Commerce (service "commerce"). Times are ms since the epoch; amounts are integers in minor
-- units of their currency (ISO 4217), never floats.

-- What can be sold: a SKU with its base price (Babel prices it per market).
CREATE TABLE IF NOT EXISTS service_commerce_product (
    sku          TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    base_amount  BIGINT NOT NULL CHECK (base_amount >= 0),
    currency     TEXT NOT NULL,
    active       BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- An order of a user in a market, its lines priced when it was placed. `paid_amount` and
-- `refunded_amount` follow its payments and refunds: a refund never exceeds what was paid.
CREATE TABLE IF NOT EXISTS service_commerce_order (
    id               TEXT PRIMARY KEY NOT NULL,
    user_id          TEXT NOT NULL,
    country          TEXT NOT NULL,
    market           TEXT NOT NULL,
    currency         TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'fulfilled', 'cancelled',
                                                     'refunded', 'partially_refunded')),
    net_amount       BIGINT NOT NULL CHECK (net_amount >= 0),
    tax_amount       BIGINT NOT NULL CHECK (tax_amount >= 0),
    total_amount     BIGINT NOT NULL CHECK (total_amount >= 0),
    paid_amount      BIGINT NOT NULL DEFAULT 0 CHECK (paid_amount >= 0),
    refunded_amount  BIGINT NOT NULL DEFAULT 0
                     CHECK (refunded_amount >= 0 AND refunded_amount <= paid_amount),
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_commerce_order_user_idx ON service_commerce_order (user_id, id);

CREATE TABLE IF NOT EXISTS service_commerce_order_line (
    order_id     TEXT NOT NULL REFERENCES service_commerce_order (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    sku          TEXT NOT NULL,
    name         TEXT NOT NULL,
    quantity     BIGINT NOT NULL CHECK (quantity > 0),
    unit_net     BIGINT NOT NULL,
    unit_tax     BIGINT NOT NULL,
    unit_gross   BIGINT NOT NULL,
    tax_rate_bp  BIGINT NOT NULL,
    net_amount   BIGINT NOT NULL,
    tax_amount   BIGINT NOT NULL,
    total_amount BIGINT NOT NULL,
    price_source TEXT NOT NULL,
    price_rule   TEXT,
    PRIMARY KEY (order_id, position)
);

-- A payment of an order through a provider (`manual`: an admin or campaign manager confirms
-- receipt). At most one pending or succeeded payment per order.
CREATE TABLE IF NOT EXISTS service_commerce_payment (
    id           TEXT PRIMARY KEY NOT NULL,
    order_id     TEXT NOT NULL REFERENCES service_commerce_order (id) ON DELETE CASCADE,
    provider     TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    amount       BIGINT NOT NULL CHECK (amount > 0),
    currency     TEXT NOT NULL,
    reference    TEXT,
    reason       TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_commerce_payment_order_idx
    ON service_commerce_payment (order_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS service_commerce_payment_open_idx
    ON service_commerce_payment (order_id) WHERE status IN ('pending', 'succeeded');

CREATE TABLE IF NOT EXISTS service_commerce_refund (
    id          TEXT PRIMARY KEY NOT NULL,
    order_id    TEXT NOT NULL REFERENCES service_commerce_order (id) ON DELETE CASCADE,
    payment_id  TEXT NOT NULL REFERENCES service_commerce_payment (id),
    amount      BIGINT NOT NULL CHECK (amount > 0),
    currency    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_commerce_refund_order_idx
    ON service_commerce_refund (order_id, id);

-- The first answer of each (caller, Idempotency-Key): a retry with the same request gets it
-- again; another request under the same key is refused.
CREATE TABLE IF NOT EXISTS service_commerce_idempotency (
    caller        TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    response      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (caller, key)
);

-- The double-entry ledger: each movement (`movement` groups its entries) sums to zero per
-- currency. Balances are sums of `amount` per account and currency.
CREATE TABLE IF NOT EXISTS service_commerce_ledger_entry (
    id          TEXT PRIMARY KEY NOT NULL,
    movement    TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('payment', 'refund', 'referral_reward', 'payout')),
    account     TEXT NOT NULL,
    currency    TEXT NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount <> 0),
    order_id    TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_commerce_ledger_entry_account_idx
    ON service_commerce_ledger_entry (account, currency);
CREATE INDEX IF NOT EXISTS service_commerce_ledger_entry_movement_idx
    ON service_commerce_ledger_entry (movement);

-- One invoice per paid order, numbered without gaps per year (`2026-000001`): the counter row
-- of the year is taken in the payment's transaction.
CREATE TABLE IF NOT EXISTS service_commerce_invoice_counter (
    year  INTEGER PRIMARY KEY NOT NULL,
    last  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS service_commerce_invoice (
    number      TEXT PRIMARY KEY NOT NULL,
    order_id    TEXT NOT NULL UNIQUE REFERENCES service_commerce_order (id) ON DELETE CASCADE,
    year        INTEGER NOT NULL,
    seq         BIGINT NOT NULL,
    issued_at   BIGINT NOT NULL,
    UNIQUE (year, seq)
);

-- Provider webhook events applied, by the provider's event id: a replay is ignored.
CREATE TABLE IF NOT EXISTS service_commerce_webhook_event (
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    payment_id   TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);

-- Everyone reads active products; users order and pay for their own orders (`buy`); campaign
-- managers and admins (`*`) `manage` products, every order, payments, refunds and the ledger.
INSERT OR IGNORE INTO service_security_policy (role, resource, action) VALUES
    ('anonymous', 'commerce', 'read'),
    ('user', 'commerce', 'read'),
    ('user', 'commerce', 'buy'),
    ('campaign_manager', 'commerce', 'read'),
    ('campaign_manager', 'commerce', 'buy'),
    ('campaign_manager', 'commerce', 'manage');

-- The messages commerce sends a buyer (in-app and real-time, through the notification
-- service), in English; admins may change them or add locales like any template.
INSERT INTO service_notification_template
    (template_key, locale, category, subject, body_text, body_html, updated_by, created_at, updated_at)
VALUES
    ('commerce.payment_succeeded', 'en', 'transactional',
     'Payment received for order {{ order_id }}',
     'We received {{ amount }} for order {{ order_id }}. Your invoice is {{ invoice }}.',
     NULL, 'system', 0, 0),
    ('commerce.refunded', 'en', 'transactional',
     'Refund for order {{ order_id }}',
     'We refunded {{ amount }} of order {{ order_id }}: {{ reason }}.',
     NULL, 'system', 0, 0)
ON CONFLICT (template_key, locale) DO NOTHING;
