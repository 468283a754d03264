//! mnfuzz's harness: the op language, its byte codec and text format, the
//! deterministic scheduler and executor that run the core and the
//! reference model side by side, the divergence report, the minimizer and
//! the built-in engine.
//!
//! Fuzz targets are glue: each engine calls one `&[u8]` function in
//! [`targets`], which decodes its input itself.
//!
//! Each target has a folder ([`notifier`], [`mirror`]) with its part of
//! the byte codec and of the text format, and its executor (the mirror
//! target also its step types); the engine, minimizer, report, files, the
//! op enum ([`program`]) and the shared halves of the codec (config,
//! addresses, encode/decode) and of the text format (the line reader,
//! config, schedule) stay at the top.

#![deny(missing_docs)]

pub mod bench;
pub mod cli;
pub mod codec;
pub mod cost;
pub mod engine;
pub mod files;
pub mod linux;
pub mod minimize;
pub mod mirror;
pub mod notifier;
pub mod outcome;
pub mod pin;
pub mod program;
pub mod reach;
pub mod report;
pub mod soak;
pub mod targets;
pub mod text;
pub mod threads;

/// Running a program of any target: the shared result types and the
/// dispatch to the target's executor.
pub mod exec {
    pub use crate::outcome::{Divergence, DivergenceKind, ExecStats, Outcome, RunOptions, Turn};
    pub use crate::targets::run;
}

pub use program::{Op, Program, ProgramConfig, Step, Target};
