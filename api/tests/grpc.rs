//! gRPC end to end against a node on port 0: health (one status per service), reflection,
//! every service's happy path through the generated clients, the status codes of bad input,
//! missing or insufficient credentials, unknown ids and duplicates, and a `Subscribe` stream
//! that sees what a WebSocket client sees.

mod common;

use std::time::Duration;

use common::{TestNode, user};
use proto::broadcast::v0 as bpb;
use proto::broadcast::v0::broadcast_service_client::BroadcastServiceClient;
use proto::campaign::v0 as cpb;
use proto::campaign::v0::campaign_service_client::CampaignServiceClient;
use proto::content::v0 as kpb;
use proto::content::v0::content_service_client::ContentServiceClient;
use proto::security::v0 as spb;
use proto::security::v0::security_service_client::SecurityServiceClient;
use proto::user::v0 as upb;
use proto::user::v0::user_service_client::UserServiceClient;
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn channel(node: &TestNode) -> Channel {
    Channel::from_shared(format!("http://{}", node.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    r
}

fn s(v: serde_json::Value) -> prost_types::Struct {
    proto::convert::json_to_struct(v).expect("struct")
}

#[tokio::test]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let node = TestNode::start().await;
    let ch = channel(&node).await;
    let mut health = HealthClient::new(ch.clone());
    for service in [
        "",
        "user.v0.UserService",
        "admin.v0.AdminService",
        "security.v0.SecurityService",
        "campaign.v0.CampaignService",
        "broadcast.v0.BroadcastService",
        "content.v0.ContentService",
        "localization.v0.LocalizationService",
        "babel.v0.BabelService",
    ] {
        // The first statuses are set just after the server starts.
        let mut status = None;
        for _ in 0..50 {
            match health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
            {
                Ok(r) => {
                    status = Some(r.into_inner().status);
                    break;
                }
                Err(e) if e.code() == Code::NotFound => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{service}: {e}"),
            }
        }
        assert_eq!(status, Some(ServingStatus::Serving as i32), "{service}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.v0.Nope".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "grpc.health.v1.Health",
        "user.v0.UserService",
        "campaign.v0.CampaignService",
        "broadcast.v0.BroadcastService",
        "content.v0.ContentService",
        "security.v0.SecurityService",
        "admin.v0.AdminService",
        "localization.v0.LocalizationService",
        "babel.v0.BabelService",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    // The older v1alpha protocol, which many tools still speak, answers too.
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as Alpha;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
        let mut alpha = Alpha::new(channel(&node).await);
        let req = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices(String::new())),
        };
        let answer = alpha
            .server_reflection_info(futures_util::stream::iter([req]))
            .await
            .expect("v1alpha reflection")
            .into_inner()
            .message()
            .await
            .expect("answer")
            .expect("one answer");
        let Some(AlphaResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("expected a service list");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "broadcast.v0.BroadcastService")
        );
    }
    // A symbol resolves to its file.
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "campaign.v0.Campaign".into(),
        )),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    assert!(matches!(
        answer.message_response,
        Some(MessageResponse::FileDescriptorResponse(_))
    ));
}

