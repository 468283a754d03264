//! The ops of the `mirror` target: address-space steps, device steps and
//! expectations (the `Op::Mm`, `Op::Dev` and `Op::Expect` payloads).

use crate::program::{
    MapKind, PageState, Prot, StrategySpec, DEVICES, MAX_RUNS, MAX_SNAPSHOT_PAGES,
};

/// What an `expect` line asserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// `expect ok`: the thread's last finished op succeeded, whatever it
    /// returned.
    Ok,
    /// `expect skipped`: it was skipped (meaningless in the state).
    Skipped,
    /// `expect V`: it returned this value: what a CPU or device read
    /// returned or a write stored, or where an mmap/mremap mapped.
    Value(u64),
    /// `expect error` or `expect error:KIND`: it failed (with that kind).
    Error(Option<ErrKind>),
    /// `expect pages=N`: a migrate, evict, exclusive or register reported
    /// N pages.
    Pages(u64),
    /// `expect dD faults=N`: device `dev` has handled `n` faults in total
    /// so far (not about the last op).
    Faults {
        /// The device, `< DEVICES`.
        dev: u8,
        /// Its fault count.
        n: u64,
    },
    /// `expect [STATE*COUNT ...]`: the last op was a snapshot that
    /// reported exactly these states, run-length encoded. Canonical form:
    /// `runs[..len]` has counts of at least 1, no two adjacent runs of the
    /// same state, at most [`MAX_SNAPSHOT_PAGES`] pages in all; the unused
    /// runs are `(PageState::None, 0)`.
    States {
        /// The runs; only the first `len` count.
        runs: [(PageState, u16); MAX_RUNS],
        /// Runs used, `0..=MAX_RUNS`.
        len: u8,
    },
}

impl Expect {
    /// The canonical `States` for `states`: adjacent equal states merged.
    /// `None` when that needs more than [`MAX_RUNS`] runs or
    /// `states` has more than [`MAX_SNAPSHOT_PAGES`] pages.
    pub fn states(states: &[PageState]) -> Option<Expect> {
        if states.len() > usize::from(MAX_SNAPSHOT_PAGES) {
            return None;
        }
        let mut runs = [(PageState::None, 0u16); MAX_RUNS];
        let mut len = 0usize;
        for &st in states {
            if len > 0 && runs[len - 1].0 == st {
                runs[len - 1].1 += 1;
            } else {
                if len == MAX_RUNS {
                    return None;
                }
                runs[len] = (st, 1);
                len += 1;
            }
        }
        Some(Expect::States {
            runs,
            len: len as u8,
        })
    }

