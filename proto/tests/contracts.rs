//! Checks the generated contracts: the descriptor set for reflection, the service names, and a
//! real gRPC round trip (unary and server streaming) over loopback.

use std::collections::BTreeSet;
use std::pin::Pin;

use prost::Message as _;
use proto::broadcast::v0::broadcast_service_client::BroadcastServiceClient;
use proto::broadcast::v0::broadcast_service_server::{BroadcastService, BroadcastServiceServer};
use proto::broadcast::v0::{
    End, PublishRequest, PublishResponse, PublishStreamResponse, SendMessageRequest,
    SendMessageResponse, SeqRange, SetFrequencyRequest, SetFrequencyResponse, SetStateRequest,
    SetStateResponse, SubscribeRequest, Tick, Update, Welcome, update,
};
use proto::convert::{json_to_struct, json_to_value, struct_to_json, value_to_json};
use serde_json::json;
use tonic::codegen::tokio_stream::{self, Stream, StreamExt as _};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn descriptor_set_holds_every_contract_and_the_well_known_types() -> TestResult {
    let fds = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)?;
    let files: BTreeSet<&str> = fds.file.iter().filter_map(|f| f.name.as_deref()).collect();
    for name in [
        "common/metadata.proto",
        "user/v0/user.proto",
        "admin/v0/admin.proto",
        "security/v0/security.proto",
        "campaign/v0/campaign.proto",
        "content/v0/content.proto",
        "broadcast/v0/broadcast.proto",
        "localization/v0/localization.proto",
        "babel/v0/babel.proto",
        "notification/v0/notification.proto",
        "scheduler/v0/scheduler.proto",
        "talent/v0/talent.proto",
        "commerce/v0/commerce.proto",
        "referral/v0/referral.proto",
        "nexus/v0/nexus.proto",
        "google/protobuf/struct.proto",
    ] {
        assert!(files.contains(name), "{name} missing from {files:?}");
    }
    let services: BTreeSet<String> = fds
        .file
        .iter()
        .flat_map(|f| {
            f.service
                .iter()
                .map(move |s| format!("{}.{}", f.package(), s.name()))
        })
        .collect();
    let expected: BTreeSet<String> = [
        "user.v0.UserService",
        "admin.v0.AdminService",
        "security.v0.SecurityService",
        "campaign.v0.CampaignService",
        "content.v0.ContentService",
        "broadcast.v0.BroadcastService",
        "localization.v0.LocalizationService",
        "babel.v0.BabelService",
        "notification.v0.NotificationService",
        "scheduler.v0.SchedulerService",
        "talent.v0.TalentService",
        "commerce.v0.CommerceService",
        "referral.v0.ReferralService",
        "nexus.v0.NexusService",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(services, expected);
    let common = fds
        .file
        .iter()
        .find(|f| f.name() == "common/metadata.proto")
        .ok_or("no common/metadata.proto")?;
    assert_eq!(common.package(), "common");
    Ok(())
}

#[test]
fn service_names_match_the_proto_packages() {
    use proto::{
        admin, broadcast, campaign, commerce, content, nexus, notification, referral, scheduler,
        security, talent, user,
    };
    assert_eq!(
        user::v0::user_service_server::SERVICE_NAME,
        "user.v0.UserService"
    );
    assert_eq!(
        admin::v0::admin_service_server::SERVICE_NAME,
        "admin.v0.AdminService"
    );
    assert_eq!(
        security::v0::security_service_server::SERVICE_NAME,
        "security.v0.SecurityService"
    );
    assert_eq!(
        campaign::v0::campaign_service_server::SERVICE_NAME,
        "campaign.v0.CampaignService"
    );
    assert_eq!(
        content::v0::content_service_server::SERVICE_NAME,
        "content.v0.ContentService"
    );
    assert_eq!(
        broadcast::v0::broadcast_service_server::SERVICE_NAME,
        "broadcast.v0.BroadcastService"
    );
    assert_eq!(
        notification::v0::notification_service_server::SERVICE_NAME,
        "notification.v0.NotificationService"
    );
    assert_eq!(
        scheduler::v0::scheduler_service_server::SERVICE_NAME,
        "scheduler.v0.SchedulerService"
    );
    assert_eq!(
        talent::v0::talent_service_server::SERVICE_NAME,
        "talent.v0.TalentService"
    );
    assert_eq!(
        commerce::v0::commerce_service_server::SERVICE_NAME,
        "commerce.v0.CommerceService"
    );
    assert_eq!(
        referral::v0::referral_service_server::SERVICE_NAME,
        "referral.v0.ReferralService"
    );
    assert_eq!(
        nexus::v0::nexus_service_server::SERVICE_NAME,
        "nexus.v0.NexusService"
    );
}

