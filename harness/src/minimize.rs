//! The minimizer: smaller programs that keep the same kind of divergence.
//!
//! A mirror-target line both queues an op and gives its thread one turn,
//! so dropping a line moves every later op of that thread. The passes
//! therefore work on the *schedule form* first: each op sits on the turn
//! that starts it and every other turn is a `step`, with the drain's turns
//! written out as lines. There, replacing an op by `step` removes the op
//! and nothing else. Then come passes that drop or merge whole threads,
//! devices and address spaces, delta debugging over lines, and simpler
//! operands.

use notifier::Event;
use oracles::{CallbackModel, Refuse};

use crate::exec::{run, DivergenceKind, Outcome, RunOptions};
use crate::program::{
    DevStep, Expect, MapKind, MmStep, Op, Program, Prot, Step, Target, DEVICES, MAX_STEPS,
    MAX_THREADS, PAGE,
};

/// 2 MiB: shifting addresses by a multiple keeps huge-page alignment.
const HUGE: u64 = 2 << 20;

/// Budget and progress of a minimization.
#[derive(Clone, Copy, Debug)]
pub struct Minimizer {
    /// Most executions to spend.
    pub max_execs: u64,
    /// Executions spent so far.
    pub execs: u64,
}

impl Default for Minimizer {
    fn default() -> Minimizer {
        Minimizer {
            max_execs: 50_000,
            execs: 0,
        }
    }
}

impl Minimizer {
    fn out_of_budget(&self) -> bool {
        self.execs >= self.max_execs
    }

    fn fails(&mut self, p: &Program, opts: &RunOptions, kind: DivergenceKind) -> bool {
        if self.out_of_budget() {
            return false;
        }
        self.execs += 1;
        run(p, opts).divergence.is_some_and(|d| d.kind == kind)
    }

    /// Takes `cand` if it is new, well formed and still diverges.
    fn accept(
        &mut self,
        best: &mut Program,
        cand: Program,
        opts: &RunOptions,
        kind: DivergenceKind,
    ) -> bool {
        if cand != *best && cand.validate().is_ok() && self.fails(&cand, opts, kind) {
            *best = cand;
            true
        } else {
            false
        }
    }

    /// Returns a smaller program that still shows a divergence of `kind`
    /// (or `p` itself if it does not).
    pub fn minimize(&mut self, p: &Program, opts: &RunOptions, kind: DivergenceKind) -> Program {
        let opts = RunOptions {
            trace: false,
            ..*opts
        };
        if !self.fails(p, &opts, kind) {
            return p.clone();
        }
        // Two starts: the schedule form (each op can go on its own), and
        // plain delta debugging of the program as it is (whose queued ops
        // leave their timing to the drain, which needs no lines). The
        // shorter result wins; the schedule form on a tie.
        let mut best = p.clone();
        self.write_schedule(&mut best, &opts, kind, true);
        let scheduled = self.passes(best, &opts, kind);
        if p.config.target != Target::Mirror {
            return scheduled;
        }
        let mut best = p.clone();
        loop {
            let before = best.clone();
            self.ddmin(&mut best, &opts, kind);
            self.simplify(&mut best, &opts, kind);
            if best == before || self.out_of_budget() {
                break;
            }
        }
        let queued = self.passes(best, &opts, kind);
        let mut best = if queued.steps.len() < scheduled.steps.len() {
            queued
        } else {
            scheduled
        };
        // Written out again, a smaller program may shrink further.
        while !self.out_of_budget() {
            let mut again = best.clone();
            self.write_schedule(&mut again, &opts, kind, true);
            let again = self.passes(again, &opts, kind);
            if again.steps.len() >= best.steps.len() {
                break;
            }
            best = again;
        }
        best
    }

    /// Every pass, to a fixpoint (each can enable the others).
    fn passes(&mut self, mut best: Program, opts: &RunOptions, kind: DivergenceKind) -> Program {
        loop {
            let before = best.clone();
            self.write_schedule(&mut best, opts, kind, false);
            self.drop_idle(&mut best, opts, kind);
            self.structure(&mut best, opts, kind);
            self.ops_to_steps(&mut best, opts, kind);
            self.ddmin(&mut best, opts, kind);
            self.simplify(&mut best, opts, kind);
            if best == before || self.out_of_budget() {
                break;
            }
        }
        // Delta debugging may leave ops queued behind others: put each on
        // the turn that starts it, unless that writes out a longer drain.
        self.write_schedule(&mut best, opts, kind, false);
        best
    }

