//! mnfuzz's harness: the op language, its byte codec and text format, the
//! deterministic scheduler and executor that run the core and the
//! reference model side by side, the divergence report, the minimizer and
//! the built-in engine.
//!
//! Fuzz targets are glue: each engine calls one `&[u8]` function in
//! [`targets`], which decodes its input itself.

#![deny(missing_docs)]

pub mod bench;
pub mod codec;
pub mod engine;
pub mod exec;
pub mod files;
pub mod minimize;
pub mod mirror_exec;
pub mod pin;
pub mod program;
pub mod report;
pub mod soak;
pub mod targets;
pub mod text;

pub use program::{Op, Program, ProgramConfig, Step, Target};
