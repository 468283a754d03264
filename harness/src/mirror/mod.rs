//! The `mirror` target: address spaces and device mirrors, checked by the
//! stale-PTE, coherence and liveness oracles. Its ops are
//! [`Op::Mm`](crate::program::Op::Mm), [`Op::Dev`](crate::program::Op::Dev)
//! and [`Op::Expect`](crate::program::Op::Expect), with the step types in
//! [`ops`].

pub mod codec;
pub mod exec;
pub mod ops;
pub mod text;