    /// Rewrites a mirror program into its schedule form (see
    /// [`schedule_form`]), or, when that is longer and `may_grow` is false,
    /// into [`lines_schedule_form`]; kept if it still diverges the same way
    /// (it should: every turn does what it did).
    fn write_schedule(
        &mut self,
        best: &mut Program,
        opts: &RunOptions,
        kind: DivergenceKind,
        may_grow: bool,
    ) {
        if best.config.target != Target::Mirror || self.out_of_budget() {
            return;
        }
        self.execs += 1;
        let traced = RunOptions {
            trace: true,
            ..*opts
        };
        let out = run(best, &traced);
        if out.divergence.as_ref().is_none_or(|d| d.kind != kind) {
            return;
        }
        let cand = match schedule_form(best, &out) {
            Some(c) if may_grow || c.steps.len() <= best.steps.len() => Some(c),
            // The lines' turns only; what the drain starts stays queued.
            _ => lines_schedule_form(best, &out),
        };
        if let Some(cand) = cand {
            self.accept(best, cand, opts, kind);
        }
    }

    /// Mirror target: drops the `step` lines whose turn had nothing to do
    /// (they change nothing).
    fn drop_idle(&mut self, best: &mut Program, opts: &RunOptions, kind: DivergenceKind) {
        if best.config.target != Target::Mirror || self.out_of_budget() {
            return;
        }
        self.execs += 1;
        let traced = RunOptions {
            trace: true,
            ..*opts
        };
        let out = run(best, &traced);
        let mut cand = best.clone();
        let mut i = 0;
        cand.steps.retain(|s| {
            let idle = s.op == Op::Yield && out.turns.get(i).is_some_and(|t| t.idle());
            i += 1;
            !idle
        });
        self.accept(best, cand, opts, kind);
    }

    /// Passes over whole threads, devices and address spaces.
    fn structure(&mut self, best: &mut Program, opts: &RunOptions, kind: DivergenceKind) {
        self.drop_threads(best, opts, kind);
        self.merge_threads(best, opts, kind);
        if best.config.target == Target::Mirror {
            let dev = self.drop_devices(best, opts, kind);
            let m1 = self.drop_m1(best, opts, kind);
            if dev || m1 {
                // What they did is `step` now: drop the idle turns.
                self.drop_idle(best, opts, kind);
            }
            self.drop_trailing_steps(best, opts, kind);
        }
    }

    /// Drops all lines of one thread, highest first.
    fn drop_threads(&mut self, best: &mut Program, opts: &RunOptions, kind: DivergenceKind) {
        for u in (0..best.config.threads).rev() {
            if uses(best, u) {
                let mut cand = best.clone();
                cand.steps.retain(|s| s.thread != u);
                self.accept(best, cand, opts, kind);
            }
        }
    }

    /// Gives one thread's lines to a lower one: two threads become one.
    fn merge_threads(&mut self, best: &mut Program, opts: &RunOptions, kind: DivergenceKind) {
        for u in (1..best.config.threads).rev() {
            for v in 0..u {
                if uses(best, u) && uses(best, v) {
                    let mut cand = best.clone();
                    for s in cand.steps.iter_mut().filter(|s| s.thread == u) {
                        s.thread = v;
                    }
                    if self.accept(best, cand, opts, kind) {
                        break;
                    }
                }
            }
        }
    }

    /// Mirror target: closes a device (its ops become `step`), and moves a
    /// lone `d1` to `d0`. Returns whether a device went.
    fn drop_devices(
        &mut self,
        best: &mut Program,
        opts: &RunOptions,
        kind: DivergenceKind,
    ) -> bool {
        let mut dropped = false;
        for d in 0..DEVICES {
            if best.config.devices[usize::from(d)].is_some()
                || best.steps.iter().any(|s| touches_dev(&s.op, d))
            {
                let mut cand = best.clone();
                cand.config.devices[usize::from(d)] = None;
                yield_where(&mut cand, |op| touches_dev(op, d));
                dropped |= self.accept(best, cand, opts, kind);
            }
        }
        if best.config.devices[0].is_none() && !best.steps.iter().any(|s| touches_dev(&s.op, 0)) {
            let mut cand = best.clone();
            swap_devices(&mut cand);
            self.accept(best, cand, opts, kind);
        }
        dropped
    }

    /// Mirror target: no fork, so no `m1`; its ops become `step`.
    fn drop_m1(&mut self, best: &mut Program, opts: &RunOptions, kind: DivergenceKind) -> bool {
        let mut cand = best.clone();
        yield_where(&mut cand, touches_m1);
        self.accept(best, cand, opts, kind)
    }

    /// Mirror target: `step`s after the last op go; the drain finishes
    /// what they would have (in its own order).
    fn drop_trailing_steps(&mut self, best: &mut Program, opts: &RunOptions, kind: DivergenceKind) {
        let keep = best
            .steps
            .iter()
            .rposition(|s| s.op != Op::Yield)
            .map_or(0, |i| i + 1);
        if keep < best.steps.len() {
            let mut cand = best.clone();
            cand.steps.truncate(keep);
            self.accept(best, cand, opts, kind);
        }
    }

