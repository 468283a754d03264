//! The op language: a program is a config plus a list of steps, each one
//! op performed by one logical thread. Line order is the schedule: the
//! input chooses which thread advances next.

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

/// What a program drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The notifier core against `ReferenceNotifier`.
    Notifier,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 1] = [Target::Notifier];

    /// Its name on command lines, in corpus paths and in `.ops` headers.
    pub fn name(self) -> &'static str {
        match self {
            Target::Notifier => "notifier",
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
}

impl Default for ProgramConfig {
    fn default() -> ProgramConfig {
        ProgramConfig {
            target: Target::Notifier,
            threads: 2,
            initial_seq: 2,
            task_size: u64::MAX,
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
}

impl Op {
    /// The op's keyword, as in `.ops` files; also its kind for statistics.
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
                Op::End | Op::Release | Op::Commit | Op::CheckRetry => false,
            };
            if bad_slot {
                return Err(format!("step {n}: operand out of range"));
            }
        }
        Ok(())
    }
}
