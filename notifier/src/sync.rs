//! The synchronization primitives of the core, from std or, under
//! `--cfg loom`, from loom, so that the loom models (`tests/loom.rs`)
//! explore every interleaving of the very code users run. Nothing else in
//! the crate names std's or loom's primitives directly.

#[cfg(loom)]
pub(crate) use loom::{
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
    sync::{Condvar, Mutex, MutexGuard},
};

#[cfg(not(loom))]
pub(crate) use std::{
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
    sync::{Condvar, Mutex, MutexGuard},
};

/// Thread-locals with constant initializers: std's `const` form (no lazy
/// init on every access), or loom's, whose macro takes no `const` block.
#[cfg(not(loom))]
macro_rules! thread_local_const {
    ($(static $name:ident: $t:ty = $init:expr;)*) => {
        std::thread_local! { $(static $name: $t = const { $init };)* }
    };
}

#[cfg(loom)]
macro_rules! thread_local_const {
    ($(static $name:ident: $t:ty = $init:expr;)*) => {
        loom::thread_local! { $(static $name: $t = $init;)* }
    };
}

pub(crate) use thread_local_const;
