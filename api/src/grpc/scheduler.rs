//! `scheduler.v0.SchedulerService` over the scheduler service: the jobs entities declare, their
//! runs, and the admin operations pause, resume and trigger.

use proto::convert;
use proto::scheduler::v0 as pb;
use proto::scheduler::v0::scheduler_service_server::{SchedulerService, SchedulerServiceServer};
use serde_json::Value;
use services::scheduler::{Job, JobFilter, JobRun, JobSpec, JobStatus};
use tonic::{Request, Response, Status};

use super::{GrpcState, caller, cursor, internal_json, limit, status};

pub fn server(state: GrpcState) -> SchedulerServiceServer<Scheduler> {
    SchedulerServiceServer::new(Scheduler(state))
}

pub struct Scheduler(GrpcState);

/// A stored JSON object as a `Struct` (`None` for `null`).
fn object_pb(v: Value) -> Result<Option<prost_types::Struct>, Status> {
    match v {
        Value::Null => Ok(None),
        v => convert::json_to_struct(convert::lossy(v))
            .map(Some)
            .map_err(internal_json),
    }
}

fn spec_pb(s: JobSpec) -> Result<pb::JobSpec, Status> {
    Ok(pb::JobSpec {
        name: s.name,
        kind: s.kind,
        payload: object_pb(s.payload.unwrap_or(Value::Null))?,
        at: s.at,
        field: s.field,
        before: s.before,
        after: s.after,
        cron: s.cron,
        timezone: s.timezone,
        skip_missed: s.skip_missed,
        max_attempts: s.max_attempts,
    })
}

fn job_pb(j: Job) -> Result<pb::Job, Status> {
    Ok(pb::Job {
        id: j.id,
        entity_type: j.entity_type,
        entity_id: j.entity_id,
        name: j.name,
        kind: j.kind,
        payload: object_pb(j.payload)?,
        spec: Some(spec_pb(j.spec)?),
        at: j.at,
        cron: j.cron,
        timezone: j.timezone,
        skip_missed: j.skip_missed,
        max_attempts: j.max_attempts,
        status: j.status.as_str().to_owned(),
        next_run_at: j.next_run_at,
        last_run_at: j.last_run_at,
        last_outcome: j.last_outcome.map(|o| o.as_str().to_owned()),
        last_error: j.last_error,
        attempts: j.attempts,
        lease_owner: j.lease_owner,
        lease_until: j.lease_until,
        created_at: j.created_at,
        updated_at: j.updated_at,
    })
}

fn run_pb(r: JobRun) -> pb::JobRun {
    pb::JobRun {
        id: r.id,
        job_id: r.job_id,
        attempt: r.attempt,
        due_at: r.due_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        outcome: r.outcome.as_str().to_owned(),
        error: r.error,
        node: r.node,
    }
}

#[tonic::async_trait]
impl SchedulerService for Scheduler {
    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let filter = JobFilter {
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            status: r
                .status
                .as_deref()
                .map(|s| JobStatus::parse("status", s))
                .transpose()
                .map_err(status)?,
            kind: r.kind,
        };
        let page = self
            .0
            .services
            .scheduler
            .list(&caller, filter, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListJobsResponse {
            items: page
                .items
                .into_iter()
                .map(job_pb)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_job(&self, req: Request<pb::JobRef>) -> Result<Response<pb::Job>, Status> {
        let caller = caller(&self.0, &req)?;
        let j = self
            .0
            .services
            .scheduler
            .get(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(job_pb(j)?))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .scheduler
            .runs(&caller, &r.job_id, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListRunsResponse {
            items: page.items.into_iter().map(run_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn pause_job(&self, req: Request<pb::JobRef>) -> Result<Response<pb::Job>, Status> {
        let caller = caller(&self.0, &req)?;
        let j = self
            .0
            .services
            .scheduler
            .pause(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(job_pb(j)?))
    }

    async fn resume_job(&self, req: Request<pb::JobRef>) -> Result<Response<pb::Job>, Status> {
        let caller = caller(&self.0, &req)?;
        let j = self
            .0
            .services
            .scheduler
            .resume(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(job_pb(j)?))
    }

    async fn trigger_job(&self, req: Request<pb::JobRef>) -> Result<Response<pb::Job>, Status> {
        let caller = caller(&self.0, &req)?;
        let j = self
            .0
            .services
            .scheduler
            .trigger(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(job_pb(j)?))
    }
}
