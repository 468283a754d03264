//! The `threads` target: the notifier core's blocking API on shuttle
//! tasks, one per logical thread, interleaved by a schedule the input
//! seeds (DESIGN.md §7). Its ops are the notifier target's, so it shares
//! that target's byte codec and text format; its config adds `schedule`.
//! A program with devices is in the mirror form (`threads::mirror`): mirror ops,
//! device faults and mm ops on the threads. Both forms also run on real
//! OS threads under a watchdog ([`exec::set_os_threads`]).

pub mod exec;
pub(crate) mod mirror;
pub mod sched;
