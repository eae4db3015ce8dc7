//! The talent service on a real SQLite database (a fresh file per test) and, when
//! `OVASABI_TEST_DATABASE_URL` is set, on Postgres (a schema of its own per run): profiles
//! created, updated, searched and deleted; private profiles hidden; fields refused with the
//! field named; availability rules and exceptions; free slots across the March and October
//! daylight saving changes in Europe/Paris and America/New_York (exact UTC instants);
//! booking transitions and their 409s; 50 concurrent overlapping bookings of which exactly one
//! is held; RBAC denials and audit rows. Time is a clock of the test's own.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};

use serde_json::json;
use services::scheduler::Clock;
use services::security::audit::{AuditFilter, AuditLog};
use services::security::{Caller, Policies, Role};
use services::talent::{
    Availability, Booking, BookingSide, BookingStatus, NewBooking, NewProfile, Profile,
    ProfileFilter, ProfileUpdate, Slot, SlotQuery, TalentService, Visibility,
};
use services::time::parse_rfc3339;
use services::{Database, ServiceError};

static SYS: LazyLock<Caller> = LazyLock::new(Caller::system);
static ANON: LazyLock<Caller> = LazyLock::new(Caller::anonymous);
static ALICE: LazyLock<Caller> = LazyLock::new(|| Caller::user("alice", vec![Role::User]));
static BOB: LazyLock<Caller> = LazyLock::new(|| Caller::user("bob", vec![Role::User]));
static CAROL: LazyLock<Caller> = LazyLock::new(|| Caller::user("carol", vec![Role::User]));
static ADMIN: LazyLock<Caller> = LazyLock::new(|| Caller::user("boss", vec![Role::Admin]));

fn ms(s: &str) -> i64 {
    parse_rfc3339("t", s).expect("time")
}

struct Fixture {
    svc: TalentService,
    log: AuditLog,
    now: Arc<AtomicI64>,
    home: common::TestDb,
}

async fn fixtures(tag: &str) -> Vec<Fixture> {
    let mut out = Vec::new();
    for home in common::databases(tag).await {
        let db = home.db.clone();
        let policies = Policies::load(db.clone()).await.expect("policies");
        for id in ["alice", "bob", "carol", "boss", "dave"] {
            add_user(&db, id).await;
        }
        let now = Arc::new(AtomicI64::new(ms("2026-01-01T00:00:00Z")));
        let clock = {
            let now = now.clone();
            Clock::from_fn(move || now.load(Ordering::SeqCst))
        };
        out.push(Fixture {
            svc: TalentService::new(db.clone(), policies.clone()).with_clock(clock),
            log: AuditLog::new(db.clone(), policies),
            now,
            home,
        });
    }
    out
}

/// A user row for `id` (profiles reference their user; the user service's own rules are not
/// under test here).
async fn add_user(db: &Database, id: &str) {
    let sql = "INSERT INTO service_user_master \
               (id, username, email, password_hash, display_name, disabled, created_at, updated_at) \
               VALUES ($1, $1, $1 || '@example.com', 'x', $1, FALSE, 0, 0)";
    match db {
        Database::Sqlite(p) => sqlx::query(sql).bind(id).execute(p).await.map(drop),
        Database::Postgres(p) => sqlx::query(sql).bind(id).execute(p).await.map(drop),
    }
    .expect("user row");
}

fn new_profile(headline: &str, timezone: &str) -> NewProfile {
    NewProfile {
        headline: headline.to_owned(),
        timezone: timezone.to_owned(),
        ..NewProfile::default()
    }
}

fn availability(v: serde_json::Value) -> Availability {
    serde_json::from_value(v).expect("availability")
}

fn every_day(start: &str, end: &str) -> serde_json::Value {
    let rules: Vec<_> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| json!({"weekday": d, "start": start, "end": end}))
        .collect();
    json!(rules)
}

fn booking(start: &str, end: &str) -> NewBooking {
    NewBooking {
        start: start.to_owned(),
        end: end.to_owned(),
        note: None,
        country: None,
    }
}

fn query(from: &str, to: &str, minutes: u32) -> SlotQuery {
    SlotQuery {
        from: from.to_owned(),
        to: to.to_owned(),
        duration_minutes: minutes,
    }
}

fn starts(slots: &[Slot]) -> Vec<&str> {
    slots.iter().map(|s| s.start.as_str()).collect()
}

impl Fixture {
    async fn finish(self) {
        self.home.finish().await;
    }

    fn set(&self, t: &str) {
        self.now.store(ms(t), Ordering::SeqCst);
    }

    /// Alice's public profile in `tz`, available as `rules` (and `exceptions`).
    async fn talent(
        &self,
        tz: &str,
        rules: serde_json::Value,
        exceptions: serde_json::Value,
    ) -> Profile {
        let p = self
            .svc
            .create_profile(&ALICE, new_profile("Rust consultant", tz))
            .await
            .expect("create");
        self.svc
            .set_availability(
                &ALICE,
                &p.id,
                availability(json!({"rules": rules, "exceptions": exceptions})),
            )
            .await
            .expect("availability")
    }

    async fn slots(&self, id: &str, from: &str, to: &str, minutes: u32) -> Vec<Slot> {
        self.svc
            .free_slots(&ANON, id, &query(from, to, minutes))
            .await
            .expect("slots")
    }

