//! The synchronization primitives of the core, from std or, under
//! `--cfg loom`, from loom, so that the loom models (`tests/loom.rs`)
//! explore every interleaving of the very code users run. Nothing else in
//! the crate names std's or loom's primitives directly.
//!
//! With the `shuttle` feature (and without `--cfg loom`), each `Mutex`,
//! `Condvar` and thread-local is std's *or* shuttle's, chosen when it is
//! created (thread-locals: when accessed) by whether the creating thread is
//! inside a [`ShuttleScope`]. Why a run-time choice and not a compile-time
//! one: cargo unifies features per build, and the fuzz package and the
//! `mnfuzz` binary build every target with one feature set, so the
//! `notifier` and `mirror` targets run on the same core as the `threads`
//! target; shuttle's primitives panic outside a shuttle execution. The
//! choice costs one well-predicted branch per lock and per atomic access.
//! The atomics must be shuttle's too: shuttle's scheduling point of an
//! unlock comes *before* the lock is released, so a load right after an
//! unlock (the gap of `notifier-read-begin-unlocked`) is reachable by
//! another task only if the load is a scheduling point itself. Without
//! the feature this module is the plain std re-export it always was.

#[cfg(loom)]
pub(crate) use loom::{
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
    sync::{Condvar, Mutex, MutexGuard},
};

#[cfg(all(not(loom), not(feature = "shuttle")))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(all(not(loom), not(feature = "shuttle")))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicU8};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::Ordering;

#[cfg(all(not(loom), feature = "shuttle"))]
pub(crate) use dispatch::{AtomicU64, AtomicU8, Condvar, DualKey, Mutex, MutexGuard};

#[cfg(feature = "shuttle")]
pub use dispatch::ShuttleScope;

/// Thread-locals with constant initializers: std's `const` form (no lazy
/// init on every access), or loom's, whose macro takes no `const` block.
#[cfg(all(not(loom), not(feature = "shuttle")))]
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

/// Under the `shuttle` feature each thread-local exists twice: a std one
/// for real threads and a shuttle one per shuttle task (shuttle's tasks
/// share one OS thread, so a std thread-local would leak one task's
/// callback scope into another).
#[cfg(all(not(loom), feature = "shuttle"))]
macro_rules! thread_local_const {
    ($(static $name:ident: $t:ty = $init:expr;)*) => {
        $(
            static $name: $crate::sync::DualKey<$t> = {
                std::thread_local! { static STD: $t = const { $init }; }
                shuttle::thread_local! { static SHUTTLE: $t = $init; }
                $crate::sync::DualKey { std: &STD, shuttle: &SHUTTLE }
            };
        )*
    };
}

pub(crate) use thread_local_const;

#[cfg(feature = "shuttle")]
mod dispatch {
    // Under `--cfg loom` the primitives are loom's, and only the scope is used.
    #![cfg_attr(loom, allow(dead_code))]
    use std::cell::Cell;
    use std::ops::{Deref, DerefMut};
    use std::sync::{LockResult, PoisonError};

    std::thread_local! {
        static IN_SHUTTLE: Cell<bool> = const { Cell::new(false) };
    }

        fn in_shuttle() -> bool {
        IN_SHUTTLE.with(|c| c.get())
    }

    /// While one lives, cores created on this OS thread use shuttle's
    /// primitives. Hold it around `shuttle::Runner::run` (whose tasks all
    /// run on the calling thread), and create and drop the cores inside
    /// the execution. Cores created outside keep std's primitives.
    #[derive(Debug)]
    pub struct ShuttleScope {
        prev: bool,
        // Tied to the OS thread whose flag it set.
        _not_send: std::marker::PhantomData<*const ()>,
    }

    impl ShuttleScope {
        /// Enters the scope on the current OS thread.
        pub fn enter() -> ShuttleScope {
            ShuttleScope {
                prev: IN_SHUTTLE.with(|c| c.replace(true)),
                _not_send: std::marker::PhantomData,
            }
        }
    }

    impl Drop for ShuttleScope {
        fn drop(&mut self) {
            IN_SHUTTLE.with(|c| c.set(self.prev));
        }
    }

