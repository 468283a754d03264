//! The synchronization primitives of the core, from std or, under
//! `--cfg loom`, from loom, so that the loom models (`tests/loom.rs`)
//! explore every interleaving of the very code users run. Nothing else in
//! the crate names std's or loom's primitives directly.

#[cfg(loom)]
pub(crate) use loom::{
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
    sync::{Condvar, Mutex, MutexGuard},
    thread_local,
};

#[cfg(not(loom))]
pub(crate) use std::{
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
    sync::{Condvar, Mutex, MutexGuard},
    thread_local,
};