    /// Mirror target: replaces ops by `step`, halves of them first, then
    /// one at a time. The turn stays, so the other ops keep their timing;
    /// the schedule form then drops the turns that have nothing left to do.
    fn ops_to_steps(&mut self, best: &mut Program, opts: &RunOptions, kind: DivergenceKind) {
        if best.config.target != Target::Mirror {
            return;
        }
        let ops: Vec<usize> = (0..best.steps.len())
            .filter(|&i| best.steps[i].op != Op::Yield)
            .collect();
        let mut size = ops.len().div_ceil(2).max(1);
        let mut any = false;
        loop {
            // Latest first: later ops depend on earlier ones more than the
            // other way round.
            for chunk in ops.rchunks(size) {
                if chunk.iter().all(|&i| best.steps[i].op == Op::Yield) {
                    continue;
                }
                let mut cand = best.clone();
                for &i in chunk {
                    cand.steps[i].op = Op::Yield;
                }
                any |= self.accept(best, cand, opts, kind);
            }
            if size == 1 || self.out_of_budget() {
                break;
            }
            size = size.div_ceil(2);
        }
        if any {
            self.drop_idle(best, opts, kind);
        }
    }

    fn ddmin(&mut self, best: &mut Program, opts: &RunOptions, kind: DivergenceKind) {
        let mut chunks = 2usize;
        while best.steps.len() >= 2 {
            let n = best.steps.len();
            let size = n.div_ceil(chunks);
            let mut removed = false;
            let mut start = 0;
            while start < best.steps.len() {
                let end = (start + size).min(best.steps.len());
                let mut cand = best.clone();
                cand.steps.drain(start..end);
                if self.fails(&cand, opts, kind) {
                    *best = cand;
                    removed = true;
                } else {
                    start = end;
                }
            }
            if removed {
                chunks = (chunks - 1).max(2);
            } else if size == 1 || self.out_of_budget() {
                break;
            } else {
                chunks = (chunks * 2).min(best.steps.len());
            }
        }
        if best.steps.len() == 1 {
            let mut cand = best.clone();
            cand.steps.clear();
            if self.fails(&cand, opts, kind) {
                *best = cand;
            }
        }
    }

    fn simplify(&mut self, best: &mut Program, opts: &RunOptions, kind: DivergenceKind) {
        // Whole-program candidates first; each builds on what was accepted.
        let edits: [fn(&mut Program); 7] = [
            renumber,
            |p| p.config.kernel_compat = false,
            |p| p.config.threads = p.steps.iter().map(|s| s.thread + 1).max().unwrap_or(1),
            |p| p.config.initial_seq = 2,
            |p| p.config.task_size = u64::MAX,
            |p| shift_addresses(p, HUGE),
            |p| shift_addresses(p, PAGE),
        ];
        for edit in edits {
            let mut cand = best.clone();
            edit(&mut cand);
            self.accept(best, cand, opts, kind);
        }
        for i in 0..best.steps.len() {
            // Candidates are recomputed after each success, so that one
            // accepted simplification never undoes another.
            'again: loop {
                if self.out_of_budget() {
                    return;
                }
                for step in step_candidates(&best.steps[i]) {
                    let mut cand = best.clone();
                    cand.steps[i] = step;
                    if self.accept(best, cand, opts, kind) {
                        continue 'again;
                    }
                }
                break;
            }
        }
    }
}

/// The schedule form of mirror program `p`, from its traced run `out`:
/// one line per turn that did something, up to the divergence (the drain's
/// turns included), each op on the turn that started it and `step` on the
/// others. Ops that never started had no effect and are gone. `out` must
/// be a traced run of `p`. `None` for the notifier target or when that
/// would exceed [`MAX_STEPS`].
pub fn schedule_form(p: &Program, out: &Outcome) -> Option<Program> {
    if p.config.target != Target::Mirror {
        return None;
    }
    let steps: Vec<Step> = out
        .turns
        .iter()
        .filter(|t| !t.idle())
        .map(|t| Step {
            thread: t.thread,
            op: t.started.map_or(Op::Yield, |j| p.steps[j].op),
        })
        .collect();
    (steps.len() <= MAX_STEPS).then_some(Program {
        config: p.config,
        steps,
    })
}

