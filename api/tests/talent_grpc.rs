//! `talent.v0.TalentService` end to end against a node on port 0: a profile in Europe/Paris
//! with weekly hours and a dated exception, its free slots, a booking by another user that
//! holds its time against an overlapping one, the booking's transitions by the right party,
//! both sides' lists; and the status codes of bad enum strings, missing credentials, other
//! users and unknown ids.
//!
//! Bookings may start at most 366 days ahead, so the window is a week from now (whole UTC
//! days), not a fixed date.

mod common;

use common::{TestNode, user};
use proto::talent::v0 as pb;
use proto::talent::v0::talent_service_client::TalentServiceClient;
use services::time::{now_ms, rfc3339};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

async fn client(node: &TestNode) -> TalentServiceClient<Channel> {
    let ch = Channel::from_shared(format!("http://{}", node.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    TalentServiceClient::new(ch)
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    r
}

/// Asserts `code`, and that the message names `says`.
fn assert_status<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, says: &str) {
    let e = r.expect_err("an error");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(e.message().contains(says), "{says:?} not in {e:?}");
}

fn every_day(start: &str, end: &str) -> Vec<pb::WeeklyRule> {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .into_iter()
        .map(|d| pb::WeeklyRule {
            weekday: d.into(),
            start: start.into(),
            end: end.into(),
        })
        .collect()
}

fn new_profile(headline: &str) -> pb::CreateProfileRequest {
    pb::CreateProfileRequest {
        headline: headline.into(),
        bio: "Rust services and gRPC APIs".into(),
        skills: vec!["Rust".into(), "gRPC".into(), "rust".into()],
        timezone: "Europe/Paris".into(),
        ..Default::default()
    }
}

/// Midnight UTC a week from now: the first day of the windows below.
fn day0() -> i64 {
    (now_ms() / DAY_MS + 7) * DAY_MS
}

/// The `YYYY-MM-DD` of `ms` (UTC; the same date in Paris between 00:00 and 22:00 UTC).
fn date(ms: i64) -> String {
    rfc3339(ms)[..10].to_owned()
}

fn booking_ids(bookings: &[pb::Booking]) -> Vec<&str> {
    bookings.iter().map(|b| b.id.as_str()).collect()
}

#[tokio::test]
async fn a_talent_is_booked_over_grpc_and_the_booking_moves_through_its_states() {
    let node = TestNode::start().await;
    let (talent_user, talent) = user(&node, "tess").await;
    let (client_user, client_token) = user(&node, "carl").await;
    let (_, other) = user(&node, "olga").await;
    let mut c = client(&node).await;

    // The profile: skills lower-cased without duplicates, public by default.
    let profile = c
        .create_profile(with_token(new_profile("Rust consultant"), &talent))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(profile.user_id, talent_user);
    assert_eq!(profile.skills, ["rust", "grpc"]);
    assert_eq!(profile.visibility, "public");
    assert_eq!(profile.timezone, "Europe/Paris");
    assert_eq!(profile.hourly_rate_sku, None);
    assert_status(
        c.create_profile(with_token(new_profile("Again"), &talent))
            .await,
        Code::AlreadyExists,
        "",
    );

    // Anyone reads it, by id or by user, and finds it by skill.
    let got = c
        .get_profile(Request::new(pb::ProfileRef {
            id: profile.id.clone(),
        }))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, profile);
    let of_user = c
        .get_profile_of_user(Request::new(pb::GetProfileOfUserRequest {
            user_id: talent_user.clone(),
        }))
        .await
        .expect("of user")
        .into_inner();
    assert_eq!(of_user.id, profile.id);
    let found = c
        .search_profiles(Request::new(pb::SearchProfilesRequest {
            skill: Some("GRPC".into()),
            query: Some("consultant".into()),
            ..Default::default()
        }))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(found.profiles.len(), 1, "{found:?}");
    assert_eq!(found.profiles[0].id, profile.id);
    assert!(found.next_cursor.is_empty());
    let none = c
        .search_profiles(Request::new(pb::SearchProfilesRequest {
            skill: Some("cobol".into()),
            ..Default::default()
        }))
        .await
        .expect("search")
        .into_inner();
    assert!(none.profiles.is_empty());

    // Mornings 09:00-12:00 in Paris, except day 1: 14:00-15:00 only.
    let d0 = day0();
    let exception = date(d0 + DAY_MS);
    let profile = c
        .set_availability(with_token(
            pb::SetAvailabilityRequest {
                id: profile.id.clone(),
                rules: every_day("09:00", "12:00"),
                exceptions: vec![pb::DateException {
                    date: exception.clone(),
                    hours: vec![pb::Hours {
                        start: "14:00".into(),
                        end: "15:00".into(),
                    }],
                }],
            },
            &talent,
        ))
        .await
        .expect("availability")
        .into_inner();
    let availability = profile.availability.clone().expect("availability");
    assert_eq!(availability.rules.len(), 7);
    assert_eq!(availability.exceptions.len(), 1);
    assert_eq!(availability.exceptions[0].date, exception);
    // Only the owner changes it.
    assert_status(
        c.set_availability(with_token(
            pb::SetAvailabilityRequest {
                id: profile.id.clone(),
                ..Default::default()
            },
            &client_token,
        ))
        .await,
        Code::PermissionDenied,
        "another user",
    );

    // Three days of hour slots: 3 + 1 (the exception) + 3, on the Paris wall clock.
    let slots_query = || pb::ListFreeSlotsRequest {
        id: profile.id.clone(),
        from: rfc3339(d0),
        to: rfc3339(d0 + 3 * DAY_MS),
        duration_minutes: 60,
    };
    let slots = c
        .list_free_slots(Request::new(slots_query()))
        .await
        .expect("slots")
        .into_inner()
        .slots;
    assert_eq!(slots.len(), 7, "{slots:?}");
    let on_exception: Vec<&pb::Slot> = slots
        .iter()
        .filter(|s| s.start.starts_with(&exception))
        .collect();
    assert_eq!(on_exception.len(), 1, "{slots:?}");
    // 14:00 in Paris is 13:00 UTC in winter, 12:00 in summer.
    assert!(
        [
            format!("{exception}T13:00:00.000Z"),
            format!("{exception}T12:00:00.000Z")
        ]
        .contains(&on_exception[0].start),
        "{on_exception:?}"
    );
    let first = slots[0].clone();
    let first_start = services::time::parse_rfc3339("start", &first.start).expect("start");
    assert_eq!(
        services::time::parse_rfc3339("end", &first.end).expect("end") - first_start,
        60 * MINUTE_MS
    );

    // Carl books the first slot; it is no longer free.
    let booking = c
        .book(with_token(
            pb::BookRequest {
                talent_id: profile.id.clone(),
                start: first.start.clone(),
                end: first.end.clone(),
                note: Some("Code review".into()),
                country: None,
            },
            &client_token,
        ))
        .await
        .expect("book")
        .into_inner();
    assert_eq!(booking.status, "requested");
    assert_eq!(booking.talent_id, profile.id);
    assert_eq!(booking.talent_user_id, talent_user);
    assert_eq!(booking.client_id, client_user);
    assert_eq!(booking.note.as_deref(), Some("Code review"));
    let slots = c
        .list_free_slots(Request::new(slots_query()))
        .await
        .expect("slots")
        .into_inner()
        .slots;
    assert_eq!(slots.len(), 6);
    assert!(!slots.contains(&first));

    // Olga's booking overlapping it by half an hour is refused, naming the booking held.
    assert_status(
        c.book(with_token(
            pb::BookRequest {
                talent_id: profile.id.clone(),
                start: rfc3339(first_start + 30 * MINUTE_MS),
                end: rfc3339(first_start + 90 * MINUTE_MS),
                note: None,
                country: None,
            },
            &other,
        ))
        .await,
        Code::FailedPrecondition,
        &booking.id,
    );
    // Nor may the talent book itself.
    assert_status(
        c.book(with_token(
            pb::BookRequest {
                talent_id: profile.id.clone(),
                start: slots[0].start.clone(),
                end: slots[0].end.clone(),
                note: None,
                country: None,
            },
            &talent,
        ))
        .await,
        Code::FailedPrecondition,
        "own profile",
    );

    // Only the talent confirms: the client is refused, another user does not see it.
    let of_booking = || pb::BookingRef {
        id: booking.id.clone(),
    };
    assert_status(
        c.confirm_booking(with_token(of_booking(), &client_token))
            .await,
        Code::PermissionDenied,
        "only the talent",
    );
    assert_status(
        c.confirm_booking(with_token(of_booking(), &other)).await,
        Code::NotFound,
        &booking.id,
    );
    assert_status(
        c.get_booking(with_token(of_booking(), &other)).await,
        Code::NotFound,
        &booking.id,
    );
    let confirmed = c
        .confirm_booking(with_token(of_booking(), &talent))
        .await
        .expect("confirm")
        .into_inner();
    assert_eq!(confirmed.status, "confirmed");
    assert_status(
        c.confirm_booking(with_token(of_booking(), &talent)).await,
        Code::FailedPrecondition,
        "confirmed",
    );
    let seen = c
        .get_booking(with_token(of_booking(), &client_token))
        .await
        .expect("get booking")
        .into_inner();
    assert_eq!(seen, confirmed);

    // Both sides list it; the status filter narrows.
    let mine = |token: &str, side: &str, status: Option<&str>| {
        with_token(
            pb::ListMyBookingsRequest {
                side: side.into(),
                status: status.map(Into::into),
                ..Default::default()
            },
            token,
        )
    };
    let as_talent = c
        .list_my_bookings(mine(&talent, "talent", None))
        .await
        .expect("talent side")
        .into_inner();
    assert_eq!(as_talent.bookings, std::slice::from_ref(&confirmed));
    assert!(as_talent.next_cursor.is_empty());
    let as_client = c
        .list_my_bookings(mine(&client_token, "client", Some("confirmed")))
        .await
        .expect("client side")
        .into_inner();
    assert_eq!(as_client.bookings, std::slice::from_ref(&confirmed));
    let by_default = c
        .list_my_bookings(mine(&client_token, "", None))
        .await
        .expect("default side")
        .into_inner();
    assert_eq!(booking_ids(&by_default.bookings), [booking.id.as_str()]);
    let requested = c
        .list_my_bookings(mine(&client_token, "client", Some("requested")))
        .await
        .expect("requested")
        .into_inner();
    assert!(requested.bookings.is_empty());
    let of_talent = c
        .list_talent_bookings(with_token(
            pb::ListTalentBookingsRequest {
                talent_id: profile.id.clone(),
                status: Some("confirmed".into()),
                ..Default::default()
            },
            &talent,
        ))
        .await
        .expect("talent bookings")
        .into_inner();
    assert_eq!(of_talent.bookings, std::slice::from_ref(&confirmed));
    assert_status(
        c.list_talent_bookings(with_token(
            pb::ListTalentBookingsRequest {
                talent_id: profile.id.clone(),
                ..Default::default()
            },
            &client_token,
        ))
        .await,
        Code::PermissionDenied,
        "another user",
    );

    // Olga books the next slot: the talent declines it; she books another and cancels it.
    let book_as = |token: &str, slot: &pb::Slot| {
        with_token(
            pb::BookRequest {
                talent_id: profile.id.clone(),
                start: slot.start.clone(),
                end: slot.end.clone(),
                note: None,
                country: None,
            },
            token,
        )
    };
    let second = c
        .book(book_as(&other, &slots[0]))
        .await
        .expect("second booking")
        .into_inner();
    let declined = c
        .decline_booking(with_token(
            pb::BookingRef {
                id: second.id.clone(),
            },
            &talent,
        ))
        .await
        .expect("decline")
        .into_inner();
    assert_eq!(declined.status, "declined");
    let third = c
        .book(book_as(&other, &slots[0]))
        .await
        .expect("the declined time is free again")
        .into_inner();
    let cancelled = c
        .cancel_booking(with_token(
            pb::BookingRef {
                id: third.id.clone(),
            },
            &other,
        ))
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.status, "cancelled");

    // The first cannot be completed before it starts (a week from now); the client
    // cancels it instead, and a cancelled booking cannot be cancelled again.
    assert_status(
        c.complete_booking(with_token(of_booking(), &talent)).await,
        Code::FailedPrecondition,
        "before it starts",
    );
    let called_off = c
        .cancel_booking(with_token(of_booking(), &client_token))
        .await
        .expect("cancel the confirmed booking")
        .into_inner();
    assert_eq!(called_off.status, "cancelled");
    assert_status(
        c.cancel_booking(with_token(of_booking(), &talent)).await,
        Code::FailedPrecondition,
        "cancelled",
    );
    let all = c
        .list_my_bookings(mine(&talent, "talent", None))
        .await
        .expect("all")
        .into_inner();
    assert_eq!(
        booking_ids(&all.bookings),
        [booking.id.as_str(), second.id.as_str(), third.id.as_str()]
    );
    let page = c
        .list_my_bookings(with_token(
            pb::ListMyBookingsRequest {
                side: "talent".into(),
                limit: 2,
                ..Default::default()
            },
            &talent,
        ))
        .await
        .expect("page")
        .into_inner();
    assert_eq!(page.bookings.len(), 2);
    assert!(!page.next_cursor.is_empty());
    let rest = c
        .list_my_bookings(with_token(
            pb::ListMyBookingsRequest {
                side: "talent".into(),
                limit: 2,
                cursor: page.next_cursor,
                ..Default::default()
            },
            &talent,
        ))
        .await
        .expect("next page")
        .into_inner();
    assert_eq!(booking_ids(&rest.bookings), [third.id.as_str()]);
    assert!(rest.next_cursor.is_empty());

    // Update: unset fields are kept; private hides it from everyone else.
    let updated = c
        .update_profile(with_token(
            pb::UpdateProfileRequest {
                id: profile.id.clone(),
                headline: Some("Rust and Postgres consultant".into()),
                visibility: Some("private".into()),
                ..Default::default()
            },
            &talent,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.headline, "Rust and Postgres consultant");
    assert_eq!(updated.visibility, "private");
    assert_eq!(updated.skills, profile.skills);
    assert_eq!(updated.availability, profile.availability);
    let updated = c
        .update_profile(with_token(
            pb::UpdateProfileRequest {
                id: profile.id.clone(),
                replace_skills: true,
                ..Default::default()
            },
            &talent,
        ))
        .await
        .expect("clear skills")
        .into_inner();
    assert!(updated.skills.is_empty());
    assert_status(
        c.get_profile(Request::new(pb::ProfileRef {
            id: profile.id.clone(),
        }))
        .await,
        Code::NotFound,
        &profile.id,
    );
    let own = c
        .get_profile(with_token(
            pb::ProfileRef {
                id: profile.id.clone(),
            },
            &talent,
        ))
        .await
        .expect("own private profile")
        .into_inner();
    assert_eq!(own.visibility, "private");

    // No booking holds time any more: the profile can be deleted.
    c.delete_profile(with_token(
        pb::ProfileRef {
            id: profile.id.clone(),
        },
        &talent,
    ))
    .await
    .expect("delete");
    assert_status(
        c.get_profile(with_token(
            pb::ProfileRef {
                id: profile.id.clone(),
            },
            &talent,
        ))
        .await,
        Code::NotFound,
        &profile.id,
    );
}