#[test]
fn messages_round_trip_through_the_wire_format() -> TestResult {
    let tick = Update {
        kind: Some(update::Kind::Tick(Tick {
            seq: 44,
            ts: 1_764_133_200_123,
            state: Some(json_to_struct(json!({"score": 3}))?),
            events: vec![proto::broadcast::v0::Event {
                seq: 44,
                name: "goal".into(),
                data: Some(json_to_value(json!({"team": "a"}))?),
                ts: 1_764_133_199_950,
            }],
        })),
    };
    let decoded = Update::decode(tick.encode_to_vec().as_slice())?;
    assert_eq!(decoded, tick);

    // proto3 `optional` is an Option; unset stays None on the wire.
    let req = SubscribeRequest {
        campaign_id: "c1".into(),
        since: None,
        epoch: None,
    };
    assert_eq!(
        SubscribeRequest::decode(req.encode_to_vec().as_slice())?.since,
        None
    );
    let req = SubscribeRequest {
        since: Some(0),
        ..req
    };
    assert_eq!(
        SubscribeRequest::decode(req.encode_to_vec().as_slice())?.since,
        Some(0)
    );
    Ok(())
}

/// A broadcast service that answers from fixed data.
struct Fake;

type UpdateStream = Pin<Box<dyn Stream<Item = Result<Update, Status>> + Send>>;

#[tonic::async_trait]
impl BroadcastService for Fake {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        Ok(Response::new(PublishResponse { seq: 42 }))
    }

    /// Counts the events of the stream (client streaming over the generated code).
    async fn publish_stream(
        &self,
        request: Request<tonic::Streaming<PublishRequest>>,
    ) -> Result<Response<PublishStreamResponse>, Status> {
        let mut stream = request.into_inner();
        let mut count = 0;
        while let Some(req) = stream.message().await? {
            if req.name.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "event {count}: name is required"
                )));
            }
            count += 1;
        }
        Ok(Response::new(PublishStreamResponse {
            count,
            ranges: vec![SeqRange {
                campaign_id: "c".into(),
                first_seq: 1,
                last_seq: count,
            }],
        }))
    }

    async fn set_state(
        &self,
        request: Request<SetStateRequest>,
    ) -> Result<Response<SetStateResponse>, Status> {
        Ok(Response::new(SetStateResponse {
            state: request.into_inner().state,
        }))
    }

    async fn set_frequency(
        &self,
        request: Request<SetFrequencyRequest>,
    ) -> Result<Response<SetFrequencyResponse>, Status> {
        Ok(Response::new(SetFrequencyResponse {
            frequency_hz: request.into_inner().frequency_hz.clamp(0.1, 100.0),
        }))
    }

    async fn send_message(
        &self,
        _request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        Ok(Response::new(SendMessageResponse { seq: 43 }))
    }

    type SubscribeStream = UpdateStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let since = request.into_inner().since;
        let updates = vec![
            Ok(Update {
                kind: Some(update::Kind::Welcome(Welcome {
                    seq: 41,
                    frequency_hz: 1.0,
                    epoch: "e1".into(),
                    recovered: since.is_some(),
                })),
            }),
            Ok(Update {
                kind: Some(update::Kind::End(End {})),
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(updates))))
    }
}

#[tokio::test]
async fn generated_server_and_client_talk_over_loopback() -> TestResult {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let addr = incoming.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(BroadcastServiceServer::new(Fake))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );

    let mut client = BroadcastServiceClient::connect(format!("http://{addr}")).await?;

    let seq = client
        .publish(PublishRequest {
            campaign_id: "c1".into(),
            name: "goal".into(),
            data: Some(json_to_value(json!({"team": "a"}))?),
            immediate: false,
        })
        .await?
        .into_inner()
        .seq;
    assert_eq!(seq, 42);

    let err = client
        .publish(PublishRequest::default())
        .await
        .err()
        .ok_or("empty name accepted")?;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let events = (0..3).map(|i| PublishRequest {
        campaign_id: "c1".into(),
        name: format!("e{i}"),
        ..PublishRequest::default()
    });
    let done = client
        .publish_stream(tokio_stream::iter(events.collect::<Vec<_>>()))
        .await?
        .into_inner();
    assert_eq!((done.count, done.ranges.len()), (3, 1));
    let err = client
        .publish_stream(tokio_stream::iter(vec![PublishRequest::default()]))
        .await
        .err()
        .ok_or("empty name accepted")?;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let state = client
        .set_state(SetStateRequest {
            campaign_id: "c1".into(),
            state: Some(json_to_struct(json!({"score": 4, "teams": ["a", "b"]}))?),
            merge: true,
        })
        .await?
        .into_inner()
        .state
        .ok_or("no state")?;
    assert_eq!(
        struct_to_json(state)?,
        json!({"score": 4, "teams": ["a", "b"]})
    );

    let mut stream = client
        .subscribe(SubscribeRequest {
            campaign_id: "c1".into(),
            since: Some(40),
            epoch: None,
        })
        .await?
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(update) = stream.next().await {
        kinds.push(update?.kind.ok_or("update without kind")?);
    }
    assert!(
        matches!(&kinds[..], [update::Kind::Welcome(w), update::Kind::End(_)] if w.recovered && w.epoch == "e1"),
        "unexpected stream {kinds:?}"
    );

    assert_eq!(
        value_to_json(json_to_value(json!([1, 2.5, null]))?)?,
        json!([1, 2.5, null])
    );

    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}