    /// Whether this expectation is well formed: `Faults` names a device,
    /// `States` is canonical.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Expect::Faults { dev, .. } if dev >= DEVICES => {
                Err(format!("device d{dev} out of range"))
            }
            Expect::States { runs, len } => {
                let len = usize::from(len);
                if len > MAX_RUNS {
                    return Err(format!("more than {MAX_RUNS} runs of states"));
                }
                let used = &runs[..len];
                if used.iter().any(|r| r.1 == 0) {
                    return Err("a run of states with count 0".into());
                }
                if used.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err("adjacent runs of the same state".into());
                }
                let total: u32 = used.iter().map(|r| u32::from(r.1)).sum();
                if total > u32::from(MAX_SNAPSHOT_PAGES) {
                    return Err(format!("more than {MAX_SNAPSHOT_PAGES} pages of states"));
                }
                if runs[len..].iter().any(|r| *r != (PageState::None, 0)) {
                    return Err("unused runs of states must be empty".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The class of a failed op, as `expect error:KIND` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrKind {
    /// EINVAL (`einval`): bad alignment, length, combination, or an op the
    /// mirror's strategy or state does not take.
    Inval,
    /// Nothing mapped there (`efault`: ENOMEM, or SIGSEGV for an access).
    Fault,
    /// A store to a read-only or inaccessible mapping (`eperm`).
    Perm,
    /// The address space has exited (`exited`).
    Exited,
    /// Nothing to work on (`enoent`): no registration, no page to migrate.
    NoEnt,
    /// The notifier refused (`notifier`).
    Notifier,
    /// The range or the device is busy: retry later (`eagain`).
    Again,
}

impl ErrKind {
    /// Every kind.
    pub const ALL: [ErrKind; 7] = [
        ErrKind::Inval,
        ErrKind::Fault,
        ErrKind::Perm,
        ErrKind::Exited,
        ErrKind::NoEnt,
        ErrKind::Notifier,
        ErrKind::Again,
    ];

    /// Its name after `expect error:`.
    pub fn name(self) -> &'static str {
        match self {
            ErrKind::Inval => "einval",
            ErrKind::Fault => "efault",
            ErrKind::Perm => "eperm",
            ErrKind::Exited => "exited",
            ErrKind::NoEnt => "enoent",
            ErrKind::Notifier => "notifier",
            ErrKind::Again => "eagain",
        }
    }

    /// Looks a kind up by name.
    pub fn from_name(s: &str) -> Option<ErrKind> {
        ErrKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The kind of an address space error.
    pub fn of_mm(e: &mm::MmError) -> ErrKind {
        match e {
            mm::MmError::Inval => ErrKind::Inval,
            mm::MmError::Fault => ErrKind::Fault,
            mm::MmError::Perm => ErrKind::Perm,
            mm::MmError::Exited => ErrKind::Exited,
            mm::MmError::Notifier(_) => ErrKind::Notifier,
        }
    }

    /// The kind of a device error; a mirror attached to another address
    /// space is EINVAL.
    pub fn of_mirror(e: &mirror::MirrorError) -> ErrKind {
        match e {
            mirror::MirrorError::Notifier(_) => ErrKind::Notifier,
            mirror::MirrorError::Segv(e) => ErrKind::of_mm(e),
            mirror::MirrorError::WrongMm | mirror::MirrorError::Inval => ErrKind::Inval,
            mirror::MirrorError::NoEnt => ErrKind::NoEnt,
            mirror::MirrorError::Again => ErrKind::Again,
        }
    }
}

/// Whether `s` is a strategy the op language has (a registered kind with
/// a parameter in its range).
pub fn strategy_valid(s: StrategySpec) -> bool {
    s.check().is_ok()
}

/// Address space operations of the mirror target (`mN KEYWORD ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmStep {
    /// `mmap A +LEN anon|shared|file:F [ro|none]` (MAP_FIXED); `rw`
    /// when neither is given.
    Mmap {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
        /// What it maps.
        kind: MapKind,
        /// Its protection.
        prot: Prot,
    },
    /// `munmap A +LEN`.
    Munmap {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// `mprotect A +LEN none|ro|rw`.
    Mprotect {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
        /// The new protection.
        prot: Prot,
    },
    /// `mremap A +OLD +NEW [to B] [dontunmap]`.
    Mremap {
        /// Old address.
        addr: u64,
        /// Old length.
        old_len: u64,
        /// New length.
        new_len: u64,
        /// MREMAP_FIXED destination.
        to: Option<u64>,
        /// MREMAP_DONTUNMAP.
        dontunmap: bool,
    },
    /// `dontneed A +LEN`.
    Dontneed {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// `fork`: the child becomes `m1` (once).
    Fork,
    /// `read A`: a CPU load.
    Read {
        /// Address.
        addr: u64,
    },
    /// `write A V`: a CPU store.
    Write {
        /// Address.
        addr: u64,
        /// Value.
        value: u64,
    },
    /// `reclaim A`.
    Reclaim {
        /// Address.
        addr: u64,
    },
    /// `migrate A` (NUMA/compaction).
    Migrate {
        /// Address.
        addr: u64,
    },
    /// `ksm A B`.
    Ksm {
        /// Page kept.
        a: u64,
        /// Page merged into it.
        b: u64,
    },
    /// `collapse A`: THP collapse of the aligned 2 MiB.
    Collapse {
        /// Address.
        addr: u64,
    },
    /// `split A`: THP split of the aligned 2 MiB.
    Split {
        /// Address.
        addr: u64,
    },
    /// `clear_refs`: soft-dirty reset of the whole address space.
    ClearRefs,
    /// `oom_reap`.
    OomReap,
    /// `exit`.
    Exit,
}

/// Device operations of the mirror target (`dN KEYWORD ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DevStep {
    /// `open mM STRATEGY`: attach the device to an address space
    /// (`fullva`, `perfault`, `odp:16k`..`odp:1g`, `vma`, `regcache`,
    /// `kfd`, `kfd-noxnack`).
    Open {
        /// Address space.
        mm: u8,
        /// Interval strategy.
        strategy: StrategySpec,
    },
    /// `read A`: a device load (faults if needed).
    Read {
        /// Address.
        addr: u64,
    },
    /// `write A V`: a device store (faults for write if needed).
    Write {
        /// Address.
        addr: u64,
        /// Value.
        value: u64,
    },
    /// `snapshot A +LEN`: report each page's device state without faulting.
    Snapshot {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// `migrate A +LEN`: the device migrates the range to its private
    /// memory (a `Migrate` event carrying its owner).
    Migrate {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// `exclusive A +LEN`: make the range exclusive to the device
    /// (make_device_exclusive: an `Exclusive` event carrying its owner).
    Exclusive {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// `evict A +LEN`: migrate the device's private pages in the range
    /// back to system memory.
    Evict {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// `register A +LEN`: a registration of the registration cache.
    Register {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// `unregister A`: drop the registration that starts at `A`.
    Unregister {
        /// Address.
        addr: u64,
    },
    /// `work`: run one item of the device's deferred work.
    Work,
    /// `attr A +LEN`: set attributes on the range (registers it with a
    /// strategy that has attributes; EINVAL for the others).
    Attr {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// `prefetch A +LEN`: the device faults the range in ahead of use, the
    /// way ODP's `ibv_advise_mr(PREFETCH)` and a GPU driver's prefetch do:
    /// one read fault every [`PREFETCH_STRIDE`] bytes from `A`, at most
    /// [`MAX_PREFETCH`] of them, one after another (a registration cache
    /// has nothing to prefetch: EINVAL). It builds big states in one step:
    /// dozens of ODP chunks, GPU SVM ranges, device PTEs.
    Prefetch {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
}

/// Bytes between two faults of a `prefetch`: ODP's smallest chunk, so that
/// every chunk of the range gets one.
pub const PREFETCH_STRIDE: u64 = 4 * notifier::PAGE_SIZE;

/// Most faults one `prefetch` takes: 1 MiB at [`PREFETCH_STRIDE`], 64 of
/// ODP's smallest chunks.
pub const MAX_PREFETCH: u64 = 64;

impl MmStep {
    /// The op's keyword in `.ops` files.
    pub fn keyword(&self) -> &'static str {
        match self {
            MmStep::Mmap { .. } => "mmap",
            MmStep::Munmap { .. } => "munmap",
            MmStep::Mprotect { .. } => "mprotect",
            MmStep::Mremap { .. } => "mremap",
            MmStep::Dontneed { .. } => "dontneed",
            MmStep::Fork => "fork",
            MmStep::Read { .. } => "read",
            MmStep::Write { .. } => "write",
            MmStep::Reclaim { .. } => "reclaim",
            MmStep::Migrate { .. } => "migrate",
            MmStep::Ksm { .. } => "ksm",
            MmStep::Collapse { .. } => "collapse",
            MmStep::Split { .. } => "split",
            MmStep::ClearRefs => "clear_refs",
            MmStep::OomReap => "oom_reap",
            MmStep::Exit => "exit",
        }
    }
}
