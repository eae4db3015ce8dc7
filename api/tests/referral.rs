//! Referrals end to end against a node on port 0, over REST and gRPC: a campaign with a
//! reward, a code, sign-ups through `POST /api/auth/register` and `user.v0.UserService/Register`
//! with `referral_code` from several client addresses (a reqwest client bound to
//! 127.0.0.x): the reward credited to both sides in the ledger and announced in the
//! referrer's inbox; a sign-up from the referrer's own address held with its reason, approved
//! or rejected by the admin (audited); stats; and every bad-input class (malformed JSON,
//! unknown fields, bad values, bad query parameters, 401, 403, 404, 409, 415).

mod common;

use std::net::IpAddr;

use common::{TestNode, assert_error, audit_actions, login, user};
use proto::referral::v0 as pb;
use proto::referral::v0::referral_service_client::ReferralServiceClient;
use proto::user::v0 as user_pb;
use proto::user::v0::user_service_client::UserServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Registers `name` from source address `from` with `body`'s extra fields; status and JSON.
async fn register_from(node: &TestNode, from: &str, name: &str, extra: Value) -> (u16, Value) {
    let ip: IpAddr = from.parse().expect("ip");
    let client = reqwest::Client::builder()
        .local_address(ip)
        .build()
        .expect("client");
    let mut body = json!({"username": name, "email": format!("{name}@example.org"), "password": "password123"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let res = client
        .post(node.url("/api/auth/register"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.expect("JSON"))
}

async fn balance(node: &TestNode, account: &str) -> i64 {
    let (s, b) = node
        .call("GET", "/api/commerce/ledger/balances", None)
        .await;
    assert_eq!(s, 200, "{b}");
    b["items"]
        .as_array()
        .or_else(|| b.as_array())
        .expect("balances")
        .iter()
        .find(|x| x["account"] == account && x["currency"] == "EUR")
        .map_or(0, |x| x["amount"].as_i64().expect("amount"))
}

#[tokio::test]
async fn a_referral_is_rewarded_held_reviewed_and_counted_over_rest() {
    let node = TestNode::start().await;
    let (s, b) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "Spring", "slug": "spring",
                        "metadata": {"custom_rules": {"referral_reward": {"amount": 500, "currency": "EUR"}}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (alice_id, alice) = user(&node, "alice").await;
    let (s, code) = node
        .call_as(
            Some(&alice),
            "POST",
            "/api/referral/codes",
            Some(json!({"campaign_id": "spring", "code": "alice-spring"})),
        )
        .await;
    assert_eq!(s, 201, "{code}");
    assert_eq!(
        (code["code"].as_str(), code["active"].as_bool()),
        (Some("ALICE-SPRING"), Some(true))
    );

    // From another address: rewarded at once, both sides credited, the referrer told.
    let (s, bob) = register_from(
        &node,
        "127.0.0.2",
        "bob",
        json!({"referral_code": "alice-spring"}),
    )
    .await;
    assert_eq!(s, 201, "{bob}");
    let bob_id = bob["id"].as_str().expect("id");
    let (s, page) = node
        .call_as(Some(&alice), "GET", "/api/referral/referrals", None)
        .await;
    assert_eq!(s, 200, "{page}");
    let r = &page["items"][0];
    assert_eq!(
        (r["status"].as_str(), r["referee_id"].as_str()),
        (Some("rewarded"), Some(bob_id)),
        "{page}"
    );
    assert_eq!(balance(&node, &format!("user:{alice_id}")).await, -500);
    assert_eq!(balance(&node, &format!("user:{bob_id}")).await, -500);
    assert_eq!(balance(&node, "referral_rewards").await, 1000);
    let (s, inbox) = node
        .call_as(Some(&alice), "GET", "/api/notifications", None)
        .await;
    assert_eq!(s, 200, "{inbox}");
    assert_eq!(
        inbox["items"][0]["template"], "referral.rewarded",
        "{inbox}"
    );
    assert!(
        inbox["items"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("5")),
        "{inbox}"
    );

    // From the referrer's own address (127.0.0.1, as `user` registered alice): held, with
    // the rule and what it saw; the referrer is told.
    let (s, carol) = register_from(
        &node,
        "127.0.0.1",
        "carol",
        json!({"referral_code": "ALICE-SPRING", "device_fingerprint": "fp-1"}),
    )
    .await;
    assert_eq!(s, 201, "{carol}");
    let (s, held) = node
        .call_as(
            Some(&alice),
            "GET",
            "/api/referral/referrals?status=held",
            None,
        )
        .await;
    assert_eq!(s, 200, "{held}");
    let carol_ref = held["items"][0]["id"]
        .as_str()
        .expect("held referral")
        .to_owned();
    assert_eq!(
        held["items"][0]["reasons"][0]["rule"], "same_address",
        "{held}"
    );
    assert!(
        held["items"][0]["reasons"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("127.0.0.1")),
        "{held}"
    );
    let (_, inbox) = node
        .call_as(Some(&alice), "GET", "/api/notifications", None)
        .await;
    assert_eq!(inbox["items"][0]["template"], "referral.held", "{inbox}");

    // The referrer cannot decide; the admin approves (paid at once) with a note.
    let (s, b) = node
        .call_as(
            Some(&alice),
            "POST",
            &format!("/api/referral/referrals/{carol_ref}/approve"),
            Some(json!({})),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/referral/referrals/{carol_ref}/approve"),
            Some(json!({"note": "her flatmate"})),
        )
        .await;
    assert_eq!(
        (s, b["status"].as_str(), b["decision_note"].as_str()),
        (200, Some("rewarded"), Some("her flatmate")),
        "{b}"
    );
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/referral/referrals/{carol_ref}/approve"),
            Some(json!({})),
        )
        .await;
    assert_error(s, &b, 409, "conflict");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rewarded")),
        "{b}"
    );

    // Another one from the same address, rejected with a reason.
    let (s, dave) = register_from(
        &node,
        "127.0.0.1",
        "dave",
        json!({"referral_code": "alice-spring"}),
    )
    .await;
    assert_eq!(s, 201, "{dave}");
    let (_, held) = node
        .call(
            "GET",
            "/api/referral/referrals?status=held&code=alice-spring",
            None,
        )
        .await;
    let dave_ref = held["items"][0]["id"].as_str().expect("held").to_owned();
    for body in [
        json!({}),
        json!({"reason": " "}),
        json!({"reason": "x", "extra": 1}),
    ] {
        let (s, b) = node
            .call(
                "POST",
                &format!("/api/referral/referrals/{dave_ref}/reject"),
                Some(body),
            )
            .await;
        assert_error(s, &b, 400, "invalid_argument");
    }
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/referral/referrals/{dave_ref}/reject"),
            Some(json!({"reason": "duplicate household"})),
        )
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("rejected")), "{b}");
    let (s, b) = node
        .call(
            "POST",
            &format!("/api/referral/referrals/{dave_ref}/reject"),
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_error(s, &b, 409, "conflict");
    for (id, action) in [
        (&carol_ref, "referral.approve"),
        (&dave_ref, "referral.reject"),
    ] {
        assert!(
            audit_actions(&node, id).await.contains(&action.to_owned()),
            "{action}"
        );
    }
    assert!(
        audit_actions(&node, "ALICE-SPRING")
            .await
            .contains(&"referral.code_create".to_owned())
    );

    // Stats: the owner's code, the manager's campaign.
    let (s, st) = node
        .call_as(
            Some(&alice),
            "GET",
            "/api/referral/codes/alice-spring/stats",
            None,
        )
        .await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(
        (
            st["signups"].as_i64(),
            st["rewarded"].as_i64(),
            st["rejected"].as_i64(),
            st["converted"].as_i64()
        ),
        (Some(3), Some(2), Some(1), Some(3)),
        "{st}"
    );
    let (s, cst) = node
        .call("GET", "/api/referral/campaigns/spring/stats", None)
        .await;
    assert_eq!((s, &cst), (200, &st));
    let (s, b) = node
        .call_as(
            Some(&alice),
            "GET",
            "/api/referral/campaigns/spring/stats",
            None,
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call("GET", "/api/referral/campaigns/nope/stats", None)
        .await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn bad_referral_requests_are_refused_over_rest() {
    let node = TestNode::start().await;
    let (s, b) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "Bad", "slug": "bad"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (alice_id, alice) = user(&node, "alice").await;
    let (_, bob) = user(&node, "bob").await;
    let (s, code) = node
        .call_as(Some(&alice), "POST", "/api/referral/codes", Some(json!({})))
        .await;
    assert_eq!(s, 201, "{code}");
    let code = code["code"].as_str().expect("generated code").to_owned();
    assert_eq!(code.len(), 8);

    // Creating codes.
    let (s, b) = node
        .call_as(None, "POST", "/api/referral/codes", Some(json!({})))
        .await;
    assert_error(s, &b, 401, "unauthenticated");
    for body in [
        json!({"code": "ab"}),
        json!({"code": "has space"}),
        json!({"campaign_id": "nope"}),
        json!({"device_fingerprint": "\u{1}"}),
        json!({"colour": "red"}),
        json!({"code": 5}),
    ] {
        let (s, b) = node
            .call_as(
                Some(&alice),
                "POST",
                "/api/referral/codes",
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(b["error"]["code"].is_string(), "{b}");
    }
    let (s, b) = node
        .raw_as(
            Some(&alice),
            "POST",
            "/api/referral/codes",
            "application/json",
            "{",
        )
        .await;
    assert_error(s, &b, 400, "malformed_json");
    let (s, b) = node
        .raw_as(
            Some(&alice),
            "POST",
            "/api/referral/codes",
            "text/plain",
            "{}",
        )
        .await;
    assert_eq!(s, 415, "{b}");
    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            "/api/referral/codes",
            Some(json!({"code": code.to_lowercase()})),
        )
        .await;
    assert_error(s, &b, 409, "already_exists");

    // Someone else's code and referrals.
    for path in [
        format!("/api/referral/codes/{code}"),
        format!("/api/referral/codes/{code}/stats"),
    ] {
        let (s, b) = node.call_as(Some(&bob), "GET", &path, None).await;
        assert_error(s, &b, 404, "not_found");
    }
    let (s, b) = node
        .call_as(
            Some(&bob),
            "POST",
            &format!("/api/referral/codes/{code}/deactivate"),
            None,
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .call_as(
            Some(&bob),
            "GET",
            &format!("/api/referral/referrals?referrer_id={alice_id}"),
            None,
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call_as(
            Some(&bob),
            "GET",
            &format!("/api/referral/codes?owner_id={alice_id}"),
            None,
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = node
        .call(
            "GET",
            &format!("/api/referral/codes?owner_id={alice_id}"),
            None,
        )
        .await;
    assert_eq!(
        (s, b["items"][0]["code"].as_str()),
        (200, Some(code.as_str())),
        "{b}"
    );
    for path in [
        "/api/referral/referrals?status=lost",
        "/api/referral/referrals?limit=0",
        "/api/referral/referrals?colour=red",
        "/api/referral/referrals?code=",
        "/api/referral/codes?limit=501",
    ] {
        let (s, b) = node.call_as(Some(&alice), "GET", path, None).await;
        assert_eq!(s, 400, "{path}: {b}");
    }
    let (s, b) = node.call("GET", "/api/referral/referrals/nope", None).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .call(
            "POST",
            "/api/referral/referrals/nope/approve",
            Some(json!({})),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = node
        .call(
            "POST",
            "/api/referral/referrals/nope/approve",
            Some(json!({"note": 5})),
        )
        .await;
    assert_eq!(s, 400, "{b}");

    // Registrations with a bad code register nobody.
    for extra in [
        json!({"referral_code": "NOPE-NOPE"}),
        json!({"referral_code": "x"}),
        json!({"referral_code": code, "device_fingerprint": "\u{7}"}),
    ] {
        let (s, b) = register_from(&node, "127.0.0.3", "carol", extra.clone()).await;
        assert_eq!(s, 400, "{extra}: {b}");
        let message = b["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("referral_code") || message.contains("device_fingerprint"),
            "{b}"
        );
    }
    let (s, off) = node
        .call_as(
            Some(&alice),
            "POST",
            &format!("/api/referral/codes/{code}/deactivate"),
            None,
        )
        .await;
    assert_eq!((s, off["active"].as_bool()), (200, Some(false)), "{off}");
    let (s, b) = register_from(&node, "127.0.0.3", "carol", json!({"referral_code": code})).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = register_from(&node, "127.0.0.3", "carol", json!({})).await;
    assert_eq!(s, 201, "the name is still free: {b}");
    let _ = login(&node, "carol").await;
    // A campaign's referral rules are checked when it is written.
    let (s, b) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "X", "metadata": {"custom_rules": {"reward_on": "login"}}})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("reward_on")),
        "{b}"
    );
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    r
}

#[tokio::test]
async fn codes_and_referrals_over_grpc() {
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("admin token");
    let (s, b) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": "Grpc", "slug": "grpc",
                        "metadata": {"custom_rules": {
                            "referral_reward": {"amount": 200, "currency": "EUR"},
                            "reward_on": "first_paid_order",
                            "referral_checks": {"same_address": false}}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (alice_id, alice) = user(&node, "alice").await;
    let ch = Channel::from_shared(format!("http://{}", node.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut refs = ReferralServiceClient::new(ch.clone());
    let mut users = UserServiceClient::new(ch);

    let e = refs
        .create_code(Request::new(pb::CreateCodeRequest::default()))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = refs
        .create_code(with_token(
            pb::CreateCodeRequest {
                code: "no".into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect_err("short");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("code"), "{e:?}");
    let code = refs
        .create_code(with_token(
            pb::CreateCodeRequest {
                campaign_id: "grpc".into(),
                code: "GRPC-1".into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect("code")
        .into_inner();
    assert_eq!(
        (code.code.as_str(), code.owner_id.as_str(), code.active),
        ("GRPC-1", alice_id.as_str(), true)
    );
    let e = refs
        .create_code(with_token(
            pb::CreateCodeRequest {
                code: "grpc-1".into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect_err("taken");
    assert_eq!(e.code(), Code::AlreadyExists);

    // A sign-up over gRPC with the code: pending until the first paid order.
    let register = |name: &str, code: &str| user_pb::RegisterRequest {
        username: name.into(),
        email: format!("{name}@example.org"),
        password: "password123".into(),
        display_name: String::new(),
        referral_code: code.into(),
        device_fingerprint: String::new(),
    };
    let e = users
        .register(Request::new(register("ghost", "NOPE-NOPE")))
        .await
        .expect_err("unknown code");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("referral_code"), "{e:?}");
    let bob = users
        .register(Request::new(register("bob", "grpc-1")))
        .await
        .expect("register")
        .into_inner();
    let page = refs
        .list_referrals(with_token(pb::ListReferralsRequest::default(), &alice))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.items.len(), 1);
    let r = &page.items[0];
    assert_eq!(
        (
            r.referee_id.as_str(),
            r.status.as_str(),
            r.reward_on.as_str(),
            r.reward_amount,
            r.reward_currency.as_str()
        ),
        (bob.id.as_str(), "pending", "first_paid_order", 200, "EUR")
    );
    assert!(r.converted_at.is_empty());
    let got = refs
        .get_referral(with_token(pb::ReferralRef { id: r.id.clone() }, &alice))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&got, r);
    let e = refs
        .approve_referral(with_token(
            pb::ApproveReferralRequest {
                id: r.id.clone(),
                note: String::new(),
            },
            &admin,
        ))
        .await
        .expect_err("not held");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("pending"), "{e:?}");
    let e = refs
        .reject_referral(with_token(
            pb::RejectReferralRequest {
                id: r.id.clone(),
                reason: String::new(),
            },
            &admin,
        ))
        .await
        .expect_err("no reason");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = refs
        .list_referrals(with_token(
            pb::ListReferralsRequest {
                status: "lost".into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect_err("bad status");
    assert_eq!(e.code(), Code::InvalidArgument);
    let bob_token = login(&node, "bob").await;
    let e = refs
        .get_code(with_token(
            pb::CodeRef {
                code: "GRPC-1".into(),
            },
            &bob_token,
        ))
        .await
        .expect_err("not bob's");
    assert_eq!(e.code(), Code::NotFound);
    let e = refs
        .get_campaign_stats(with_token(pb::CampaignRef { id: "grpc".into() }, &alice))
        .await
        .expect_err("not a manager");
    assert_eq!(e.code(), Code::PermissionDenied);
    let stats = refs
        .get_campaign_stats(with_token(pb::CampaignRef { id: "grpc".into() }, &admin))
        .await
        .expect("stats")
        .into_inner();
    assert_eq!((stats.signups, stats.pending, stats.converted), (1, 1, 0));
    let by_code = refs
        .get_code_stats(with_token(
            pb::CodeRef {
                code: "grpc-1".into(),
            },
            &alice,
        ))
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(by_code, stats);
    let codes = refs
        .list_codes(with_token(pb::ListCodesRequest::default(), &alice))
        .await
        .expect("codes")
        .into_inner();
    assert_eq!(codes.items, vec![code.clone()]);
    let off = refs
        .deactivate_code(with_token(
            pb::CodeRef {
                code: "grpc-1".into(),
            },
            &alice,
        ))
        .await
        .expect("deactivate")
        .into_inner();
    assert!(!off.active);
    let e = users
        .register(Request::new(register("carl", "GRPC-1")))
        .await
        .expect_err("inactive");
    assert_eq!(e.code(), Code::InvalidArgument);
}
