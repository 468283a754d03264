//! `ReferenceNotifier`: a deliberately naive model of the interval notifier
//! protocol. A list of intervals with explicit states, plain booleans and a
//! count of completed invalidation cycles; linear scans, no tree, no
//! sequence arithmetic. It predicts what the core must do; the harness
//! compares the two after every step.

use notifier::{ClassicId, Culprit, Deferred, Error, Event, IntervalId, Range};

/// When an interval's callback refuses an invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refuse {
    /// Never.
    Never,
    /// In non-blockable ranges (a failed try-lock).
    NonBlockable,
    /// Always: a contract violation in blockable ranges.
    Always,
}

impl Refuse {
    /// Whether the callback refuses `range`.
    pub fn refuses(self, range: &Range) -> bool {
        match self {
            Refuse::Never => false,
            Refuse::NonBlockable => !range.blockable,
            Refuse::Always => true,
        }
    }
}

/// How a callback behaves, as far as the protocol can observe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallbackModel {
    /// When it refuses.
    pub refuse: Refuse,
    /// Whether it calls `set_seq`; `Some(e)` skips it for event `e` only.
    pub set_seq: SetSeq,
    /// Two-pass: an accepting call returns a finish, run after the walk.
    pub two_pass: bool,
}

/// Whether an accepting callback calls `set_seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetSeq {
    /// Always, as the contract says.
    Always,
    /// Never.
    Never,
    /// For every event but this one.
    SkipFor(Event),
}

impl CallbackModel {
    /// A callback that keeps the contract.
    pub const GOOD: CallbackModel = CallbackModel {
        refuse: Refuse::Never,
        set_seq: SetSeq::Always,
        two_pass: false,
    };

    /// Whether an accepted call for `range` updates the interval's seq.
    pub fn sets_seq(&self, range: &Range) -> bool {
        match self.set_seq {
            SetSeq::Always => true,
            SetSeq::Never => false,
            SetSeq::SkipFor(e) => e != range.event,
        }
    }
}

/// One callback invocation the model expects, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expected {
    /// An interval's invalidate callback; `accepted` is its return value.
    Interval {
        /// Which interval.
        id: IntervalId,
        /// The range passed.
        range: Range,
        /// What the callback returns.
        accepted: bool,
    },
    /// The finish of an interval's two-pass callback.
    Finish {
        /// Which interval.
        id: IntervalId,
    },
    /// A classic subscriber's `invalidate_range_start`.
    ClassicStart {
        /// Which subscriber.
        id: ClassicId,
        /// What it returns.
        accepted: bool,
    },
    /// A classic subscriber's `invalidate_range_end`.
    ClassicEnd {
        /// Which subscriber.
        id: ClassicId,
    },
    /// A classic subscriber's `release`.
    ClassicRelease {
        /// Which subscriber.
        id: ClassicId,
    },
}

/// The life of an interval, stated plainly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// In the tree.
    InTree,
    /// Waiting to enter the tree at the end of the current cycle.
    PendingInsert,
    /// In the tree, leaving it at the end of the current cycle.
    PendingRemove,
    /// Gone.
    Removed,
}

/// The model's stand-in for an interval's seq: the cycle in which it was
/// last marked, or `Fresh` for an interval inserted while idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mark {
    /// Never marked.
    Fresh,
    /// Marked during cycle number `n` (0-based, counting every cycle).
    Cycle(u64),
}

#[derive(Clone, Debug)]
struct ModelInterval {
    id: IntervalId,
    start: u64,
    last: u64,
    state: State,
    mark: Mark,
    cb: CallbackModel,
}

#[derive(Clone, Debug)]
struct ModelClassic {
    id: ClassicId,
    refuse: Refuse,
    released: bool,
}

/// A wait that completes when cycle `cycle` has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelWait {
    /// The cycle being waited out.
    pub cycle: u64,
}

/// What `read_begin` does in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelRead {
    /// Returns at once with this token.
    Ready(Mark),
    /// Waits for the current cycle to end, then returns this token.
    Blocks(ModelWait, Mark),
}

/// What `remove` does in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelRemove {
    /// Returns at once.
    Done,
    /// Waits for the current cycle to end.
    Blocks(ModelWait),
}

