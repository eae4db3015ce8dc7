//! `security.v0.SecurityService` over the audit log and the policies.

use std::pin::Pin;

use futures_util::Stream;
use proto::security::v0 as pb;
use proto::security::v0::security_service_server::{SecurityService, SecurityServiceServer};
use services::security::audit::{AuditEntry, AuditFilter};
use tonic::{Request, Response, Status};

use super::{GrpcState, caller, cursor, internal_json, limit, status};

pub fn server(state: GrpcState) -> SecurityServiceServer<Security> {
    SecurityServiceServer::new(Security(state))
}

pub struct Security(GrpcState);

fn filter(r: &pb::AuditFilter) -> AuditFilter {
    AuditFilter {
        actor: r.actor.clone(),
        entity_type: r.entity_type.clone(),
        entity_id: r.entity_id.clone(),
        action: r.action.clone(),
        since: r.since.clone(),
        until: r.until.clone(),
    }
}

fn entry_pb(e: AuditEntry) -> Result<pb::AuditEntry, Status> {
    let json = |v: Option<serde_json::Value>| {
        v.map(|v| proto::convert::json_to_value(proto::convert::lossy(v)))
            .transpose()
            .map_err(internal_json)
    };
    Ok(pb::AuditEntry {
        id: e.id,
        actor: e.actor,
        action: e.action,
        entity_type: e.entity_type,
        entity_id: e.entity_id,
        before: json(e.before)?,
        after: json(e.after)?,
        client_addr: e.client_addr.unwrap_or_default(),
        at: e.at,
    })
}

type Lines = Pin<Box<dyn Stream<Item = Result<pb::ExportLine, Status>> + Send>>;

#[tonic::async_trait]
impl SecurityService for Security {
    async fn query_audit(
        &self,
        req: Request<pb::AuditFilter>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .audit
            .query(&caller, &filter(&r), limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::QueryAuditResponse {
            entries: page
                .items
                .into_iter()
                .map(entry_pb)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    type ExportAuditStream = Lines;

    /// Streams every matching row as one JSON line, a page at a time; the first page is read
    /// before answering, so that a refused caller or a bad filter gets an error status.
    async fn export_audit(
        &self,
        req: Request<pb::AuditFilter>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let filter = filter(&r);
        let pages = self
            .0
            .services
            .audit
            .export(&caller, &filter, cursor(&r.cursor))
            .await
            .map_err(status)?;
        let pages = futures_util::StreamExt::map(pages, |page| {
            let items: Vec<Result<pb::ExportLine, Status>> = match page {
                Ok(lines) => lines
                    .into_iter()
                    .map(|line| Ok(pb::ExportLine { line }))
                    .collect(),
                Err(e) => vec![Err(status(e))],
            };
            futures_util::stream::iter(items)
        });
        let lines: Lines = Box::pin(futures_util::StreamExt::flatten(pages));
        Ok(Response::new(lines))
    }

    async fn list_policies(
        &self,
        req: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .policies
            .page(&caller, limit(r.limit), cursor(&r.cursor))
            .map_err(status)?;
        Ok(Response::new(pb::ListPoliciesResponse {
            next_cursor: page.next_cursor.unwrap_or_default(),
            policies: page
                .items
                .into_iter()
                .map(|p| pb::Policy {
                    role: p.role,
                    resource: p.resource,
                    action: p.action,
                })
                .collect(),
        }))
    }
}
