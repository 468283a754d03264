//! The executor of the `linux` target: each `mN` op runs to completion on
//! the simulated mm and then on the real child ([`super::real`]), in line
//! order (one logical thread), and both sides are compared after every op.
//!
//! Compared:
//! - the op's result: success or the error's class (EINVAL `einval`,
//!   ENOMEM/EFAULT `efault`, EACCES/EPERM `eperm`; a SIGSEGV on a load or
//!   store matches either `efault` or `eperm`: its `si_code` does not say
//!   which), the value a load read, where mmap and mremap mapped;
//! - userfaultfd events against the simulation's invalidations: every
//!   `Unmap` range of munmap, mmap over a mapping and mremap is an `UNMAP`
//!   event with that range (in any order: userfaultfd delivers them after
//!   the op), except that a moving mremap's old range is a
//!   `REMAP` event (from, to, old length) followed by the `UNMAP` of the
//!   old range (none with `dontunmap`); a dontneed's `Clear`
//!   range, clipped to the mappings, is the union of the `REMOVE` events
//!   (one per VMA); a fork is one `FORK` event. No other op may cause a
//!   userfaultfd event. Not comparable, because userfaultfd has no event
//!   for them: mprotect's `ProtectionVma`, fork's `ProtectionPage`, the
//!   `Clear` of a COW break, clear_refs' `SoftDirty`, exit's `Release`
//!   and `Unmap` (the kernel sends no unmap events at exit);
//! - `/proc/PID/pagemap` of each live address space against the simulated
//!   page table, page by page over the window: present exactly where the
//!   simulation has a present PTE, never swapped, *exclusively mapped*
//!   exactly where the simulation's frame has one mapping (the zero page
//!   never is), and frame sharing: two present pages (in one address space
//!   or across m0 and m1) share a PFN exactly when they share a simulated
//!   frame. That is how write protection after fork shows: a store to a
//!   page shared with the other process must land on a new frame;
//! - `expect` lines, against the simulation's answers.
//!
//! Not compared: soft-dirty bits (the simulation has none; clear_refs runs
//! on both sides and its write protection shows through COW), PTE write
//! bits (pagemap does not report them), and everything the linux target
//! does not generate (see [`crate::program::linux_op`]).
//!
//! The kvm target's `ksm` and `collapse` (KSM and THP) change the real
//! layout on the kernel's own terms: ksmd merges every identical page of
//! a mergeable process when it gets to it, not the pair the simulation
//! merges, and `MADV_COLLAPSE` fills or refuses a huge page by rules the
//! simulation does not have. Their results are recorded, not compared,
//! and from the first of them on, pagemap is compared less: after `ksm`,
//! frame sharing and exclusive mapping are not compared (in either
//! address space: a merge in one changes the other's map counts); after
//! `collapse`, neither is presence (nor "never swapped": a huge page's
//! split, deferred to a moment of the kernel's choosing, briefly leaves
//! migration entries, which pagemap reports as swap). What stays
//! compared is what matters to a guest: every value a CPU or the guest
//! reads, the shadow memory, the results of every other op, and the
//! userfaultfd events (KSM and collapse must cause none).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mm::{Env, Mm, MmConfig, MmError, MmId, Outcome as MmOutcome, Phys, Pte, Task, TaskStep};
use notifier::{Event, Range};

use super::real::{code, Real, Refused, Reply, UffdEvent};
use super::shadow::Tracker;
use crate::mirror::exec::Answer;
use crate::outcome::{Divergence, DivergenceKind, Outcome, RunOptions};
use crate::program::{
    DevStep, ErrKind, Expect, MapKind, MmStep, Op, Program, Prot, Target, DEVICES, FILES, MMS, PAGE,
};

struct Free;

impl Env for Free {
    fn callbacks_can_run(&self, _mm: MmId, _range: &Range) -> bool {
        true
    }
}

struct World<'p> {
    program: &'p Program,
    opts: RunOptions,
    phys: Phys,
    mms: Vec<Option<Mm>>,
    real: Real,
    last: Option<Answer>,
    out: Outcome,
    /// The kvm target: the address space each device's guest is on.
    devs: [Option<usize>; DEVICES as usize],
    /// The kernel's release, for kvm divergences.
    kernel: String,
    /// How KVM refused each kind of guest access so far (host page
    /// protected, write): the first answer, which later ones must repeat.
    refusals: BTreeMap<(bool, bool), Reply>,
    /// The kvm target: the shadow memory, kept from the ops alone.
    shadow: Option<Tracker>,
    /// How much of pagemap is still compared (`ksm` and `collapse`
    /// lower it for the rest of the run).
    layout: Layout,
    /// Pages of each file whose initial contents the executors wrote.
    filled: [u64; FILES as usize],
    /// The last `ksm` op: whether ksmd finished its scans (None: the
    /// prctl failed, or no two pages could merge, so nothing was waited
    /// for).
    ksm_settled: Option<bool>,
    /// A `ksm` op made m0 mergeable (a fork child is made so too).
    ksm_on: bool,
}

/// What [`World::compare_pages`] compares, from most to least.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Layout {
    /// Presence, frame sharing, exclusive mapping.
    Exact,
    /// Presence only: KSM has run.
    Presence,
    /// Neither (nor that no page is swapped): a huge page may have been
    /// collapsed.
    Values,
}

