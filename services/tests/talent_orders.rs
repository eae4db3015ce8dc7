//! Talent bookings priced through commerce, with the [`services::Provider`]'s real wiring, on
//! SQLite and (when `OVASABI_TEST_DATABASE_URL` is set) Postgres: booking a talent with an
//! hourly rate needs the client's billing country; confirming it places an order for the
//! booked minutes at the talent's rate (Babel's price for the country) and tells both
//! parties; a rate that cannot be priced refuses the confirmation and leaves no order;
//! cancelling the booking cancels its pending order; ten concurrent confirmations leave one
//! order standing.

mod common;

use futures_util::future::join_all;
use serde_json::json;
use services::ServiceError;
use services::commerce::{NewProduct, OrderFilter, OrderStatus};
use services::notification::InboxFilter;
use services::provider::Provider;
use services::security::{Caller, Role};
use services::talent::{BookingStatus, NewBooking, NewProfile, Profile};
use services::user::NewUser;

struct Fixture {
    p: Provider,
    home: common::TestDb,
}

async fn fixtures(tag: &str) -> Vec<Fixture> {
    let mut out = Vec::new();
    for home in common::databases(tag).await {
        let p = common::provider(&home.db).await;
        out.push(Fixture { p, home });
    }
    out
}

/// Tomorrow (UTC) at `hh:mm`, RFC 3339.
fn tomorrow(hm: &str) -> String {
    const DAY: i64 = 86_400_000;
    let (h, m) = hm.split_once(':').expect("hh:mm");
    let (h, m): (i64, i64) = (h.parse().expect("hh"), m.parse().expect("mm"));
    let midnight = (services::time::now_ms() / DAY + 1) * DAY;
    services::time::rfc3339(midnight + h * 3_600_000 + m * 60_000)
}

impl Fixture {
    async fn finish(self) {
        self.p.close(std::time::Duration::from_secs(5)).await;
        self.home.finish().await;
    }

    async fn user(&self, name: &str, addr: &str) -> Caller {
        let u = self
            .p
            .referrals
            .register(
                &Caller::anonymous().from_addr(addr),
                NewUser {
                    username: name.to_owned(),
                    email: format!("{name}@example.org"),
                    password: "correct horse battery".to_owned(),
                    ..NewUser::default()
                },
            )
            .await
            .expect("register");
        Caller::user(&u.id, vec![Role::User])
    }

    /// Market `eu` (EUR, FR) and product `sku` at 60.00 EUR an hour, when `price` is set.
    async fn shop(&self, sku: &str) {
        let admin = Caller::system();
        let market = serde_json::from_value(json!({
            "code": "eu", "name": "Europe", "currency": "EUR", "locale": "fr-FR", "countries": ["FR"]
        }))
        .expect("market");
        self.p
            .babel
            .create_market(&admin, market)
            .await
            .expect("market");
        self.p
            .commerce
            .create_product(
                &admin,
                NewProduct {
                    sku: sku.to_owned(),
                    name: "An hour of Rust".to_owned(),
                    base_amount: 6000,
                    currency: "EUR".to_owned(),
                    active: true,
                },
            )
            .await
            .expect("product");
    }

    /// `who`'s public profile at the rate `sku`, available every day all day in Paris.
    async fn talent(&self, who: &Caller, sku: &str) -> Profile {
        let p = self
            .p
            .talent
            .create_profile(
                who,
                NewProfile {
                    user_id: None,
                    headline: "Rust consultant".to_owned(),
                    bio: String::new(),
                    skills: vec!["rust".to_owned()],
                    hourly_rate_sku: Some(sku.to_owned()),
                    timezone: "Europe/Paris".to_owned(),
                    visibility: services::talent::Visibility::Public,
                },
            )
            .await
            .expect("profile");
        let rules: Vec<_> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .map(|d| json!({"weekday": d, "start": "00:00", "end": "24:00"}))
            .collect();
        let availability =
            serde_json::from_value(json!({"rules": rules, "exceptions": []})).expect("body");
        self.p
            .talent
            .set_availability(who, &p.id, availability)
            .await
            .expect("availability")
    }

    async fn told(&self, user: &Caller) -> Vec<String> {
        self.p
            .notifications
            .inbox(
                user,
                InboxFilter {
                    unread_only: false,
                    limit: Some(50),
                    cursor: None,
                },
            )
            .await
            .expect("inbox")
            .items
            .into_iter()
            .map(|n| n.template)
            .collect()
    }
}

