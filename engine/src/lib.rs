//! The OVASABI broadcast core. Browsers hold WebSocket sessions on campaigns; every campaign
//! has one broadcast task per node that ticks at the campaign's frequency and pushes its state
//! and the events since the last tick to every local session as one frame, encoded once and
//! shared. Each session has a bounded queue and its own writer: a slow client loses frames,
//! never slows anyone else. Every publish goes through a [`Broker`], so that several nodes
//! can share one bus. This crate knows nothing of HTTP or SQL.
//!
//! # Layout
//! * [`node`]: [`Node`], the engine's handle: campaigns, publishing, notifications, sessions,
//!   shutdown.
//! * `hub`: local sessions by campaign, with lock-free broadcast snapshots.
//! * [`campaign`]: one campaign's tick task (state, pending events, timer).
//! * [`session`]: one connection: drop policy, the task that reads and writes; close codes.
//! * `queue`: a session's bounded outgoing queue.
//! * [`frame`]: the wire frames, encoded by hand, and their deflated variant.
//! * [`broker`]: the [`Broker`] trait and the in-process [`MemoryBroker`].
//! * [`config`]: limits and timings; [`metrics`]: metric names and handles.

#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench;
pub mod broker;
pub mod campaign;
pub mod config;
mod delta;
pub mod error;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hub;
pub mod metrics;
pub mod node;
mod principal;
mod queue;
pub mod session;

pub use broker::{Broker, CampaignSpec, MemoryBroker};
pub use campaign::{CampaignStats, HISTORY_WINDOW, Resume, StatsSample};
pub use config::Config;
pub use error::EngineError;
pub use node::{MAX_BATCH_EVENTS, NewEvent, Node};
pub use principal::{Principal, TokenVerifier};
pub use session::{Close, Encoding, close_code};

/// The WebSocket protocol types the engine speaks (re-exported so that the node binary uses
/// the very same version).
pub use tokio_tungstenite::{self, tungstenite};
