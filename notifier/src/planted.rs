//! Deliberate bugs. Their names always exist; their behaviour is compiled
//! only with the `planted-bugs` feature, and chosen at run time through
//! `Config::planted`. They exist to prove that
//! the differential test and the fuzzers find these classes of failure.

/// One deliberate bug in the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// `release` runs the interval release invalidation twice when classic
    /// subscribers exist (the duplicated call spotted in the 2019 review).
    ReleaseTwice,
    /// An interval inserted during an active invalidation gets an even seq.
    InsertEvenSeq,
    /// An insert made while active but even skips making the global seq odd.
    InsertNoMakeOdd,
    /// `remove` of an interval queued for deferred removal returns at once.
    RemoveEarly,
    /// A failed classic start leaves the interval part active (the kernel's hang).
    ClassicFailHangs,
    /// The interval's inclusive `last` is compared as if exclusive, so a range
    /// that starts on an interval's last byte misses it.
    LastPageMissed,
    /// mm: mprotect changes protections without an invalidation.
    MprotectNoInvalidate,
    /// mm: fork write-protects the parent's private pages without an invalidation.
    ForkNoInvalidate,
    /// mirror: the callback skips `set_seq` for one event (soft-dirty).
    MirrorSkipSetSeq,
    /// mirror: the fault checks read_retry before it takes the driver lock.
    ReadRetryUnlocked,
    /// mirror: the own-migration skip checks that an owner is set, not that it is its own.
    OwnerSkipWrong,
    /// mirror, implicit ODP: the deferred destroy does not re-check that its
    /// chunk is still the live, unused, empty one, so a chunk queued twice
    /// is destroyed twice.
    OdpDestroyTwice,
    /// mirror, VMA tracking: a fault takes an interval that is already on
    /// the deferred-update list (the 2020 nouveau proposal).
    VmaDeferredInterval,
    /// mirror, registration cache: the callback does not wait for in-flight
    /// device accesses.
    RegcacheNoWait,
    /// mirror: an invalidation that starts inside a huge device mapping
    /// does not split it.
    HugeNotSplit,
    /// mirror, VMA tracking: the commit trusts read_retry alone and does
    /// not check that the interval is still one the driver uses, so a fault
    /// commits under an interval its deferred work removed meanwhile (the
    /// class of "drm/amdkfd: handle VMA remove race"; first seen as a false
    /// alarm of the clean code, issue 21).
    VmaCommitUnchecked,
    /// mirror, shared callback: an invalidation leaves the device PTEs in
    /// place and the next fault of the device tears them down, so the
    /// device keeps its mappings after the notifier returned (modelled on
    /// "drm/xe/userptr: Unmap userptrs in the mmu notifier").
    UnmapDeferred,
    /// mm, device migration: each VMA's pages are walked from the VMA's own
    /// start instead of the requested range's, so pages before the range
    /// are migrated under an invalidation that does not cover them
    /// (modelled on "drm/nouveau/svm: fix vma range check for migration").
    MigrateUnclamped,
    /// A start refused by an interval (non-blockable, or a contract
    /// violation) drops the finishes of the two-pass intervals it already
    /// called, so their teardown (a
    /// device TLB flush) never completes (DESIGN §2, the refusal rule of
    /// "allow two-pass struct mmu_interval_notifiers").
    FinishSkippedOnRefusal,
    /// The last end of a cycle makes the seq even and wakes the waiters,
    /// then drops the core lock and takes it again to apply the deferred
    /// list: a `remove` that waited returns while its interval is still in
    /// the tree, and a cycle starting in between calls it (the race of
    /// "mm/mmu_notifier.c: fix race in mmu_interval_notifier_remove()",
    /// where remove returned while the end still walked the deferred list).
    /// Real threads only.
    EndDeferredLate,
    /// The last end of a cycle wakes the waiters before it makes the seq
    /// even, in a critical section of its own: they see the old seq, sleep
    /// again, and are never woken (a lost wake-up). Real threads only.
    WakeBeforeSeq,
    /// `read_begin` reads the global seq under the core lock, drops it,
    /// then loads the interval's seq with a relaxed load: a cycle that
    /// starts in between has set the interval's seq to the odd global one,
    /// which no longer matches, so the read does not wait and its
    /// `read_retry` stays false across the collision. Real threads only.
    ReadBeginUnlocked,
    /// mirror, GPU SVM: a fault maps the CPU's huge page with one device
    /// entry whatever its range covers, so the device entry reaches pages
    /// of other ranges, even of other notifiers' windows, whose
    /// invalidations never reach it (modelled on "drm/gpusvm: fix
    /// hmm_pfn_to_map_order() usage", which clips the order to the range).
    GpuSvmOrderNotClipped,
    /// mirror, GPU SVM: the callback leaves the bindings of a partially
    /// unmapped range outside the unmapped part, and the garbage collector
    /// drops the range without unbinding it, so its device PTEs outlive
    /// the range and, once its notifier goes, every invalidation (modelled
    /// on "drm/xe: Add unbind to SVM garbage collector").
    GpuSvmRangeNotUnbound,
    /// mirror, AMD KFD SVM: the deferred-list work goes on with an address
    /// space that has exited meanwhile (it waited for the mmap lock while
    /// the process tore it down), and re-inserts intervals into a released
    /// notifier (modelled on "drm/amdkfd: Ensure mm remain valid in svm
    /// deferred_list work").
    KfdWorkAfterExit,
    /// mirror, AMD KFD SVM: a device fault does not skip a range that is
    /// still pending on the deferred list (a split parent, or a child to be
    /// added or unmapped), so it maps pages under an interval the deferred
    /// work is about to remove or shrink (modelled on the amdkfd fix that
    /// made svm_range_restore_pages skip ranges pending on the deferred
    /// list or children, the svm_range_skip_recover check).
    KfdFaultOnPendingRange,
    /// mirror, device TLB with two-pass flushes: in a non-blockable range
    /// (the OOM reaper's) the first pass zaps the PTEs but drops its finish,
    /// so as not to wait for the flush there; the device keeps translating
    /// the reaped pages (the teardown that outlives the invalidation of
    /// "drm/xe/userptr: Unmap userptrs in the mmu notifier", on the TLB).
    TlbFinishSkippedNonblock,
    /// mirror, device TLB: a flush drops the cached translations whose page
    /// lies in the range, missing a 2 MiB entry that starts before it (the
    /// class of "riscv: Improve flush_tlb_range() for hugetlb pages", whose
    /// stride must be the size of the entries flushed).
    TlbFlushMissesHuge,
    /// mirror, device TLB: the fault loads the walked translation into the
    /// device TLB before it checks read_retry, so after a collision the
    /// retry leaves a translation that the invalidation's flush already
    /// passed (pages used without a validated seq, the class of
    /// "drm/xe/hmm: Don't dereference struct page pointers without notifier
    /// lock").
    TlbFillBeforeRecheck,
    /// The tree's fix-up walk after an insert or a removal keeps its path
    /// in a stack of a fixed depth and stops when it is full, so in a tree
    /// taller than that the nodes near the root keep a stale `max_last`
    /// and an overlap query skips the subtree that holds a long interval
    /// (the rule the kernel's augmented rbtree keeps with its `propagate`
    /// callback: every ancestor of a changed node is refreshed, up to the
    /// root or to the first one whose value did not change). Needs a big
    /// tree: a path longer than the stack, over 87 live intervals.
    DeepFixupStale,
    /// mirror, device TLB with two-pass flushes: the finish pass skips
    /// its flush for a migration range that carries any owner, as the
    /// own-migration filter of the first pass does for the device's own
    /// ones, so another device's migration leaves this device's TLB
    /// translating the page that moved (the owner filter of nouveau and
    /// amdgpu, `range->owner == self`, applied half in the deferred flush).
    /// Needs a combination of configuration choices: a two-pass device and
    /// a migration that reaches its mapped pages, from another device or
    /// its own where its strategy tears down more than the event's pages
    /// (GPU SVM unbinds whole ranges).
    TlbFinishSkipsMigrate,
    /// `remove` of an interval that the running cycle defers waits for the
    /// next invalidate_range_end instead of the cycle's end (a per-range
    /// count, as the pre-2019 hmm range tracking had, instead of the
    /// collision-retry seq of "mm/mmu_notifier: add an interval tree
    /// notifier"): when a second invalidation joined the cycle, remove
    /// returns while its interval is still in the tree, and a third thread's
    /// start calls it. Needs three interleaved threads.
    RemoveWaitsOneEnd,
    /// `set_seq` skips the store when the interval's last one was for the
    /// cycle just before (a de-duplication that takes "invalidated in the
    /// previous cycle" for "invalidated in this one"), so a reader that
    /// began between the two cycles passes `read_retry` across the second
    /// (the rule of mmu_interval_set_seq: every callback stores `cur_seq`).
    /// Needs a sequence of six specific ops: insert, a whole cycle over the
    /// interval, read_begin, a second cycle over it, read_retry.
    SetSeqDedup,
    /// mirror, VMA tracking: a tracked VMA that collects more unmapped
    /// holes than its list holds before its deferred update runs falls
    /// back to dropping its whole interval, but leaves the device PTEs
    /// outside the holes in place, which no interval covers once the
    /// update ran (a bounded list whose overflow path forgets the
    /// teardown, the class of "drm/xe/userptr: Unmap userptrs in the mmu
    /// notifier"). Needs many VMA pieces: five unmaps inside one tracked
    /// VMA before its work runs.
    VmaHolesOverflow,
    /// The last end of a cycle wakes one waiter (`notify_one`, the
    /// kernel's `wake_up` where `wake_up_all` is needed): with two threads
    /// asleep on the cycle, a read_begin and a remove, the other one never
    /// wakes. Real threads only, and three of them: two sleepers and the
    /// end.
    WakeOne,
    /// mirror: the commit step drops the driver lock after a false
    /// read_retry and takes it again before it goes on to install, so a
    /// callback that sleeps on the lock runs in between: it bumps the seq
    /// and zaps, its invalidation changes the CPU PTEs, and the fault then
    /// installs the translation it walked before. The rule it breaks is
    /// the one Documentation/mm/hmm.rst states for every fault path (and
    /// that `dmirror_range_fault` in lib/test_hmm.c and
    /// `nouveau_range_fault` keep): the driver's update lock is held from
    /// `mmu_interval_read_retry()` to the end of the device page table
    /// update. Real threads only: a split-phase target runs the commit
    /// step as one atomic unit.
    CommitRelock,
}