#[tokio::test]
async fn bad_input_missing_credentials_and_unknown_ids_get_their_status_codes() {
    let node = TestNode::start().await;
    let (_, talent) = user(&node, "tina").await;
    let (nobody_user, nobody) = user(&node, "nora").await;
    let mut c = client(&node).await;

    // Bad enum strings are INVALID_ARGUMENT naming the field.
    assert_status(
        c.create_profile(with_token(
            pb::CreateProfileRequest {
                visibility: "secret".into(),
                ..new_profile("Designer")
            },
            &talent,
        ))
        .await,
        Code::InvalidArgument,
        "visibility",
    );
    assert_status(
        c.create_profile(with_token(
            pb::CreateProfileRequest {
                timezone: "Mars/Olympus".into(),
                ..new_profile("Designer")
            },
            &talent,
        ))
        .await,
        Code::InvalidArgument,
        "timezone",
    );
    let profile = c
        .create_profile(with_token(
            pb::CreateProfileRequest {
                visibility: "private".into(),
                ..new_profile("Designer")
            },
            &talent,
        ))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(profile.visibility, "private");
    assert_status(
        c.update_profile(with_token(
            pb::UpdateProfileRequest {
                id: profile.id.clone(),
                visibility: Some("hidden".into()),
                ..Default::default()
            },
            &talent,
        ))
        .await,
        Code::InvalidArgument,
        "visibility",
    );
    assert_status(
        c.set_availability(with_token(
            pb::SetAvailabilityRequest {
                id: profile.id.clone(),
                rules: vec![pb::WeeklyRule {
                    weekday: "someday".into(),
                    start: "09:00".into(),
                    end: "17:00".into(),
                }],
                exceptions: vec![],
            },
            &talent,
        ))
        .await,
        Code::InvalidArgument,
        "rules[0].weekday",
    );
    assert_status(
        c.list_my_bookings(with_token(
            pb::ListMyBookingsRequest {
                side: "both".into(),
                ..Default::default()
            },
            &talent,
        ))
        .await,
        Code::InvalidArgument,
        "side",
    );
    assert_status(
        c.list_my_bookings(with_token(
            pb::ListMyBookingsRequest {
                side: "client".into(),
                status: Some("pending".into()),
                ..Default::default()
            },
            &talent,
        ))
        .await,
        Code::InvalidArgument,
        "status",
    );
    assert_status(
        c.list_talent_bookings(with_token(
            pb::ListTalentBookingsRequest {
                talent_id: profile.id.clone(),
                status: Some("pending".into()),
                ..Default::default()
            },
            &talent,
        ))
        .await,
        Code::InvalidArgument,
        "status",
    );
    assert_status(
        c.list_my_bookings(with_token(
            pb::ListMyBookingsRequest {
                limit: 501,
                ..Default::default()
            },
            &talent,
        ))
        .await,
        Code::InvalidArgument,
        "limit",
    );
    let d0 = day0();
    assert_status(
        c.list_free_slots(Request::new(pb::ListFreeSlotsRequest {
            id: profile.id.clone(),
            from: rfc3339(d0),
            to: rfc3339(d0 + 63 * DAY_MS),
            duration_minutes: 60,
        }))
        .await,
        Code::InvalidArgument,
        "to",
    );
    assert_status(
        c.book(with_token(
            pb::BookRequest {
                talent_id: profile.id.clone(),
                start: "tomorrow".into(),
                end: rfc3339(d0),
                note: None,
                country: None,
            },
            &nobody,
        ))
        .await,
        Code::InvalidArgument,
        "start",
    );

    // Without credentials (or with a bad token): UNAUTHENTICATED.
    let booking = || pb::BookRequest {
        talent_id: profile.id.clone(),
        start: rfc3339(d0 + 9 * 60 * MINUTE_MS),
        end: rfc3339(d0 + 10 * 60 * MINUTE_MS),
        note: None,
        country: None,
    };
    assert_status(
        c.book(Request::new(booking())).await,
        Code::Unauthenticated,
        "",
    );
    assert_status(
        c.create_profile(Request::new(new_profile("Anonymous")))
            .await,
        Code::Unauthenticated,
        "",
    );
    assert_status(
        c.list_my_bookings(Request::new(pb::ListMyBookingsRequest::default()))
            .await,
        Code::Unauthenticated,
        "",
    );
    assert_status(
        c.book(with_token(booking(), "not-a-token")).await,
        Code::Unauthenticated,
        "",
    );

    // Unknown ids, and a private profile of someone else: NOT_FOUND.
    assert_status(
        c.get_profile(Request::new(pb::ProfileRef { id: "nope".into() }))
            .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        c.get_profile(with_token(
            pb::ProfileRef {
                id: profile.id.clone(),
            },
            &nobody,
        ))
        .await,
        Code::NotFound,
        &profile.id,
    );
    assert_status(
        c.get_profile_of_user(Request::new(pb::GetProfileOfUserRequest {
            user_id: nobody_user.clone(),
        }))
        .await,
        Code::NotFound,
        &nobody_user,
    );
    assert_status(
        c.book(with_token(booking(), &nobody)).await,
        Code::NotFound,
        &profile.id,
    );
    assert_status(
        c.book(with_token(
            pb::BookRequest {
                talent_id: "nope".into(),
                ..booking()
            },
            &nobody,
        ))
        .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        c.list_free_slots(Request::new(pb::ListFreeSlotsRequest {
            id: "nope".into(),
            from: rfc3339(d0),
            to: rfc3339(d0 + DAY_MS),
            duration_minutes: 60,
        }))
        .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        c.list_my_bookings(with_token(
            pb::ListMyBookingsRequest {
                side: "talent".into(),
                ..Default::default()
            },
            &nobody,
        ))
        .await,
        Code::NotFound,
        &nobody_user,
    );
    for r in [
        c.get_booking(with_token(pb::BookingRef { id: "nope".into() }, &nobody))
            .await,
        c.confirm_booking(with_token(pb::BookingRef { id: "nope".into() }, &talent))
            .await,
        c.decline_booking(with_token(pb::BookingRef { id: "nope".into() }, &talent))
            .await,
        c.cancel_booking(with_token(pb::BookingRef { id: "nope".into() }, &talent))
            .await,
        c.complete_booking(with_token(pb::BookingRef { id: "nope".into() }, &talent))
            .await,
    ] {
        assert_status(r, Code::NotFound, "nope");
    }
    assert_status(
        c.update_profile(with_token(
            pb::UpdateProfileRequest {
                id: "nope".into(),
                headline: Some("New".into()),
                ..Default::default()
            },
            &talent,
        ))
        .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        c.delete_profile(with_token(pb::ProfileRef { id: "nope".into() }, &talent))
            .await,
        Code::NotFound,
        "nope",
    );
}