/// Like [`schedule_form`], without writing out the drain: each op that
/// starts on a line's turn sits on that line; an op that the drain starts
/// stays queued, on a later line of its thread whose turn went on with
/// earlier work (as on its own line), or `None` if there is no such line.
/// Never longer than `p`.
pub fn lines_schedule_form(p: &Program, out: &Outcome) -> Option<Program> {
    if p.config.target != Target::Mirror {
        return None;
    }
    let at = out.divergence.as_ref().and_then(|d| d.step);
    let n = at.map_or(p.steps.len(), |k| k + 1);
    let turns = out.turns.get(..n)?;
    let mut steps: Vec<Step> = turns
        .iter()
        .map(|t| Step {
            thread: t.thread,
            op: t.started.map_or(Op::Yield, |j| p.steps[j].op),
        })
        .collect();
    // Only a run that reached the drain has ops that matter and did not
    // start on a line.
    if at.is_none() {
        let started: Vec<usize> = turns.iter().filter_map(|t| t.started).collect();
        // Per thread: the first line that may queue its next op. An op
        // that never started comes after every one that did (the queue is
        // FIFO), and its thread was busy from its own line on, so any
        // later `step` of that thread can queue it instead.
        let mut next = [0usize; MAX_THREADS as usize];
        for (h, t) in turns.iter().enumerate() {
            if t.started.is_some() {
                next[usize::from(t.thread)] = h + 1;
            }
        }
        for (q, s) in p.steps.iter().enumerate() {
            if s.op == Op::Yield || started.contains(&q) {
                continue;
            }
            let cursor = &mut next[usize::from(s.thread)];
            let mut host = (*cursor).max(q);
            while host < n
                && !(steps[host].thread == s.thread
                    && steps[host].op == Op::Yield
                    && turns[host].busy)
            {
                host += 1;
            }
            steps.get_mut(host)?.op = s.op;
            *cursor = host + 1;
        }
    }
    let mut i = 0;
    steps.retain(|s| {
        let idle = s.op == Op::Yield && turns[i].idle();
        i += 1;
        !idle
    });
    Some(Program {
        config: p.config,
        steps,
    })
}

fn uses(p: &Program, t: u8) -> bool {
    p.steps.iter().any(|s| s.thread == t)
}

fn touches_dev(op: &Op, d: u8) -> bool {
    matches!(*op, Op::Dev { dev, .. } | Op::Expect(Expect::Faults { dev, .. }) if dev == d)
}

/// The forked address space `m1`: its ops, devices opened on it, the fork.
fn touches_m1(op: &Op) -> bool {
    matches!(
        op,
        Op::Mm { mm: 1, .. }
            | Op::Mm {
                op: MmStep::Fork,
                ..
            }
            | Op::Dev {
                op: DevStep::Open { mm: 1, .. },
                ..
            }
    )
}

fn yield_where(p: &mut Program, f: impl Fn(&Op) -> bool) {
    for s in p.steps.iter_mut().filter(|s| f(&s.op)) {
        s.op = Op::Yield;
    }
}

fn swap_devices(p: &mut Program) {
    p.config.devices.swap(0, 1);
    for s in &mut p.steps {
        if let Op::Dev { dev, .. } | Op::Expect(Expect::Faults { dev, .. }) = &mut s.op {
            *dev = 1 - *dev;
        }
    }
}

/// Renames threads, interval slots and classic slots in order of first use.
fn renumber(p: &mut Program) {
    fn rename(map: &mut Vec<u8>, x: &mut u8) {
        let n = map.iter().position(|&m| m == *x).unwrap_or_else(|| {
            map.push(*x);
            map.len() - 1
        });
        *x = n as u8;
    }
    let (mut threads, mut slots, mut classic) = (Vec::new(), Vec::new(), Vec::new());
    for s in &mut p.steps {
        rename(&mut threads, &mut s.thread);
        match &mut s.op {
            Op::Insert { slot, .. } | Op::Remove { slot } | Op::ReadBegin { slot } => {
                rename(&mut slots, slot)
            }
            Op::Register { slot, .. } | Op::Unregister { slot } => rename(&mut classic, slot),
            _ => {}
        }
    }
}

