//! Events and invalidation ranges.

use std::fmt;

/// Why an invalidation happens; mirrors the kernel's `enum mmu_notifier_event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// The range is unmapped: munmap, mremap moving it away, exit.
    Unmap,
    /// PTEs are cleared: madvise, COW break, reclaim, migration, THP split or collapse, KSM.
    Clear,
    /// mprotect of the range.
    ProtectionVma,
    /// Per-page write-protect: fork of a private mapping, writeback clean.
    ProtectionPage,
    /// Soft-dirty reset; same pages, same access.
    SoftDirty,
    /// The address space is exiting. Only intervals see it, through `release`.
    Release,
    /// Device migration; carries the owner so that a driver can skip its own.
    Migrate,
    /// Conversion to device-exclusive entries; carries the owner.
    Exclusive,
}

impl Event {
    /// Every event, in declaration order.
    pub const ALL: [Event; 8] = [
        Event::Unmap,
        Event::Clear,
        Event::ProtectionVma,
        Event::ProtectionPage,
        Event::SoftDirty,
        Event::Release,
        Event::Migrate,
        Event::Exclusive,
    ];

    /// The short lower-case name used in `.ops` files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Event::Unmap => "unmap",
            Event::Clear => "clear",
            Event::ProtectionVma => "protection_vma",
            Event::ProtectionPage => "protection_page",
            Event::SoftDirty => "soft_dirty",
            Event::Release => "release",
            Event::Migrate => "migrate",
            Event::Exclusive => "exclusive",
        }
    }

    /// Parses a name produced by [`Event::name`].
    pub fn from_name(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == s)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies the device (driver instance) that caused a `Migrate` or `Exclusive` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(pub u64);

/// A range handed to invalidation: `[start, end)` with an exclusive `end`.
///
/// Intervals use an inclusive `last`; a range and an interval overlap when
/// `range.start <= interval.last && interval.start <= range.end - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Range {
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte of the range.
    pub end: u64,
    /// Why the range is invalidated.
    pub event: Event,
    /// Whether callbacks may sleep. False only on the OOM reaper's path.
    pub blockable: bool,
    /// The device that caused the event, for `Migrate` and `Exclusive`.
    pub owner: Option<Owner>,
}

impl Range {
    /// A blockable range with no owner. The core rejects `start >= end` when it is used.
    pub fn new(start: u64, end: u64, event: Event) -> Range {
        Range {
            start,
            end,
            event,
            blockable: true,
            owner: None,
        }
    }

    /// The same range, marked non-blockable.
    pub fn non_blockable(mut self) -> Range {
        self.blockable = false;
        self
    }

    /// The same range, carrying `owner`.
    pub fn with_owner(mut self, owner: Owner) -> Range {
        self.owner = Some(owner);
        self
    }

    /// The inclusive last byte. Only meaningful for a non-empty range.
    pub fn last(&self) -> u64 {
        self.end - 1
    }

    /// Whether the range overlaps the inclusive interval `[start, last]`.
    pub fn overlaps(&self, start: u64, last: u64) -> bool {
        self.start < self.end && self.start <= last && start < self.end
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:#x}..{:#x}", self.event, self.start, self.end)?;
        if !self.blockable {
            f.write_str(" nonblock")?;
        }
        if let Some(Owner(o)) = self.owner {
            write!(f, " owner={o}")?;
        }
        Ok(())
    }
}
