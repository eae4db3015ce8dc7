//! `ovasabi-loadtest`: a load-testing harness that treats OVASABI nodes as black boxes over
//! real sockets (it does not link the engine). It creates campaigns, connects clients,
//! publishes events with a timestamp in their payload, and reports connection, delivery,
//! latency (HdrHistogram), loss (`seq` gaps), server CPU per frame and RSS per connection.
//!
//! # Layout
//! * [`run`]: scenarios and orchestration, worker processes above the per-process socket limit.
//! * [`client`]: the WebSocket clients and what they count.
//! * [`server`]: the nodes' REST API and `/metrics`.
//! * [`publish`]: the publish-throughput scenario (no clients; events accepted per second).
//! * [`stats`]: histograms, percentiles, gap detection.
//! * [`report`]: the report, as a table and JSON; [`chart`]: the SVG chart.

pub mod chart;
pub mod client;
pub mod publish;
pub mod report;
pub mod run;
pub mod server;
pub mod stats;