/// An invalidation the model accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInvalidation {
    /// Its range.
    pub range: Range,
    /// The classic subscribers whose start accepted it.
    pub classic: Vec<ClassicId>,
    /// Whether it hit an interval.
    pub hit: bool,
}

/// The model's answer to `invalidate_range_start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelStart {
    /// Accepted; must be ended.
    Accepted(ModelInvalidation),
    /// Refused in a non-blockable range.
    WouldBlock(Culprit),
    /// Refused in a blockable range.
    ContractViolation(Culprit),
    /// The range is invalid.
    Bad,
}

/// Tree membership as the model sees it; compared with the core's snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Intervals in the tree as `(id, start, last)`, ascending (start, id).
    pub tree: Vec<(IntervalId, u64, u64)>,
    /// The deferred list, in order.
    pub deferred: Vec<Deferred>,
    /// Classic subscribers not yet released.
    pub classic: Vec<ClassicId>,
    /// Whether release ran.
    pub released: bool,
}

/// The reference model of one address space's notifier.
#[derive(Clone, Debug)]
pub struct ReferenceNotifier {
    task_size: u64,
    invalidating: bool,
    active: u64,
    cycles_done: u64,
    released: bool,
    next_id: u64,
    intervals: Vec<ModelInterval>,
    deferred: Vec<Deferred>,
    classic: Vec<ModelClassic>,
    kernel_compat: bool,
}

impl ReferenceNotifier {
    /// An idle model of an address space ending (exclusively) at `task_size`.
    pub fn new(task_size: u64) -> ReferenceNotifier {
        ReferenceNotifier {
            task_size,
            invalidating: false,
            active: 0,
            cycles_done: 0,
            released: false,
            next_id: 0,
            intervals: Vec::new(),
            deferred: Vec::new(),
            classic: Vec::new(),
            kernel_compat: false,
        }
    }

    /// The same model, but a classic subscriber's refusal after the
    /// intervals accepted leaves their cycle open, as Linux does
    /// (`notifier::Config::kernel_compat`).
    pub fn with_kernel_compat(mut self, on: bool) -> ReferenceNotifier {
        self.kernel_compat = on;
        self
    }

    fn find(&self, id: IntervalId) -> Option<usize> {
        self.intervals.iter().position(|i| i.id == id)
    }

    fn current_cycle(&self) -> u64 {
        self.cycles_done
    }

    /// Whether an invalidation that hit an interval is running (the odd state).
    pub fn invalidating(&self) -> bool {
        self.invalidating
    }

    /// Invalidations in progress.
    pub fn active(&self) -> u64 {
        self.active
    }

    /// Completed invalidation cycles.
    pub fn cycles_done(&self) -> u64 {
        self.cycles_done
    }

    /// The state of interval `id`, if the model knows it.
    pub fn state(&self, id: IntervalId) -> Option<State> {
        self.find(id).map(|i| self.intervals[i].state)
    }

    /// Subscribes `[start, start + length - 1]`.
    pub fn insert(
        &mut self,
        start: u64,
        length: u64,
        cb: CallbackModel,
    ) -> Result<IntervalId, Error> {
        if length == 0 {
            return Err(Error::ZeroLength);
        }
        let end = u128::from(start) + u128::from(length);
        if end > u128::from(self.task_size) {
            return Err(Error::Overflow { start, length });
        }
        if self.released {
            return Err(Error::Released);
        }
        let id = IntervalId(self.next_id);
        self.next_id += 1;
        let (state, mark) = if self.active == 0 {
            (State::InTree, Mark::Fresh)
        } else if !self.invalidating {
            // A running invalidation may cover it unseen: start a cycle now.
            self.invalidating = true;
            (State::InTree, Mark::Cycle(self.current_cycle()))
        } else {
            self.deferred.push(Deferred::Insert(id));
            (State::PendingInsert, Mark::Cycle(self.current_cycle()))
        };
        self.intervals.push(ModelInterval {
            id,
            start,
            last: (end - 1) as u64,
            state,
            mark,
            cb,
        });
        Ok(id)
    }

