//! The `threads` target: the notifier core's blocking API on shuttle
//! tasks, one per logical thread, interleaved by a schedule the input
//! seeds (DESIGN.md §7). Its ops are the notifier target's, so it shares
//! that target's byte codec and text format; its config adds `schedule`.

pub mod exec;
pub(crate) mod mirror;
pub mod sched;
