//! A Rust implementation of the Linux kernel's mmu interval notifier scheme:
//! the machinery that lets a device (a GPU, an RDMA NIC, a registration
//! cache) keep its own page tables coherent with a CPU address space.
//!
//! # The protocol
//!
//! A driver subscribes to an **interval** `[start, last]` (inclusive `last`)
//! with [`Subscriptions::insert`]. When the address space changes, the mm
//! brackets the change with [`Subscriptions::invalidate_range_start`] and
//! [`Subscriptions::invalidate_range_end`] over a **range** `[start, end)`
//! (exclusive `end`) that carries an [`Event`], a blockable flag and an
//! optional [`Owner`]. CPU PTEs change only between the two.
//!
//! Device faults run the other way. A fault calls
//! [`Subscriptions::read_begin`] on the interval that covers it, samples the
//! CPU page table without holding any driver lock, then takes the driver
//! lock and asks [`Interval::read_retry`]: true means an invalidation
//! collided with the fault, so the fault drops what it found and starts
//! again; false means the sample is still valid and the device PTEs may be
//! installed before the driver lock is dropped.
//!
//! The two sides meet through sequence numbers:
//!
//! * The core keeps one **global seq** and a count of running
//!   invalidations. Even with none running: idle. Even with some running:
//!   none of them hit an interval, and the tree may still change. Odd: at
//!   least one running invalidation hit an interval. The tree is then frozen,
//!   and inserts and removals wait on a **deferred list**.
//! * A start that hits an interval makes the global seq odd, and each hit
//!   interval's callback stores that odd value in the interval's own seq
//!   with [`Interval::set_seq`], under the driver lock. The last end of the
//!   cycle makes the seq even again, applies the deferred list in order,
//!   and wakes everyone waiting.
//! * `read_begin` returns the interval's seq. If it equals the global seq,
//!   the interval was hit in the current cycle, so `read_begin` first waits
//!   for the cycle to end. `read_retry` is a plain comparison of the
//!   interval's seq with that value. It is exact because both the callback
//!   and the check run under the driver lock.
//! * An interval inserted while invalidations run gets the current seq (and
//!   makes it odd if it was even), so that its first `read_begin` waits: a
//!   running invalidation may cover it without having called it.
//!   [`Subscriptions::remove`] during a cycle waits for that cycle's end, so
//!   that no callback runs after it returns.
//!
//! Blocking calls also come in a **split-phase** form (prepare, is-ready,
//! finish), which lets a single-threaded harness interleave logical
//! threads deterministically. The blocking form is prepare plus a wait on
//! a condition variable, and everything here is `Send + Sync`.
//!
//! **Non-blockable** invalidations (the OOM reaper's path) may be refused
//! by a callback that would have to sleep. The core then undoes its own
//! part and returns [`InvalidateError::WouldBlock`]. Classic subscribers
//! ([`ClassicOps`]) see every invalidation after the intervals. When one of
//! them refuses, the ones already started get their end, and the interval
//! part is rolled back as well.
//!
//! An interval's ops may be **two-pass** ([`IntervalOps::invalidate_start`]):
//! the first pass does what the callback does but may return a [`Finish`]
//! (wait for a device TLB flush it issued); the core runs every finish
//! after walking all overlapping intervals, before the start returns, and
//! also when a non-blockable start is refused. [`Subscriptions::release`] gives the
//! intervals exactly one [`Event::Release`] invalidation of the whole
//! address space, and then releases the classic subscribers.

#![deny(missing_docs)]

pub mod cost;
mod error;
pub mod itree;
pub mod planted;
mod range;
mod subscriptions;
pub mod sync;

pub use error::{Culprit, Error, InvalidateError};
pub use planted::{Component, PlantedBug};
pub use range::{Event, Owner, Range};
pub use subscriptions::{
    in_callback, ClassicId, ClassicOps, Config, Deferred, Finish, Interval, IntervalId,
    IntervalOps, Invalidation, Phase, ReadBegin, RemoveWait, SeqWait, Snapshot, Start,
    Subscriptions,
};
#[cfg(feature = "shuttle")]
pub use sync::ShuttleScope;

/// The page size of the simulated machine.
pub const PAGE_SIZE: u64 = 4096;

#[cfg(test)]
mod tests;