    /// Removes interval `id`.
    pub fn remove(&mut self, id: IntervalId) -> Result<ModelRemove, Error> {
        let i = self.find(id).ok_or(Error::NotRegistered(id))?;
        match self.intervals[i].state {
            State::Removed | State::PendingRemove => Err(Error::NotRegistered(id)),
            State::PendingInsert => {
                self.deferred.retain(|d| *d != Deferred::Insert(id));
                self.intervals[i].state = State::Removed;
                Ok(ModelRemove::Done)
            }
            State::InTree if self.invalidating => {
                self.intervals[i].state = State::PendingRemove;
                self.deferred.push(Deferred::Remove(id));
                Ok(ModelRemove::Blocks(ModelWait {
                    cycle: self.current_cycle(),
                }))
            }
            State::InTree => {
                self.intervals[i].state = State::Removed;
                Ok(ModelRemove::Done)
            }
        }
    }

    /// Begins a read-side section on `id`.
    pub fn read_begin(&self, id: IntervalId) -> Result<ModelRead, Error> {
        let i = self.find(id).ok_or(Error::NotRegistered(id))?;
        let iv = &self.intervals[i];
        if iv.state == State::Removed {
            return Err(Error::NotRegistered(id));
        }
        let hit_this_cycle = self.invalidating && iv.mark == Mark::Cycle(self.current_cycle());
        Ok(if hit_this_cycle {
            ModelRead::Blocks(
                ModelWait {
                    cycle: self.current_cycle(),
                },
                iv.mark,
            )
        } else {
            ModelRead::Ready(iv.mark)
        })
    }

    /// Whether a wait may complete now.
    pub fn wait_ready(&self, w: &ModelWait) -> bool {
        self.cycles_done > w.cycle
    }

    /// Whether the interval was marked since `read_begin` returned `token`.
    pub fn read_retry(&self, id: IntervalId, token: Mark) -> bool {
        self.find(id)
            .map(|i| self.intervals[i].mark != token)
            .unwrap_or(true)
    }

    fn overlapping(&self, range: &Range) -> Vec<usize> {
        let mut hits: Vec<usize> = (0..self.intervals.len())
            .filter(|&i| {
                let iv = &self.intervals[i];
                matches!(iv.state, State::InTree | State::PendingRemove)
                    && range.overlaps(iv.start, iv.last)
            })
            .collect();
        hits.sort_by_key(|&i| (self.intervals[i].start, self.intervals[i].id));
        hits
    }

    /// Starts invalidating `range`; `calls` receives the expected callbacks.
    pub fn invalidate_start(&mut self, range: &Range, calls: &mut Vec<Expected>) -> ModelStart {
        if range.start >= range.end || range.end > self.task_size {
            return ModelStart::Bad;
        }
        self.active += 1;
        let hits = self.overlapping(range);
        if !hits.is_empty() {
            self.invalidating = true;
        }
        let refusal = |c: Culprit| {
            if range.blockable {
                ModelStart::ContractViolation(c)
            } else {
                ModelStart::WouldBlock(c)
            }
        };
        if let Some(id) = self.call_intervals(&hits, range, calls) {
            self.interval_end();
            return refusal(Culprit::Interval(id));
        }
        let live: Vec<(ClassicId, Refuse)> = self
            .classic
            .iter()
            .filter(|c| !c.released)
            .map(|c| (c.id, c.refuse))
            .collect();
        for (n, &(id, refuse)) in live.iter().enumerate() {
            let accepted = !refuse.refuses(range);
            calls.push(Expected::ClassicStart { id, accepted });
            if !accepted {
                for &(done, _) in &live[..n] {
                    calls.push(Expected::ClassicEnd { id: done });
                }
                if !self.kernel_compat {
                    self.interval_end();
                }
                return refusal(Culprit::Classic(id));
            }
        }
        ModelStart::Accepted(ModelInvalidation {
            range: *range,
            classic: live.into_iter().map(|(id, _)| id).collect(),
            hit: !hits.is_empty(),
        })
    }

