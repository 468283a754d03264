//! The op language: a program is a config plus a list of steps, each one
//! op performed by one logical thread. Line order is the schedule: the
//! input chooses which thread advances next.

pub use mirror::{PageState, StrategySpec};
pub use mm::{MapKind, Prot};
use notifier::Event;
use oracles::{CallbackModel, Refuse};

/// Most logical threads a program may use.
pub const MAX_THREADS: u8 = 4;
/// Interval slots `i0..i3`: a small space so that ops collide.
pub const SLOTS: u8 = 4;
/// Classic subscriber slots `c0..c3`.
pub const CLASSIC_SLOTS: u8 = 4;
/// Owners of `Migrate`/`Exclusive` ranges are `0..OWNERS`.
pub const OWNERS: u8 = 4;
/// Most steps a program has.
pub const MAX_STEPS: usize = 512;
/// The page size the generators think in.
pub const PAGE: u64 = notifier::PAGE_SIZE;
/// Pages in the window most addresses come from.
pub const WINDOW_PAGES: u64 = 16;
/// The smallest `task_size` a program may choose: the window must fit.
pub const MIN_TASK_SIZE: u64 = WINDOW_PAGES * PAGE * 2;
/// Address spaces of the mirror target: `m0`, and `m1` once m0 forks.
pub const MMS: u8 = 2;
/// Device slots of the mirror target: `d0`, `d1`.
pub const DEVICES: u8 = 2;
/// Files that `mmap ... file:N` may map.
pub const FILES: u32 = 2;
/// Most runs an `expect [STATES]` has.
pub const MAX_RUNS: usize = 8;
/// Most pages an `expect [STATES]` covers: the most a snapshot reports.
pub const MAX_SNAPSHOT_PAGES: u16 = 512;

/// What a program drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The notifier core against `ReferenceNotifier`.
    Notifier,
    /// Device mirrors on the simulated address space, against the
    /// stale-PTE, coherence and liveness oracles.
    Mirror,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 2] = [Target::Notifier, Target::Mirror];

    /// Its name on command lines, in corpus paths and in `.ops` headers.
    pub fn name(self) -> &'static str {
        match self {
            Target::Notifier => "notifier",
            Target::Mirror => "mirror",
        }
    }

    /// Looks a target up by name.
    pub fn from_name(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// Program-wide settings; the `config` line of an `.ops` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProgramConfig {
    /// Which target runs it.
    pub target: Target,
    /// Logical threads, `1..=MAX_THREADS`.
    pub threads: u8,
    /// The core's initial global seq; even.
    pub initial_seq: u64,
    /// Exclusive top of the address space; at least `MIN_TASK_SIZE`.
    pub task_size: u64,
    /// Mirror target: devices opened on `m0` before the first step
    /// (`devices=fullva,perfault`); always `[None, None]` for the notifier target.
    pub devices: [Option<StrategySpec>; DEVICES as usize],
}

impl Default for ProgramConfig {
    fn default() -> ProgramConfig {
        ProgramConfig {
            target: Target::Notifier,
            threads: 2,
            initial_seq: 2,
            task_size: u64::MAX,
            devices: [None, None],
        }
    }
}

impl ProgramConfig {
    /// Why this config is not runnable, if it is not.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return Err(format!("threads must be 1..={MAX_THREADS}"));
        }
        if self.initial_seq & 1 == 1 {
            return Err("initial_seq must be even".into());
        }
        if self.task_size < MIN_TASK_SIZE {
            return Err(format!("task_size must be at least {MIN_TASK_SIZE:#x}"));
        }
        if self.target == Target::Notifier && self.devices != [None, None] {
            return Err("devices belong to the mirror target".into());
        }
        for d in self.devices.iter().flatten() {
            d.check()?;
        }
        Ok(())
    }
}

/// One operation of one logical thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `insert iN START +LEN CALLBACK`: subscribe an interval into slot N.
    Insert {
        /// Interval slot.
        slot: u8,
        /// First byte.
        start: u64,
        /// Length in bytes (zero and overflowing lengths are allowed: they test errors).
        len: u64,
        /// How its callback behaves.
        cb: CallbackModel,
    },
    /// `remove iN`: remove the interval in slot N; may block.
    Remove {
        /// Interval slot.
        slot: u8,
    },
    /// `start EVENT A..B [nonblock] [owner=O]`: invalidate_range_start; on
    /// success the invalidation is pushed on the thread's stack.
    Start {
        /// The event.
        event: Event,
        /// First byte.
        start: u64,
        /// Exclusive end.
        end: u64,
        /// False for the OOM reaper's path.
        blockable: bool,
        /// The owner, for migrate and exclusive.
        owner: Option<u8>,
    },
    /// `end`: invalidate_range_end of the thread's innermost open invalidation.
    End,
    /// `read_begin iN`: begin a fault on slot N; may block.
    ReadBegin {
        /// Interval slot.
        slot: u8,
    },
    /// `commit`: finish the thread's latest fault: under the driver lock,
    /// read_retry with the seq its read_begin returned; false means the
    /// fault commits.
    Commit,
    /// `check_retry`: the lockless hint on the thread's latest fault, which
    /// stays open.
    CheckRetry,
    /// `release`: process exit.
    Release,
    /// `register cN REFUSE`: a classic subscriber.
    Register {
        /// Classic slot.
        slot: u8,
        /// When its start refuses.
        refuse: Refuse,
    },
    /// `unregister cN`.
    Unregister {
        /// Classic slot.
        slot: u8,
    },
    /// Mirror target: `step`: a turn for the thread that queues nothing, so
    /// that its operation in progress moves on by one step.
    Yield,
    /// Mirror target: an operation on address space `mm`.
    Mm {
        /// `m0` or `m1`.
        mm: u8,
        /// The operation.
        op: MmStep,
    },
    /// Mirror target: a device operation.
    Dev {
        /// `d0` or `d1`.
        dev: u8,
        /// The operation.
        op: DevStep,
    },
    /// Mirror target: `expect ...`: an assertion about what the thread's
    /// last finished op answered (or about a device's fault count). It is
    /// queued like any op, so it runs once the thread's earlier ops have
    /// finished; it changes nothing.
    Expect(Expect),
}

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
}

