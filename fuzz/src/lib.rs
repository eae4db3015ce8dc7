//! Fuzz targets for the code that reads what other processes send: a client's WebSocket text
//! frames, JSON merge patches, metadata converted between JSON and protobuf, and the RESP
//! replies the shard subscriber reads from Redis. Each target takes raw bytes and checks
//! properties of the code under test (a broken property panics, as libFuzzer expects); it
//! returns a coarse *shape* of what the input exercised, which the stable [`runner`] uses as
//! its only feedback (libFuzzer has coverage and ignores it).
//!
//! The same functions are driven two ways:
//! * by [`runner`], on stable Rust, from `cargo test -p ovasabi-fuzz` (a few seconds per
//!   target; `OVASABI_FUZZ_SECS` for longer), over the corpora in `fuzz/corpus/<target>/`;
//! * by libFuzzer through `cargo fuzz` (nightly), from the package in `fuzz/cargo-fuzz/`
//!   (its own workspace, so that stable builds never compile `libfuzzer-sys`).
//!
//! See `docs/fuzzing.md`.
//!
//! # Layout
//! * [`client_frame`]: a client text frame through a real session of a real node.
//! * [`merge_patch`]: `services::json::merge_patch` against the RFC 7396 definition.
//! * [`metadata`]: `proto::convert`, JSON ⇄ `google.protobuf.Value`/`Struct`/`common.Metadata`.
//! * [`resp`]: the shard subscriber's RESP2 reader (`engine` feature `fuzzing`).
//! * [`runner`]: corpus replay plus mutation for a bounded time; `json`: shared helpers.

pub mod client_frame;
mod json;
pub mod merge_patch;
pub mod metadata;
pub mod resp;
pub mod runner;

/// A coarse summary of what one input exercised (outcome and structure, never exact values):
/// an input whose shape the stable runner has not seen yet joins its pool of inputs to mutate.
pub type Shape = u64;

/// One fuzz target: its name (also the name of its corpus directory and libFuzzer binary),
/// the function, and tokens its mutator inserts.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> Shape,
    /// Fragments meaningful to this target's input format, spliced in by the mutator.
    pub tokens: &'static [&'static [u8]],
    /// Inputs are JSON text: the mutator adds JSON tokens and edits parsed documents.
    pub json: bool,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "client_frame",
        run: client_frame::run,
        tokens: client_frame::TOKENS,
        json: true,
    },
    Target {
        name: "merge_patch",
        run: merge_patch::run,
        tokens: &[],
        json: true,
    },
    Target {
        name: "metadata_roundtrip",
        run: metadata::run,
        tokens: metadata::TOKENS,
        json: true,
    },
    Target {
        name: "resp",
        run: resp::run,
        tokens: resp::TOKENS,
        json: false,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Mixes `v` into the shape `h`.
pub(crate) fn mix(h: Shape, v: u64) -> Shape {
    (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(29) ^ (v >> 7)
}

/// The empty shape, to [`mix`] into.
pub(crate) const SHAPE: Shape = 0xcbf2_9ce4_8422_2325;
