//! The OVASABI node: composes the engine and the services, serves REST + WebSocket on `:8090`,
//! gRPC on `:8080`, and metrics and health on `:9090`, reads the layered configuration, and shuts down
//! gracefully. The only crate that reads the environment, binds ports, or knows HTTP.
//!
//! # Layout
//! * [`config`]: layered configuration and its validation.
//! * [`app`]: wiring, start and ordered shutdown; [`admission`]: the connection limits of
//!   `:8090`.
//! * [`http`]: REST (bodies read under a size and time limit), WebSocket upgrade and the web
//!   page; [`error`]: errors as JSON;
//!   [`openapi`]: the OpenAPI document generated from the REST handlers, with what the
//!   server accepts written in from the validators' constants.
//! * [`grpc`]: the gRPC adapters, health and reflection.
//! * [`ops`]: `/metrics`, `/healthz`, `/readyz`; [`service_metrics`]: each service's calls under
//!   its metrics prefix.
//! * [`broadcaster`]: the services' broadcaster implemented with the engine.
//! * [`cache`]: the services' metadata cache on Redis.
//! * [`kg`]: `ovasabi kg`, the facts of the Amadeus knowledge graph gathered from this build.

pub mod admission;
pub mod app;
pub mod broadcaster;
pub mod cache;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod kg;
pub mod openapi;
pub mod ops;
pub mod service_metrics;
