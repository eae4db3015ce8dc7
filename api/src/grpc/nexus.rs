//! `nexus.v0.NexusService` over Nexus: the registry, patterns (list, read, register) and runs
//! (start, read, list). Definitions, inputs and outputs travel as `Struct`s; empty strings
//! are absent fields; a definition that is not a pattern (an unknown field, a wrong type) is
//! refused with `INVALID_ARGUMENT` naming `definition`.

use proto::convert;
use proto::nexus::v0 as pb;
use proto::nexus::v0::nexus_service_server::{NexusService, NexusServiceServer};
use serde_json::Value;
use services::nexus::{OperationInfo, Pattern, PatternDef, Run, RunFilter, RunStatus, StartRun};
use tonic::{Request, Response, Status};

use super::{GrpcState, bad_json, caller, cursor, internal_json, limit, status};

pub fn server(state: GrpcState) -> NexusServiceServer<Nexus> {
    NexusServiceServer::new(Nexus(state))
}

pub struct Nexus(GrpcState);

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn object_pb(v: Value) -> Result<Option<prost_types::Struct>, Status> {
    match v {
        Value::Null => Ok(None),
        v => convert::json_to_struct(convert::lossy(v))
            .map(Some)
            .map_err(internal_json),
    }
}

fn value_pb(v: Option<Value>) -> Result<Option<prost_types::Value>, Status> {
    v.map(|v| convert::json_to_value(convert::lossy(v)).map_err(internal_json))
        .transpose()
}

fn operation_pb(o: OperationInfo) -> Result<pb::Operation, Status> {
    Ok(pb::Operation {
        name: o.name,
        service: o.service,
        description: o.description,
        input_schema: object_pb(o.input_schema)?,
        output_schema: object_pb(o.output_schema)?,
        idempotent: o.idempotent,
    })
}

fn pattern_pb(p: Pattern) -> Result<pb::Pattern, Status> {
    let definition = serde_json::to_value(&p.definition)
        .map_err(|e| Status::internal(format!("cannot encode the pattern: {e}")))?;
    Ok(pb::Pattern {
        name: p.name,
        version: p.version,
        source: p.source,
        definition: object_pb(definition)?,
        order: p
            .order
            .into_iter()
            .map(|s| pb::PlannedStep {
                name: s.name,
                operation: s.operation,
                service: s.service,
                compensation: s.compensation.unwrap_or_default(),
            })
            .collect(),
        created_by: p.created_by,
        created_at: p.created_at,
    })
}

fn run_pb(r: Run) -> Result<pb::Run, Status> {
    let steps = r
        .steps
        .into_iter()
        .map(|s| {
            Ok(pb::Step {
                name: s.name,
                position: s.position,
                operation: s.operation,
                status: s.status.as_str().to_owned(),
                attempts: s.attempts,
                input: value_pb(s.input)?,
                output: value_pb(s.output)?,
                error: s.error.unwrap_or_default(),
                started_at: s.started_at.unwrap_or_default(),
                finished_at: s.finished_at.unwrap_or_default(),
                compensation_attempts: s.compensation_attempts,
                compensation_error: s.compensation_error.unwrap_or_default(),
                compensated_at: s.compensated_at.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(pb::Run {
        id: r.id,
        pattern: r.pattern,
        version: r.version,
        status: r.status.as_str().to_owned(),
        trigger: r.trigger,
        idempotency_key: r.idempotency_key,
        input: object_pb(r.input)?,
        output: object_pb(r.output.unwrap_or(Value::Null))?,
        error: r.error.unwrap_or_default(),
        started_by: r.started_by,
        created_at: r.created_at,
        updated_at: r.updated_at,
        finished_at: r.finished_at.unwrap_or_default(),
        claimed_by: r.claimed_by.unwrap_or_default(),
        steps,
    })
}

#[tonic::async_trait]
impl NexusService for Nexus {
    async fn list_operations(
        &self,
        req: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let ops = self.0.services.nexus.operations(&caller).map_err(status)?;
        Ok(Response::new(pb::ListOperationsResponse {
            operations: ops
                .into_iter()
                .map(operation_pb)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn list_patterns(
        &self,
        req: Request<pb::ListPatternsRequest>,
    ) -> Result<Response<pb::ListPatternsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let patterns = self
            .0
            .services
            .nexus
            .patterns(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListPatternsResponse {
            patterns: patterns
                .into_iter()
                .map(pattern_pb)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn get_pattern(
        &self,
        req: Request<pb::GetPatternRequest>,
    ) -> Result<Response<pb::Pattern>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        if r.version < 0 {
            return Err(Status::invalid_argument(
                "version: 0 (the latest) or a version",
            ));
        }
        let version = (r.version > 0).then_some(r.version);
        let p = self
            .0
            .services
            .nexus
            .pattern(&caller, &r.name, version)
            .await
            .map_err(status)?;
        Ok(Response::new(pattern_pb(p)?))
    }

    async fn register_pattern(
        &self,
        req: Request<pb::RegisterPatternRequest>,
    ) -> Result<Response<pb::RegisterPatternResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let definition = req
            .into_inner()
            .definition
            .ok_or_else(|| Status::invalid_argument("definition: required"))?;
        let json = convert::struct_to_json(definition).map_err(|e| bad_json("definition", e))?;
        let def: PatternDef = serde_json::from_value(json)
            .map_err(|e| Status::invalid_argument(format!("definition: {e}")))?;
        let (p, created) = self
            .0
            .services
            .nexus
            .register_pattern(&caller, def)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RegisterPatternResponse {
            pattern: Some(pattern_pb(p)?),
            created,
        }))
    }

    async fn start_run(
        &self,
        req: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let input = r
            .input
            .map(convert::struct_to_json)
            .transpose()
            .map_err(|e| bad_json("input", e))?;
        let start = StartRun {
            input,
            idempotency_key: opt(r.idempotency_key),
        };
        let (run, created) = self
            .0
            .services
            .nexus
            .start(&caller, &r.pattern, start)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StartRunResponse {
            run: Some(run_pb(run)?),
            created,
        }))
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        let caller = caller(&self.0, &req)?;
        let id = req.into_inner().id;
        let run = self
            .0
            .services
            .nexus
            .run(&caller, &id)
            .await
            .map_err(status)?;
        Ok(Response::new(run_pb(run)?))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let filter = RunFilter {
            pattern: opt(r.pattern),
            status: opt(r.status)
                .map(|s| RunStatus::parse("status", &s))
                .transpose()
                .map_err(status)?,
            started_by: None,
        };
        let page = self
            .0
            .services
            .nexus
            .runs(&caller, filter, cursor(&r.cursor), limit(r.limit))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListRunsResponse {
            runs: page
                .items
                .into_iter()
                .map(run_pb)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }
}
