-- Talent bookings priced through commerce: the client's billing country (required to book a
-- talent with an hourly rate) and the order a confirmed booking created.
ALTER TABLE service_talent_booking ADD COLUMN IF NOT EXISTS country TEXT;
ALTER TABLE service_talent_booking ADD COLUMN IF NOT EXISTS order_id TEXT;

-- Commerce: what an order was placed for by another service (`talent_booking:<id>`).
ALTER TABLE service_commerce_order ADD COLUMN IF NOT EXISTS placed_for TEXT;

-- The message both parties get when a booking is confirmed (in-app and real-time).
INSERT INTO service_notification_template
    (template_key, locale, category, subject, body_text, body_html, updated_by, created_at, updated_at)
VALUES
    ('talent.booking_confirmed', 'en', 'transactional',
     'Booking confirmed: {{ start }}',
     'The booking of {{ headline }} from {{ start }} to {{ end }} is confirmed.{% if order_id %} Order {{ order_id }} ({{ amount }}) is waiting for payment.{% endif %}',
     NULL, 'system', 0, 0)
ON CONFLICT (template_key, locale) DO NOTHING;