/// The addresses an op names (not its lengths): what a shift moves.
fn addresses(op: &mut Op) -> Vec<&mut u64> {
    match op {
        Op::Insert { start, .. } => vec![start],
        Op::Start { start, end, .. } => vec![start, end],
        Op::Mm { op, .. } => match op {
            MmStep::Mmap { addr, .. }
            | MmStep::Munmap { addr, .. }
            | MmStep::Mprotect { addr, .. }
            | MmStep::Mremap { addr, to: None, .. }
            | MmStep::Dontneed { addr, .. }
            | MmStep::Read { addr }
            | MmStep::Write { addr, .. }
            | MmStep::Reclaim { addr }
            | MmStep::Migrate { addr }
            | MmStep::Collapse { addr }
            | MmStep::Split { addr } => vec![addr],
            MmStep::Mremap {
                addr, to: Some(to), ..
            } => vec![addr, to],
            MmStep::Ksm { a, b } => vec![a, b],
            MmStep::Fork | MmStep::ClearRefs | MmStep::OomReap | MmStep::Exit => vec![],
        },
        Op::Dev { op, .. } => match op {
            DevStep::Read { addr }
            | DevStep::Write { addr, .. }
            | DevStep::Snapshot { addr, .. }
            | DevStep::Migrate { addr, .. }
            | DevStep::Exclusive { addr, .. }
            | DevStep::Evict { addr, .. }
            | DevStep::Register { addr, .. }
            | DevStep::Attr { addr, .. }
            | DevStep::Prefetch { addr, .. }
            | DevStep::Unregister { addr } => vec![addr],
            DevStep::Open { .. } | DevStep::Work => vec![],
        },
        _ => vec![],
    }
}

/// The lengths an op names.
fn lengths(op: &mut Op) -> Vec<&mut u64> {
    match op {
        Op::Insert { len, .. } => vec![len],
        Op::Mm { op, .. } => match op {
            MmStep::Mmap { len, .. }
            | MmStep::Munmap { len, .. }
            | MmStep::Mprotect { len, .. }
            | MmStep::Dontneed { len, .. } => vec![len],
            MmStep::Mremap {
                old_len, new_len, ..
            } => vec![old_len, new_len],
            _ => vec![],
        },
        Op::Dev {
            op:
                DevStep::Snapshot { len, .. }
                | DevStep::Migrate { len, .. }
                | DevStep::Exclusive { len, .. }
                | DevStep::Evict { len, .. }
                | DevStep::Register { len, .. }
                | DevStep::Attr { len, .. }
                | DevStep::Prefetch { len, .. },
            ..
        } => vec![len],
        _ => vec![],
    }
}

/// Moves every address down by the same multiple of `align`, as far as
/// the lowest one allows: the layout stays, the numbers get smaller.
fn shift_addresses(p: &mut Program, align: u64) {
    let low = p
        .steps
        .iter_mut()
        .flat_map(|s| addresses(&mut s.op).into_iter().map(|a| *a))
        .min();
    let delta = low.map_or(0, |a| a / align * align);
    if delta == 0 {
        return;
    }
    for s in &mut p.steps {
        for a in addresses(&mut s.op) {
            *a -= delta;
        }
    }
}

/// Simpler variants of one step, simplest first.
fn step_candidates(s: &Step) -> Vec<Step> {
    let mut out = Vec::new();
    for t in 0..s.thread {
        out.push(Step {
            thread: t,
            op: s.op,
        });
    }
    let with = |op: Op| Step {
        thread: s.thread,
        op,
    };
    match s.op {
        Op::Insert {
            slot,
            start,
            len,
            cb,
        } => {
            for slot in 0..slot {
                out.push(with(Op::Insert {
                    slot,
                    start,
                    len,
                    cb,
                }));
            }
            if cb != CallbackModel::GOOD {
                out.push(with(Op::Insert {
                    slot,
                    start,
                    len,
                    cb: CallbackModel::GOOD,
                }));
            }
        }
        Op::Start {
            event,
            start,
            end,
            blockable,
            owner,
        } => {
            let mk =
                |(event, start, end, blockable, owner): (Event, u64, u64, bool, Option<u8>)| {
                    with(Op::Start {
                        event,
                        start,
                        end,
                        blockable,
                        owner,
                    })
                };
            if event != Event::Unmap {
                out.push(mk((Event::Unmap, start, end, blockable, owner)));
            }
            if !blockable {
                out.push(mk((event, start, end, true, owner)));
            }
            if owner.is_some() {
                out.push(mk((event, start, end, blockable, None)));
            }
            for s2 in simpler_addrs(start) {
                if s2 < end {
                    out.push(mk((event, s2, end, blockable, owner)));
                }
            }
            if end > start {
                for len in simpler_lens(end - start) {
                    out.push(mk((
                        event,
                        start,
                        start.saturating_add(len),
                        blockable,
                        owner,
                    )));
                }
            }
            return out;
        }
        Op::Register { slot, refuse } if refuse != Refuse::Never => {
            out.push(with(Op::Register {
                slot,
                refuse: Refuse::Never,
            }));
        }
        Op::Mm { mm, op } => {
            if mm > 0 {
                out.push(with(Op::Mm { mm: 0, op }));
            }
            for op in simpler_mm(op) {
                out.push(with(Op::Mm { mm, op }));
            }
        }
        Op::Dev { dev, op } => {
            if dev > 0 {
                out.push(with(Op::Dev { dev: 0, op }));
            }
            if let DevStep::Write { addr, value } = op {
                if value > 1 {
                    out.push(with(Op::Dev {
                        dev,
                        op: DevStep::Write { addr, value: 1 },
                    }));
                }
            }
        }
        _ => {}
    }
    // Addresses and lengths, one operand at a time.
    let mut op = s.op;
    for k in 0..addresses(&mut op).len() {
        let a = *addresses(&mut op)[k];
        for a2 in simpler_addrs(a) {
            let mut o = s.op;
            *addresses(&mut o)[k] = a2;
            out.push(with(o));
        }
    }
    for k in 0..lengths(&mut op).len() {
        let l = *lengths(&mut op)[k];
        for l2 in simpler_lens(l) {
            let mut o = s.op;
            *lengths(&mut o)[k] = l2;
            out.push(with(o));
        }
    }
    out
}