    async fn audit(&self, entity_id: &str) -> Vec<String> {
        let filter = AuditFilter {
            entity_id: Some(entity_id.to_owned()),
            ..AuditFilter::default()
        };
        self.log
            .query(&SYS, &filter, Some(500), None)
            .await
            .expect("audit")
            .items
            .into_iter()
            .map(|e| e.action)
            .collect()
    }
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, ServiceError>, field: &str) {
    match r {
        Err(ServiceError::Invalid { field: f, message }) => {
            assert_eq!(f, field, "wrong field (message: {message})");
        }
        other => panic!("expected Invalid({field}), got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(r: Result<T, ServiceError>, says: &[&str]) {
    match r {
        Err(ServiceError::Conflict { message }) => {
            for s in says {
                assert!(message.contains(s), "{message:?} should say {s:?}");
            }
        }
        other => panic!("expected Conflict({says:?}), got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(r: Result<T, ServiceError>) {
    assert!(matches!(r, Err(ServiceError::NotFound { .. })), "{r:?}");
}

#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(r: Result<T, ServiceError>) {
    assert!(matches!(r, Err(ServiceError::Forbidden { .. })), "{r:?}");
}

#[track_caller]
fn assert_unauthenticated<T: std::fmt::Debug>(r: Result<T, ServiceError>) {
    assert!(
        matches!(r, Err(ServiceError::Unauthenticated { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn profiles_are_created_updated_searched_and_deleted() {
    for f in fixtures("talent_crud").await {
        let p = f
            .svc
            .create_profile(
                &ALICE,
                NewProfile {
                    bio: "Ten years of 100% async Rust".to_owned(),
                    skills: vec!["Rust".to_owned(), "sql".to_owned(), "rust".to_owned()],
                    hourly_rate_sku: Some("talent:hourly/alice-1".to_owned()),
                    ..new_profile("  Rust consultant ", "Europe/Paris")
                },
            )
            .await
            .expect("create");
        assert_eq!(p.user_id, "alice");
        assert_eq!(p.headline, "Rust consultant");
        assert_eq!(p.skills, vec!["rust", "sql"]);
        assert_eq!(p.visibility, Visibility::Public);
        assert_eq!(f.svc.get_profile(&ANON, &p.id).await.expect("get"), p);
        assert_eq!(
            f.svc.profile_of_user(&BOB, "alice").await.expect("of user"),
            p
        );

        // One profile per user.
        let again = f
            .svc
            .create_profile(&ALICE, new_profile("Another", "UTC"))
            .await;
        assert!(
            matches!(&again, Err(ServiceError::Duplicate { message }) if message.contains("alice")),
            "{again:?}"
        );

        let updated = f
            .svc
            .update_profile(
                &ALICE,
                &p.id,
                ProfileUpdate {
                    headline: Some("Rust and Postgres".to_owned()),
                    skills: Some(vec!["rust".to_owned(), "postgres".to_owned()]),
                    hourly_rate_sku: Some(String::new()),
                    timezone: Some("America/New_York".to_owned()),
                    ..ProfileUpdate::default()
                },
            )
            .await
            .expect("update");
        assert_eq!(updated.headline, "Rust and Postgres");
        assert_eq!(updated.bio, p.bio);
        assert_eq!(updated.hourly_rate_sku, None);
        assert_eq!(updated.timezone, "America/New_York");

        let bob = f
            .svc
            .create_profile(
                &BOB,
                NewProfile {
                    bio: "Design_systems and Figma".to_owned(),
                    skills: vec!["figma".to_owned()],
                    ..new_profile("Designer", "UTC")
                },
            )
            .await
            .expect("bob");
        // An admin creates a profile for another user.
        let dave = f
            .svc
            .create_profile(
                &ADMIN,
                NewProfile {
                    user_id: Some("dave".to_owned()),
                    skills: vec!["rust".to_owned()],
                    ..new_profile("Embedded Rust", "UTC")
                },
            )
            .await
            .expect("dave");
        assert_eq!(dave.user_id, "dave");
        // ... but not for a user who does not exist.
        let ghost = f
            .svc
            .create_profile(
                &ADMIN,
                NewProfile {
                    user_id: Some("ghost".to_owned()),
                    ..new_profile("Nobody", "UTC")
                },
            )
            .await;
        assert!(
            matches!(&ghost, Err(ServiceError::NotFound { entity: "user", id }) if id == "ghost"),
            "{ghost:?}"
        );

        let search = |skill: Option<&str>, q: Option<&str>| ProfileFilter {
            skill: skill.map(str::to_owned),
            query: q.map(str::to_owned),
        };
        let ids = |page: services::talent::Page<Profile>| -> Vec<String> {
            page.items.into_iter().map(|p| p.id).collect()
        };
        let rust = f
            .svc
            .search(&ANON, &search(Some("RUST"), None), None, None)
            .await
            .expect("search");
        assert_eq!(ids(rust), vec![p.id.clone(), dave.id.clone()]);
        let by_text = f
            .svc
            .search(&ANON, &search(None, Some("postgres")), None, None)
            .await
            .expect("search");
        assert_eq!(ids(by_text), vec![p.id.clone()]);
        // Wildcards are taken literally: `100%` and `_` match only themselves.
        let literal = f
            .svc
            .search(&ANON, &search(None, Some("100%")), None, None)
            .await
            .expect("search");
        assert_eq!(ids(literal), vec![p.id.clone()]);
        let underscore = f
            .svc
            .search(&ANON, &search(None, Some("n_s")), None, None)
            .await
            .expect("search");
        assert_eq!(ids(underscore), vec![bob.id.clone()]);
        let none = f
            .svc
            .search(&ANON, &search(Some("rust"), Some("figma")), None, None)
            .await
            .expect("search");
        assert!(none.items.is_empty());
        // Pages.
        let first = f
            .svc
            .search(&ANON, &ProfileFilter::default(), Some(2), None)
            .await
            .expect("page");
        assert_eq!(first.items.len(), 2);
        let cursor = first.next_cursor.expect("a next page");
        let second = f
            .svc
            .search(&ANON, &ProfileFilter::default(), Some(2), Some(&cursor))
            .await
            .expect("page 2");
        assert_eq!(second.items.len(), 1);
        assert!(second.next_cursor.is_none());
        assert_invalid(
            f.svc
                .search(&ANON, &ProfileFilter::default(), Some(0), None)
                .await,
            "limit",
        );
        assert_invalid(
            f.svc
                .search(&ANON, &search(Some("no spaces"), None), None, None)
                .await,
            "skill",
        );

        f.svc.delete_profile(&ALICE, &p.id).await.expect("delete");
        assert_not_found(f.svc.get_profile(&ALICE, &p.id).await);
        assert_not_found(f.svc.delete_profile(&ALICE, &p.id).await);
        assert_eq!(
            f.audit(&p.id).await,
            vec!["talent.create", "talent.update", "talent.delete"]
        );
        assert_eq!(f.audit(&dave.id).await, vec!["talent.create"]);
        f.finish().await;
    }
}

#[tokio::test]
async fn private_profiles_are_seen_by_their_owner_and_admins_only() {
    for f in fixtures("talent_private").await {
        let p = f
            .svc
            .create_profile(
                &ALICE,
                NewProfile {
                    visibility: Visibility::Private,
                    skills: vec!["rust".to_owned()],
                    ..new_profile("Hidden", "UTC")
                },
            )
            .await
            .expect("create");
        f.svc
            .set_availability(
                &ALICE,
                &p.id,
                availability(json!({"rules": every_day("09:00", "17:00")})),
            )
            .await
            .expect("availability");
        assert_eq!(
            f.svc.get_profile(&ALICE, &p.id).await.expect("own").id,
            p.id
        );
        assert_eq!(
            f.svc.get_profile(&ADMIN, &p.id).await.expect("admin").id,
            p.id
        );
        assert_not_found(f.svc.get_profile(&BOB, &p.id).await);
        assert_not_found(f.svc.get_profile(&ANON, &p.id).await);
        assert_not_found(f.svc.profile_of_user(&BOB, "alice").await);
        assert_not_found(
            f.svc
                .free_slots(
                    &BOB,
                    &p.id,
                    &query("2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", 60),
                )
                .await,
        );
        assert_not_found(
            f.svc
                .book(
                    &BOB,
                    &p.id,
                    booking("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z"),
                )
                .await,
        );
        // Someone who cannot see it cannot change it either: it does not exist for them.
        assert_not_found(
            f.svc
                .update_profile(&BOB, &p.id, ProfileUpdate::default())
                .await,
        );
        let filter = ProfileFilter {
            skill: Some("rust".to_owned()),
            query: None,
        };
        let seen = |c: &'static Caller| {
            let svc = f.svc.clone();
            let filter = filter.clone();
            async move {
                svc.search(c, &filter, None, None)
                    .await
                    .expect("search")
                    .items
                    .len()
            }
        };
        assert_eq!(seen(&ANON).await, 0);
        assert_eq!(seen(&BOB).await, 0);
        assert_eq!(seen(&ALICE).await, 1);
        assert_eq!(seen(&ADMIN).await, 1);

        // Made public, everyone sees it.
        f.svc
            .update_profile(
                &ALICE,
                &p.id,
                ProfileUpdate {
                    visibility: Some(Visibility::Public),
                    ..ProfileUpdate::default()
                },
            )
            .await
            .expect("publish");
        assert_eq!(seen(&ANON).await, 1);
        f.finish().await;
    }
}

#[tokio::test]
async fn profile_fields_are_refused_with_the_field_named() {
    for f in fixtures("talent_fields").await {
        let create = |n: NewProfile| f.svc.create_profile(&ALICE, n);
        assert_invalid(create(new_profile("Ok", "Mars/Olympus")).await, "timezone");
        assert_invalid(create(new_profile("   ", "UTC")).await, "headline");
        assert_invalid(
            create(new_profile(&"x".repeat(201), "UTC")).await,
            "headline",
        );
        assert_invalid(
            create(NewProfile {
                skills: vec!["rust".to_owned(), "two words".to_owned()],
                ..new_profile("Ok", "UTC")
            })
            .await,
            "skills[1]",
        );
        assert_invalid(
            create(NewProfile {
                hourly_rate_sku: Some("not a sku!".to_owned()),
                ..new_profile("Ok", "UTC")
            })
            .await,
            "hourly_rate_sku",
        );
        assert_invalid(
            create(NewProfile {
                bio: "x".repeat(5_001),
                ..new_profile("Ok", "UTC")
            })
            .await,
            "bio",
        );
        let p = create(new_profile("Ok", "UTC")).await.expect("create");
        assert_invalid(
            f.svc
                .update_profile(
                    &ALICE,
                    &p.id,
                    ProfileUpdate {
                        timezone: Some("Europe/Pariss".to_owned()),
                        ..ProfileUpdate::default()
                    },
                )
                .await,
            "timezone",
        );
        // Unknown fields are refused by the inputs themselves.
        assert!(
            serde_json::from_value::<NewProfile>(
                json!({"headline": "x", "timezone": "UTC", "rate": 5})
            )
            .is_err()
        );
        assert_eq!(f.audit(&p.id).await, vec!["talent.create"]);
        f.finish().await;
    }
}

#[tokio::test]
async fn availability_rules_and_exceptions_are_refused_with_the_field_named() {
    for f in fixtures("talent_availability").await {
        let p = f
            .svc
            .create_profile(&ALICE, new_profile("Ok", "Europe/Paris"))
            .await
            .expect("create");
        let set = |v: serde_json::Value| f.svc.set_availability(&ALICE, &p.id, availability(v));
        let rule = |d: &str, s: &str, e: &str| json!({"weekday": d, "start": s, "end": e});
        assert_invalid(
            set(json!({"rules": [rule("mon", "17:00", "09:00")]})).await,
            "rules[0].end",
        );
        assert_invalid(
            set(json!({"rules": [rule("mon", "09:00", "09:00")]})).await,
            "rules[0].end",
        );
        assert_invalid(
            set(json!({"rules": [rule("mon", "9am", "17:00")]})).await,
            "rules[0].start",
        );
        assert_invalid(
            set(json!({"rules": [rule("mon", "09:00", "24:01")]})).await,
            "rules[0].end",
        );
        assert_invalid(
            set(json!({"rules": [rule("funday", "09:00", "17:00")]})).await,
            "rules[0].weekday",
        );
        assert_invalid(
            set(json!({"rules": [
                rule("mon", "09:00", "12:00"),
                rule("tue", "09:00", "12:00"),
                rule("mon", "11:00", "13:00"),
            ]}))
            .await,
            "rules[2]",
        );
        assert_invalid(
            set(json!({"exceptions": [{"date": "2026-02-30", "hours": []}]})).await,
            "exceptions[0].date",
        );
        assert_invalid(
            set(json!({"exceptions": [
                {"date": "2026-12-25"}, {"date": "2026-12-25", "hours": []}
            ]}))
            .await,
            "exceptions[1].date",
        );
        assert_invalid(
            set(json!({"exceptions": [{"date": "2026-12-24", "hours": [
                {"start": "09:00", "end": "12:00"}, {"start": "11:30", "end": "10:00"}
            ]}]}))
            .await,
            "exceptions[0].hours[1].end",
        );
        assert_invalid(
            set(json!({"exceptions": [{"date": "2026-12-24", "hours": [
                {"start": "09:00", "end": "12:00"}, {"start": "11:30", "end": "14:00"}
            ]}]}))
            .await,
            "exceptions[0].hours[1]",
        );
        // Several rules a day, touching, and a rule to midnight are fine; input is normalised.
        let ok = set(json!({
            "rules": [rule("MON", "13:00", "17:00"), rule("mon", "09:00", "13:00"),
                      rule("sun", "20:00", "24:00")],
            "exceptions": [{"date": "2026-12-25"},
                           {"date": "2026-12-24", "hours": [{"start": "09:00", "end": "12:00"}]}],
        }))
        .await
        .expect("set");
        assert_eq!(ok.availability.rules[0].weekday, "mon");
        assert_eq!(ok.availability.exceptions[0].date, "2026-12-24");
        assert_eq!(ok.availability.exceptions[1].hours, vec![]);
        // Only the refused changes left no audit row.
        assert_eq!(
            f.audit(&p.id).await,
            vec!["talent.create", "talent.availability"]
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn free_slots_follow_the_wall_clock_across_daylight_saving_changes_in_paris() {
    for f in fixtures("talent_slots_paris").await {
        // 09:00-10:00 every day; on the change days, 02:00-04:00 instead.
        let p = f
            .talent(
                "Europe/Paris",
                every_day("09:00", "10:00"),
                json!([
                    {"date": "2026-03-29", "hours": [{"start": "02:00", "end": "04:00"}]},
                    {"date": "2026-10-25", "hours": [{"start": "02:00", "end": "04:00"}]},
                ]),
            )
            .await;
        // Spring: winter 09:00 is 08:00Z, summer 07:00Z; on the 29th the clock skips from
        // 02:00 to 03:00 (01:00Z): the 02:00 slot does not exist, 03:00 is 01:00Z.
        let march = f
            .slots(&p.id, "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z", 60)
            .await;
        assert_eq!(
            starts(&march),
            vec![
                "2026-03-28T08:00:00.000Z",
                "2026-03-29T01:00:00.000Z",
                "2026-03-30T07:00:00.000Z",
            ]
        );
        assert_eq!(march[1].end, "2026-03-29T02:00:00.000Z");
        // Autumn: on the 25th 02:00-03:00 happens twice: 02:00 is its earlier instant
        // (00:00Z, summer time), 03:00 is winter time (02:00Z).
        let october = f
            .slots(&p.id, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z", 60)
            .await;
        assert_eq!(
            starts(&october),
            vec![
                "2026-10-24T07:00:00.000Z",
                "2026-10-25T00:00:00.000Z",
                "2026-10-25T02:00:00.000Z",
                "2026-10-26T08:00:00.000Z",
            ]
        );
        assert_eq!(october[1].end, "2026-10-25T01:00:00.000Z");
        assert_eq!(october[2].end, "2026-10-25T03:00:00.000Z");
        // 30-minute slots step from the start of the span.
        let halves = f
            .slots(&p.id, "2026-03-30T00:00:00Z", "2026-03-31T00:00:00Z", 30)
            .await;
        assert_eq!(
            halves,
            vec![
                Slot {
                    start: "2026-03-30T07:00:00.000Z".to_owned(),
                    end: "2026-03-30T07:30:00.000Z".to_owned()
                },
                Slot {
                    start: "2026-03-30T07:30:00.000Z".to_owned(),
                    end: "2026-03-30T08:00:00.000Z".to_owned()
                },
            ]
        );
        // The window cuts slots: only whole ones inside it.
        let cut = f
            .slots(&p.id, "2026-03-30T07:15:00Z", "2026-03-30T08:00:00Z", 30)
            .await;
        assert_eq!(starts(&cut), vec!["2026-03-30T07:30:00.000Z"]);
        f.finish().await;
    }
}

#[tokio::test]
async fn free_slots_follow_the_wall_clock_across_daylight_saving_changes_in_new_york() {
    for f in fixtures("talent_slots_ny").await {
        let p = f
            .talent(
                "America/New_York",
                every_day("09:00", "10:00"),
                json!([
                    {"date": "2026-03-08", "hours": [{"start": "01:00", "end": "04:00"}]},
                    {"date": "2026-11-01", "hours": [{"start": "01:00", "end": "03:00"}]},
                ]),
            )
            .await;
        // 8 March: 02:00 does not exist (01:59 EST is followed by 03:00 EDT, 07:00Z).
        let march = f
            .slots(&p.id, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z", 60)
            .await;
        assert_eq!(
            starts(&march),
            vec![
                "2026-03-07T14:00:00.000Z",
                "2026-03-08T06:00:00.000Z",
                "2026-03-08T07:00:00.000Z",
                "2026-03-09T13:00:00.000Z",
            ]
        );
        // 1 November: 01:00-02:00 happens twice; 01:00 is its earlier instant (05:00Z, EDT),
        // 02:00 is EST (07:00Z).
        let november = f
            .slots(&p.id, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z", 60)
            .await;
        assert_eq!(
            starts(&november),
            vec![
                "2026-10-31T13:00:00.000Z",
                "2026-11-01T05:00:00.000Z",
                "2026-11-01T07:00:00.000Z",
                "2026-11-02T14:00:00.000Z",
            ]
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn free_slots_leave_out_bookings_and_the_past_and_bound_their_window() {
    for f in fixtures("talent_slots_free").await {
        let p = f
            .talent(
                "Europe/Paris",
                json!([{"weekday": "mon", "start": "09:00", "end": "12:00"}]),
                json!([{"date": "2026-01-12"}]),
            )
            .await;
        let b = f
            .svc
            .book(
                &BOB,
                &p.id,
                booking("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z"),
            )
            .await
            .expect("book");
        // Monday 5 January: 09:00-12:00 Paris is 08:00Z-11:00Z; 09:00Z-10:00Z is held;
        // the 12th is an exception without hours; the 19th is a Monday again.
        let slots = f
            .slots(&p.id, "2026-01-05T00:00:00Z", "2026-01-20T00:00:00Z", 60)
            .await;
        assert_eq!(
            starts(&slots),
            vec![
                "2026-01-05T08:00:00.000Z",
                "2026-01-05T10:00:00.000Z",
                "2026-01-19T08:00:00.000Z",
                "2026-01-19T09:00:00.000Z",
                "2026-01-19T10:00:00.000Z",
            ]
        );
        // A declined booking frees its slot.
        f.svc.decline(&ALICE, &b.id).await.expect("decline");
        let slots = f
            .slots(&p.id, "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", 60)
            .await;
        assert_eq!(slots.len(), 3);
        // Past slots are not offered.
        f.set("2026-01-05T09:30:00Z");
        let slots = f
            .slots(&p.id, "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", 60)
            .await;
        assert_eq!(starts(&slots), vec!["2026-01-05T10:00:00.000Z"]);

        let q = |from: &str, to: &str, m: u32| {
            let (svc, id, q) = (f.svc.clone(), p.id.clone(), query(from, to, m));
            async move { svc.free_slots(&ANON, &id, &q).await }
        };
        assert_invalid(
            q("2026-01-05T00:00:00Z", "2026-03-08T00:00:01Z", 60).await,
            "to",
        );
        assert_invalid(
            q("2026-01-05T00:00:00Z", "2026-01-05T00:00:00Z", 60).await,
            "to",
        );
        assert_invalid(q("yesterday", "2026-01-06T00:00:00Z", 60).await, "from");
        assert_invalid(
            q("2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", 14).await,
            "duration_minutes",
        );
        assert_invalid(
            q("2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", 481).await,
            "duration_minutes",
        );
        // 62 days exactly is allowed.
        q("2026-01-05T00:00:00Z", "2026-03-08T00:00:00Z", 60)
            .await
            .expect("62 days");
        f.finish().await;
    }
}

#[tokio::test]
async fn bookings_move_through_their_states_and_other_transitions_are_409s() {
    for f in fixtures("talent_transitions").await {
        let p = f
            .talent("UTC", every_day("09:00", "17:00"), json!([]))
            .await;
        let book = |s: &str, e: &str| f.svc.book(&BOB, &p.id, booking(s, e));
        let b = book("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z")
            .await
            .expect("book");
        assert_eq!(b.status, BookingStatus::Requested);
        assert_eq!(
            (b.client_id.as_str(), b.talent_user_id.as_str()),
            ("bob", "alice")
        );
        assert_eq!(
            f.svc.get_booking(&ALICE, &b.id).await.expect("talent sees"),
            b
        );
        assert_eq!(
            f.svc.get_booking(&BOB, &b.id).await.expect("client sees"),
            b
        );
        assert_not_found(f.svc.get_booking(&CAROL, &b.id).await);
        assert_eq!(
            f.svc.get_booking(&ADMIN, &b.id).await.expect("admin").id,
            b.id
        );

        // requested -> completed is not a transition.
        assert_conflict(
            f.svc.complete(&ALICE, &b.id).await,
            &["requested", "completed"],
        );
        // Only the talent confirms.
        assert_forbidden(f.svc.confirm(&BOB, &b.id).await);
        let c = f.svc.confirm(&ALICE, &b.id).await.expect("confirm");
        assert_eq!(c.status, BookingStatus::Confirmed);
        assert_conflict(
            f.svc.confirm(&ALICE, &b.id).await,
            &["confirmed", "confirmed"],
        );
        assert_conflict(
            f.svc.decline(&ALICE, &b.id).await,
            &["confirmed", "declined"],
        );
        // Not before it starts.
        assert_conflict(
            f.svc.complete(&ALICE, &b.id).await,
            &["before it starts", "2026-01-05T09:00:00.000Z"],
        );
        f.set("2026-01-05T09:00:00Z");
        let done = f.svc.complete(&ALICE, &b.id).await.expect("complete");
        assert_eq!(done.status, BookingStatus::Completed);
        assert_conflict(f.svc.cancel(&BOB, &b.id).await, &["completed", "cancelled"]);

        // Declined (by the talent only) and cancelled (by either party) are final.
        let d = book("2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z")
            .await
            .expect("book");
        assert_forbidden(f.svc.decline(&BOB, &d.id).await);
        assert_eq!(
            f.svc.decline(&ALICE, &d.id).await.expect("decline").status,
            BookingStatus::Declined
        );
        assert_conflict(f.svc.cancel(&BOB, &d.id).await, &["declined", "cancelled"]);
        assert_conflict(
            f.svc.confirm(&ALICE, &d.id).await,
            &["declined", "confirmed"],
        );

        let x = book("2026-01-05T11:00:00Z", "2026-01-05T12:00:00Z")
            .await
            .expect("book");
        assert_eq!(
            f.svc
                .cancel(&BOB, &x.id)
                .await
                .expect("client cancels")
                .status,
            BookingStatus::Cancelled
        );
        assert_conflict(
            f.svc.confirm(&ALICE, &x.id).await,
            &["cancelled", "confirmed"],
        );
        let y = book("2026-01-05T12:00:00Z", "2026-01-05T13:00:00Z")
            .await
            .expect("book");
        f.svc.confirm(&ALICE, &y.id).await.expect("confirm");
        assert_eq!(
            f.svc
                .cancel(&ALICE, &y.id)
                .await
                .expect("talent cancels")
                .status,
            BookingStatus::Cancelled
        );
        assert_not_found(f.svc.cancel(&CAROL, &y.id).await);
        assert_not_found(f.svc.confirm(&ALICE, "no-such-booking").await);

        // Lists by side and status.
        let mine = f
            .svc
            .my_bookings(&BOB, BookingSide::Client, None, None, None)
            .await
            .expect("mine");
        assert_eq!(mine.items.len(), 4);
        let cancelled = f
            .svc
            .my_bookings(
                &ALICE,
                BookingSide::Talent,
                Some(BookingStatus::Cancelled),
                None,
                None,
            )
            .await
            .expect("cancelled");
        let ids: Vec<&str> = cancelled.items.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, vec![x.id.as_str(), y.id.as_str()]);
        assert_not_found(
            f.svc
                .my_bookings(&CAROL, BookingSide::Talent, None, None, None)
                .await,
        );
        let of_talent = f
            .svc
            .talent_bookings(&ADMIN, &p.id, None, Some(3), None)
            .await
            .expect("admin lists");
        assert_eq!(of_talent.items.len(), 3);
        assert!(of_talent.next_cursor.is_some());
        assert_forbidden(f.svc.talent_bookings(&BOB, &p.id, None, None, None).await);

        // A profile with an upcoming held booking cannot be deleted.
        let z = book("2026-01-06T09:00:00Z", "2026-01-06T10:00:00Z")
            .await
            .expect("book");
        assert_conflict(f.svc.delete_profile(&ALICE, &p.id).await, &["upcoming"]);
        f.svc.cancel(&BOB, &z.id).await.expect("cancel");
        // Audit rows of every change, in order.
        assert_eq!(
            f.audit(&b.id).await,
            vec!["talent.book", "talent.confirm", "talent.complete"]
        );
        assert_eq!(f.audit(&d.id).await, vec!["talent.book", "talent.decline"]);
        assert_eq!(
            f.audit(&y.id).await,
            vec!["talent.book", "talent.confirm", "talent.cancel"]
        );
        f.svc.delete_profile(&ALICE, &p.id).await.expect("delete");
        f.finish().await;
    }
}

#[tokio::test]
async fn bookings_outside_the_availability_in_the_past_or_overlapping_are_409s() {
    for f in fixtures("talent_booking_rules").await {
        f.set("2026-01-05T12:00:00Z");
        let p = f
            .talent(
                "Europe/Paris",
                json!([
                    {"weekday": "mon", "start": "09:00", "end": "12:00"},
                    {"weekday": "mon", "start": "12:00", "end": "17:00"},
                ]),
                json!([]),
            )
            .await;
        let book = |c: &'static Caller, s: &str, e: &str| f.svc.book(c, &p.id, booking(s, e));
        // Monday 12 January 09:00-17:00 Paris = 08:00Z-16:00Z.
        assert_conflict(
            book(&BOB, "2026-01-12T07:00:00Z", "2026-01-12T08:30:00Z").await,
            &["outside the availability"],
        );
        assert_conflict(
            book(&BOB, "2026-01-13T09:00:00Z", "2026-01-13T10:00:00Z").await,
            &["outside the availability"],
        );
        assert_conflict(
            book(&BOB, "2026-01-05T08:00:00Z", "2026-01-05T09:00:00Z").await,
            &["in the past"],
        );
        // Across two touching rules is within the availability.
        let b = book(&BOB, "2026-01-12T10:30:00Z", "2026-01-12T11:30:00Z")
            .await
            .expect("book across rules");
        let overlap = book(&CAROL, "2026-01-12T11:00:00Z", "2026-01-12T12:00:00Z").await;
        assert_conflict(overlap, &["overlaps", &b.id, "requested"]);
        // Touching is not overlapping.
        book(&CAROL, "2026-01-12T11:30:00Z", "2026-01-12T12:30:00Z")
            .await
            .expect("touching");
        // A confirmed booking holds its time too; a cancelled one does not.
        f.svc.confirm(&ALICE, &b.id).await.expect("confirm");
        assert_conflict(
            book(&CAROL, "2026-01-12T10:00:00Z", "2026-01-12T11:00:00Z").await,
            &["overlaps", "confirmed"],
        );
        f.svc.cancel(&BOB, &b.id).await.expect("cancel");
        book(&CAROL, "2026-01-12T10:00:00Z", "2026-01-12T11:00:00Z")
            .await
            .expect("freed");
        // Fields.
        assert_invalid(
            book(&BOB, "2026-01-12T09:00:00Z", "2026-01-12T09:00:00Z").await,
            "end",
        );
        assert_invalid(
            book(&BOB, "2026-01-12T09:00:00Z", "2026-01-12T09:10:00Z").await,
            "end",
        );
        assert_invalid(
            book(&BOB, "2026-01-12T08:00:00Z", "2026-01-12T16:01:00Z").await,
            "end",
        );
        assert_invalid(book(&BOB, "noon", "2026-01-12T09:00:00Z").await, "start");
        assert_invalid(
            book(&BOB, "2028-01-10T09:00:00Z", "2028-01-10T10:00:00Z").await,
            "start",
        );
        assert_conflict(
            book(&ALICE, "2026-01-12T14:00:00Z", "2026-01-12T15:00:00Z").await,
            &["own profile"],
        );
        assert_not_found(
            f.svc
                .book(
                    &BOB,
                    "no-such-profile",
                    booking("2026-01-12T14:00:00Z", "2026-01-12T15:00:00Z"),
                )
                .await,
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn fifty_concurrent_overlapping_bookings_leave_exactly_one_requested() {
    for f in fixtures("talent_race").await {
        let p = f
            .talent("UTC", every_day("09:00", "17:00"), json!([]))
            .await;
        let clients: Vec<Caller> = (0..50)
            .map(|i| Caller::user(format!("client{i}"), vec![Role::User]))
            .collect();
        // Every one overlaps every other (starts 0-40 minutes apart, an hour long).
        let attempts = clients.iter().enumerate().map(|(i, c)| {
            let svc = f.svc.clone();
            let id = p.id.clone();
            let minute = (i % 5) * 10;
            async move {
                svc.book(
                    c,
                    &id,
                    booking(
                        &format!("2026-01-05T10:{minute:02}:00Z"),
                        &format!("2026-01-05T11:{minute:02}:00Z"),
                    ),
                )
                .await
            }
        });
        let results = futures_util::future::join_all(attempts).await;
        let won: Vec<&Booking> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "exactly one booking is held");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, ServiceError::Conflict { message } if message.contains("overlaps")),
                    "{e:?}"
                );
            }
        }
        let held = f
            .svc
            .talent_bookings(&ALICE, &p.id, Some(BookingStatus::Requested), None, None)
            .await
            .expect("list");
        assert_eq!(held.items.len(), 1);
        assert_eq!(held.items[0].id, won[0].id);
        let all = f
            .svc
            .talent_bookings(&ALICE, &p.id, None, None, None)
            .await
            .expect("list");
        assert_eq!(all.items.len(), 1, "the refused bookings left no row");
        assert_eq!(f.audit(&won[0].id).await, vec!["talent.book"]);
        f.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_threaded_concurrent_bookings_leave_exactly_one_requested() {
    // The same race with the bookings spread over a multi-threaded runtime's workers; on
    // Postgres some of the losers get past the overlap check and are refused by the
    // exclusion constraint (counted and printed).
    for f in fixtures("talent_race_mt").await {
        let p = f
            .talent("UTC", every_day("09:00", "17:00"), json!([]))
            .await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let svc = f.svc.clone();
            let id = p.id.clone();
            tasks.push(tokio::spawn(async move {
                let c = Caller::user(format!("client{i}"), vec![Role::User]);
                let minute = (i % 5) * 10;
                svc.book(
                    &c,
                    &id,
                    booking(
                        &format!("2026-01-05T10:{minute:02}:00Z"),
                        &format!("2026-01-05T11:{minute:02}:00Z"),
                    ),
                )
                .await
            }));
        }
        let mut won = 0;
        let mut by_constraint = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(_) => won += 1,
                Err(ServiceError::Conflict { message }) => {
                    assert!(message.contains("overlaps"), "{message}");
                    if message.contains("at the same moment") {
                        by_constraint += 1;
                    }
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(won, 1);
        eprintln!(
            "{}: {by_constraint} of 49 refused by the exclusion constraint",
            f.home.db.backend()
        );
        let held = f
            .svc
            .talent_bookings(&ADMIN, &p.id, None, None, None)
            .await
            .expect("list");
        assert_eq!(held.items.len(), 1);
        f.finish().await;
    }
}

#[tokio::test]
async fn roles_without_the_right_are_refused() {
    for f in fixtures("talent_rbac").await {
        let p = f
            .talent("UTC", every_day("09:00", "17:00"), json!([]))
            .await;
        // Anonymous callers read, and nothing more.
        f.svc.get_profile(&ANON, &p.id).await.expect("read");
        assert_unauthenticated(
            f.svc
                .create_profile(&ANON, new_profile("Anon", "UTC"))
                .await,
        );
        assert_unauthenticated(
            f.svc
                .book(
                    &ANON,
                    &p.id,
                    booking("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z"),
                )
                .await,
        );
        assert_unauthenticated(
            f.svc
                .my_bookings(&ANON, BookingSide::Client, None, None, None)
                .await,
        );
        // Users change only their own profile.
        assert_forbidden(
            f.svc
                .update_profile(&BOB, &p.id, ProfileUpdate::default())
                .await,
        );
        assert_forbidden(
            f.svc
                .set_availability(&BOB, &p.id, Availability::default())
                .await,
        );
        assert_forbidden(f.svc.delete_profile(&BOB, &p.id).await);
        assert_forbidden(
            f.svc
                .create_profile(
                    &BOB,
                    NewProfile {
                        user_id: Some("alice2".to_owned()),
                        ..new_profile("Not mine", "UTC")
                    },
                )
                .await,
        );
        // A role with no talent policy at all.
        let manager = Caller::user("cm", vec![Role::CampaignManager]);
        assert_forbidden(f.svc.get_profile(&manager, &p.id).await);
        assert_forbidden(
            f.svc
                .book(
                    &manager,
                    &p.id,
                    booking("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z"),
                )
                .await,
        );
        // Admins manage everything.
        let updated = f
            .svc
            .update_profile(
                &ADMIN,
                &p.id,
                ProfileUpdate {
                    headline: Some("Edited by an admin".to_owned()),
                    ..ProfileUpdate::default()
                },
            )
            .await
            .expect("admin update");
        assert_eq!(updated.headline, "Edited by an admin");
        let b = f
            .svc
            .book(
                &BOB,
                &p.id,
                booking("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z"),
            )
            .await
            .expect("book");
        f.svc.confirm(&ADMIN, &b.id).await.expect("admin confirms");
        // Refusals wrote nothing; the admin's change is audited under the admin.
        let filter = AuditFilter {
            entity_id: Some(p.id.clone()),
            actor: Some("boss".to_owned()),
            ..AuditFilter::default()
        };
        let rows = f
            .log
            .query(&SYS, &filter, None, None)
            .await
            .expect("audit")
            .items;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].action, "talent.update");
        assert_eq!(
            rows[0].before.as_ref().and_then(|b| b.get("headline")),
            Some(&json!("Rust consultant"))
        );
        assert_eq!(
            rows[0].after.as_ref().and_then(|a| a.get("headline")),
            Some(&json!("Edited by an admin"))
        );
        assert_eq!(
            f.audit(&p.id).await,
            vec!["talent.create", "talent.availability", "talent.update"]
        );
        assert_eq!(f.audit(&b.id).await, vec!["talent.book", "talent.confirm"]);
        f.finish().await;
    }
}

#[tokio::test]
async fn postgres_itself_refuses_overlapping_held_bookings() {
    for f in fixtures("talent_exclusion").await {
        let services::Database::Postgres(pool) = &f.home.db else {
            f.finish().await;
            continue;
        };
        let p = f
            .talent("UTC", every_day("09:00", "17:00"), json!([]))
            .await;
        let b = f
            .svc
            .book(
                &BOB,
                &p.id,
                booking("2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z"),
            )
            .await
            .expect("book");
        let insert = |id: &'static str, status: &'static str| {
            sqlx::query(
                "INSERT INTO service_talent_booking (id, talent_id, client_id, start_ms, end_ms, \
                 status, created_at, updated_at) VALUES ($1, $2, 'carol', $3, $4, $5, 0, 0)",
            )
            .bind(id)
            .bind(p.id.clone())
            .bind(ms("2026-01-05T09:30:00Z"))
            .bind(ms("2026-01-05T10:30:00Z"))
            .bind(status)
            .execute(pool)
        };
        let refused = insert("raw-1", "requested").await.expect_err("overlap");
        let code = refused
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("23P01"), "{refused}");
        // Bookings that do not hold time may overlap.
        insert("raw-2", "cancelled")
            .await
            .expect("cancelled overlaps");
        f.svc.cancel(&BOB, &b.id).await.expect("cancel");
        insert("raw-3", "confirmed").await.expect("time freed");
        f.finish().await;
    }
}
