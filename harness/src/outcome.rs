//! What every target's executor shares: how to run a program, and what
//! a run found (a [`Divergence`], counters, the trace, feedback features).

use notifier::PlantedBug;

/// How to run a program.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Record a readable trace of every step (slower; for reports).
    pub trace: bool,
    /// The planted bug to enable in the core (needs the `planted-bugs` feature).
    pub planted: Option<PlantedBug>,
    /// Check `expect` lines: a mismatch is a [`DivergenceKind::Expect`].
    /// When false, expectations are counted as run and never diverge.
    /// Expectations are their author's assertions about a seed, so replay,
    /// minimize and the corpus tests check them, while the fuzzing engines
    /// (whose mutants of a seed keep its `expect` lines but not what made
    /// them true) do not.
    pub expect: bool,
}

/// The class of a divergence; the minimizer keeps it fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DivergenceKind {
    /// Core and model returned different results for an op.
    Result,
    /// Different callbacks ran, or in a different order, or with different answers.
    Callbacks,
    /// A callback ran with an even seq, or one that is not the current cycle's.
    CallbackSeq,
    /// Tree membership, deferred list, seq parity or active count differ.
    State,
    /// One side blocks an op and the other does not.
    Blocking,
    /// One side wakes a waiter and the other does not.
    Wake,
    /// Every unfinished logical thread is blocked.
    Deadlock,
    /// The core is not quiescent after the drain.
    NotQuiescent,
    /// The core panicked.
    Panic,
    /// A device PTE maps a page the CPU does not map to that frame, or
    /// grants write where the CPU PTE is read-only.
    StalePte,
    /// A device access disagreed with the CPU's view of memory.
    Coherence,
    /// A fault retried without bound.
    Livelock,
    /// A CPU PTE lost its mapping or a permission outside an invalidation.
    Unnotified,
    /// An `expect` line did not hold (only when [`RunOptions::expect`] is set).
    Expect,
    /// A value or a mapping disagreed with the shadow memory, which is
    /// kept from the ops alone (oracles::shadow).
    Shadow,
    /// The simulated mm and the real Linux kernel disagreed (the `linux`
    /// target): an op's result, a value, userfaultfd events, page
    /// presence or frame sharing.
    Linux,
    /// A KVM guest's view of memory disagreed with the host CPU's or the
    /// simulation's (the `kvm` target): a value, or an access that
    /// succeeded where the host has no mapping or no permission.
    Kvm,
}

impl DivergenceKind {
    /// Short name for reports and file names.
    pub fn name(self) -> &'static str {
        match self {
            DivergenceKind::Result => "result",
            DivergenceKind::Callbacks => "callbacks",
            DivergenceKind::CallbackSeq => "callback-seq",
            DivergenceKind::State => "state",
            DivergenceKind::Blocking => "blocking",
            DivergenceKind::Wake => "wake",
            DivergenceKind::Deadlock => "deadlock",
            DivergenceKind::NotQuiescent => "not-quiescent",
            DivergenceKind::Panic => "panic",
            DivergenceKind::StalePte => "stale-pte",
            DivergenceKind::Coherence => "coherence",
            DivergenceKind::Livelock => "livelock",
            DivergenceKind::Unnotified => "unnotified",
            DivergenceKind::Expect => "expect",
            DivergenceKind::Shadow => "shadow",
            DivergenceKind::Linux => "linux",
            DivergenceKind::Kvm => "kvm",
        }
    }

    /// Every kind.
    pub const ALL: [DivergenceKind; 17] = [
        DivergenceKind::Result,
        DivergenceKind::Callbacks,
        DivergenceKind::CallbackSeq,
        DivergenceKind::State,
        DivergenceKind::Blocking,
        DivergenceKind::Wake,
        DivergenceKind::Deadlock,
        DivergenceKind::NotQuiescent,
        DivergenceKind::Panic,
        DivergenceKind::StalePte,
        DivergenceKind::Coherence,
        DivergenceKind::Livelock,
        DivergenceKind::Unnotified,
        DivergenceKind::Expect,
        DivergenceKind::Shadow,
        DivergenceKind::Linux,
        DivergenceKind::Kvm,
    ];
}

/// A disagreement between the implementation and the oracle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Its class.
    pub kind: DivergenceKind,
    /// Index of the program line being run, or None during the drain.
    pub step: Option<usize>,
    /// What was being done, in `.ops` words.
    pub doing: String,
    /// What the core said.
    pub core: String,
    /// What the model said.
    pub model: String,
    /// Both sides' rendered state at the divergence: (core, model).
    pub states: (String, String),
}

/// Counters of one execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Ops that ran on both sides.
    pub ran: u64,
    /// Ops skipped as meaningless in the state (empty slot, lockdep rule…).
    pub skipped: u64,
    /// Ops that blocked their thread.
    pub blocked: u64,
    /// Callbacks that ran.
    pub callbacks: u64,
    /// Most intervals alive at once (the notifier target's tree).
    pub peak_intervals: u64,
    /// The kvm target: `ksm` ops after which the window held KSM pages,
    /// and `collapse` ops after which it held a huge page.
    pub layout_effects: u64,
}

/// The result of one execution.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The first divergence, if any.
    pub divergence: Option<Divergence>,
    /// One line per executed step, when tracing.
    pub trace: Vec<String>,
    /// Behaviour features seen (for the built-in engine's feedback).
    pub features: Vec<u32>,
    /// State-coverage cells reached ([`crate::reach`]), in order, with
    /// repeats; also among the features.
    pub cells: Vec<u32>,
    /// Counters.
    pub stats: ExecStats,
    /// Mirror target, when tracing: every turn a thread took, schedule
    /// lines first (one each), then the drain's.
    pub turns: Vec<Turn>,
}

/// One turn of a mirror-target thread: which op, if any, it started. A
/// line's op joins its thread's queue, so it may start on a later turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Turn {
    /// The thread.
    pub thread: u8,
    /// The line whose op this turn took from the queue and started.
    pub started: Option<usize>,
    /// The thread was in the middle of an op, and the turn went on with it.
    pub busy: bool,
}

impl Turn {
    /// A turn with nothing to do: it changes nothing.
    pub fn idle(&self) -> bool {
        !self.busy && self.started.is_none()
    }
}