#[tokio::test]
async fn a_priced_booking_carries_its_country_and_order_over_grpc() {
    let node = TestNode::start().await;
    for (path, body) in [
        (
            "/api/babel/markets",
            serde_json::json!({"code": "eu", "name": "Europe", "currency": "EUR", "locale": "fr-FR", "countries": ["FR"]}),
        ),
        (
            "/api/commerce/products",
            serde_json::json!({"sku": "rate-tess", "name": "An hour", "base_amount": 5000, "currency": "EUR"}),
        ),
    ] {
        let (s, b) = node.call("POST", path, Some(body)).await;
        assert_eq!(s, 201, "{b}");
    }
    let (_, talent) = user(&node, "tess").await;
    let (_, client_token) = user(&node, "carl").await;
    let mut c = client(&node).await;
    let profile = c
        .create_profile(with_token(
            pb::CreateProfileRequest {
                hourly_rate_sku: Some("rate-tess".into()),
                ..new_profile("Rust consultant")
            },
            &talent,
        ))
        .await
        .expect("create")
        .into_inner();
    c.set_availability(with_token(
        pb::SetAvailabilityRequest {
            id: profile.id.clone(),
            rules: every_day("09:00", "12:00"),
            exceptions: vec![],
        },
        &talent,
    ))
    .await
    .expect("availability");
    let start = day0() + 8 * 3_600_000;
    let book = |country: Option<&str>| {
        with_token(
            pb::BookRequest {
                talent_id: profile.id.clone(),
                start: rfc3339(start),
                end: rfc3339(start + 30 * MINUTE_MS),
                note: None,
                country: country.map(str::to_owned),
            },
            &client_token,
        )
    };
    assert_status(c.book(book(None)).await, Code::InvalidArgument, "country");
    let b = c.book(book(Some("FR"))).await.expect("book").into_inner();
    assert_eq!(
        (b.country.as_deref(), b.order_id.as_deref()),
        (Some("FR"), None)
    );
    let confirmed = c
        .confirm_booking(with_token(pb::BookingRef { id: b.id.clone() }, &talent))
        .await
        .expect("confirm")
        .into_inner();
    let order_id = confirmed.order_id.expect("an order");
    let (s, order) = node
        .call_as(
            Some(&client_token),
            "GET",
            &format!("/api/commerce/orders/{order_id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{order}");
    // Half an hour at 50.00.
    assert_eq!(order["total_amount"], 2500, "{order}");
    assert_eq!(
        order["placed_for"],
        format!("talent_booking:{}", b.id),
        "{order}"
    );
}
