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
//! choice costs one well-predicted branch per lock and per atomic access
//! (shuttle's primitives are boxed, so that the std variants keep their
//! size and a core moves no more bytes than before).
//! The atomics must be shuttle's too: shuttle's scheduling point of an
//! unlock comes *before* the lock is released, so a load right after an
//! unlock (the gap of `notifier-read-begin-unlocked`) is reachable by
//! another task only if the load is a scheduling point itself. Without
//! the feature this module is the plain std re-export it always was.
//!
//! `Mutex`, `MutexGuard` and `Condvar` are public, so that a driver built
//! on the core (the device mirror) takes its own locks from the same place
//! and a shuttle execution controls them too; only `new`, `lock`, `wait`
//! and `notify_all` are common to every variant.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicU8, Ordering};
#[cfg(loom)]
pub use loom::sync::{Condvar, Mutex, MutexGuard};

#[cfg(all(not(loom), not(feature = "shuttle")))]
pub use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(all(not(loom), not(feature = "shuttle")))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicU8};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::Ordering;

#[cfg(all(not(loom), feature = "shuttle"))]
pub(crate) use dispatch::{AtomicU64, AtomicU8, DualKey};
#[cfg(all(not(loom), feature = "shuttle"))]
pub use dispatch::{Condvar, Mutex, MutexGuard};

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
    //! Each std path is inlined as std's own is; each shuttle path is a
    //! cold call, so that the std build's code stays as it was but for one
    //! branch.
    use std::cell::Cell;
    use std::mem::ManuallyDrop;
    use std::ops::{Deref, DerefMut};
    use std::ptr::NonNull;
    use std::sync::{LockResult, PoisonError};

    std::thread_local! {
        static IN_SHUTTLE: Cell<bool> = const { Cell::new(false) };
    }

    #[inline]
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

    fn map<G, T>(r: LockResult<G>, f: impl FnOnce(G) -> T) -> LockResult<T> {
        match r {
            Ok(g) => Ok(f(g)),
            Err(e) => Err(PoisonError::new(f(e.into_inner()))),
        }
    }

    /// A mutex: std's, or shuttle's inside a [`ShuttleScope`].
    pub enum Mutex<T> {
        /// Created outside a scope.
        Std(std::sync::Mutex<T>),
        /// Created inside a scope.
        Shuttle(Box<shuttle::sync::Mutex<T>>),
    }

    enum Guard<'a, T> {
        Std(std::sync::MutexGuard<'a, T>),
        Shuttle(shuttle::sync::MutexGuard<'a, T>),
    }

    /// A held lock of either kind. It keeps a pointer to the data so that
    /// every access is a plain dereference, not a match on the kind.
    pub struct MutexGuard<'a, T> {
        // Into the mutex's data, valid while `inner` holds the lock (the
        // data does not move when the guard does).
        data: NonNull<T>,
        inner: ManuallyDrop<Guard<'a, T>>,
    }

    impl<'a, T> MutexGuard<'a, T> {
        #[inline]
        fn new(mut inner: Guard<'a, T>) -> MutexGuard<'a, T> {
            let data = NonNull::from(match &mut inner {
                Guard::Std(g) => &mut **g,
                Guard::Shuttle(g) => &mut **g,
            });
            MutexGuard {
                data,
                inner: ManuallyDrop::new(inner),
            }
        }

        #[inline]
        fn into_inner(self) -> Guard<'a, T> {
            let mut me = ManuallyDrop::new(self);
            // SAFETY: `me` is never dropped, so `inner` is taken once.
            unsafe { ManuallyDrop::take(&mut me.inner) }
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            // SAFETY: the guard is dropped once, and `inner` with it.
            match unsafe { ManuallyDrop::take(&mut self.inner) } {
                Guard::Std(g) => drop(g),
                Guard::Shuttle(g) => unlock_shuttle(g),
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn unlock_shuttle<T>(g: shuttle::sync::MutexGuard<'_, T>) {
        drop(g)
    }

    #[cold]
    #[inline(never)]
    fn lock_shuttle<T>(m: &shuttle::sync::Mutex<T>) -> LockResult<MutexGuard<'_, T>> {
        map(m.lock(), |g| MutexGuard::new(Guard::Shuttle(g)))
    }

    impl<T> Mutex<T> {
        /// A mutex of the kind the current thread's scope chooses.
        #[inline]
        pub fn new(v: T) -> Mutex<T> {
            if in_shuttle() {
                Mutex::Shuttle(Box::new(shuttle::sync::Mutex::new(v)))
            } else {
                Mutex::Std(std::sync::Mutex::new(v))
            }
        }

        /// Locks it, blocking (shuttle: a scheduling point).
        #[inline]
        pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
            match self {
                Mutex::Std(m) => map(m.lock(), |g| MutexGuard::new(Guard::Std(g))),
                Mutex::Shuttle(m) => lock_shuttle(m),
            }
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        #[inline]
        fn deref(&self) -> &T {
            // SAFETY: `data` points into the locked mutex, which `inner`
            // holds for as long as `self` lives.
            unsafe { self.data.as_ref() }
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        #[inline]
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: as in `deref`; `&mut self` makes the access exclusive.
            unsafe { self.data.as_mut() }
        }
    }

    macro_rules! atomic {
        ($name:ident, $t:ty) => {
            pub enum $name {
                Std(std::sync::atomic::$name),
                Shuttle(Box<shuttle::sync::atomic::$name>),
            }

            impl $name {
                #[inline]
                pub fn new(v: $t) -> $name {
                    if in_shuttle() {
                        $name::Shuttle(Box::new(shuttle::sync::atomic::$name::new(v)))
                    } else {
                        $name::Std(std::sync::atomic::$name::new(v))
                    }
                }

                #[inline]
                pub fn load(&self, o: std::sync::atomic::Ordering) -> $t {
                    #[cold]
                    #[inline(never)]
                    fn slow(
                        a: &shuttle::sync::atomic::$name,
                        o: std::sync::atomic::Ordering,
                    ) -> $t {
                        a.load(o)
                    }
                    match self {
                        $name::Std(a) => a.load(o),
                        $name::Shuttle(a) => slow(a, o),
                    }
                }

                #[inline]
                pub fn store(&self, v: $t, o: std::sync::atomic::Ordering) {
                    #[cold]
                    #[inline(never)]
                    fn slow(
                        a: &shuttle::sync::atomic::$name,
                        v: $t,
                        o: std::sync::atomic::Ordering,
                    ) {
                        a.store(v, o)
                    }
                    match self {
                        $name::Std(a) => a.store(v, o),
                        $name::Shuttle(a) => slow(a, v, o),
                    }
                }
            }
        };
    }

    atomic!(AtomicU64, u64);
    atomic!(AtomicU8, u8);

    /// A condition variable: std's, or shuttle's inside a [`ShuttleScope`].
    pub enum Condvar {
        /// Created outside a scope.
        Std(std::sync::Condvar),
        /// Created inside a scope.
        Shuttle(Box<shuttle::sync::Condvar>),
    }

    #[cold]
    #[inline(never)]
    fn wait_shuttle<'a, T>(
        c: &shuttle::sync::Condvar,
        g: shuttle::sync::MutexGuard<'a, T>,
    ) -> LockResult<MutexGuard<'a, T>> {
        map(c.wait(g), |g| MutexGuard::new(Guard::Shuttle(g)))
    }

    #[cold]
    #[inline(never)]
    fn notify_shuttle(c: &shuttle::sync::Condvar, all: bool) {
        if all {
            c.notify_all()
        } else {
            c.notify_one()
        }
    }

    impl Default for Condvar {
        fn default() -> Condvar {
            Condvar::new()
        }
    }

    impl Condvar {
        /// A condition variable of the kind the current scope chooses.
        #[inline]
        pub fn new() -> Condvar {
            if in_shuttle() {
                Condvar::Shuttle(Box::new(shuttle::sync::Condvar::new()))
            } else {
                Condvar::Std(std::sync::Condvar::new())
            }
        }

        /// Waits for a notification, releasing `g` meanwhile. `g` must be
        /// of a mutex created in the same scope as the condvar.
        pub fn wait<'a, T>(&self, g: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
            match (self, g.into_inner()) {
                (Condvar::Std(c), Guard::Std(g)) => {
                    map(c.wait(g), |g| MutexGuard::new(Guard::Std(g)))
                }
                (Condvar::Shuttle(c), Guard::Shuttle(g)) => wait_shuttle(c, g),
                // A core's lock and condvar are created together, in the
                // same scope, so they always match.
                _ => unreachable!("a core's Mutex and Condvar come from one scope"),
            }
        }

        /// Wakes every waiter.
        #[inline]
        pub fn notify_all(&self) {
            match self {
                Condvar::Std(c) => c.notify_all(),
                Condvar::Shuttle(c) => notify_shuttle(c, true),
            }
        }

        /// Wakes one waiter.
        #[inline]
        pub fn notify_one(&self) {
            match self {
                Condvar::Std(c) => c.notify_one(),
                Condvar::Shuttle(c) => notify_shuttle(c, false),
            }
        }
    }
}
