//! The minimizer: delta debugging over steps, then simplification of
//! operands and config, always keeping the same kind of divergence.

use notifier::Event;
use oracles::{CallbackModel, Refuse};

use crate::exec::{run, DivergenceKind, RunOptions};
use crate::program::{DevStep, MapKind, MmStep, Op, Program, Prot, Step, PAGE};

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
    fn fails(&mut self, p: &Program, opts: &RunOptions, kind: DivergenceKind) -> bool {
        if self.execs >= self.max_execs {
            return false;
        }
        self.execs += 1;
        run(p, opts).divergence.is_some_and(|d| d.kind == kind)
    }

    /// Returns a smaller program that still shows a divergence of `kind`
    /// (or `p` itself if it does not).
    pub fn minimize(&mut self, p: &Program, opts: &RunOptions, kind: DivergenceKind) -> Program {
        let opts = RunOptions {
            trace: false,
            ..*opts
        };
        let mut best = p.clone();
        if !self.fails(&best, &opts, kind) {
            return best;
        }
        // Simpler operands can make more steps removable: go to a fixpoint.
        loop {
            let before = best.clone();
            self.ddmin(&mut best, &opts, kind);
            self.simplify(&mut best, &opts, kind);
            if best == before || self.execs >= self.max_execs {
                return best;
            }
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
            } else if size == 1 {
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
        let edits: [fn(&mut Program); 4] = [
            renumber,
            |p| p.config.threads = p.steps.iter().map(|s| s.thread + 1).max().unwrap_or(1),
            |p| p.config.initial_seq = 2,
            |p| p.config.task_size = u64::MAX,
        ];
        for edit in edits {
            let mut cand = best.clone();
            edit(&mut cand);
            if cand != *best && cand.validate().is_ok() && self.fails(&cand, opts, kind) {
                *best = cand;
            }
        }
        for i in 0..best.steps.len() {
            // Candidates are recomputed after each success, so that one
            // accepted simplification never undoes another.
            'again: loop {
                for step in step_candidates(&best.steps[i]) {
                    let mut cand = best.clone();
                    cand.steps[i] = step;
                    if step != best.steps[i]
                        && cand.validate().is_ok()
                        && self.fails(&cand, opts, kind)
                    {
                        *best = cand;
                        continue 'again;
                    }
                }
                break;
            }
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
            for start in simpler_addrs(start) {
                out.push(with(Op::Insert {
                    slot,
                    start,
                    len,
                    cb,
                }));
            }
            for len in simpler_lens(len) {
                out.push(with(Op::Insert {
                    slot,
                    start,
                    len,
                    cb,
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
    out
}

/// Simpler variants of an address-space op: the plainest mapping kind,
/// no destination or flags for mremap, small stored values, whole pages.
fn simpler_mm(op: MmStep) -> Vec<MmStep> {
    let mut v = Vec::new();
    match op {
        MmStep::Mmap {
            addr,
            len,
            kind,
            prot,
        } => {
            if kind != MapKind::AnonPrivate || prot != Prot::ReadWrite {
                v.push(MmStep::Mmap {
                    addr,
                    len,
                    kind: MapKind::AnonPrivate,
                    prot: Prot::ReadWrite,
                });
            }
            for len in simpler_lens(len) {
                v.push(MmStep::Mmap {
                    addr,
                    len,
                    kind,
                    prot,
                });
            }
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
        MmStep::Munmap { addr, len } => {
            for len in simpler_lens(len) {
                v.push(MmStep::Munmap { addr, len });
            }
        }
        _ => {}
    }
    v
}

fn simpler_addrs(a: u64) -> Vec<u64> {
    let mut v = vec![0, a & !(PAGE - 1)];
    v.retain(|&x| x < a);
    v
}

// Toward one page, or at least whole pages; never oscillates.
fn simpler_lens(l: u64) -> Vec<u64> {
    let mut v = vec![PAGE];
    if !l.is_multiple_of(PAGE) {
        v.push(l.saturating_add(PAGE - 1) / PAGE * PAGE);
    }
    v.retain(|&x| x != l && x != 0);
    v
}
