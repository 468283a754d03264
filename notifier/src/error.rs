//! Typed errors for misuse of the notifier API.

use std::fmt;

use crate::{ClassicId, IntervalId};

/// Misuse of the notifier API. None of these change any state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `insert` with a zero length.
    ZeroLength,
    /// `start + length - 1` overflows, or the interval reaches past the address space.
    Overflow {
        /// Requested start.
        start: u64,
        /// Requested length.
        length: u64,
    },
    /// An invalidation range with `start >= end`, or reaching past the address space.
    BadRange {
        /// Range start.
        start: u64,
        /// Range end (exclusive).
        end: u64,
    },
    /// The interval is not registered: already removed, being removed, or never inserted here.
    NotRegistered(IntervalId),
    /// The classic subscriber is not registered.
    UnknownClassic(ClassicId),
    /// `insert` or `register` after `release`.
    Released,
    /// A second `release`.
    AlreadyReleased,
    /// A call that may block, made from inside an invalidate callback.
    InCallback,
    /// `set_seq` called other than from the interval's own invalidate callback.
    SetSeqOutsideCallback(IntervalId),
    /// The initial sequence number must be even.
    OddInitialSeq(u64),
    /// The address space must hold at least one page.
    TaskSizeTooSmall(u64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroLength => f.write_str("interval length is zero"),
            Error::Overflow { start, length } => write!(
                f,
                "interval {start:#x}+{length:#x} overflows the address space"
            ),
            Error::BadRange { start, end } => {
                write!(f, "invalid invalidation range {start:#x}..{end:#x}")
            }
            Error::NotRegistered(id) => write!(f, "interval {id} is not registered"),
            Error::UnknownClassic(id) => write!(f, "classic subscriber {id} is not registered"),
            Error::Released => f.write_str("the address space has been released"),
            Error::AlreadyReleased => f.write_str("release called twice"),
            Error::InCallback => f.write_str("blocking call made from an invalidate callback"),
            Error::SetSeqOutsideCallback(id) => {
                write!(
                    f,
                    "set_seq on interval {id} outside its invalidate callback"
                )
            }
            Error::OddInitialSeq(s) => write!(f, "initial sequence {s:#x} is odd"),
            Error::TaskSizeTooSmall(t) => write!(f, "task_size {t:#x} is below one page"),
        }
    }
}

impl std::error::Error for Error {}

/// Who refused an invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Culprit {
    /// An interval's invalidate callback returned false.
    Interval(IntervalId),
    /// A classic subscriber's `invalidate_range_start` returned false.
    Classic(ClassicId),
}

impl fmt::Display for Culprit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Culprit::Interval(id) => write!(f, "interval {id}"),
            Culprit::Classic(id) => write!(f, "classic {id}"),
        }
    }
}

/// Why `invalidate_range_start` did not return an [`crate::Invalidation`].
///
/// In every case the core has already undone its own part: the caller must
/// not call `invalidate_range_end` and must not change PTEs in the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidateError {
    /// A callback could not proceed without sleeping in a non-blockable range.
    WouldBlock(Culprit),
    /// A callback refused a blockable range: a contract violation by that callback.
    ContractViolation(Culprit),
    /// The range itself is invalid.
    Bad(Error),
}

impl fmt::Display for InvalidateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidateError::WouldBlock(c) => write!(f, "would block ({c})"),
            InvalidateError::ContractViolation(c) => {
                write!(f, "{c} refused a blockable invalidation")
            }
            InvalidateError::Bad(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for InvalidateError {}