/// Which crate carries a planted bug; a target finds the bugs of the crates it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    /// The notifier core.
    Notifier,
    /// The simulated address space.
    Mm,
    /// The device mirror.
    Mirror,
}

impl PlantedBug {
    /// Every planted bug that a split-phase target can find (the fuzz
    /// targets and the hunt run these; see also [`PlantedBug::CONCURRENT`]).
    pub const ALL: [PlantedBug; 31] = [
        PlantedBug::ReleaseTwice,
        PlantedBug::InsertEvenSeq,
        PlantedBug::InsertNoMakeOdd,
        PlantedBug::RemoveEarly,
        PlantedBug::ClassicFailHangs,
        PlantedBug::LastPageMissed,
        PlantedBug::MprotectNoInvalidate,
        PlantedBug::ForkNoInvalidate,
        PlantedBug::MirrorSkipSetSeq,
        PlantedBug::ReadRetryUnlocked,
        PlantedBug::OwnerSkipWrong,
        PlantedBug::OdpDestroyTwice,
        PlantedBug::VmaDeferredInterval,
        PlantedBug::RegcacheNoWait,
        PlantedBug::HugeNotSplit,
        PlantedBug::VmaCommitUnchecked,
        PlantedBug::UnmapDeferred,
        PlantedBug::MigrateUnclamped,
        PlantedBug::FinishSkippedOnRefusal,
        PlantedBug::GpuSvmOrderNotClipped,
        PlantedBug::GpuSvmRangeNotUnbound,
        PlantedBug::KfdWorkAfterExit,
        PlantedBug::KfdFaultOnPendingRange,
        PlantedBug::TlbFinishSkippedNonblock,
        PlantedBug::TlbFlushMissesHuge,
        PlantedBug::TlbFillBeforeRecheck,
        PlantedBug::DeepFixupStale,
        PlantedBug::TlbFinishSkipsMigrate,
        PlantedBug::RemoveWaitsOneEnd,
        PlantedBug::SetSeqDedup,
        PlantedBug::VmaHolesOverflow,
    ];