    /// See the `shuttle` form of `thread_local_const!`.
        pub struct DualKey<T: 'static> {
        pub std: &'static std::thread::LocalKey<T>,
        pub shuttle: &'static shuttle::thread::LocalKey<T>,
    }

        impl<T: 'static> DualKey<T> {
        #[inline]
        pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
            if in_shuttle() {
                self.shuttle.with(f)
            } else {
                self.std.with(f)
            }
        }
    }

        pub enum Mutex<T> {
        Std(std::sync::Mutex<T>),
        Shuttle(shuttle::sync::Mutex<T>),
    }

        pub enum MutexGuard<'a, T> {
        Std(std::sync::MutexGuard<'a, T>),
        Shuttle(shuttle::sync::MutexGuard<'a, T>),
    }

    fn map<G, T>(r: LockResult<G>, f: impl Fn(G) -> T) -> LockResult<T> {
        match r {
            Ok(g) => Ok(f(g)),
            Err(e) => Err(PoisonError::new(f(e.into_inner()))),
        }
    }

        impl<T> Mutex<T> {
        pub fn new(v: T) -> Mutex<T> {
            if in_shuttle() {
                Mutex::Shuttle(shuttle::sync::Mutex::new(v))
            } else {
                Mutex::Std(std::sync::Mutex::new(v))
            }
        }

        #[inline]
        pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
            match self {
                Mutex::Std(m) => map(m.lock(), MutexGuard::Std),
                Mutex::Shuttle(m) => map(m.lock(), MutexGuard::Shuttle),
            }
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        #[inline]
        fn deref(&self) -> &T {
            match self {
                MutexGuard::Std(g) => g,
                MutexGuard::Shuttle(g) => g,
            }
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        #[inline]
        fn deref_mut(&mut self) -> &mut T {
            match self {
                MutexGuard::Std(g) => g,
                MutexGuard::Shuttle(g) => g,
            }
        }
    }

        macro_rules! atomic {
        ($name:ident, $t:ty) => {
            pub enum $name {
                Std(std::sync::atomic::$name),
                Shuttle(shuttle::sync::atomic::$name),
            }

            impl $name {
                pub fn new(v: $t) -> $name {
                    if in_shuttle() {
                        $name::Shuttle(shuttle::sync::atomic::$name::new(v))
                    } else {
                        $name::Std(std::sync::atomic::$name::new(v))
                    }
                }

                #[inline]
                pub fn load(&self, o: std::sync::atomic::Ordering) -> $t {
                    match self {
                        $name::Std(a) => a.load(o),
                        $name::Shuttle(a) => a.load(o),
                    }
                }

                #[inline]
                pub fn store(&self, v: $t, o: std::sync::atomic::Ordering) {
                    match self {
                        $name::Std(a) => a.store(v, o),
                        $name::Shuttle(a) => a.store(v, o),
                    }
                }
            }
        };
    }

    atomic!(AtomicU64, u64);
    atomic!(AtomicU8, u8);

    pub enum Condvar {
        Std(std::sync::Condvar),
        Shuttle(shuttle::sync::Condvar),
    }

        impl Condvar {
        pub fn new() -> Condvar {
            if in_shuttle() {
                Condvar::Shuttle(shuttle::sync::Condvar::new())
            } else {
                Condvar::Std(std::sync::Condvar::new())
            }
        }

        pub fn wait<'a, T>(&self, g: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
            match (self, g) {
                (Condvar::Std(c), MutexGuard::Std(g)) => map(c.wait(g), MutexGuard::Std),
                (Condvar::Shuttle(c), MutexGuard::Shuttle(g)) => {
                    map(c.wait(g), MutexGuard::Shuttle)
                }
                // A core's lock and condvar are created together, in the
                // same scope, so they always match.
                _ => unreachable!("a core's Mutex and Condvar come from one scope"),
            }
        }

        #[inline]
        pub fn notify_all(&self) {
            match self {
                Condvar::Std(c) => c.notify_all(),
                Condvar::Shuttle(c) => c.notify_all(),
            }
        }
    }
}