    fn call_intervals(
        &mut self,
        hits: &[usize],
        range: &Range,
        calls: &mut Vec<Expected>,
    ) -> Option<IntervalId> {
        let cycle = self.current_cycle();
        let mut finishes = Vec::new();
        let mut refused = None;
        for &i in hits {
            let iv = &mut self.intervals[i];
            let accepted = !iv.cb.refuse.refuses(range);
            calls.push(Expected::Interval {
                id: iv.id,
                range: *range,
                accepted,
            });
            if !accepted {
                refused = Some(iv.id);
                break;
            }
            if iv.cb.sets_seq(range) {
                iv.mark = Mark::Cycle(cycle);
            }
            if iv.cb.two_pass {
                finishes.push(iv.id);
            }
        }
        // Every finish collected runs after the walk, refused or not.
        for id in finishes {
            calls.push(Expected::Finish { id });
        }
        refused
    }

    fn interval_end(&mut self) {
        self.active -= 1;
        if self.active > 0 || !self.invalidating {
            return;
        }
        self.invalidating = false;
        self.cycles_done += 1;
        for d in std::mem::take(&mut self.deferred) {
            let (id, to) = match d {
                Deferred::Insert(id) => (id, State::InTree),
                Deferred::Remove(id) => (id, State::Removed),
            };
            let i = self.find(id).expect("deferred interval is known");
            self.intervals[i].state = to;
        }
    }

    /// Ends an accepted invalidation; `calls` receives the classic ends.
    pub fn invalidate_end(&mut self, inv: &ModelInvalidation, calls: &mut Vec<Expected>) {
        self.interval_end();
        for id in &inv.classic {
            if self.classic.iter().any(|c| c.id == *id && !c.released) {
                calls.push(Expected::ClassicEnd { id: *id });
            }
        }
    }

    /// Registers a classic subscriber that refuses as `refuse` says.
    pub fn register(&mut self, refuse: Refuse) -> Result<ClassicId, Error> {
        if self.released {
            return Err(Error::Released);
        }
        let id = ClassicId(self.next_id);
        self.next_id += 1;
        self.classic.push(ModelClassic {
            id,
            refuse,
            released: false,
        });
        Ok(id)
    }

    /// Unregisters a classic subscriber.
    pub fn unregister(&mut self, id: ClassicId) -> Result<(), Error> {
        let n = self
            .classic
            .iter()
            .position(|c| c.id == id)
            .ok_or(Error::UnknownClassic(id))?;
        self.classic.remove(n);
        Ok(())
    }

    /// Process exit. Returns the culprit if an interval refused its release.
    pub fn release(&mut self, calls: &mut Vec<Expected>) -> Result<Option<Culprit>, Error> {
        if self.released {
            return Err(Error::AlreadyReleased);
        }
        self.released = true;
        let range = Range::new(0, self.task_size, Event::Release);
        self.active += 1;
        let hits = self.overlapping(&range);
        if !hits.is_empty() {
            self.invalidating = true;
        }
        let refused = self.call_intervals(&hits, &range, calls);
        self.interval_end();
        for c in self.classic.iter_mut().filter(|c| !c.released) {
            c.released = true;
            calls.push(Expected::ClassicRelease { id: c.id });
        }
        Ok(refused.map(Culprit::Interval))
    }

    /// What is in the tree, on the deferred list and registered.
    pub fn membership(&self) -> Membership {
        let mut m = Membership::default();
        self.membership_into(&mut m);
        m
    }

    /// [`ReferenceNotifier::membership`] into `out`, reusing its buffers;
    /// the harness compares after every step.
    pub fn membership_into(&self, out: &mut Membership) {
        out.tree.clear();
        out.tree.extend(
            self.intervals
                .iter()
                .filter(|i| matches!(i.state, State::InTree | State::PendingRemove))
                .map(|i| (i.id, i.start, i.last)),
        );
        out.tree.sort_by_key(|&(id, start, _)| (start, id));
        out.deferred.clear();
        out.deferred.extend_from_slice(&self.deferred);
        out.classic.clear();
        out.classic
            .extend(self.classic.iter().filter(|c| !c.released).map(|c| c.id));
        out.released = self.released;
    }

    /// The deferred list, in order.
    pub fn deferred(&self) -> &[Deferred] {
        &self.deferred
    }

    /// No invalidation running and nothing deferred.
    pub fn is_quiescent(&self) -> bool {
        self.active == 0 && !self.invalidating && self.deferred.is_empty()
    }
}