    /// The planted bugs of [`PlantedBug::ALL`] that need a rare state (a
    /// tree of over 87 intervals, five holes in one tracked VMA): the
    /// built-in engine needs up to several hundred thousand executions,
    /// more than the debug-build tests give every other bug, so a
    /// release-build test hunts them (`every_deep_planted_bug_is_found_…`
    /// in `harness/tests/differential.rs`).
    pub const DEEP: [PlantedBug; 2] = [PlantedBug::DeepFixupStale, PlantedBug::VmaHolesOverflow];

    /// The planted bugs that only real concurrency exposes: each lives
    /// between two critical sections of one step of the core, which a
    /// split-phase target runs as one atomic unit. The loom models
    /// (`notifier/tests/loom.rs`) find the core's; the `threads` target
    /// finds them all (the mirror's in its mirror form);
    /// [`PlantedBug::ALL`] does not list them, because no split-phase
    /// target can.
    pub const CONCURRENT: [PlantedBug; 5] = [
        PlantedBug::EndDeferredLate,
        PlantedBug::WakeBeforeSeq,
        PlantedBug::ReadBeginUnlocked,
        PlantedBug::WakeOne,
        PlantedBug::CommitRelock,
    ];

    /// The crate the bug lives in.
    pub fn component(self) -> Component {
        match self {
            PlantedBug::MprotectNoInvalidate
            | PlantedBug::ForkNoInvalidate
            | PlantedBug::MigrateUnclamped => Component::Mm,
            PlantedBug::MirrorSkipSetSeq
            | PlantedBug::ReadRetryUnlocked
            | PlantedBug::OwnerSkipWrong
            | PlantedBug::OdpDestroyTwice
            | PlantedBug::VmaDeferredInterval
            | PlantedBug::RegcacheNoWait
            | PlantedBug::HugeNotSplit
            | PlantedBug::VmaCommitUnchecked
            | PlantedBug::UnmapDeferred
            | PlantedBug::GpuSvmOrderNotClipped
            | PlantedBug::GpuSvmRangeNotUnbound
            | PlantedBug::KfdWorkAfterExit
            | PlantedBug::KfdFaultOnPendingRange
            | PlantedBug::TlbFinishSkippedNonblock
            | PlantedBug::TlbFlushMissesHuge
            | PlantedBug::TlbFillBeforeRecheck
            | PlantedBug::TlbFinishSkipsMigrate
            | PlantedBug::VmaHolesOverflow
            | PlantedBug::CommitRelock => Component::Mirror,
            _ => Component::Notifier,
        }
    }