impl ErrKind {
    /// Every kind.
    pub const ALL: [ErrKind; 6] = [
        ErrKind::Inval,
        ErrKind::Fault,
        ErrKind::Perm,
        ErrKind::Exited,
        ErrKind::NoEnt,
        ErrKind::Notifier,
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
    /// (`fullva`, `perfault`, `odp:16k`..`odp:1g`, `vma`, `regcache`).
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
}

impl Op {
    /// A short name of the op's kind, for statistics and features (device
    /// ops are `dread`, `dwrite`, `dmigrate`, `dexclusive` …; `.ops` files
    /// spell them `dN read` …).
    pub fn keyword(&self) -> &'static str {
        match self {
            Op::Insert { .. } => "insert",
            Op::Remove { .. } => "remove",
            Op::Start { .. } => "start",
            Op::End => "end",
            Op::ReadBegin { .. } => "read_begin",
            Op::Commit => "commit",
            Op::CheckRetry => "check_retry",
            Op::Release => "release",
            Op::Register { .. } => "register",
            Op::Unregister { .. } => "unregister",
            Op::Yield => "step",
            Op::Mm { op, .. } => op.keyword(),
            Op::Dev { op, .. } => match op {
                DevStep::Open { .. } => "open",
                DevStep::Read { .. } => "dread",
                DevStep::Write { .. } => "dwrite",
                DevStep::Snapshot { .. } => "snapshot",
                DevStep::Migrate { .. } => "dmigrate",
                DevStep::Exclusive { .. } => "dexclusive",
                DevStep::Evict { .. } => "devict",
                DevStep::Register { .. } => "dregister",
                DevStep::Unregister { .. } => "dunregister",
                DevStep::Work => "dwork",
            },
            Op::Expect(_) => "expect",
        }
    }
}

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

/// One line of a program: thread `thread` performs `op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    /// Logical thread, `< config.threads`.
    pub thread: u8,
    /// What it does.
    pub op: Op,
}

/// A complete input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Program {
    /// Settings.
    pub config: ProgramConfig,
    /// The schedule, in order.
    pub steps: Vec<Step>,
}

impl Program {
    /// Why this program is not well formed, if it is not: operand ranges
    /// that the op language does not have (slots, threads). Semantic
    /// misuse, such as removing an empty slot, is fine: the executor skips it.
    pub fn validate(&self) -> Result<(), String> {
        self.config.validate()?;
        if self.steps.len() > MAX_STEPS {
            return Err(format!("more than {MAX_STEPS} steps"));
        }
        for (n, s) in self.steps.iter().enumerate() {
            if s.thread >= self.config.threads {
                return Err(format!("step {n}: thread t{} out of range", s.thread));
            }
            let bad_slot = match s.op {
                Op::Insert { slot, .. } | Op::Remove { slot } | Op::ReadBegin { slot } => {
                    slot >= SLOTS
                }
                Op::Register { slot, .. } | Op::Unregister { slot } => slot >= CLASSIC_SLOTS,
                Op::Start { owner, .. } => owner.is_some_and(|o| o >= OWNERS),
                Op::End | Op::Release | Op::Commit | Op::CheckRetry | Op::Yield => false,
                Op::Mm { mm, op } => {
                    mm >= MMS
                        || matches!(op, MmStep::Mmap { kind: MapKind::File(f), .. } if f >= FILES)
                }
                Op::Dev { dev, op } => {
                    dev >= DEVICES
                        || matches!(op, DevStep::Open { mm, strategy }
                            if mm >= MMS || !strategy_valid(strategy))
                }
                Op::Expect(_) => false,
            };
            let mirror_op = matches!(
                s.op,
                Op::Mm { .. } | Op::Dev { .. } | Op::Yield | Op::Expect(_)
            );
            if mirror_op != (self.config.target == Target::Mirror) {
                return Err(format!(
                    "step {n}: {} is not an op of the {} target",
                    s.op.keyword(),
                    self.config.target.name()
                ));
            }
            if bad_slot {
                return Err(format!("step {n}: operand out of range"));
            }
            if let Op::Expect(e) = s.op {
                e.validate().map_err(|m| format!("step {n}: {m}"))?;
            }
        }
        Ok(())
    }
}