/// Simpler variants of an address-space op: the plainest mapping kind,
/// no destination or flags for mremap, small stored values.
fn simpler_mm(op: MmStep) -> Vec<MmStep> {
    let mut v = Vec::new();
    match op {
        MmStep::Mmap {
            addr,
            len,
            kind,
            prot,
        } if kind != MapKind::AnonPrivate || prot != Prot::ReadWrite => {
            v.push(MmStep::Mmap {
                addr,
                len,
                kind: MapKind::AnonPrivate,
                prot: Prot::ReadWrite,
            });
        }
        MmStep::Mremap {
            addr,
            old_len,
            new_len,
            to,
            dontunmap,
        } if to.is_some() || dontunmap => v.push(MmStep::Mremap {
            addr,
            old_len,
            new_len,
            to: None,
            dontunmap: false,
        }),
        MmStep::Write { addr, value } if value > 1 => v.push(MmStep::Write { addr, value: 1 }),
        _ => {}
    }
    v
}

/// Smaller addresses: zero, the page start, half as far, one page lower.
fn simpler_addrs(a: u64) -> Vec<u64> {
    let page = a & !(PAGE - 1);
    let mut v = vec![0, page, (a / 2) & !(PAGE - 1), page.saturating_sub(PAGE)];
    v.retain(|&x| x < a);
    v.dedup();
    v
}

