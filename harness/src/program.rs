//! The op language: a program is a config plus a list of steps, each one
//! op performed by one logical thread. Line order is the schedule: the
//! input chooses which thread advances next.

pub use crate::mirror::ops::{
    strategy_valid, DevStep, ErrKind, Expect, MmStep, MAX_PREFETCH, PREFETCH_STRIDE,
};
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
/// Most intervals one `populate` inserts: enough for a tree of 64 and more.
pub const MAX_POPULATE: u8 = 128;
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
/// The `task_size` of every linux-target program: the size of the real
/// child's address window.
pub const LINUX_TASK_SIZE: u64 = MIN_TASK_SIZE;
/// The `task_size` of every kvm-target program: one aligned 2 MiB
/// extent, so that `collapse` can make a real transparent huge page and
/// KVM can map it with one huge second-level entry.
pub const KVM_TASK_SIZE: u64 = mm::HUGE;

/// The window, and so the `task_size`, of a target that runs on a real
/// child process ([`Target::real`]).
pub const fn real_task_size(t: Target) -> u64 {
    match t {
        Target::Kvm => KVM_TASK_SIZE,
        _ => LINUX_TASK_SIZE,
    }
}
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
    /// The notifier core's blocking API on real (shuttle-scheduled)
    /// threads: each logical thread runs its own lines in order, and
    /// `config.schedule` seeds the interleaving (`harness::threads`).
    Threads,
    /// The mm part of a mirror program on the simulated mm and on a real
    /// child process at once, compared after every op (DESIGN.md §9;
    /// needs Linux, root and userfaultfd).
    Linux,
    /// The linux target with a real device mirror: KVM. A device opened
    /// with `dN open mM kvm` is a VM whose guest-physical memory is the
    /// real child's window; its reads and writes are vCPU runs, compared
    /// with the host CPU and the simulation (needs /dev/kvm as well).
    Kvm,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 5] = [
        Target::Notifier,
        Target::Mirror,
        Target::Threads,
        Target::Linux,
        Target::Kvm,
    ];

    /// The targets that need no real kernel (what `soak` and `bench`
    /// cover by default): `linux` and `kvm` need root and userfaultfd.
    pub const SIMULATED: [Target; 3] = [Target::Notifier, Target::Mirror, Target::Threads];

    /// Whether its programs are written in the mirror target's ops (`mN`
    /// ops, `expect`): mirror, linux and kvm.
    pub fn speaks_mm(self) -> bool {
        matches!(self, Target::Mirror | Target::Linux | Target::Kvm)
    }

    /// Whether it runs on the real kernel (one thread, the window as
    /// task_size, no configured devices): linux and kvm.
    pub fn real(self) -> bool {
        matches!(self, Target::Linux | Target::Kvm)
    }

    /// Its name on command lines, in corpus paths and in `.ops` headers.
    pub fn name(self) -> &'static str {
        match self {
            Target::Notifier => "notifier",
            Target::Mirror => "mirror",
            Target::Threads => "threads",
            Target::Linux => "linux",
            Target::Kvm => "kvm",
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
    /// (`devices=fullva,perfault`); always `[None, None]` for the notifier
    /// and linux targets. A threads program with devices is in the mirror
    /// form: its steps are mirror ops, run on real threads.
    pub devices: [Option<StrategySpec>; DEVICES as usize],
    /// Notifier target: the core (and the reference) leave the interval
    /// part hanging when a classic subscriber refuses after the intervals
    /// accepted, as Linux does (`kernel_compat=1`; DESIGN.md §2).
    pub kernel_compat: bool,
    /// Threads target: the seed of the schedule (which thread runs at each
    /// scheduling point); 0 for the other targets, which never read it.
    pub schedule: u64,
}

impl Default for ProgramConfig {
    fn default() -> ProgramConfig {
        ProgramConfig {
            target: Target::Notifier,
            threads: 2,
            initial_seq: 2,
            task_size: u64::MAX,
            devices: [None, None],
            kernel_compat: false,
            schedule: 0,
        }
    }
}

impl ProgramConfig {
    /// Whether its steps are written in the mirror target's ops: a mirror
    /// or linux program, or a threads program with devices (the mirror
    /// form of the threads target: device faults and mm ops on real
    /// threads, `harness::threads::mirror`).
    pub fn speaks_mm(&self) -> bool {
        self.target.speaks_mm() || (self.target == Target::Threads && self.has_devices())
    }