fn booking(start: &str, end: &str, country: Option<&str>) -> NewBooking {
    NewBooking {
        start: start.to_owned(),
        end: end.to_owned(),
        note: None,
        country: country.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_confirmed_booking_becomes_an_order_for_the_rate_and_both_parties_are_told() {
    for f in fixtures("talent_orders").await {
        f.shop("rate-alice").await;
        let alice = f.user("alice", "127.0.20.1:1").await;
        let bob = f.user("bob", "127.0.20.2:1").await;
        let profile = f.talent(&alice, "rate-alice").await;
        let (start, end) = (tomorrow("10:00"), tomorrow("11:30"));
        match f
            .p
            .talent
            .book(&bob, &profile.id, booking(&start, &end, None))
            .await
        {
            Err(ServiceError::Invalid { field, .. }) => assert_eq!(field, "country"),
            other => panic!("a priced talent needs the country: {other:?}"),
        }
        match f
            .p
            .talent
            .book(&bob, &profile.id, booking(&start, &end, Some("fr")))
            .await
        {
            Err(ServiceError::Invalid { field, .. }) => assert_eq!(field, "country"),
            other => panic!("a country code is upper case: {other:?}"),
        }
        let b =
            f.p.talent
                .book(&bob, &profile.id, booking(&start, &end, Some("FR")))
                .await
                .expect("book");
        assert_eq!(
            (b.country.as_deref(), b.order_id.as_deref()),
            (Some("FR"), None)
        );
        let confirmed = f.p.talent.confirm(&alice, &b.id).await.expect("confirm");
        assert_eq!(confirmed.status, BookingStatus::Confirmed);
        let order_id = confirmed.order_id.clone().expect("an order");
        let order =
            f.p.commerce
                .order(&bob, &order_id)
                .await
                .expect("bob's order")
                .order;
        // 90 minutes at 60.00 an hour.
        assert_eq!(
            (order.total_amount, order.currency.as_str()),
            (9000, "EUR"),
            "{order:?}"
        );
        assert_eq!(order.status, OrderStatus::Pending);
        assert_eq!(order.lines.len(), 1);
        assert!(
            order.lines[0].name.contains("(90 min)"),
            "{:?}",
            order.lines[0]
        );
        assert_eq!(
            f.p.talent
                .get_booking(&bob, &b.id)
                .await
                .expect("booking")
                .order_id,
            Some(order_id.clone())
        );
        for who in [&alice, &bob] {
            assert!(
                f.told(who)
                    .await
                    .contains(&"talent.booking_confirmed".to_owned()),
                "{who:?}"
            );
        }
        // The order is the booking's: Bob cannot cancel it alone.
        assert_eq!(order.placed_for, Some(format!("talent_booking:{}", b.id)));
        match f.p.commerce.cancel_order(&bob, &order_id).await {
            Err(ServiceError::Conflict { message }) => {
                assert!(message.contains(&b.id), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // Cancelled: its pending order goes too.
        f.p.talent.cancel(&bob, &b.id).await.expect("cancel");
        let order =
            f.p.commerce
                .order(&bob, &order_id)
                .await
                .expect("order")
                .order;
        assert_eq!(order.status, OrderStatus::Cancelled);
        f.finish().await;
    }
}

#[tokio::test]
async fn a_rate_that_cannot_be_priced_refuses_the_confirmation() {
    for f in fixtures("talent_orders_unpriced").await {
        f.shop("rate-alice").await;
        let alice = f.user("alice", "127.0.21.1:1").await;
        let bob = f.user("bob", "127.0.21.2:1").await;
        let profile = f.talent(&alice, "no-such-product").await;
        let b =
            f.p.talent
                .book(
                    &bob,
                    &profile.id,
                    booking(&tomorrow("09:00"), &tomorrow("10:00"), Some("FR")),
                )
                .await
                .expect("book");
        match f.p.talent.confirm(&alice, &b.id).await {
            Err(ServiceError::Conflict { message }) => {
                assert!(message.contains("no-such-product"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let after = f.p.talent.get_booking(&bob, &b.id).await.expect("booking");
        assert_eq!(
            (after.status, after.order_id),
            (BookingStatus::Requested, None)
        );
        let orders =
            f.p.commerce
                .orders(&bob, OrderFilter::default(), None, None)
                .await
                .expect("orders");
        assert!(orders.items.is_empty(), "{:?}", orders.items);
        // Bob cannot confirm his own booking, and no order is placed trying.
        assert!(matches!(
            f.p.talent.confirm(&bob, &b.id).await,
            Err(ServiceError::Forbidden { .. })
        ));
        f.finish().await;
    }
}

#[tokio::test]
async fn ten_concurrent_confirmations_leave_one_order_standing() {
    for f in fixtures("talent_orders_race").await {
        f.shop("rate-alice").await;
        let alice = f.user("alice", "127.0.22.1:1").await;
        let bob = f.user("bob", "127.0.22.2:1").await;
        let profile = f.talent(&alice, "rate-alice").await;
        let b =
            f.p.talent
                .book(
                    &bob,
                    &profile.id,
                    booking(&tomorrow("14:00"), &tomorrow("15:00"), Some("FR")),
                )
                .await
                .expect("book");
        let answers = join_all((0..10).map(|_| f.p.talent.confirm(&alice, &b.id))).await;
        let ok: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(ok.len(), 1, "{answers:?}");
        let orders =
            f.p.commerce
                .orders(&bob, OrderFilter::default(), None, None)
                .await
                .expect("orders")
                .items;
        let standing: Vec<_> = orders
            .iter()
            .filter(|o| o.status != OrderStatus::Cancelled)
            .collect();
        assert_eq!(standing.len(), 1, "{orders:?}");
        assert_eq!(Some(&standing[0].id), ok[0].order_id.as_ref());
        f.finish().await;
    }
}