// Toward one page, or at least whole pages, or half; never oscillates:
// only rounding up grows a length, and a whole-page length is not rounded.
fn simpler_lens(l: u64) -> Vec<u64> {
    let mut v = vec![PAGE];
    if !l.is_multiple_of(PAGE) {
        v.push(l.saturating_add(PAGE - 1) / PAGE * PAGE);
    }
    let half = (l / 2).div_ceil(PAGE) * PAGE;
    if half < l {
        v.push(half);
    }
    v.retain(|&x| x != l && x != 0);
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::decode_for;
    use proptest::prelude::*;

    /// What each turn did, in order, idle turns left out: `(thread, effect)`.
    fn effects(out: &Outcome) -> Vec<(u8, String)> {
        let said = out.trace.iter().map(|e| match e.split_once("    -> ") {
            Some((_, s)) => s.to_string(),
            None => e.clone(),
        });
        out.turns
            .iter()
            .zip(said)
            .filter(|(t, _)| !t.idle())
            .map(|(t, s)| (t.thread, s))
            .collect()
    }

    fn traced(p: &Program) -> Outcome {
        run(
            p,
            &RunOptions {
                trace: true,
                ..RunOptions::default()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The schedule form is the same execution: every turn that did
        /// something does it again, in the same order, and each op runs on
        /// its own line.
        #[test]
        fn schedule_form_replays_every_turn(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let p = decode_for(Target::Mirror, &bytes);
            let out = traced(&p);
            // Too long to write out: nothing to check.
            let Some(sf) = schedule_form(&p, &out) else {
                return Ok(());
            };
            let again = traced(&sf);
            let (want, got) = (effects(&out), effects(&again));
            // A deadlocked drain takes one more round of blocked turns.
            prop_assert!(got.len() >= want.len());
            prop_assert_eq!(&got[..want.len()], &want[..], "{}", crate::text::print(&sf));
            prop_assert_eq!(
                out.divergence.map(|d| d.kind),
                again.divergence.map(|d| d.kind)
            );
            for (i, s) in sf.steps.iter().enumerate() {
                let t = again.turns[i];
                prop_assert!(!t.idle(), "line {} idles", i);
                if s.op != Op::Yield {
                    prop_assert_eq!(t.started, Some(i));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Without the drain written out, too: the same turns, the same
        /// divergence, and every op that starts on a line's turn is on it.
        #[test]
        fn lines_schedule_form_replays_every_turn(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let p = decode_for(Target::Mirror, &bytes);
            let out = traced(&p);
            let Some(sf) = lines_schedule_form(&p, &out) else {
                return Ok(());
            };
            prop_assert!(sf.steps.len() <= p.steps.len());
            let again = traced(&sf);
            prop_assert_eq!(effects(&again), effects(&out), "{}", crate::text::print(&sf));
            prop_assert_eq!(
                out.divergence.map(|d| d.kind),
                again.divergence.map(|d| d.kind)
            );
            for (i, t) in again.turns.iter().take(sf.steps.len()).enumerate() {
                prop_assert!(!t.idle(), "line {} idles", i);
                if let Some(j) = t.started {
                    prop_assert_eq!(j, i, "{}", crate::text::print(&sf));
                }
            }
        }
    }

    #[test]
    fn schedule_form_puts_a_queued_op_on_the_turn_that_starts_it() {
        let p = crate::text::parse(
            "config target=mirror threads=1 devices=fullva\n\
             t0 m0 mmap 0x0 +0x1000 anon\n\
             t0 m0 write 0x0 5\n\
             t0 step\nt0 step\nt0 step\nt0 step\nt0 step\nt0 step\n",
        )
        .unwrap();
        let sf = schedule_form(&p, &traced(&p)).unwrap();
        let ops: Vec<usize> = (0..sf.steps.len())
            .filter(|&i| sf.steps[i].op != Op::Yield)
            .collect();
        // mmap takes three turns; the write starts on the fourth. The idle
        // turns after it are gone.
        assert_eq!(ops, vec![0, 3], "{}", crate::text::print(&sf));
        assert!(sf.steps.len() < p.steps.len());
    }

    #[test]
    fn simpler_operands_always_shrink_or_round_to_pages() {
        for a in [1, PAGE - 1, PAGE, 3 * PAGE + 5, 0x20e000, u64::MAX] {
            assert!(simpler_addrs(a).iter().all(|&x| x < a), "{a:#x}");
        }
        for l in [1, PAGE, 3 * PAGE, 5 * PAGE + 1, u64::MAX] {
            for x in simpler_lens(l) {
                assert!(x != 0 && x != l);
                assert!(x < l || (x.is_multiple_of(PAGE) && !l.is_multiple_of(PAGE)));
            }
        }
        let mut p = crate::text::parse(
            "config target=mirror threads=1\n\
             t0 m0 mmap 0x210000 +0x2000 anon\nt0 d0 read 0x211000\nt0 m0 ksm 0x210000 0x211000\n",
        )
        .unwrap();
        shift_addresses(&mut p, HUGE);
        assert_eq!(
            crate::text::print(&p).lines().skip(2).collect::<Vec<_>>(),
            [
                "t0 m0 mmap 0x10000 +0x2000 anon",
                "t0 d0 read 0x11000",
                "t0 m0 ksm 0x10000 0x11000"
            ]
        );
    }

    /// The passes, each on a program made for it, under a planted bug
    /// that any mapping made read-only shows: mprotect without an
    /// invalidation.
    #[cfg(feature = "planted-bugs")]
    mod passes {
        use super::*;
        use crate::text::parse;

        const OPTS: RunOptions = RunOptions {
            trace: false,
            planted: Some(notifier::PlantedBug::MprotectNoInvalidate),
            expect: true,
        };

        fn setup(src: &str) -> (Program, DivergenceKind, Minimizer) {
            let p = parse(&format!(
                "config target=mirror threads=4 devices=fullva,perfault\n{src}"
            ))
            .unwrap();
            let kind = run(&p, &OPTS).divergence.expect("diverges").kind;
            (p, kind, Minimizer::default())
        }

        fn still_fails(p: &Program, kind: DivergenceKind) {
            let d = run(p, &OPTS).divergence;
            assert_eq!(d.map(|d| d.kind), Some(kind), "{}", crate::text::print(p));
        }

        const BUG: &str = "t0 m0 mmap 0x0 +0x1000 anon\nt0 step\nt0 step\n\
                           t0 m0 write 0x0 1\nt0 step\nt0 m0 mprotect 0x0 +0x1000 ro\n";

        #[test]
        fn a_thread_that_does_not_matter_goes() {
            let (mut p, kind, mut m) = setup(&format!(
                "t3 m0 mmap 0x8000 +0x1000 anon\nt3 step\n{BUG}t3 m0 read 0x8000\n"
            ));
            m.drop_threads(&mut p, &OPTS, kind);
            still_fails(&p, kind);
            assert!(!uses(&p, 3), "{}", crate::text::print(&p));
            assert!(uses(&p, 0));
        }

        #[test]
        fn two_threads_that_both_matter_merge() {
            let (mut p, kind, mut m) = setup(
                "t0 m0 mmap 0x0 +0x1000 anon\nt0 step\nt0 step\nt0 m0 write 0x0 1\nt0 step\n\
                 t2 m0 mprotect 0x0 +0x1000 ro\n",
            );
            // Neither can go alone.
            m.drop_threads(&mut p, &OPTS, kind);
            assert!(uses(&p, 0) && uses(&p, 2));
            m.merge_threads(&mut p, &OPTS, kind);
            still_fails(&p, kind);
            assert!(
                p.steps.iter().all(|s| s.thread == 0),
                "{}",
                crate::text::print(&p)
            );
        }

        #[test]
        fn devices_that_do_not_matter_close_and_their_ops_become_steps() {
            let (mut p, kind, mut m) = setup(&format!(
                "t1 d1 read 0x0\nt1 d0 snapshot 0x0 +0x1000\n{BUG}"
            ));
            let ops = p.steps.iter().filter(|s| s.op != Op::Yield).count();
            assert!(m.drop_devices(&mut p, &OPTS, kind));
            still_fails(&p, kind);
            assert_eq!(p.config.devices, [None, None]);
            assert!(!p.steps.iter().any(|s| matches!(s.op, Op::Dev { .. })));
            // The turns stay, as steps.
            assert_eq!(
                p.steps.iter().filter(|s| s.op != Op::Yield).count(),
                ops - 2
            );
        }

        #[test]
        fn a_lone_second_device_becomes_d0() {
            let mut p = parse(
                "config target=mirror threads=1 devices=none,perfault\n\
                 t0 m0 mmap 0x0 +0x1000 anon\nt0 step\nt0 step\nt0 d1 write 0x0 1\nt0 step\nt0 step\n\
                 t0 step\nt0 step\nt0 m0 mprotect 0x0 +0x1000 ro\n",
            )
            .unwrap();
            let kind = run(&p, &OPTS).divergence.expect("diverges").kind;
            // Keep the device: only the swap may apply.
            let mut m = Minimizer::default();
            let mut cand = p.clone();
            swap_devices(&mut cand);
            assert!(m.accept(&mut p, cand, &OPTS, kind));
            assert_eq!(p.config.devices[1], None);
            assert!(p
                .steps
                .iter()
                .any(|s| matches!(s.op, Op::Dev { dev: 0, .. })));
        }

        #[test]
        fn the_forked_address_space_goes_with_its_fork() {
            let (mut p, kind, mut m) = setup(&format!(
                "t1 m0 fork\nt1 step\nt1 m1 mmap 0x4000 +0x1000 anon\n{BUG}t1 m1 write 0x4000 1\n"
            ));
            assert!(m.drop_m1(&mut p, &OPTS, kind));
            still_fails(&p, kind);
            assert!(
                !p.steps.iter().any(|s| touches_m1(&s.op)),
                "{}",
                crate::text::print(&p)
            );
        }

        #[test]
        fn trailing_steps_go() {
            let (mut p, kind, mut m) = setup(&format!("{BUG}t1 step\nt0 step\nt0 step\n"));
            m.drop_trailing_steps(&mut p, &OPTS, kind);
            still_fails(&p, kind);
            assert_ne!(p.steps.last().map(|s| s.op), Some(Op::Yield));
        }

        #[test]
        fn an_op_that_does_not_matter_becomes_a_step_and_its_turns_go() {
            let (mut p, kind, mut m) =
                setup(&format!("t0 m0 read 0x5000\nt0 step\nt0 step\n{BUG}"));
            let n = p.steps.len();
            m.ops_to_steps(&mut p, &OPTS, kind);
            still_fails(&p, kind);
            assert!(
                !p.steps.iter().any(|s| matches!(
                    s.op,
                    Op::Mm {
                        op: MmStep::Read { .. },
                        ..
                    }
                )),
                "{}",
                crate::text::print(&p)
            );
            assert!(p.steps.len() < n);
        }

        #[test]
        fn addresses_lengths_and_threads_shrink() {
            let (mut p, kind, mut m) = setup(
                "t3 m0 mmap 0x234000 +0x3000 anon\nt3 step\nt3 step\n\
                 t3 m0 write 0x235000 1\nt3 step\nt3 m0 mprotect 0x234000 +0x2800 ro\n",
            );
            // Lengths that fit only once others have shrunk: two rounds.
            m.simplify(&mut p, &OPTS, kind);
            m.simplify(&mut p, &OPTS, kind);
            still_fails(&p, kind);
            let text = crate::text::print(&p);
            assert!(text.contains("threads=1"), "{text}");
            assert!(text.contains("t0 m0 mmap 0x0 +0x1000 anon"), "{text}");
            assert!(text.contains("mprotect 0x0 +0x1000 ro"), "{text}");
        }
    }
}