fn show(v: Option<u64>) -> String {
    v.map_or("nothing".into(), |v| format!("{v:#x}"))
}

/// `KVM_EXIT_MMIO`: how KVM answers a guest access to a page whose host
/// address has no mapping.
const KVM_EXIT_MMIO: u32 = 6;

type Checked = Result<(), Box<Divergence>>;

/// Runs a linux-target program.
pub fn run_linux(program: &Program, opts: &RunOptions) -> Outcome {
    let real = match Real::spawn(program.config.task_size) {
        Ok(r) => r,
        Err(Refused(why)) => {
            return Outcome {
                divergence: Some(Divergence {
                    kind: DivergenceKind::Linux,
                    step: None,
                    doing: "starting the real child process".into(),
                    core: "(not run)".into(),
                    model: format!("the kernel refused: {why}"),
                    states: (String::new(), String::new()),
                }),
                ..Outcome::default()
            }
        }
    };
    let cfg = MmConfig {
        task_size: program.config.task_size,
        initial_seq: program.config.initial_seq,
        planted: opts.planted,
    };
    let mut w = World {
        program,
        opts: *opts,
        phys: Phys::new(),
        mms: (0..MMS).map(|_| None).collect(),
        real,
        last: None,
        out: Outcome::default(),
        devs: [None; DEVICES as usize],
        kernel: String::new(),
        refusals: BTreeMap::new(),
        shadow: (program.config.target == Target::Kvm).then(|| Tracker::new(MMS as usize)),
        layout: Layout::Exact,
        filled: [0; FILES as usize],
        ksm_settled: None,
        ksm_on: false,
    };
    w.mms[0] = Some(Mm::new(MmId(0), cfg));
    let r = w.run();
    w.out.divergence = r.err().map(|d| *d);
    w.out
}

fn prot_code(p: Prot) -> u64 {
    match p {
        Prot::None => 0,
        Prot::Read => 1,
        Prot::ReadWrite => 2,
    }
}

/// The command for `op`; None for the ops the linux target does not run.
fn command(op: MmStep) -> Option<[u64; 6]> {
    Some(match op {
        MmStep::Mmap {
            addr,
            len,
            kind,
            prot,
        } => {
            let k = match kind {
                MapKind::AnonPrivate => 0,
                MapKind::AnonShared => 1,
                MapKind::File(f) => 2 + u64::from(f),
            };
            [code::MMAP, addr, len, k, prot_code(prot), 0]
        }
        MmStep::Munmap { addr, len } => [code::MUNMAP, addr, len, 0, 0, 0],
        MmStep::Mprotect { addr, len, prot } => [code::MPROTECT, addr, len, prot_code(prot), 0, 0],
        MmStep::Mremap {
            addr,
            old_len,
            new_len,
            to,
            dontunmap,
        } => [
            code::MREMAP,
            addr,
            old_len,
            new_len,
            to.unwrap_or(0),
            u64::from(dontunmap) | u64::from(to.is_some()) << 1,
        ],
        MmStep::Dontneed { addr, len } => [code::DONTNEED, addr, len, 0, 0, 0],
        MmStep::Fork => [code::FORK, 0, 0, 0, 0, 0],
        MmStep::Read { addr } => [code::READ, addr, 0, 0, 0, 0],
        MmStep::Write { addr, value } => [code::WRITE, addr, value, 0, 0, 0],
        MmStep::ClearRefs => [code::CLEAR_REFS, 0, 0, 0, 0, 0],
        MmStep::Exit => [code::EXIT, 0, 0, 0, 0, 0],
        MmStep::Ksm { .. } => [code::KSM, 0, 0, 0, 0, 0],
        MmStep::Collapse { addr } => [code::COLLAPSE, addr, 0, 0, 0, 0],
        _ => return None,
    })
}

fn errno_kind(e: i32) -> ErrKind {
    match e {
        libc::ENOMEM | libc::EFAULT => ErrKind::Fault,
        libc::EACCES | libc::EPERM => ErrKind::Perm,
        _ => ErrKind::Inval,
    }
}

fn reply_text(r: Reply) -> String {
    match r {
        Reply::Ok(v) => format!("ok {v:#x}"),
        Reply::Errno(e) => {
            let e = nix::errno::Errno::from_raw(e);
            format!("error {e} ({})", errno_kind(e as i32).name())
        }
        Reply::Segv(1) => "SIGSEGV (SEGV_MAPERR)".into(),
        Reply::Segv(2) => "SIGSEGV (SEGV_ACCERR)".into(),
        Reply::Segv(c) if c & 0x100 != 0 => format!("SIGBUS (si_code {})", c & 0xff),
        Reply::Segv(c) => format!("SIGSEGV (si_code {c})"),
        Reply::OutOfWindow => "not run: outside the window".into(),
        Reply::MemoryFault => "KVM_RUN failed: EFAULT with KVM_EXIT_MEMORY_FAULT".into(),
        Reply::KvmExit(r) => format!("the vCPU exited with exit_reason {r}"),
    }
}