    /// The name used on command lines and in `MNFUZZ_PLANTED_BUG`.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::ReleaseTwice => "notifier-release-twice",
            PlantedBug::InsertEvenSeq => "notifier-insert-even-seq",
            PlantedBug::InsertNoMakeOdd => "notifier-insert-no-make-odd",
            PlantedBug::RemoveEarly => "notifier-remove-early",
            PlantedBug::ClassicFailHangs => "notifier-classic-fail-hangs",
            PlantedBug::LastPageMissed => "notifier-last-page-missed",
            PlantedBug::MprotectNoInvalidate => "mm-mprotect-no-invalidate",
            PlantedBug::ForkNoInvalidate => "mm-fork-no-invalidate",
            PlantedBug::MirrorSkipSetSeq => "mirror-skip-set-seq",
            PlantedBug::ReadRetryUnlocked => "mirror-read-retry-unlocked",
            PlantedBug::OwnerSkipWrong => "mirror-owner-skip-wrong",
            PlantedBug::OdpDestroyTwice => "mirror-odp-chunk-destroyed-twice",
            PlantedBug::VmaDeferredInterval => "mirror-vma-deferred-interval",
            PlantedBug::RegcacheNoWait => "mirror-regcache-no-wait",
            PlantedBug::HugeNotSplit => "mirror-huge-not-split",
            PlantedBug::VmaCommitUnchecked => "mirror-vma-commit-unchecked",
            PlantedBug::UnmapDeferred => "mirror-unmap-deferred",
            PlantedBug::MigrateUnclamped => "mm-migrate-unclamped",
            PlantedBug::FinishSkippedOnRefusal => "notifier-finish-skipped-on-refusal",
            PlantedBug::EndDeferredLate => "notifier-end-deferred-late",
            PlantedBug::WakeBeforeSeq => "notifier-wake-before-seq",
            PlantedBug::ReadBeginUnlocked => "notifier-read-begin-unlocked",
            PlantedBug::GpuSvmOrderNotClipped => "mirror-gpusvm-order-not-clipped",
            PlantedBug::GpuSvmRangeNotUnbound => "mirror-gpusvm-range-not-unbound",
            PlantedBug::KfdWorkAfterExit => "mirror-kfd-work-after-exit",
            PlantedBug::KfdFaultOnPendingRange => "mirror-kfd-fault-on-pending-range",
            PlantedBug::TlbFinishSkippedNonblock => "mirror-tlb-finish-skipped-nonblock",
            PlantedBug::TlbFlushMissesHuge => "mirror-tlb-flush-misses-huge",
            PlantedBug::TlbFillBeforeRecheck => "mirror-tlb-fill-before-recheck",
            PlantedBug::DeepFixupStale => "notifier-deep-fixup-stale",
            PlantedBug::TlbFinishSkipsMigrate => "mirror-tlb-finish-skips-migrate",
            PlantedBug::RemoveWaitsOneEnd => "notifier-remove-waits-one-end",
            PlantedBug::SetSeqDedup => "notifier-set-seq-dedup",
            PlantedBug::VmaHolesOverflow => "mirror-vma-holes-overflow",
            PlantedBug::WakeOne => "notifier-wake-one",
            PlantedBug::CommitRelock => "mirror-commit-relock",
        }
    }

    /// Looks a bug up by [`PlantedBug::name`].
    pub fn from_name(s: &str) -> Option<PlantedBug> {
        PlantedBug::ALL
            .into_iter()
            .chain(PlantedBug::CONCURRENT)
            .find(|b| b.name() == s)
    }
}