#[tokio::test]
async fn services_over_grpc_with_rbac_and_status_codes() {
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("admin token");
    let ch = channel(&node).await;
    let mut users = UserServiceClient::new(ch.clone());
    let mut campaigns = CampaignServiceClient::new(ch.clone());
    let mut broadcast = BroadcastServiceClient::new(ch.clone());
    let mut content = ContentServiceClient::new(ch.clone());
    let mut security = SecurityServiceClient::new(ch);

    // Register and log in over gRPC.
    let u = users
        .register(upb::RegisterRequest {
            username: "grpcuser".into(),
            email: "grpc@example.org".into(),
            password: "password123".into(),
            display_name: String::new(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(u.roles, ["user"]);
    let dup = users
        .register(upb::RegisterRequest {
            username: "grpcuser".into(),
            email: "other@example.org".into(),
            password: "password123".into(),
            display_name: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("duplicate");
    assert_eq!(dup.code(), Code::AlreadyExists);
    let bad = users
        .register(upb::RegisterRequest {
            username: "x".into(),
            email: "x@example.org".into(),
            password: "password123".into(),
            display_name: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("bad username");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let tokens = users
        .login(upb::LoginRequest {
            login: "grpcuser".into(),
            password: "password123".into(),
        })
        .await
        .expect("login")
        .into_inner();
    let wrong = users
        .login(upb::LoginRequest {
            login: "grpcuser".into(),
            password: "nope-nope".into(),
        })
        .await
        .expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    // Calls are counted by method and status code.
    let metrics = node.metrics_text().await;
    for (method, code) in [
        ("/user.v0.UserService/Register", "OK"),
        ("/user.v0.UserService/Register", "ALREADY_EXISTS"),
        ("/user.v0.UserService/Register", "INVALID_ARGUMENT"),
        ("/user.v0.UserService/Login", "UNAUTHENTICATED"),
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ovasabi_grpc_requests_total{")
                    && l.contains(&format!(r#"method="{method}""#))
                    && l.contains(&format!(r#"code="{code}""#))),
            "{method} {code} counted:\n{metrics}"
        );
    }
    assert!(metrics.contains("ovasabi_grpc_request_duration_seconds"));
    let me = users
        .get_me(with_token(upb::GetMeRequest {}, &tokens.access_token))
        .await
        .expect("me")
        .into_inner();
    assert_eq!(me.id, u.id);
    let anon = users
        .get_me(upb::GetMeRequest {})
        .await
        .expect_err("anonymous");
    assert_eq!(anon.code(), Code::Unauthenticated);
    let garbage = users
        .get_me(with_token(upb::GetMeRequest {}, "garbage"))
        .await
        .expect_err("bad token");
    assert_eq!(garbage.code(), Code::Unauthenticated);

    // Campaigns: a plain user is denied; the admin creates one with metadata.
    let create = || cpb::CreateCampaignRequest {
        name: "Over gRPC".into(),
        slug: Some("over-grpc".into()),
        metadata: Some(
            proto::convert::metadata_from_json(
                json!({"scheduling": {"frequency": 20}, "tags": ["g"]}),
            )
            .expect("metadata"),
        ),
        state: Some(s(json!({"score": 0}))),
        status: None,
        starts_at: None,
        ends_at: None,
    };
    let denied = campaigns
        .create_campaign(with_token(create(), &tokens.access_token))
        .await
        .expect_err("a user cannot create");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let c = campaigns
        .create_campaign(with_token(create(), &admin))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(c.status, "active");
    assert_eq!(c.state, Some(s(json!({"score": 0}))));
    let dup = campaigns
        .create_campaign(with_token(create(), &admin))
        .await
        .expect_err("duplicate slug");
    assert_eq!(dup.code(), Code::AlreadyExists);
    let missing = campaigns
        .get_campaign(cpb::GetCampaignRequest {
            id: "no-such".into(),
        })
        .await
        .expect_err("unknown id");
    assert_eq!(missing.code(), Code::NotFound);
    let got = campaigns
        .get_campaign(cpb::GetCampaignRequest {
            id: "over-grpc".into(),
        })
        .await
        .expect("anyone reads, by slug")
        .into_inner();
    assert_eq!(got.id, c.id);
    let listed = campaigns
        .list_campaigns(cpb::ListCampaignsRequest {
            status: Some("active".into()),
            limit: 10,
            cursor: String::new(),
            tag: Some("g".into()),
            query: Some("GRPC".into()),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.campaigns.len(), 1);
    assert_eq!(listed.campaigns[0].id, c.id);
    let bad_status = campaigns
        .list_campaigns(cpb::ListCampaignsRequest {
            status: Some("paused".into()),
            ..cpb::ListCampaignsRequest::default()
        })
        .await
        .expect_err("bad status");
    assert_eq!(bad_status.code(), Code::InvalidArgument);

    // A backend consumer subscribes, and sees the welcome, then ticks with the state and the
    // events published over gRPC.
    let mut updates = broadcast
        .subscribe(with_token(
            bpb::SubscribeRequest {
                campaign_id: c.id.clone(),
                since: None,
                epoch: None,
            },
            &admin,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let first = updates.message().await.expect("stream").expect("an update");
    let Some(bpb::update::Kind::Welcome(w)) = first.kind else {
        panic!("expected a welcome, got {first:?}");
    };
    assert_eq!(w.frequency_hz, 20.0);
    let denied = broadcast
        .subscribe(with_token(
            bpb::SubscribeRequest {
                campaign_id: c.id.clone(),
                since: None,
                epoch: None,
            },
            &tokens.access_token,
        ))
        .await
        .expect_err("a user cannot subscribe");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let seq = broadcast
        .publish(with_token(
            bpb::PublishRequest {
                campaign_id: c.id.clone(),
                name: "goal".into(),
                data: Some(proto::convert::json_to_value(json!({"team": "a"})).expect("value")),
                immediate: false,
            },
            &admin,
        ))
        .await
        .expect("publish")
        .into_inner()
        .seq;
    assert_eq!(seq, 1);
    let denied = broadcast
        .publish(bpb::PublishRequest {
            campaign_id: c.id.clone(),
            name: "x".into(),
            data: None,
            immediate: false,
        })
        .await
        .expect_err("anonymous publish");
    assert_eq!(denied.code(), Code::Unauthenticated);
    let event = loop {
        let u = updates.message().await.expect("stream").expect("an update");
        if let Some(bpb::update::Kind::Tick(t)) = u.kind
            && let Some(e) = t.events.into_iter().next()
        {
            break e;
        }
    };
    assert_eq!((event.seq, event.name.as_str()), (1, "goal"));
    assert_eq!(
        event.data,
        Some(proto::convert::json_to_value(json!({"team": "a"})).expect("v"))
    );
    let state = broadcast
        .set_state(with_token(
            bpb::SetStateRequest {
                campaign_id: c.id.clone(),
                state: Some(s(json!({"score": 3}))),
                merge: true,
            },
            &admin,
        ))
        .await
        .expect("state")
        .into_inner();
    assert_eq!(state.state, Some(s(json!({"score": 3}))));
    let f = broadcast
        .set_frequency(with_token(
            bpb::SetFrequencyRequest {
                campaign_id: c.id.clone(),
                frequency_hz: 5.0,
            },
            &admin,
        ))
        .await
        .expect("frequency")
        .into_inner();
    assert_eq!(f.frequency_hz, 5.0);
    let config = loop {
        let u = updates.message().await.expect("stream").expect("an update");
        if let Some(bpb::update::Kind::Config(c)) = u.kind {
            break c;
        }
    };
    assert_eq!(config.frequency_hz, 5.0);
    let bad = broadcast
        .set_frequency(with_token(
            bpb::SetFrequencyRequest {
                campaign_id: c.id.clone(),
                frequency_hz: 1e9,
            },
            &admin,
        ))
        .await
        .expect_err("out of range");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let analytics = campaigns
        .get_analytics(cpb::GetAnalyticsRequest { id: c.id.clone() })
        .await
        .expect("analytics")
        .into_inner();
    assert_eq!(
        analytics.connections_node, 1,
        "the subscription is a session"
    );
    assert_eq!(analytics.peak_connections, 1);
    assert_eq!(analytics.events_published, 1);
    // Ending the campaign ends the subscription.
    campaigns
        .end_campaign(with_token(
            cpb::EndCampaignRequest { id: c.id.clone() },
            &admin,
        ))
        .await
        .expect("end");
    let end = loop {
        let u = updates.message().await.expect("stream").expect("an update");
        if let Some(bpb::update::Kind::End(e)) = u.kind {
            break e;
        }
    };
    assert_eq!(end, bpb::End {});
    assert!(updates.message().await.expect("clean end").is_none());

    // Content over gRPC, found by a word in its body.
    let post = content
        .create_content(with_token(
            kpb::CreateContentRequest {
                kind: "article".into(),
                title: "Tides".into(),
                body: "Every estuary breathes twice a day.".into(),
                url: None,
                tags: vec!["sea".into()],
                metadata: None,
            },
            &tokens.access_token,
        ))
        .await
        .expect("create content")
        .into_inner();
    let hits = content
        .search_content(kpb::SearchContentRequest {
            query: "estuary".into(),
            limit: 0,
            cursor: String::new(),
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(
        hits.hits
            .first()
            .and_then(|h| h.content.as_ref())
            .map(|c| c.id.as_str()),
        Some(post.id.as_str())
    );
    let counts = content
        .react(with_token(
            kpb::ReactRequest {
                content_id: post.id.clone(),
                kind: "like".into(),
            },
            &tokens.access_token,
        ))
        .await
        .expect("react")
        .into_inner();
    assert_eq!(counts.counts.get("like"), Some(&1));

    // The audit log over gRPC: admins only; the campaign's rows are there.
    let filter = spb::AuditFilter {
        entity_id: Some(c.id.clone()),
        ..spb::AuditFilter::default()
    };
    let denied = security
        .query_audit(with_token(filter.clone(), &tokens.access_token))
        .await
        .expect_err("a user cannot read the audit log");
    assert_eq!(denied.code(), Code::PermissionDenied);
    // The publish's row is written in the background, just after the call is answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = security
            .query_audit(with_token(filter.clone(), &admin))
            .await
            .expect("audit")
            .into_inner()
            .entries;
        if rows.len() >= 5 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "campaign.create",
            "campaign.publish",
            "campaign.patch_state",
            "campaign.update",
            "campaign.end"
        ]
    );
    assert_eq!(
        rows[1].after,
        Some(
            proto::convert::json_to_value(
                json!({"name": "goal", "seq": 1, "immediate": false, "bytes": 12})
            )
            .expect("v")
        )
    );
    let mut lines = security
        .export_audit(with_token(filter, &admin))
        .await
        .expect("export")
        .into_inner();
    let mut n = 0;
    while let Some(line) = lines.message().await.expect("line") {
        let v: serde_json::Value = serde_json::from_str(&line.line).expect("JSON");
        assert_eq!(v["entity_id"], c.id.as_str());
        n += 1;
    }
    assert_eq!(n, 5);
    let _ = user(&node, "restuser").await;
}

#[tokio::test]
async fn the_remaining_operations_over_grpc() {
    use proto::admin::v0 as apb;
    use proto::admin::v0::admin_service_client::AdminServiceClient;
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("admin token");
    let ch = channel(&node).await;
    let mut users = UserServiceClient::new(ch.clone());
    let mut admins = AdminServiceClient::new(ch.clone());
    let mut campaigns = CampaignServiceClient::new(ch.clone());
    let mut broadcast = BroadcastServiceClient::new(ch.clone());
    let mut content = ContentServiceClient::new(ch.clone());
    let mut security = SecurityServiceClient::new(ch);

    // User: register, refresh, profile, read by id.
    let u = users
        .register(upb::RegisterRequest {
            username: "carol".into(),
            email: "carol@example.org".into(),
            password: "password123".into(),
            display_name: "Carol".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner();
    let t = users
        .login(upb::LoginRequest {
            login: "carol".into(),
            password: "password123".into(),
        })
        .await
        .expect("login")
        .into_inner();
    let t2 = users
        .refresh(upb::RefreshRequest {
            refresh_token: t.refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner();
    assert_eq!(t2.user.map(|u| u.id), Some(u.id.clone()));
    let changed = users
        .update_profile(with_token(
            upb::UpdateProfileRequest {
                display_name: Some("Carol C.".into()),
                email: None,
                current_password: "password123".into(),
                new_password: Some("new password 1".into()),
                locale: Some("fr-CA".into()),
            },
            &t.access_token,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(changed.display_name, "Carol C.");
    // The password change revoked the tokens issued before it: sign in again.
    let stale = users
        .get_user(with_token(
            upb::GetUserRequest { id: u.id.clone() },
            &t.access_token,
        ))
        .await
        .expect_err("revoked token");
    assert_eq!(stale.code(), Code::Unauthenticated);
    let t = users
        .login(upb::LoginRequest {
            login: "carol".into(),
            password: "new password 1".into(),
        })
        .await
        .expect("login with the new password")
        .into_inner();
    let short = users
        .update_profile(with_token(
            upb::UpdateProfileRequest {
                new_password: Some("x".into()),
                ..Default::default()
            },
            &t.access_token,
        ))
        .await
        .expect_err("short password");
    assert_eq!(short.code(), Code::InvalidArgument);
    let by_admin = users
        .get_user(with_token(upb::GetUserRequest { id: u.id.clone() }, &admin))
        .await
        .expect("admin reads anyone")
        .into_inner();
    assert_eq!(by_admin.username, "carol");
    let other = users
        .get_user(with_token(
            upb::GetUserRequest {
                id: "someone".into(),
            },
            &t.access_token,
        ))
        .await
        .expect_err("users read themselves only");
    assert_eq!(other.code(), Code::PermissionDenied);

    // Admin: grant, list by role, revoke, disable, enable; users may not.
    let denied = admins
        .list_users(with_token(
            apb::ListUsersRequest::default(),
            &t.access_token,
        ))
        .await
        .expect_err("not an admin");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let granted = admins
        .grant_role(with_token(
            apb::GrantRoleRequest {
                user_id: u.id.clone(),
                role: "campaign_manager".into(),
            },
            &admin,
        ))
        .await
        .expect("grant")
        .into_inner();
    assert_eq!(granted.roles, ["user", "campaign_manager"]);
    let bad = admins
        .grant_role(with_token(
            apb::GrantRoleRequest {
                user_id: u.id.clone(),
                role: "king".into(),
            },
            &admin,
        ))
        .await
        .expect_err("bad role");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let managers = admins
        .list_users(with_token(
            apb::ListUsersRequest {
                role: Some("campaign_manager".into()),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(managers.users.len(), 1);
    let revoked = admins
        .revoke_role(with_token(
            apb::RevokeRoleRequest {
                user_id: u.id.clone(),
                role: "campaign_manager".into(),
            },
            &admin,
        ))
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(revoked.roles, ["user"]);
    let disabled = admins
        .disable_user(with_token(
            apb::DisableUserRequest {
                user_id: u.id.clone(),
            },
            &admin,
        ))
        .await
        .expect("disable")
        .into_inner();
    assert!(disabled.disabled);
    let refused = users
        .login(upb::LoginRequest {
            login: "carol".into(),
            password: "new password 1".into(),
        })
        .await
        .expect_err("disabled");
    assert_eq!(refused.code(), Code::PermissionDenied);
    admins
        .enable_user(with_token(
            apb::EnableUserRequest {
                user_id: u.id.clone(),
            },
            &admin,
        ))
        .await
        .expect("enable");
    // The role changes and the disable revoked carol's earlier tokens: sign in again.
    let t = users
        .login(upb::LoginRequest {
            login: "carol".into(),
            password: "new password 1".into(),
        })
        .await
        .expect("login after enable")
        .into_inner();
    let missing = admins
        .disable_user(with_token(
            apb::DisableUserRequest {
                user_id: "nope".into(),
            },
            &admin,
        ))
        .await
        .expect_err("unknown user");
    assert_eq!(missing.code(), Code::NotFound);

    // Campaign update and a direct message.
    let c = campaigns
        .create_campaign(with_token(
            cpb::CreateCampaignRequest {
                name: "Msg".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("create")
        .into_inner();
    let updated = campaigns
        .update_campaign(with_token(
            cpb::UpdateCampaignRequest {
                id: c.id.clone(),
                patch: Some(s(json!({"name": "Messages"}))),
            },
            &admin,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.name, "Messages");
    let bad = campaigns
        .update_campaign(with_token(
            cpb::UpdateCampaignRequest {
                id: c.id.clone(),
                patch: Some(s(json!({"colour": "red"}))),
            },
            &admin,
        ))
        .await
        .expect_err("unknown field");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut ws = node.ws(&c.id, "dave", "").await;
    common::next_of(&mut ws, "welcome").await;
    broadcast
        .send_message(with_token(
            bpb::SendMessageRequest {
                campaign_id: c.id.clone(),
                user_id: "dave".into(),
                name: "note".into(),
                data: Some(proto::convert::json_to_value(json!({"hi": 1})).expect("v")),
            },
            &admin,
        ))
        .await
        .expect("message");
    let m = common::next_of(&mut ws, "message").await;
    assert_eq!(
        (m["name"].clone(), m["data"].clone()),
        (json!("note"), json!({"hi": 1}))
    );

    // Content: update, list, comments, reactions, delete.
    let post = content
        .create_content(with_token(
            kpb::CreateContentRequest {
                kind: "micro".into(),
                body: "short".into(),
                ..Default::default()
            },
            &t.access_token,
        ))
        .await
        .expect("create")
        .into_inner();
    let edited = content
        .update_content(with_token(
            kpb::UpdateContentRequest {
                id: post.id.clone(),
                body: Some("shorter".into()),
                tags: vec!["t".into()],
                replace_tags: true,
                ..Default::default()
            },
            &t.access_token,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        (edited.body.as_str(), edited.tags.as_slice()),
        ("shorter", ["t".to_owned()].as_slice())
    );
    let listed = content
        .list_content(kpb::ListContentRequest {
            kind: Some("micro".into()),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.items.len(), 1);
    let c1 = content
        .add_comment(with_token(
            kpb::AddCommentRequest {
                content_id: post.id.clone(),
                parent_id: None,
                body: "one".into(),
            },
            &admin,
        ))
        .await
        .expect("comment")
        .into_inner();
    content
        .add_comment(with_token(
            kpb::AddCommentRequest {
                content_id: post.id.clone(),
                parent_id: Some(c1.id.clone()),
                body: "two".into(),
            },
            &t.access_token,
        ))
        .await
        .expect("reply");
    let comments = content
        .list_comments(kpb::ListCommentsRequest {
            content_id: post.id.clone(),
            ..Default::default()
        })
        .await
        .expect("comments")
        .into_inner();
    assert_eq!(comments.comments.len(), 2);
    assert_eq!(
        comments.comments[1].parent_id.as_deref(),
        Some(c1.id.as_str())
    );
    // Comments by id: read, edit (author only), delete.
    let got = content
        .get_comment(kpb::GetCommentRequest { id: c1.id.clone() })
        .await
        .expect("get comment")
        .into_inner();
    assert_eq!(got.body, "one");
    let denied = content
        .update_comment(with_token(
            kpb::UpdateCommentRequest {
                id: c1.id.clone(),
                body: "hijack".into(),
            },
            &t.access_token,
        ))
        .await
        .expect_err("not the author");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let edited_comment = content
        .update_comment(with_token(
            kpb::UpdateCommentRequest {
                id: c1.id.clone(),
                body: "one, edited".into(),
            },
            &admin,
        ))
        .await
        .expect("edit")
        .into_inner();
    assert_eq!(edited_comment.body, "one, edited");
    content
        .delete_comment(with_token(
            kpb::DeleteCommentRequest { id: c1.id.clone() },
            &admin,
        ))
        .await
        .expect("delete comment");
    let gone = content
        .get_comment(kpb::GetCommentRequest { id: c1.id.clone() })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    // Metadata merge patch and removing a link.
    let patched = content
        .update_content(with_token(
            kpb::UpdateContentRequest {
                id: post.id.clone(),
                metadata_patch: Some(s(json!({"tags": ["m"]}))),
                ..Default::default()
            },
            &t.access_token,
        ))
        .await
        .expect("metadata patch")
        .into_inner();
    assert_eq!(patched.metadata.map(|m| m.tags), Some(vec!["m".to_owned()]));
    let both = content
        .update_content(with_token(
            kpb::UpdateContentRequest {
                id: post.id.clone(),
                url: Some("https://example.org".into()),
                clear_url: true,
                ..Default::default()
            },
            &t.access_token,
        ))
        .await
        .expect_err("url and clear_url");
    assert_eq!(both.code(), Code::InvalidArgument);
    content
        .react(with_token(
            kpb::ReactRequest {
                content_id: post.id.clone(),
                kind: "wow".into(),
            },
            &admin,
        ))
        .await
        .expect("react");
    let after = content
        .unreact(with_token(
            kpb::UnreactRequest {
                content_id: post.id.clone(),
                kind: "wow".into(),
            },
            &admin,
        ))
        .await
        .expect("unreact")
        .into_inner();
    assert!(after.counts.is_empty());
    let counts = content
        .get_reactions(kpb::GetReactionsRequest {
            content_id: post.id.clone(),
        })
        .await
        .expect("reactions")
        .into_inner();
    assert!(counts.mine.is_empty());
    let denied = content
        .delete_content(with_token(
            kpb::DeleteContentRequest {
                id: post.id.clone(),
            },
            "not-a-token",
        ))
        .await
        .expect_err("bad token");
    assert_eq!(denied.code(), Code::Unauthenticated);
    content
        .delete_content(with_token(
            kpb::DeleteContentRequest {
                id: post.id.clone(),
            },
            &t.access_token,
        ))
        .await
        .expect("the author deletes");
    let gone = content
        .get_content(kpb::GetContentRequest {
            id: post.id.clone(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);

    // Every change above is in the audit log, attributed to its caller.
    let rows = security
        .query_audit(with_token(
            spb::AuditFilter {
                entity_id: Some(u.id.clone()),
                limit: 100,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("audit")
        .into_inner()
        .entries;
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "user.register",
            "user.update_profile",
            "user.grant_role",
            "user.revoke_role",
            "user.disable",
            "user.enable"
        ]
    );
    let policies = security
        .list_policies(with_token(spb::ListPoliciesRequest::default(), &admin))
        .await
        .expect("policies")
        .into_inner();
    assert!(
        policies
            .policies
            .iter()
            .any(|p| p.role == "campaign_manager" && p.resource == "broadcast")
    );
}

#[tokio::test]
async fn a_stored_integer_too_wide_for_protobuf_is_rounded_not_fatal() {
    let node = TestNode::start().await;
    let (s, c) = node
        .call(
            "POST",
            "/api/content",
            Some(json!({"kind": "micro", "body": "wide",
                        "metadata": {"custom_rules": {"n": 9_007_199_254_740_993_u64}}})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(
        c["metadata"]["custom_rules"]["n"],
        json!(9_007_199_254_740_993_u64),
        "REST keeps it exact"
    );
    let mut content = ContentServiceClient::new(channel(&node).await);
    let listed = content
        .list_content(kpb::ListContentRequest::default())
        .await
        .expect("the page is served")
        .into_inner();
    assert_eq!(listed.items.len(), 1);
}

/// A `notification.v0.SendRequest` of the `welcome` template to `users` on the inbox.
fn notification_send(
    users: &[&str],
    variables: serde_json::Value,
) -> proto::notification::v0::SendRequest {
    use proto::notification::v0 as npb;
    npb::SendRequest {
        template: "welcome".into(),
        variables: Some(s(variables)),
        channels: vec!["in_app".into()],
        recipients: Some(npb::send_request::Recipients::UserIds(npb::UserIds {
            ids: users.iter().map(|u| (*u).to_owned()).collect(),
        })),
        campaign_id: None,
    }
}

/// Puts the `welcome` template (en): subject `Hi {{ user.username }}`, text `Code {{ x }}`.
async fn notification_template(
    n: &mut proto::notification::v0::notification_service_client::NotificationServiceClient<
        Channel,
    >,
    admin: &str,
) -> proto::notification::v0::PutTemplateResponse {
    use proto::notification::v0 as npb;
    n.put_template(with_token(
        npb::PutTemplateRequest {
            key: "welcome".into(),
            locale: "en".into(),
            category: "transactional".into(),
            subject: "Hi {{ user.username }}".into(),
            text: "Code {{ x }}".into(),
            html: Some("<p>Code {{ x }}</p>".into()),
        },
        admin,
    ))
    .await
    .expect("put template")
    .into_inner()
}

#[tokio::test]
async fn notification_service_over_grpc_inbox_and_status_codes() {
    use proto::notification::v0 as npb;
    use proto::notification::v0::notification_service_client::NotificationServiceClient;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("admin token");
    let (uid, token) = user(&node, "nora").await;
    let ch = channel(&node).await;
    let mut n = NotificationServiceClient::new(ch.clone());

    // The service has its health status like every other.
    let mut health = HealthClient::new(ch);
    let mut serving = None;
    for _ in 0..50 {
        match health
            .check(HealthCheckRequest {
                service: "notification.v0.NotificationService".into(),
            })
            .await
        {
            Ok(r) => {
                serving = Some(r.into_inner().status);
                break;
            }
            Err(e) if e.code() == Code::NotFound => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("health: {e}"),
        }
    }
    assert_eq!(serving, Some(ServingStatus::Serving as i32));

    // Templates: written by the admin, refused to a plain user and to anonymous callers.
    let put = notification_template(&mut n, &admin).await;
    assert!(put.created);
    let t = put.template.expect("template");
    assert_eq!((t.key.as_str(), t.locale.as_str()), ("welcome", "en"));
    assert_eq!(t.category, "transactional");
    assert_eq!(t.variables, ["x"]);
    let again = notification_template(&mut n, &admin).await;
    assert!(!again.created, "a second put replaces");
    let got = n
        .get_template(with_token(
            npb::TemplateRef {
                key: "welcome".into(),
                locale: "en".into(),
            },
            &admin,
        ))
        .await
        .expect("get template")
        .into_inner();
    assert_eq!(got.html.as_deref(), Some("<p>Code {{ x }}</p>"));
    let listed = n
        .list_templates(with_token(npb::ListTemplatesRequest::default(), &admin))
        .await
        .expect("list templates")
        .into_inner();
    let keys: Vec<&str> = listed.items.iter().map(|t| t.key.as_str()).collect();
    // With those that commerce's, referral's, talent's and Nexus's migrations seed.
    assert_eq!(
        keys,
        [
            "campaign.launched",
            "commerce.payment_succeeded",
            "commerce.refunded",
            "referral.held",
            "referral.joined",
            "referral.rewarded",
            "talent.booked",
            "talent.booking_confirmed",
            "welcome"
        ]
    );
    assert!(listed.next_cursor.is_empty());
    let denied = n
        .list_templates(with_token(npb::ListTemplatesRequest::default(), &token))
        .await
        .expect_err("a user cannot read templates");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let bad = n
        .put_template(with_token(
            npb::PutTemplateRequest {
                key: "welcome".into(),
                locale: "en".into(),
                category: "spam".into(),
                subject: "s".into(),
                text: "t".into(),
                html: None,
            },
            &admin,
        ))
        .await
        .expect_err("unknown category");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("category"), "{}", bad.message());
    let missing = n
        .get_template(with_token(
            npb::TemplateRef {
                key: "nope".into(),
                locale: "en".into(),
            },
            &admin,
        ))
        .await
        .expect_err("no such template");
    assert_eq!(missing.code(), Code::NotFound);

    // Send to the user: the inbox shows it, unread 1, read, unread 0.
    let sent = n
        .send(with_token(
            notification_send(&[&uid], json!({"x": "A1"})),
            &admin,
        ))
        .await
        .expect("send")
        .into_inner();
    assert_eq!(sent.notifications, 1);
    assert!(!sent.batch_id.is_empty());
    let inbox = n
        .list_inbox(with_token(npb::ListInboxRequest::default(), &token))
        .await
        .expect("inbox")
        .into_inner();
    assert_eq!(inbox.items.len(), 1);
    let first = &inbox.items[0];
    assert_eq!(first.user_id, uid);
    assert_eq!(first.batch_id, sent.batch_id);
    assert_eq!(first.subject, "Hi nora");
    assert_eq!(first.text, "Code A1");
    assert_eq!(first.html.as_deref(), Some("<p>Code A1</p>"));
    assert_eq!(first.channels, ["in_app"]);
    assert_eq!(first.category, "transactional");
    assert!(!first.read);
    let data = proto::convert::struct_to_json(first.data.clone().expect("data")).expect("json");
    assert_eq!(data["x"], json!("A1"), "{data}");
    let unread = |n: &mut NotificationServiceClient<Channel>| {
        let mut n = n.clone();
        let token = token.clone();
        async move {
            n.unread_count(with_token(npb::UnreadCountRequest {}, &token))
                .await
                .expect("unread")
                .into_inner()
                .unread
        }
    };
    assert_eq!(unread(&mut n).await, 1);
    let read = n
        .mark_read(with_token(
            npb::NotificationRef {
                id: first.id.clone(),
            },
            &token,
        ))
        .await
        .expect("mark read")
        .into_inner();
    assert!(read.read);
    assert!(read.read_at.is_some());
    assert_eq!(unread(&mut n).await, 0);
    let only_unread = n
        .list_inbox(with_token(
            npb::ListInboxRequest {
                unread_only: true,
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("unread inbox")
        .into_inner();
    assert!(only_unread.items.is_empty());
    // Nobody else sees it.
    let other = n
        .get_notification(with_token(
            npb::NotificationRef {
                id: first.id.clone(),
            },
            &admin,
        ))
        .await
        .expect_err("the admin's inbox does not hold it");
    assert_eq!(other.code(), Code::NotFound);

    // Deliveries: the user's own notification, and the whole send for the sender.
    n.list_deliveries(with_token(
        npb::ListDeliveriesRequest {
            notification_id: first.id.clone(),
        },
        &token,
    ))
    .await
    .expect("deliveries of the user's own");
    n.list_batch_deliveries(with_token(
        npb::ListBatchDeliveriesRequest {
            batch_id: sent.batch_id.clone(),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .expect("deliveries of the send");
    let denied = n
        .list_batch_deliveries(with_token(
            npb::ListBatchDeliveriesRequest {
                batch_id: sent.batch_id.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect_err("a user cannot see a send");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // A second one, then read all, then delete.
    n.send(with_token(
        notification_send(&[&uid], json!({"x": "A2"})),
        &admin,
    ))
    .await
    .expect("send again");
    assert_eq!(unread(&mut n).await, 1);
    let all = n
        .mark_all_read(with_token(npb::MarkAllReadRequest {}, &token))
        .await
        .expect("read all")
        .into_inner();
    assert_eq!(all.marked, 1);
    assert_eq!(unread(&mut n).await, 0);
    n.delete_notification(with_token(
        npb::NotificationRef {
            id: first.id.clone(),
        },
        &token,
    ))
    .await
    .expect("delete");
    let gone = n
        .get_notification(with_token(
            npb::NotificationRef {
                id: first.id.clone(),
            },
            &token,
        ))
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);

    // Bad input names the field; nothing is sent.
    let no_var = n
        .send(with_token(notification_send(&[&uid], json!({})), &admin))
        .await
        .expect_err("missing variable");
    assert_eq!(no_var.code(), Code::InvalidArgument);
    assert!(
        no_var.message().contains("variables.x"),
        "{}",
        no_var.message()
    );
    let mut bad_channel = notification_send(&[&uid], json!({"x": 1}));
    bad_channel.channels = vec!["pigeon".into()];
    let bad = n
        .send(with_token(bad_channel, &admin))
        .await
        .expect_err("unknown channel");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("channels"), "{}", bad.message());
    let mut nobody = notification_send(&[], json!({"x": 1}));
    nobody.recipients = None;
    let bad = n
        .send(with_token(nobody, &admin))
        .await
        .expect_err("no recipients");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let anonymous = n
        .send(notification_send(&[&uid], json!({"x": 1})))
        .await
        .expect_err("anonymous send");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let anonymous = n
        .list_inbox(npb::ListInboxRequest::default())
        .await
        .expect_err("anonymous inbox");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let anonymous = n
        .watch_inbox(npb::WatchInboxRequest::default())
        .await
        .expect_err("anonymous watch");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let plain = n
        .send(with_token(
            notification_send(&[&uid], json!({"x": 1})),
            &token,
        ))
        .await
        .expect_err("a plain user cannot send");
    assert_eq!(plain.code(), Code::PermissionDenied);
    assert_eq!(unread(&mut n).await, 0, "nothing was sent");

    // Preferences.
    let p = n
        .get_preferences(with_token(npb::GetPreferencesRequest {}, &token))
        .await
        .expect("preferences")
        .into_inner();
    assert!(p.in_app && p.realtime && p.email && p.webhook);
    let p = n
        .update_preferences(with_token(
            npb::UpdatePreferencesRequest {
                email: Some(false),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("update preferences")
        .into_inner();
    assert!(p.in_app && !p.email);
    let empty = n
        .update_preferences(with_token(npb::UpdatePreferencesRequest::default(), &token))
        .await
        .expect_err("no change named");
    assert_eq!(empty.code(), Code::InvalidArgument);

    // Webhooks: the secret is shown once.
    let w = n
        .create_webhook(with_token(
            npb::CreateWebhookRequest {
                url: "https://hooks.example.org/nora".into(),
                campaign_id: None,
            },
            &token,
        ))
        .await
        .expect("create webhook")
        .into_inner();
    assert_eq!(
        (w.owner_type.as_str(), w.owner_id.as_str()),
        ("user", uid.as_str())
    );
    assert!(w.secret.as_deref().is_some_and(|s| !s.is_empty()));
    let hooks = n
        .list_webhooks(with_token(npb::ListWebhooksRequest::default(), &token))
        .await
        .expect("list webhooks")
        .into_inner();
    assert_eq!(hooks.items.len(), 1);
    assert_eq!(hooks.items[0].id, w.id);
    assert_eq!(hooks.items[0].secret, None);
    let bad = n
        .create_webhook(with_token(
            npb::CreateWebhookRequest {
                url: "ftp://example.org".into(),
                campaign_id: None,
            },
            &token,
        ))
        .await
        .expect_err("not http");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let campaign = n
        .list_webhooks(with_token(
            npb::ListWebhooksRequest {
                campaign_id: Some("c1".into()),
            },
            &token,
        ))
        .await
        .expect_err("a user cannot see a campaign's webhooks");
    assert_eq!(campaign.code(), Code::PermissionDenied);
    n.delete_webhook(with_token(
        npb::DeleteWebhookRequest { id: w.id.clone() },
        &token,
    ))
    .await
    .expect("delete webhook");
    let gone = n
        .delete_webhook(with_token(npb::DeleteWebhookRequest { id: w.id }, &token))
        .await
        .expect_err("already deleted");
    assert_eq!(gone.code(), Code::NotFound);

    // The template goes last.
    let deleted = n
        .delete_template(with_token(
            npb::TemplateRef {
                key: "welcome".into(),
                locale: "en".into(),
            },
            &admin,
        ))
        .await
        .expect("delete template")
        .into_inner();
    assert_eq!(deleted.template.map(|t| t.key).as_deref(), Some("welcome"));
}

#[tokio::test]
async fn notification_watch_inbox_streams_what_arrives_after_it_opens() {
    use proto::notification::v0 as npb;
    use proto::notification::v0::notification_service_client::NotificationServiceClient;
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("admin token");
    let (uid, token) = user(&node, "walt").await;
    let (other, _) = user(&node, "otto").await;
    let mut n = NotificationServiceClient::new(channel(&node).await);
    notification_template(&mut n, &admin).await;
    n.send(with_token(
        notification_send(&[&uid], json!({"x": "old"})),
        &admin,
    ))
    .await
    .expect("send before the watch");

    // Opened now: what was already there is not sent, what arrives next is.
    let mut stream = n
        .watch_inbox(with_token(npb::WatchInboxRequest::default(), &token))
        .await
        .expect("watch")
        .into_inner();
    // Someone else's notification is not the caller's.
    n.send(with_token(
        notification_send(&[&other], json!({"x": "otto"})),
        &admin,
    ))
    .await
    .expect("send to another user");
    n.send(with_token(
        notification_send(&[&uid], json!({"x": "new"})),
        &admin,
    ))
    .await
    .expect("send after the watch opened");
    let got = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a notification within 10 s")
        .expect("the stream is fine")
        .expect("the stream goes on");
    assert_eq!(got.user_id, uid);
    assert_eq!(got.text, "Code new");
    // And the next one too, on the same stream.
    n.send(with_token(
        notification_send(&[&uid], json!({"x": "newer"})),
        &admin,
    ))
    .await
    .expect("send again");
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a second notification within 10 s")
        .expect("the stream is fine")
        .expect("the stream goes on");
    assert_eq!(next.text, "Code newer");
    assert!(next.id > got.id, "oldest first");
    drop(stream);

    // Resuming after a notification id sends the newer ones at once, oldest first.
    let inbox = n
        .list_inbox(with_token(npb::ListInboxRequest::default(), &token))
        .await
        .expect("inbox")
        .into_inner();
    let oldest = inbox.items.last().expect("the old one");
    assert_eq!(oldest.text, "Code old");
    let mut resumed = n
        .watch_inbox(with_token(
            npb::WatchInboxRequest {
                after: oldest.id.clone(),
            },
            &token,
        ))
        .await
        .expect("resume")
        .into_inner();
    let mut texts = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(10), resumed.message())
            .await
            .expect("in time")
            .expect("fine")
            .expect("goes on");
        texts.push(m.text);
    }
    assert_eq!(texts, ["Code new", "Code newer"]);
}

/// Creates a campaign declaring one `notification.send` job `kickoff` (due in 2099, so only a
/// trigger would run it) and returns the campaign's id once the job is registered (by the
/// campaign service, or here as it would).
async fn campaign_with_a_job(node: &TestNode, slug: &str) -> String {
    let (s, t) = node
        .call(
            "PUT",
            "/api/notifications/templates/reminder/en",
            Some(json!({"category": "transactional", "subject": "Reminder", "text": "Soon"})),
        )
        .await;
    assert!(s == 200 || s == 201, "{t}");
    let (_, me) = node.call("GET", "/api/users/me", None).await;
    let jobs = json!([{
        "name": "kickoff",
        "kind": "notification.send",
        "at": "2099-01-01T00:00:00Z",
        "payload": {"template": "reminder", "variables": {}, "channels": ["in_app"],
                    "recipients": {"user_ids": [me["id"]]}},
    }]);
    let (s, c) = node
        .call(
            "POST",
            "/api/campaigns",
            Some(json!({"name": slug, "slug": slug,
                        "metadata": {"scheduling": {"frequency": 1, "jobs": jobs}}})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().expect("id").to_owned();
    let scheduler = &node.running.as_ref().expect("running").services.scheduler;
    let caller = services::security::Caller::system();
    let owner = services::scheduler::Owner::new("campaign", &id);
    let registered = scheduler.entity_jobs(&caller, &owner).await.expect("jobs");
    if registered.is_empty() {
        scheduler
            .register_entity_jobs(
                &caller,
                &owner,
                &json!({"jobs": jobs}),
                &c,
                services::scheduler::Registration::Create,
            )
            .await
            .expect("registered");
    }
    id
}

#[tokio::test]
async fn scheduler_service_over_grpc_jobs_pause_and_status_codes() {
    use proto::scheduler::v0 as schpb;
    use proto::scheduler::v0::scheduler_service_client::SchedulerServiceClient;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("admin token");
    let (_, token) = user(&node, "sam").await;
    let campaign = campaign_with_a_job(&node, "grpc-jobs").await;
    let ch = channel(&node).await;
    let mut sch = SchedulerServiceClient::new(ch.clone());

    let mut health = HealthClient::new(ch);
    let mut serving = None;
    for _ in 0..50 {
        match health
            .check(HealthCheckRequest {
                service: "scheduler.v0.SchedulerService".into(),
            })
            .await
        {
            Ok(r) => {
                serving = Some(r.into_inner().status);
                break;
            }
            Err(e) if e.code() == Code::NotFound => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("health: {e}"),
        }
    }
    assert_eq!(serving, Some(ServingStatus::Serving as i32));

    // The campaign's job, as declared.
    let of_campaign = || schpb::ListJobsRequest {
        entity_type: Some("campaign".into()),
        entity_id: Some(campaign.clone()),
        ..Default::default()
    };
    let page = sch
        .list_jobs(with_token(of_campaign(), &admin))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.items.len(), 1, "{page:?}");
    assert!(page.next_cursor.is_empty());
    let job = &page.items[0];
    assert_eq!(job.name, "kickoff");
    assert_eq!(job.kind, "notification.send");
    assert_eq!(job.status, "active");
    assert_eq!(job.at.as_deref(), Some("2099-01-01T00:00:00.000Z"));
    assert_eq!(job.next_run_at.as_deref(), Some("2099-01-01T00:00:00.000Z"));
    let payload =
        proto::convert::struct_to_json(job.payload.clone().expect("payload")).expect("JSON");
    assert_eq!(payload["template"], "reminder");
    let spec = job.spec.as_ref().expect("spec");
    assert_eq!(spec.name, "kickoff");
    assert_eq!(spec.at.as_deref(), Some("2099-01-01T00:00:00Z"));
    let got = sch
        .get_job(with_token(schpb::JobRef { id: job.id.clone() }, &admin))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&got, job);
    let runs = sch
        .list_runs(with_token(
            schpb::ListRunsRequest {
                job_id: job.id.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("runs")
        .into_inner();
    assert!(runs.items.is_empty() && runs.next_cursor.is_empty());

    // Pause, then the paused filter finds it; a second pause is a failed precondition.
    let paused = sch
        .pause_job(with_token(schpb::JobRef { id: job.id.clone() }, &admin))
        .await
        .expect("pause")
        .into_inner();
    assert_eq!(paused.status, "paused");
    assert_eq!(paused.next_run_at, job.next_run_at);
    let again = sch
        .pause_job(with_token(schpb::JobRef { id: job.id.clone() }, &admin))
        .await
        .expect_err("already paused");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let listed = sch
        .list_jobs(with_token(
            schpb::ListJobsRequest {
                status: Some("paused".into()),
                ..of_campaign()
            },
            &admin,
        ))
        .await
        .expect("paused list")
        .into_inner();
    assert_eq!(listed.items.len(), 1);
    let resumed = sch
        .resume_job(with_token(schpb::JobRef { id: job.id.clone() }, &admin))
        .await
        .expect("resume")
        .into_inner();
    assert_eq!(resumed.status, "active");

    // Status codes: bad input, unknown ids, missing and insufficient credentials.
    let bad = sch
        .list_jobs(with_token(
            schpb::ListJobsRequest {
                status: Some("sleeping".into()),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("bad status");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("status"), "{}", bad.message());
    let bad = sch
        .list_jobs(with_token(
            schpb::ListJobsRequest {
                limit: 501,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("bad limit");
    assert_eq!(bad.code(), Code::InvalidArgument);
    for missing in [
        sch.get_job(with_token(schpb::JobRef { id: "nope".into() }, &admin))
            .await
            .map(|_| ()),
        sch.trigger_job(with_token(schpb::JobRef { id: "nope".into() }, &admin))
            .await
            .map(|_| ()),
        sch.list_runs(with_token(
            schpb::ListRunsRequest {
                job_id: "nope".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .map(|_| ()),
    ] {
        assert_eq!(missing.expect_err("unknown job").code(), Code::NotFound);
    }
    let anonymous = sch
        .list_jobs(schpb::ListJobsRequest::default())
        .await
        .expect_err("anonymous");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let plain = sch
        .list_jobs(with_token(schpb::ListJobsRequest::default(), &token))
        .await
        .expect_err("a plain user cannot read jobs");
    assert_eq!(plain.code(), Code::PermissionDenied);
    let plain = sch
        .pause_job(with_token(schpb::JobRef { id: job.id.clone() }, &token))
        .await
        .expect_err("a plain user cannot pause");
    assert_eq!(plain.code(), Code::PermissionDenied);
    let unchanged = sch
        .get_job(with_token(schpb::JobRef { id: job.id.clone() }, &admin))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(unchanged.status, "active");
}

#[tokio::test]
async fn publish_stream_batches_what_arrives_and_stops_at_an_invalid_event() {
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("dev admin token");
    let mut broadcast = BroadcastServiceClient::new(channel(&node).await);
    let a = node.campaign("stream-a", 2.0, json!({})).await;
    let b = node.campaign("stream-b", 2.0, json!({})).await;
    let event = |campaign: &str, name: &str, i: i64| bpb::PublishRequest {
        campaign_id: campaign.to_owned(),
        name: name.to_owned(),
        data: Some(proto::convert::json_to_value(json!({ "i": i })).expect("value")),
        immediate: false,
    };
    let publish = |events: Vec<bpb::PublishRequest>, token: Option<&str>| {
        let mut r = Request::new(futures_util::stream::iter(events));
        if let Some(t) = token {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("metadata"),
            );
        }
        r
    };

    // 2,500 events: batches of at most 1,000, consecutive seqs, nothing lost.
    let events: Vec<_> = (0..2500).map(|i| event(&a, "goal", i)).collect();
    let done = broadcast
        .publish_stream(publish(events, Some(&admin)))
        .await
        .expect("stream")
        .into_inner();
    assert_eq!(done.count, 2500);
    let mut next = 1;
    for r in &done.ranges {
        assert_eq!((r.campaign_id.as_str(), r.first_seq), (a.as_str(), next));
        assert!(
            r.last_seq >= r.first_seq && r.last_seq - r.first_seq < 1000,
            "{r:?}"
        );
        next = r.last_seq + 1;
    }
    assert_eq!(next, 2501);

    // Another campaign in the same stream starts another batch.
    let done = broadcast
        .publish_stream(publish(
            vec![event(&a, "x", 0), event(&b, "y", 1), event(&b, "y", 2)],
            Some(&admin),
        ))
        .await
        .expect("stream")
        .into_inner();
    let ranges: Vec<(&str, u64, u64)> = done
        .ranges
        .iter()
        .map(|r| (r.campaign_id.as_str(), r.first_seq, r.last_seq))
        .collect();
    assert_eq!(ranges, [(a.as_str(), 2501, 2501), (b.as_str(), 1, 2)]);

    // An invalid event: what came before it is published, nothing after it.
    for (bad, says) in [
        (event(&a, "bad name", 2), "invalid event name"),
        (
            bpb::PublishRequest {
                data: Some(proto::convert::json_to_value(json!("x".repeat(64 * 1024))).expect("v")),
                ..event(&a, "big", 2)
            },
            "larger than",
        ),
    ] {
        let before = node.publish(&a, "probe", json!(0), false).await;
        let err = broadcast
            .publish_stream(publish(
                vec![
                    event(&a, "ok", 0),
                    event(&a, "ok", 1),
                    bad,
                    event(&a, "late", 3),
                ],
                Some(&admin),
            ))
            .await
            .expect_err("invalid event");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("event 2"), "{}", err.message());
        assert!(err.message().contains(says), "{}", err.message());
        assert!(
            err.message()
                .contains("the 2 events before it are published"),
            "{}",
            err.message()
        );
        assert_eq!(
            node.publish(&a, "probe", json!(0), false).await,
            before + 3,
            "two published, the rest not"
        );
    }

    // Credentials and campaigns.
    let err = broadcast
        .publish_stream(publish(vec![event(&a, "e", 0)], None))
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);
    let (_, user_token) = user(&node, "streamer").await;
    let err = broadcast
        .publish_stream(publish(vec![event(&a, "e", 0)], Some(&user_token)))
        .await
        .expect_err("a user may not publish");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = broadcast
        .publish_stream(publish(vec![event("no-such", "e", 0)], Some(&admin)))
        .await
        .expect_err("unknown campaign");
    assert_eq!(err.code(), Code::NotFound);
    let empty = broadcast
        .publish_stream(publish(Vec::new(), Some(&admin)))
        .await
        .expect("an empty stream")
        .into_inner();
    assert_eq!((empty.count, empty.ranges.len()), (0, 0));
}
