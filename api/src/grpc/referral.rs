//! `referral.v0.ReferralService` over the referral service: codes, referrals, their review
//! and stats. Empty strings are absent fields; the status filter is checked here and refused
//! with `INVALID_ARGUMENT` naming `status`.

use proto::referral::v0 as pb;
use proto::referral::v0::referral_service_server::{ReferralService, ReferralServiceServer};
use services::referral::{
    Approval, Code, NewCode, Referral, ReferralFilter, ReferralStatus, Rejection, Stats,
};
use tonic::{Request, Response, Status};

use super::{GrpcState, caller, cursor, limit, status};

pub fn server(state: GrpcState) -> ReferralServiceServer<Referrals> {
    ReferralServiceServer::new(Referrals(state))
}

pub struct Referrals(GrpcState);

/// `None` for an empty string.
fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn code_pb(c: Code) -> pb::Code {
    pb::Code {
        code: c.code,
        owner_id: c.owner_id,
        campaign_id: c.campaign_id.unwrap_or_default(),
        active: c.active,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

fn stats_pb(s: Stats) -> pb::Stats {
    pb::Stats {
        signups: s.signups,
        converted: s.converted,
        rewarded: s.rewarded,
        held: s.held,
        rejected: s.rejected,
        pending: s.pending,
        attributed: s.attributed,
    }
}

fn referral_pb(r: Referral) -> pb::Referral {
    let (reward_amount, reward_currency) = r
        .reward
        .map_or((0, String::new()), |w| (w.amount, w.currency));
    pb::Referral {
        id: r.id,
        code: r.code,
        referrer_id: r.referrer_id,
        referee_id: r.referee_id,
        campaign_id: r.campaign_id.unwrap_or_default(),
        status: r.status.as_str().to_owned(),
        reasons: r
            .reasons
            .into_iter()
            .map(|h| pb::HoldReason {
                rule: h.rule.as_str().to_owned(),
                detail: h.detail,
            })
            .collect(),
        reward_amount,
        reward_currency,
        reward_on: r
            .reward_on
            .map(|o| o.as_str().to_owned())
            .unwrap_or_default(),
        converted_at: r.converted_at.unwrap_or_default(),
        reward_movement: r.reward_movement.unwrap_or_default(),
        decided_by: r.decided_by.unwrap_or_default(),
        decision_note: r.decision_note.unwrap_or_default(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

#[tonic::async_trait]
impl ReferralService for Referrals {
    async fn create_code(
        &self,
        req: Request<pb::CreateCodeRequest>,
    ) -> Result<Response<pb::Code>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewCode {
            campaign_id: opt(r.campaign_id),
            code: opt(r.code),
            device_fingerprint: opt(r.device_fingerprint),
        };
        let c = self
            .0
            .services
            .referrals
            .create_code(&caller, new)
            .await
            .map_err(status)?;
        Ok(Response::new(code_pb(c)))
    }

    async fn get_code(&self, req: Request<pb::CodeRef>) -> Result<Response<pb::Code>, Status> {
        let caller = caller(&self.0, &req)?;
        let c = self
            .0
            .services
            .referrals
            .code(&caller, &req.into_inner().code)
            .await
            .map_err(status)?;
        Ok(Response::new(code_pb(c)))
    }

    async fn list_codes(
        &self,
        req: Request<pb::ListCodesRequest>,
    ) -> Result<Response<pb::ListCodesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .referrals
            .codes(
                &caller,
                opt(r.owner_id).as_deref(),
                opt(r.campaign_id).as_deref(),
                cursor(&r.cursor),
                limit(r.limit),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListCodesResponse {
            items: page.items.into_iter().map(code_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn deactivate_code(
        &self,
        req: Request<pb::CodeRef>,
    ) -> Result<Response<pb::Code>, Status> {
        let caller = caller(&self.0, &req)?;
        let c = self
            .0
            .services
            .referrals
            .deactivate_code(&caller, &req.into_inner().code)
            .await
            .map_err(status)?;
        Ok(Response::new(code_pb(c)))
    }

    async fn get_code_stats(
        &self,
        req: Request<pb::CodeRef>,
    ) -> Result<Response<pb::Stats>, Status> {
        let caller = caller(&self.0, &req)?;
        let s = self
            .0
            .services
            .referrals
            .code_stats(&caller, &req.into_inner().code)
            .await
            .map_err(status)?;
        Ok(Response::new(stats_pb(s)))
    }

    async fn get_campaign_stats(
        &self,
        req: Request<pb::CampaignRef>,
    ) -> Result<Response<pb::Stats>, Status> {
        let caller = caller(&self.0, &req)?;
        let s = self
            .0
            .services
            .referrals
            .campaign_stats(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(stats_pb(s)))
    }

    async fn list_referrals(
        &self,
        req: Request<pb::ListReferralsRequest>,
    ) -> Result<Response<pb::ListReferralsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let filter = ReferralFilter {
            referrer_id: opt(r.referrer_id),
            code: opt(r.code),
            campaign_id: opt(r.campaign_id),
            status: opt(r.status)
                .map(|s| ReferralStatus::parse("status", &s))
                .transpose()
                .map_err(status)?,
        };
        let page = self
            .0
            .services
            .referrals
            .referrals(&caller, filter, cursor(&r.cursor), limit(r.limit))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListReferralsResponse {
            items: page.items.into_iter().map(referral_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_referral(
        &self,
        req: Request<pb::ReferralRef>,
    ) -> Result<Response<pb::Referral>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = self
            .0
            .services
            .referrals
            .referral(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(referral_pb(r)))
    }

    async fn approve_referral(
        &self,
        req: Request<pb::ApproveReferralRequest>,
    ) -> Result<Response<pb::Referral>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let out = self
            .0
            .services
            .referrals
            .approve(&caller, &r.id, Approval { note: opt(r.note) })
            .await
            .map_err(status)?;
        Ok(Response::new(referral_pb(out)))
    }

    async fn reject_referral(
        &self,
        req: Request<pb::RejectReferralRequest>,
    ) -> Result<Response<pb::Referral>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let out = self
            .0
            .services
            .referrals
            .reject(&caller, &r.id, Rejection { reason: r.reason })
            .await
            .map_err(status)?;
        Ok(Response::new(referral_pb(out)))
    }
}