    /// Whether it opens a device before the first step.
    pub fn has_devices(&self) -> bool {
        self.devices != [None, None]
    }

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
        if !matches!(self.target, Target::Mirror | Target::Threads) && self.devices != [None, None]
        {
            return Err("devices belong to the mirror target".into());
        }
        if self.target != Target::Notifier && self.kernel_compat {
            return Err("kernel_compat belongs to the notifier target".into());
        }
        if self.target.real() {
            let t = self.target.name();
            if self.devices != [None, None] {
                return Err(format!("the {t} target has no configured devices"));
            }
            if self.threads != 1 {
                return Err(format!("the {t} target runs one thread (threads=1)"));
            }
            let window = real_task_size(self.target);
            if self.task_size != window {
                return Err(format!(
                    "the {t} target's task_size is its window, {window:#x}"
                ));
            }
        }
        for d in self.devices.iter().flatten() {
            d.check()?;
        }
        if self.target != Target::Threads && self.schedule != 0 {
            return Err("schedule belongs to the threads target".into());
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
    /// `populate N A +LEN`: insert N intervals with well-behaved callbacks,
    /// the k-th over `[A + k * PAGE, +LEN)`, held by no slot: they make
    /// the tree large (overlapping, so that invalidations keep hitting
    /// many of them) and stay until release.
    Populate {
        /// How many, `1..=MAX_POPULATE`.
        count: u8,
        /// First byte of the first.
        start: u64,
        /// Length of each.
        len: u64,
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

impl Op {
    /// A short name of the op's kind, for statistics and features (device
    /// ops are `dread`, `dwrite`, `dmigrate`, `dexclusive` …; `.ops` files
    /// spell them `dN read` …).
    pub fn keyword(&self) -> &'static str {
        match self {
            Op::Insert { .. } => "insert",
            Op::Populate { .. } => "populate",
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
                DevStep::Attr { .. } => "dattr",
                DevStep::Prefetch { .. } => "dprefetch",
            },
            Op::Expect(_) => "expect",
        }
    }
}

/// Whether the linux target takes `op`: the mm ops a real process can be
/// made to do deterministically. Reclaim (no swap to rely on), NUMA
/// migration, KSM, THP collapse and split and the OOM reaper are
/// simulation-only; so are devices and `step`.
pub fn linux_op(op: &MmStep) -> bool {
    !matches!(
        op,
        MmStep::Reclaim { .. }
            | MmStep::Migrate { .. }
            | MmStep::Ksm { .. }
            | MmStep::Collapse { .. }
            | MmStep::Split { .. }
            | MmStep::OomReap
    )
}

/// The device of `dN open mM kvm` (kvm target): a strategy spec that no
/// registry entry has, so that no other target accepts it.
pub const KVM_DEVICE: StrategySpec = StrategySpec {
    kind: u8::MAX,
    param: 0,
    tlb: mirror::Tlb::Sync,
};

/// Whether the kvm target takes `op`: the linux target's mm ops, KSM
/// and THP collapse, and the device ops a guest can do (open, read,
/// write).
pub fn kvm_op(op: &Op) -> bool {
    match op {
        Op::Mm { op, .. } => {
            linux_op(op) || matches!(op, MmStep::Ksm { .. } | MmStep::Collapse { .. })
        }
        Op::Dev { op, .. } => match op {
            DevStep::Open { strategy, .. } => *strategy == KVM_DEVICE,
            DevStep::Read { .. } | DevStep::Write { .. } => true,
            _ => false,
        },
        Op::Expect(_) => true,
        _ => false,
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
                Op::Populate { count, .. } => !(1..=MAX_POPULATE).contains(&count),
                Op::Start { owner, .. } => owner.is_some_and(|o| o >= OWNERS),
                Op::End | Op::Release | Op::Commit | Op::CheckRetry | Op::Yield => false,
                Op::Mm { mm, op } => {
                    mm >= MMS
                        || matches!(op, MmStep::Mmap { kind: MapKind::File(f), .. } if f >= FILES)
                }
                Op::Dev { dev, op } => {
                    let kvm = self.config.target == Target::Kvm;
                    dev >= DEVICES
                        || matches!(op, DevStep::Open { mm, strategy }
                            if mm >= MMS || !(kvm || strategy_valid(strategy)))
                }
                Op::Expect(_) => false,
            };
            let mirror_op = matches!(
                s.op,
                Op::Mm { .. } | Op::Dev { .. } | Op::Yield | Op::Expect(_)
            );
            let linux_misfit = match self.config.target {
                Target::Linux => match s.op {
                    Op::Mm { op, .. } => !linux_op(&op),
                    Op::Expect(_) => false,
                    _ => true,
                },
                Target::Kvm => !kvm_op(&s.op),
                _ => false,
            };
            if mirror_op != self.config.speaks_mm() || linux_misfit {
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