fn sim_text(r: &Result<MmOutcome, MmError>) -> String {
    match r {
        Ok(MmOutcome::Value(v)) => format!("ok {v:#x}"),
        Ok(MmOutcome::Addr(a)) => format!("ok {a:#x}"),
        Ok(_) => "ok".into(),
        Err(e) => format!("error {}", ErrKind::of_mm(e).name()),
    }
}

/// Adds `[s, e)` to a sorted list of disjoint ranges, merging.
fn add_range(v: &mut Vec<(u64, u64)>, s: u64, e: u64) {
    v.push((s, e));
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in v.iter() {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    *v = out;
}

fn ranges_text(v: &[(u64, u64)]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|(s, e)| format!("{s:#x}..{e:#x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The events as compared: unmap and remap as a multiset, removes as a
/// union, forks counted.
#[derive(Debug, Default, PartialEq, Eq)]
struct Events {
    ordered: Vec<UffdEvent>,
    removed: Vec<(u64, u64)>,
    forks: u32,
}

impl Events {
    fn text(&self) -> String {
        let mut s = String::new();
        for e in &self.ordered {
            match *e {
                UffdEvent::Unmap { mm, start, end } => {
                    let _ = write!(s, "m{mm} UNMAP {start:#x}..{end:#x}; ");
                }
                UffdEvent::Remap { mm, from, to, len } => {
                    let _ = write!(s, "m{mm} REMAP {from:#x} -> {to:#x} +{len:#x}; ");
                }
                _ => {}
            }
        }
        if !self.removed.is_empty() {
            let _ = write!(s, "REMOVE {}; ", ranges_text(&self.removed));
        }
        if self.forks > 0 {
            let _ = write!(s, "FORK x{}; ", self.forks);
        }
        if s.is_empty() {
            "no userfaultfd events".into()
        } else {
            s.trim_end_matches("; ").to_string()
        }
    }
}

impl World<'_> {
    fn run(&mut self) -> Checked {
        for i in 0..self.program.steps.len() {
            let step = self.program.steps[i];
            let said = match step.op {
                Op::Mm { mm, op } => self.mm_step(i, mm as usize, op)?,
                Op::Expect(e) => self.expect(i, e)?,
                Op::Dev { dev, op } if self.program.config.target == Target::Kvm => {
                    self.dev_step(i, dev as usize, op)?
                }
                _ => "not an op of the linux target".into(),
            };
            if self.opts.trace {
                let line = crate::text::format_step(&step);
                self.out.trace.push(format!("{i:>4}: {line}    -> {said}"));
            }
        }
        Ok(())
    }

    fn expect(&mut self, i: usize, e: Expect) -> Result<String, Box<Divergence>> {
        self.out.stats.ran += 1;
        let holds = self.last.as_ref().is_some_and(|a| a.satisfies(&e));
        if holds || !self.opts.expect {
            return Ok(format!("expectation holds: {holds}"));
        }
        let got = match &self.last {
            Some(a) => format!("the last op answered {}", a.text()),
            None => "no op has finished yet".into(),
        };
        Err(self.diverge(
            DivergenceKind::Expect,
            i,
            got,
            format!("expected {}", crate::text::expect_text(&e)),
        ))
    }

    fn mm_step(&mut self, i: usize, m: usize, op: MmStep) -> Result<String, Box<Divergence>> {
        let sim_live = self.mms[m].as_ref().is_some_and(|x| !x.exited);
        let Some(cmd) = command(op) else {
            self.out.stats.skipped += 1;
            self.last = Some(Answer::Skipped);
            return Ok("skipped: not an op of the linux target".into());
        };
        if !sim_live || (op == MmStep::Fork && (m != 0 || self.mms[1].is_some())) {
            self.out.stats.skipped += 1;
            self.last = Some(Answer::Skipped);
            return Ok("skipped".into());
        }
        self.run_op(i, m, op, cmd, None)
    }

    /// Runs `op` on the simulation and `cmd` on the real `m`, and
    /// compares them; `guest` is the device when `cmd` is its access.
    fn run_op(
        &mut self,
        i: usize,
        m: usize,
        op: MmStep,
        cmd: [u64; 6],
        guest: Option<usize>,
    ) -> Result<String, Box<Divergence>> {
        if !self.real.live(m) {
            return Err(self.diverge(
                DivergenceKind::Linux,
                i,
                format!("m{m} is live"),
                format!("the real m{m} is not running"),
            ));
        }
        self.out.stats.ran += 1;
        // The simulation: the whole op, recording each invalidation.
        let vmas_before: Vec<(u64, u64)> = self.mms[m]
            .as_ref()
            .map(|x| x.vmas().map(|v| (v.start, v.end)).collect())
            .unwrap_or_default();
        let (mop, _) = crate::mirror::exec::mm_op(op);
        let mut task = Task::new(mop, 0);
        let mut ranges: Vec<Range> = Vec::new();
        let mut inside = false;
        let sim = loop {
            let mmx = self.mms[m].as_mut().expect("live");
            let stepped = task.step(mmx, &mut self.phys, &Free);
            if let Some(Err(why)) = self.shadow.as_mut().map(|sh| sh.step(m, &task)) {
                return Err(self.diverge(
                    DivergenceKind::Shadow,
                    i,
                    format!("m{m}: {why}"),
                    "the shadow memory's mappings allow it".into(),
                ));
            }
            match stepped {
                TaskStep::Progress => {
                    let now = task.in_invalidation();
                    if now && !inside {
                        ranges.extend(task.open_range());
                    }
                    inside = now;
                }
                TaskStep::Blocked(b) => {
                    return Err(self.diverge(
                        DivergenceKind::Linux,
                        i,
                        format!("blocked on {b:?} with one thread and no devices"),
                        "(not run)".into(),
                    ))
                }
                TaskStep::Done(r) => break r,
            }
        };
        // The real process.
        let reply = match self.fill_files(m).and_then(|()| self.real_op(m, op, cmd)) {
            Ok(r) => r,
            Err(e) => {
                return Err(self.diverge(
                    DivergenceKind::Linux,
                    i,
                    sim_text(&sim),
                    format!("the real side broke: {e}"),
                ))
            }
        };
        let real_events = self.real.take_events();
        self.feature(0x1000 | (cmd[0] as u32) << 4 | reply_class(reply));
        for e in &real_events {
            self.feature(0x2000 | (cmd[0] as u32) << 4 | event_class(e));
        }
        self.last = Some(Answer::of_mm(&sim));
        match guest {
            // The kernel's own terms (see the module doc).
            None if matches!(op, MmStep::Ksm { .. } | MmStep::Collapse { .. }) => {}
            None => self.compare_result(i, op, &sim, reply)?,
            Some(d) => self.compare_guest(i, d, m, op, &sim, reply)?,
        }
        if let Some(Err(mm)) = self.shadow.as_mut().map(|sh| sh.done(m, mop, &sim)) {
            let who = match guest {
                Some(d) => format!("the guest d{d}"),
                None => "the CPU".into(),
            };
            return Err(self.diverge(
                DivergenceKind::Shadow,
                i,
                format!(
                    "m{} {:#x}: {} ({who} saw {})",
                    mm.mm,
                    mm.addr,
                    mm.why,
                    show(mm.got)
                ),
                format!("the shadow memory holds {}", show(mm.expected)),
            ));
        }
        let who = if guest.is_some() { "kvm" } else { "linux" };
        let guest_saw = match (guest, &sim) {
            (Some(d), Ok(MmOutcome::Value(v))) => Some((d, *v)),
            _ => None,
        };
        let mut said = format!("{} / {who} {}", sim_text(&sim), reply_text(reply));
        // What ksmd and MADV_COLLAPSE made of it, for the trace and as
        // feedback (nothing compared depends on it).
        let flag = match op {
            MmStep::Ksm { .. } => Some((21, "KSM")),
            MmStep::Collapse { .. } => Some((22, "THP")),
            _ => None,
        };
        if let Some((bit, name)) = flag {
            let n = self.real.pages_flagged(m, bit).unwrap_or(0);
            self.out.stats.layout_effects += u64::from(n > 0);
            self.feature(0x6100 | bit << 4 | (n.min(1) as u32));
            let _ = write!(said, "; {n} {name} pages in m{m}");
            if let (MmStep::Ksm { .. }, Some(done)) = (op, self.ksm_settled) {
                let n = super::ksm::SCANS;
                let _ = match done {
                    true => write!(said, " after {n} full scans"),
                    false => write!(said, " (ksmd did not finish {n} scans in time)"),
                };
            }
        }
        match sim {
            Ok(MmOutcome::Forked(mut child)) => {
                child.id = MmId(1);
                self.mms[1] = Some(*child);
                // Mergeable as its parent, in case the kernel does not
                // pass the prctl on (VMAs it maps later must not differ).
                if self.ksm_on && self.real.live(1) {
                    if let Err(e) = self.real.call(1, [code::KSM, 0, 0, 0, 0, 0]) {
                        return Err(self.diverge(
                            DivergenceKind::Linux,
                            i,
                            "ok".into(),
                            format!("the real side broke: {e}"),
                        ));
                    }
                }
            }
            Ok(_) => {
                if matches!(op, MmStep::Mmap { .. } | MmStep::Mremap { .. }) {
                    if let Err(e) = self.real.register_window(m) {
                        return Err(self.diverge(
                            DivergenceKind::Linux,
                            i,
                            "ok".into(),
                            format!("the real side broke: {e}"),
                        ));
                    }
                }
            }
            Err(_) => {}
        }
        self.compare_events(i, m, op, &ranges, &vmas_before, &real_events)?;
        self.compare_pages(i)?;
        if let Some((d, v)) = guest_saw {
            self.host_sees(i, d, m, op, v)?;
        }
        Ok(said)
    }

    /// Has the files' initial contents written as far as the simulation's
    /// file mappings reach, now that it ran the op (the real side runs
    /// it next).
    fn fill_files(&mut self, m: usize) -> Result<(), String> {
        let mut reach = self.filled;
        for mmx in self.mms.iter().flatten().filter(|x| !x.exited) {
            for v in mmx.vmas() {
                if let mm::Backing::File { file } = v.backing {
                    let end = v.pgoff.saturating_add((v.end - v.start) / PAGE);
                    if let Some(r) = reach.get_mut(file as usize) {
                        *r = (*r).max(end);
                    }
                }
            }
        }
        for (f, &to) in reach.iter().enumerate() {
            let from = self.filled[f];
            if to > from {
                match self.real.call(m, [code::FILL, f as u64, from, to, 0, 0])? {
                    Reply::Ok(_) => self.filled[f] = to,
                    r => return Err(format!("writing file:{f}: {}", reply_text(r))),
                }
            }
        }
        Ok(())
    }

    /// Whether two present private anonymous pages in the window hold the
    /// same contents, by the simulation (one word a page, the rest zero,
    /// as the real pages are): only then may ksmd have anything to merge,
    /// and only then is it worth waiting for its scans. Pages, not frames:
    /// the simulation has merged its pair already, the kernel not yet.
    fn mergeable_twins(&self) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        for mmx in self.mms.iter().flatten().filter(|x| !x.exited) {
            for (a, pte) in mmx.ptes() {
                let Pte::Present { frame, .. } = pte else {
                    continue;
                };
                let private = mmx.vma_at(a).is_some_and(|v| v.backing.is_private());
                if private && frame != self.phys.zero() && !seen.insert(self.phys.data(frame)) {
                    return true;
                }
            }
        }
        false
    }

    /// Runs `cmd` on the real `m`; around `ksm` and `collapse`, what
    /// they need (ksmd running and given time; the window unwatched by
    /// userfaultfd while it collapses) and the lower [`Layout`] after.
    fn real_op(&mut self, m: usize, op: MmStep, cmd: [u64; 6]) -> Result<Reply, String> {
        match op {
            MmStep::Ksm { .. } => {
                super::ksm::start()?;
                let r = self.real.call(m, cmd)?;
                self.layout = self.layout.max(Layout::Presence);
                self.ksm_settled = None;
                self.ksm_on |= m == 0 && r == Reply::Ok(0);
                if r == Reply::Ok(0) && self.mergeable_twins() {
                    let settled = super::ksm::settle()?;
                    self.feature(0x6000 | u32::from(settled));
                    self.ksm_settled = Some(settled);
                }
                Ok(r)
            }
            MmStep::Collapse { .. } => {
                self.real.unregister_window(m)?;
                let r = self.real.call(m, cmd);
                self.real.register_window(m)?;
                self.layout = Layout::Values;
                r
            }
            _ => self.real.call(m, cmd),
        }
    }

    /// A device op of the kvm target.
    fn dev_step(&mut self, i: usize, d: usize, op: DevStep) -> Result<String, Box<Divergence>> {
        let skipped = |w: &mut Self, why: &str| {
            w.out.stats.skipped += 1;
            w.last = Some(Answer::Skipped);
            Ok(format!("skipped: {why}"))
        };
        let live = |w: &Self, m: usize| w.mms[m].as_ref().is_some_and(|x| !x.exited);
        match op {
            DevStep::Open { mm, .. } => {
                let m = mm as usize;
                if self.devs[d].is_some() {
                    return skipped(self, "already open");
                }
                if !live(self, m) {
                    return skipped(self, "no such address space");
                }
                self.out.stats.ran += 1;
                let reply = match self.real.call(m, [code::KVM_OPEN, d as u64, 0, 0, 0, 0]) {
                    Ok(r) => r,
                    Err(e) => {
                        return Err(self.diverge(
                            DivergenceKind::Kvm,
                            i,
                            "ok".into(),
                            format!("the real side broke: {e}"),
                        ))
                    }
                };
                let events = self.real.take_events();
                if reply != Reply::Ok(0) || !events.is_empty() {
                    return Err(self.diverge(
                        DivergenceKind::Kvm,
                        i,
                        "ok, and no userfaultfd events".into(),
                        format!(
                            "opening the guest: {}; {} userfaultfd events",
                            reply_text(reply),
                            events.len()
                        ),
                    ));
                }
                self.devs[d] = Some(m);
                self.last = Some(Answer::Done);
                self.feature(0x4000 | d as u32);
                Ok(format!("a KVM guest over m{m}'s window"))
            }
            DevStep::Read { addr } | DevStep::Write { addr, .. } => {
                let Some(m) = self.devs[d] else {
                    return skipped(self, "the device is not open");
                };
                if !live(self, m) {
                    return skipped(self, "its address space exited");
                }
                let (mop, cmd) = match op {
                    DevStep::Write { value, .. } => (
                        MmStep::Write { addr, value },
                        [code::KVM_WRITE, d as u64, addr, value, 0, 0],
                    ),
                    _ => (
                        MmStep::Read { addr },
                        [code::KVM_READ, d as u64, addr, 0, 0, 0],
                    ),
                };
                self.run_op(i, m, mop, cmd, Some(d))
            }
            _ => skipped(self, "not an op of the kvm target"),
        }
    }

    /// A guest access against the simulation's CPU access: the same value
    /// where the CPU may access; a failed `KVM_RUN` (`EFAULT`, with or
    /// without `KVM_EXIT_MEMORY_FAULT`) where it may not.
    #[allow(clippy::too_many_arguments)]
    fn compare_guest(
        &mut self,
        i: usize,
        d: usize,
        m: usize,
        op: MmStep,
        sim: &Result<MmOutcome, MmError>,
        reply: Reply,
    ) -> Checked {
        let fault = matches!(
            reply,
            Reply::MemoryFault | Reply::Errno(libc::EFAULT) | Reply::KvmExit(KVM_EXIT_MMIO)
        );
        let write = matches!(op, MmStep::Write { .. });
        let mut agree = match (sim, reply) {
            (Ok(MmOutcome::Value(v)), Reply::Ok(w)) => *v == w,
            (Err(_), Reply::OutOfWindow) => true,
            (Err(MmError::Fault | MmError::Perm), _) => fault,
            _ => false,
        };
        // The same host condition must get the same answer from KVM
        // throughout a run: nothing mapped, or no permission; read or write.
        let mut before = None;
        if let (Err(e @ (MmError::Fault | MmError::Perm)), true) = (sim, fault) {
            let class = (ErrKind::of_mm(e) == ErrKind::Perm, write);
            match self.refusals.get(&class) {
                Some(&r) if r != reply => {
                    agree = false;
                    before = Some(r);
                }
                Some(_) => {}
                None => {
                    self.refusals.insert(class, reply);
                }
            }
        }
        self.feature(
            0x5000 | u32::from(matches!(op, MmStep::Write { .. })) << 4 | reply_class(reply),
        );
        if agree {
            return Ok(());
        }
        let what = match op {
            MmStep::Write { addr, value } => format!("d{d} write {addr:#x} {value:#x}"),
            MmStep::Read { addr } => format!("d{d} read {addr:#x}"),
            _ => format!("d{d}"),
        };
        let why = match (sim, reply) {
            (Err(_), Reply::Ok(_)) => " (the guest used a page the host has unmapped or protected)",
            (Ok(_), Reply::Ok(_)) => " (the guest saw another value)",
            (Ok(_), _) => " (the guest could not use a page the host CPU can)",
            _ => "",
        };
        let why = match before {
            Some(r) => format!(
                " (earlier in this run, KVM answered the same kind of access to the same kind of \
                 host page with: {})",
                reply_text(r)
            ),
            None => why.to_string(),
        };
        // What the host CPU sees there now, for the report (a load
        // changes nothing where the simulation's CPU access succeeded).
        let host = match (sim, op) {
            (Ok(_), MmStep::Read { addr } | MmStep::Write { addr, .. }) => {
                match self.real.call(m, [code::READ, addr, 0, 0, 0, 0]) {
                    Ok(r) => format!("; the host CPU reads {}", reply_text(r)),
                    Err(e) => format!("; the host CPU read broke: {e}"),
                }
            }
            _ => String::new(),
        };
        let kernel = self.kernel_release();
        Err(self.diverge(
            DivergenceKind::Kvm,
            i,
            format!("a CPU access: {}", sim_text(sim)),
            format!(
                "the guest's {what}: {}{why}{host}; Linux {kernel}",
                reply_text(reply)
            ),
        ))
    }

    /// After a guest access that succeeded with `v`: a host CPU load of
    /// the same address in `m` must read `v` (a store: what it stored).
    fn host_sees(&mut self, i: usize, d: usize, m: usize, op: MmStep, v: u64) -> Checked {
        let addr = match op {
            MmStep::Read { addr } | MmStep::Write { addr, .. } => addr,
            _ => return Ok(()),
        };
        let reply = match self.real.call(m, [code::READ, addr, 0, 0, 0, 0]) {
            Ok(r) => r,
            Err(e) => {
                return Err(self.diverge(
                    DivergenceKind::Kvm,
                    i,
                    format!("{v:#x}"),
                    format!("the real side broke: {e}"),
                ))
            }
        };
        let events = self.real.take_events();
        if reply == Reply::Ok(v) && events.is_empty() {
            return Ok(());
        }
        let kernel = self.kernel_release();
        Err(self.diverge(
            DivergenceKind::Kvm,
            i,
            format!("after d{d}'s access, a host CPU read of m{m} {addr:#x} reads {v:#x}"),
            format!(
                "the host CPU read {} ({} userfaultfd events); Linux {kernel}",
                reply_text(reply),
                events.len()
            ),
        ))
    }

    fn kernel_release(&mut self) -> String {
        if self.kernel.is_empty() {
            self.kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "(release unknown)".into());
        }
        self.kernel.clone()
    }

    fn compare_result(
        &mut self,
        i: usize,
        op: MmStep,
        sim: &Result<MmOutcome, MmError>,
        reply: Reply,
    ) -> Checked {
        let agree = match (sim, reply) {
            (Ok(MmOutcome::Value(v) | MmOutcome::Addr(v)), Reply::Ok(w)) => *v == w,
            (Ok(_), Reply::Ok(_)) => true,
            (Err(e), Reply::Errno(x)) => ErrKind::of_mm(e) == errno_kind(x),
            (Err(MmError::Fault | MmError::Perm), Reply::Segv(_)) => true,
            (Err(_), Reply::OutOfWindow) => true,
            _ => false,
        };
        if agree {
            return Ok(());
        }
        let what = match op {
            MmStep::Read { .. } | MmStep::Write { .. } => "the access",
            _ => "the call",
        };
        Err(self.diverge(
            DivergenceKind::Linux,
            i,
            format!("{what}: {}", sim_text(sim)),
            format!("{what}: {}", reply_text(reply)),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn compare_events(
        &mut self,
        i: usize,
        m: usize,
        op: MmStep,
        ranges: &[Range],
        vmas_before: &[(u64, u64)],
        real: &[UffdEvent],
    ) -> Checked {
        let mm8 = m as u8;
        let mut want = Events::default();
        match op {
            MmStep::Mmap { .. } | MmStep::Munmap { .. } => {
                for r in ranges.iter().filter(|r| r.event == Event::Unmap) {
                    want.ordered.push(UffdEvent::Unmap {
                        mm: mm8,
                        start: r.start,
                        end: r.end,
                    });
                }
            }
            MmStep::Mremap {
                addr,
                old_len,
                dontunmap,
                ..
            } => {
                let moved_to = match self.last {
                    Some(Answer::Value(a)) if a != addr => Some(a),
                    _ => None,
                };
                let len = old_len.div_ceil(PAGE).wrapping_mul(PAGE);
                let mut remapped = false;
                for r in ranges.iter().filter(|r| r.event == Event::Unmap) {
                    match moved_to {
                        Some(to) if r.start == addr => {
                            remapped = true;
                            want.ordered.push(UffdEvent::Remap {
                                mm: mm8,
                                from: addr,
                                to,
                                len: r.end - r.start,
                            });
                            // Then the old range goes, as by munmap.
                            if !dontunmap {
                                want.ordered.push(UffdEvent::Unmap {
                                    mm: mm8,
                                    start: r.start,
                                    end: r.end,
                                });
                            }
                        }
                        _ => want.ordered.push(UffdEvent::Unmap {
                            mm: mm8,
                            start: r.start,
                            end: r.end,
                        }),
                    }
                }
                // A duplicate (old_len 0) moves nothing: REMAP of length 0.
                if let Some(to) = moved_to.filter(|_| !remapped && len == 0) {
                    want.ordered.push(UffdEvent::Remap {
                        mm: mm8,
                        from: addr,
                        to,
                        len: 0,
                    });
                }
            }
            MmStep::Dontneed { .. } => {
                for r in ranges.iter().filter(|r| r.event == Event::Clear) {
                    for &(s, e) in vmas_before {
                        let (s, e) = (s.max(r.start), e.min(r.end));
                        if s < e {
                            add_range(&mut want.removed, s, e);
                        }
                    }
                }
            }
            MmStep::Fork if matches!(self.last, Some(Answer::Done)) => want.forks = 1,
            _ => {}
        }
        let mut got = Events::default();
        for &e in real {
            match e {
                UffdEvent::Unmap { .. } | UffdEvent::Remap { .. } => got.ordered.push(e),
                UffdEvent::Remove { start, end, .. } => add_range(&mut got.removed, start, end),
                UffdEvent::Fork { .. } => got.forks += 1,
            }
        }
        // userfaultfd queues unmap events and delivers them once the
        // mmap lock is dropped: their order is not the invalidations'.
        want.ordered.sort_unstable();
        got.ordered.sort_unstable();
        if want == got {
            return Ok(());
        }
        let sim: Vec<String> = ranges
            .iter()
            .map(|r| format!("{:?} {:#x}..{:#x}", r.event, r.start, r.end))
            .collect();
        Err(self.diverge(
            DivergenceKind::Linux,
            i,
            format!(
                "invalidations [{}]: userfaultfd should report {}",
                sim.join(", "),
                want.text()
            ),
            format!("userfaultfd reported {}", got.text()),
        ))
    }

    fn compare_pages(&mut self, i: usize) -> Checked {
        let mut sim_to_pfn: BTreeMap<u32, (u64, usize, u64)> = BTreeMap::new();
        let mut pfn_to_sim: BTreeMap<u64, (u32, usize, u64)> = BTreeMap::new();
        let mut present = 0u32;
        for m in 0..MMS as usize {
            let Some(mmx) = self.mms[m].as_ref().filter(|x| !x.exited) else {
                continue;
            };
            let map = match self.real.pagemap(m) {
                Ok(v) => v,
                Err(e) => {
                    return Err(self.diverge(
                        DivergenceKind::Linux,
                        i,
                        "(pagemap)".into(),
                        format!("the real side broke: {e}"),
                    ))
                }
            };
            for (n, &ent) in map.iter().enumerate() {
                let addr = n as u64 * PAGE;
                let real_present = ent >> 63 & 1 == 1;
                let swapped = ent >> 62 & 1 == 1;
                let exclusive = ent >> 56 & 1 == 1;
                let pfn = ent & ((1 << 55) - 1);
                let sim = match mmx.pte(addr) {
                    Some(Pte::Present { frame, .. }) => Some(frame),
                    _ => None,
                };
                let bad = match sim {
                    // Splitting a huge page (deferred, by the kernel's own
                    // choice of moment) briefly leaves migration entries,
                    // which pagemap shows as swapped.
                    _ if self.layout >= Layout::Values => None,
                    _ if swapped => Some("swapped out".to_string()),
                    None if real_present => Some(format!("present (pfn {pfn:#x})")),
                    Some(f) if !real_present => {
                        Some(format!("not present (the simulation maps frame {})", f.0))
                    }
                    _ => None,
                };
                if let Some(real_says) = bad {
                    let sim_says = match sim {
                        Some(f) => format!("m{m} page {addr:#x} present on frame {}", f.0),
                        None => format!("m{m} page {addr:#x} not present"),
                    };
                    return Err(self.diverge(
                        DivergenceKind::Linux,
                        i,
                        sim_says,
                        format!("pagemap: m{m} page {addr:#x} {real_says}"),
                    ));
                }
                let Some(f) = sim else { continue };
                present += 1;
                if self.layout >= Layout::Presence {
                    continue;
                }
                if pfn == 0 {
                    return Err(self.diverge(
                        DivergenceKind::Linux,
                        i,
                        "(pagemap)".into(),
                        "pagemap shows no PFNs (needs CAP_SYS_ADMIN)".into(),
                    ));
                }
                let fr = self.phys.frame(f);
                let sim_excl = f != self.phys.zero() && fr.mapcount == 1;
                if sim_excl != exclusive {
                    return Err(self.diverge(
                        DivergenceKind::Linux,
                        i,
                        format!(
                            "m{m} page {addr:#x}: frame {} has {} mapping{}",
                            f.0,
                            fr.mapcount,
                            if fr.mapcount == 1 { "" } else { "s" }
                        ),
                        format!(
                            "pagemap: m{m} page {addr:#x} is {}exclusively mapped (pfn {pfn:#x})",
                            if exclusive { "" } else { "not " }
                        ),
                    ));
                }
                match sim_to_pfn.get(&f.0) {
                    Some(&(p, m2, a2)) if p != pfn => {
                        return Err(self.diverge(
                            DivergenceKind::Linux,
                            i,
                            format!(
                                "m{m2} page {a2:#x} and m{m} page {addr:#x} share frame {}",
                                f.0
                            ),
                            format!("pagemap: different frames, pfn {p:#x} and {pfn:#x}"),
                        ));
                    }
                    _ => {
                        sim_to_pfn.insert(f.0, (pfn, m, addr));
                    }
                }
                match pfn_to_sim.get(&pfn) {
                    Some(&(g, m2, a2)) if g != f.0 => {
                        return Err(self.diverge(
                            DivergenceKind::Linux,
                            i,
                            format!(
                                "m{m2} page {a2:#x} on frame {g}, m{m} page {addr:#x} on frame {}",
                                f.0
                            ),
                            format!("pagemap: both on pfn {pfn:#x}"),
                        ));
                    }
                    _ => {
                        pfn_to_sim.insert(pfn, (f.0, m, addr));
                    }
                }
            }
        }
        self.feature(0x3000 | present.min(64));
        Ok(())
    }

    fn feature(&mut self, f: u32) {
        self.out.features.push(f);
    }

    fn diverge(
        &self,
        kind: DivergenceKind,
        i: usize,
        sim: String,
        real: String,
    ) -> Box<Divergence> {
        Box::new(Divergence {
            kind,
            step: Some(i),
            doing: crate::text::format_step(&self.program.steps[i]),
            core: format!("simulation: {sim}"),
            model: format!("linux: {real}"),
            states: (self.render_sim(), self.render_real()),
        })
    }

    fn render_sim(&self) -> String {
        let mut s = String::new();
        for mmx in self.mms.iter().flatten() {
            let _ = write!(s, "m{}:", mmx.id.0);
            if mmx.exited {
                s.push_str(" exited\n");
                continue;
            }
            s.push_str(" vmas");
            for v in mmx.vmas() {
                let prot = match (v.read, v.write) {
                    (_, true) => "rw",
                    (true, false) => "ro",
                    _ => "none",
                };
                let _ = write!(s, " {:#x}..{:#x} {:?} {prot};", v.start, v.end, v.backing);
            }
            s.push_str("\n    present");
            for (a, p) in mmx.ptes() {
                if let Pte::Present { frame, writable } = p {
                    let _ = write!(s, " {a:#x}=f{}{}", frame.0, if writable { "w" } else { "" });
                }
            }
            s.push('\n');
        }
        s
    }

    fn render_real(&self) -> String {
        let mut s = String::new();
        for m in 0..MMS as usize {
            if !self.real.live(m) {
                continue;
            }
            let _ = write!(s, "m{m}: vmas");
            for (a, b) in self.real.maps(m).unwrap_or_default() {
                let _ = write!(s, " {a:#x}..{b:#x};");
            }
            s.push_str("\n    present");
            for (n, ent) in self.real.pagemap(m).unwrap_or_default().iter().enumerate() {
                if ent >> 63 & 1 == 1 {
                    let pfn = ent & ((1 << 55) - 1);
                    let x = if ent >> 56 & 1 == 1 { "x" } else { "" };
                    let _ = write!(s, " {:#x}=pfn{pfn:#x}{x}", n as u64 * PAGE);
                }
            }
            s.push('\n');
        }
        s
    }
}

fn reply_class(r: Reply) -> u32 {
    match r {
        Reply::Ok(_) => 0,
        Reply::Errno(e) => 1 + errno_kind(e) as u32,
        Reply::Segv(c) => 9 + (c as u32 & 3),
        Reply::OutOfWindow => 15,
        Reply::MemoryFault => 8,
        Reply::KvmExit(_) => 7,
    }
}

fn event_class(e: &UffdEvent) -> u32 {
    match e {
        UffdEvent::Unmap { .. } => 0,
        UffdEvent::Remove { .. } => 1,
        UffdEvent::Remap { .. } => 2,
        UffdEvent::Fork { .. } => 3,
    }
}
