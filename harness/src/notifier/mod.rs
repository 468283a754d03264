//! The `notifier` target: the notifier core against `ReferenceNotifier`.
//! Its ops are the interval and invalidation variants of
//! [`Op`](crate::program::Op).

pub mod codec;
pub mod exec;
pub mod text;
