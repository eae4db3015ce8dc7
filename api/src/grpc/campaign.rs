//! `campaign.v0.CampaignService` over the campaign service (and the engine's figures for
//! analytics).

use proto::campaign::v0 as pb;
use proto::campaign::v0::campaign_service_server::{CampaignService, CampaignServiceServer};
use proto::convert;
use serde_json::{Map, Value};
use services::campaign::{Campaign, CampaignFilter, NewCampaign, Status as CampaignStatus};
use tonic::{Request, Response, Status};

use super::{GrpcState, bad_json, caller, cursor, internal_json, limit, status};

pub fn server(state: GrpcState) -> CampaignServiceServer<Campaigns> {
    CampaignServiceServer::new(Campaigns(state))
}

pub struct Campaigns(GrpcState);

pub fn campaign_pb(c: Campaign) -> Result<pb::Campaign, Status> {
    Ok(pb::Campaign {
        id: c.id,
        slug: c.slug,
        name: c.name,
        status: c.status.as_str().to_owned(),
        metadata: Some(
            convert::metadata_from_json(convert::lossy(c.metadata)).map_err(internal_json)?,
        ),
        state: Some(convert::json_to_struct(convert::lossy(c.state)).map_err(internal_json)?),
        starts_at: c.starts_at,
        ends_at: c.ends_at,
        created_at: c.created_at,
        updated_at: c.updated_at,
    })
}

fn status_of(s: &str) -> Result<CampaignStatus, Status> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
        Status::invalid_argument(format!("status {s:?}: expected draft, active or ended"))
    })
}

#[tonic::async_trait]
impl CampaignService for Campaigns {
    async fn create_campaign(
        &self,
        req: Request<pb::CreateCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewCampaign {
            name: r.name,
            slug: r.slug,
            status: r.status.as_deref().map(status_of).transpose()?,
            metadata: r
                .metadata
                .map(convert::metadata_to_json)
                .transpose()
                .map_err(|e| bad_json("metadata", e))?,
            state: r
                .state
                .map(convert::struct_to_json)
                .transpose()
                .map_err(|e| bad_json("state", e))?,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
        };
        let c = self
            .0
            .services
            .campaigns
            .create(&caller, new)
            .await
            .map_err(status)?;
        Ok(Response::new(campaign_pb(c)?))
    }

    async fn get_campaign(
        &self,
        req: Request<pb::GetCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let caller = caller(&self.0, &req)?;
        let c = self
            .0
            .services
            .campaigns
            .get(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(campaign_pb(c)?))
    }

    async fn update_campaign(
        &self,
        req: Request<pb::UpdateCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let patch = match r.patch {
            Some(p) => convert::struct_to_json(p).map_err(|e| bad_json("patch", e))?,
            None => Value::Object(Map::new()),
        };
        let c = self
            .0
            .services
            .campaigns
            .update(&caller, &r.id, &patch)
            .await
            .map_err(status)?;
        Ok(Response::new(campaign_pb(c)?))
    }

    async fn end_campaign(
        &self,
        req: Request<pb::EndCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let caller = caller(&self.0, &req)?;
        let c = self
            .0
            .services
            .campaigns
            .end(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(campaign_pb(c)?))
    }

    async fn list_campaigns(
        &self,
        req: Request<pb::ListCampaignsRequest>,
    ) -> Result<Response<pb::ListCampaignsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .campaigns
            .list(
                &caller,
                &CampaignFilter {
                    status: r.status.as_deref().map(status_of).transpose()?,
                    tag: r.tag,
                    query: r.query,
                },
                limit(r.limit),
                cursor(&r.cursor),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListCampaignsResponse {
            campaigns: page
                .items
                .into_iter()
                .map(campaign_pb)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_analytics(
        &self,
        req: Request<pb::GetAnalyticsRequest>,
    ) -> Result<Response<pb::Analytics>, Status> {
        let caller = caller(&self.0, &req)?;
        let c = self
            .0
            .services
            .campaigns
            .get(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        let s = self.0.node.stats(&c.id).unwrap_or_default();
        Ok(Response::new(pb::Analytics {
            campaign_id: c.id,
            connections_node: s.connections as u64,
            connections_cluster: s.cluster_connections,
            peak_connections: s.peak_connections,
            frames_sent: s.frames_sent,
            frames_dropped: s.frames_dropped,
            events_published: s.events,
            tick_rate_hz: s.tick_rate_hz,
        }))
    }
}
