//! loom models of the blocking API: every interleaving (up to the
//! preemption bound) of a few short threads over the very code users run,
//! built on loom's `Mutex`, `Condvar` and atomics (`notifier/src/sync.rs`).
//!
//! RUSTFLAGS="--cfg loom" cargo test -p notifier --release --test loom
//! (add `--features planted-bugs` for the tests that must find the planted
//! bugs of the concurrent class). `LOOM_MAX_PREEMPTIONS` bounds the search;
//! unset, each model uses [`PREEMPTIONS`].
//!
//! Each model keeps a shadow under its driver lock, as a driver does, and
//! asserts the protocol's guarantees from DESIGN.md §2: no callback after
//! `remove` returned, no commit across a collision (the device never keeps
//! a PTE older than the CPU's after an invalidation ended), every waiter
//! woken (loom fails a model in which every thread is blocked), and
//! quiescence at the end.
#![cfg(loom)]

use std::sync::atomic::AtomicUsize;

use loom::sync::atomic::{AtomicU64, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};
use loom::thread;

use notifier::{
    ClassicOps, Config, Event, Interval, InvalidateError, PlantedBug, Range, Subscriptions,
    PAGE_SIZE,
};

/// The default preemption bound: the models pass on the core at it in
/// about a second, and each planted bug of the concurrent class needs at
/// most three (`notifier-end-deferred-late`: the remover must block before
/// the end, the end must stop between its two critical sections, and the
/// second cycle must wait for the remover).
const PREEMPTIONS: usize = 4;

/// What the driver lock protects.
#[derive(Default)]
struct Shadow {
    /// The CPU page-table version the device maps, if any.
    pte: Option<u64>,
    /// `remove` of the interval has returned.
    removed: bool,
    /// The release invalidation reached the driver: no commit after it.
    dead: bool,
    callbacks: u32,
}

type Driver = Arc<Mutex<Shadow>>;

/// The CPU page table: its version moves on at every change, between an
/// invalidation's start and its end.
type Cpu = Arc<AtomicU64>;

fn core(planted: Option<PlantedBug>) -> Arc<Subscriptions> {
    Arc::new(
        Subscriptions::new(Config {
            planted,
            ..Config::default()
        })
        .unwrap(),
    )
}

/// The interval callback of a driver: under the driver lock, set_seq and
/// tear the device PTE down.
fn callback(drv: &Driver) -> std::sync::Arc<dyn notifier::IntervalOps> {
    let drv = drv.clone();
    std::sync::Arc::new(move |iv: &Interval, r: &Range, seq: u64| {
        let mut d = drv.lock().unwrap();
        assert!(!d.removed, "callback after remove returned");
        iv.set_seq(seq).unwrap();
        d.pte = None;
        d.callbacks += 1;
        if r.event == Event::Release {
            d.dead = true;
        }
        true
    })
}

/// A device fault: read_begin, sample the CPU page table, commit under the
/// driver lock unless read_retry (or the mm is gone). Two tries are
/// enough against one invalidation: the second read_begin waits for it.
fn fault(subs: &Subscriptions, iv: &Interval, drv: &Driver, cpu: &Cpu) -> bool {
    for _ in 0..2 {
        let seq = subs.read_begin(iv).unwrap();
        let sample = cpu.load(SeqCst);
        let mut d = drv.lock().unwrap();
        if d.dead {
            return false;
        }
        if iv.read_retry(seq) {
            continue;
        }
        d.pte = Some(sample);
        return true;
    }
    false
}

/// One invalidation of `[start, end)` with the CPU change inside it; after
/// its end the device may not map an older version than the CPU.
fn invalidate(subs: &Subscriptions, start: u64, end: u64, drv: &Driver, cpu: &Cpu) {
    let inv = subs
        .invalidate_range_start(&Range::new(start, end, Event::Clear))
        .unwrap();
    cpu.fetch_add(1, SeqCst);
    subs.invalidate_range_end(inv);
    assert_fresh(drv, cpu);
}

fn assert_fresh(drv: &Driver, cpu: &Cpu) {
    let d = drv.lock().unwrap();
    if let Some(v) = d.pte {
        assert_eq!(v, cpu.load(SeqCst), "stale device PTE after the end");
    }
}

fn shared() -> (Driver, Cpu) {
    (
        Arc::new(Mutex::new(Shadow::default())),
        Arc::new(AtomicU64::new(0)),
    )
}

/// Runs `model` under loom, counting the interleavings explored.
fn check(name: &str, planted: Option<PlantedBug>, model: Model) {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(PREEMPTIONS);
    }
    let before = RUNS.load(std::sync::atomic::Ordering::Relaxed);
    b.check(move || {
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        model(planted)
    });
    let runs = RUNS.load(std::sync::atomic::Ordering::Relaxed) - before;
    eprintln!("loom model {name}: {runs} interleavings");
}

/// insert, a read on the new interval and remove against one start/end.
fn insert_remove(planted: Option<PlantedBug>) {
    let subs = core(planted);
    let (drv, cpu) = shared();
    let t = {
        let (subs, drv, cpu) = (subs.clone(), drv.clone(), cpu.clone());
        thread::spawn(move || {
            let iv = subs.insert(0, PAGE_SIZE, callback(&drv)).unwrap();
            fault(&subs, &iv, &drv, &cpu);
            // A driver tears its mapping down before it stops listening.
            drv.lock().unwrap().pte = None;
            subs.remove(&iv).unwrap();
            drv.lock().unwrap().removed = true;
        })
    };
    invalidate(&subs, 0, PAGE_SIZE, &drv, &cpu);
    t.join().unwrap();
    assert!(subs.is_quiescent());
    assert_eq!(subs.tree_len(), 0);
}

/// read_begin / read_retry against start / end.
fn read_vs_invalidate(planted: Option<PlantedBug>) {
    let subs = core(planted);
    let (drv, cpu) = shared();
    let iv = subs.insert(0, 2 * PAGE_SIZE, callback(&drv)).unwrap();
    let t = {
        let (subs, drv, cpu, iv) = (subs.clone(), drv.clone(), cpu.clone(), iv.clone());
        thread::spawn(move || {
            fault(&subs, &iv, &drv, &cpu);
        })
    };
    invalidate(&subs, PAGE_SIZE, 2 * PAGE_SIZE, &drv, &cpu);
    t.join().unwrap();
    assert_fresh(&drv, &cpu);
    assert!(subs.is_quiescent());
    subs.remove(&iv).unwrap();
}

/// remove during a cycle against the end that applies the deferred list,
/// with a second cycle starting on a third thread.
fn remove_during_cycle(planted: Option<PlantedBug>) {
    let subs = core(planted);
    let (drv, cpu) = shared();
    let iv = subs.insert(0, PAGE_SIZE, callback(&drv)).unwrap();
    let inv = subs
        .invalidate_range_start(&Range::new(0, PAGE_SIZE, Event::Clear))
        .unwrap();
    let remover = {
        let (subs, drv, iv) = (subs.clone(), drv.clone(), iv.clone());
        thread::spawn(move || {
            subs.remove(&iv).unwrap();
            drv.lock().unwrap().removed = true;
        })
    };
    let other = {
        let (subs, drv, cpu) = (subs.clone(), drv.clone(), cpu.clone());
        thread::spawn(move || invalidate(&subs, 0, PAGE_SIZE, &drv, &cpu))
    };
    subs.invalidate_range_end(inv);
    remover.join().unwrap();
    other.join().unwrap();
    assert!(subs.is_quiescent());
    assert_eq!(subs.tree_len(), 0);
}

/// Two sleepers on one cycle, a read_begin and a remove, on two threads;
/// the cycle's end on a third must wake both.
fn two_waiters(planted: Option<PlantedBug>) {
    let subs = core(planted);
    let (drv, cpu) = shared();
    let iv = subs.insert(0, PAGE_SIZE, callback(&drv)).unwrap();
    let other = subs
        .insert(
            PAGE_SIZE,
            PAGE_SIZE,
            std::sync::Arc::new(|_: &Interval, _: &Range, _: u64| true),
        )
        .unwrap();
    let inv = subs
        .invalidate_range_start(&Range::new(0, PAGE_SIZE, Event::Clear))
        .unwrap();
    let reader = {
        let (subs, drv, cpu, iv) = (subs.clone(), drv.clone(), cpu.clone(), iv.clone());
        thread::spawn(move || {
            fault(&subs, &iv, &drv, &cpu);
        })
    };
    let remover = {
        let subs = subs.clone();
        thread::spawn(move || subs.remove(&other).unwrap())
    };
    cpu.fetch_add(1, SeqCst);
    subs.invalidate_range_end(inv);
    reader.join().unwrap();
    remover.join().unwrap();
    assert_fresh(&drv, &cpu);
    assert!(subs.is_quiescent());
    subs.remove(&iv).unwrap();
}

/// Process exit against a fault in progress: after release returns the
/// device maps nothing, and no commit comes after it.
fn release_vs_fault(planted: Option<PlantedBug>) {
    let subs = core(planted);
    let (drv, cpu) = shared();
    let iv = subs.insert(0, PAGE_SIZE, callback(&drv)).unwrap();
    let t = {
        let (subs, drv, cpu, iv) = (subs.clone(), drv.clone(), cpu.clone(), iv.clone());
        thread::spawn(move || {
            fault(&subs, &iv, &drv, &cpu);
        })
    };
    subs.release().unwrap();
    assert_eq!(drv.lock().unwrap().pte, None, "a mapping outlived release");
    t.join().unwrap();
    assert_eq!(drv.lock().unwrap().pte, None, "a commit after release");
    assert!(subs.is_quiescent());
    subs.remove(&iv).unwrap();
}

/// A classic subscriber that counts its starts and ends and, when told
/// to, refuses a non-blockable start.
struct Classic {
    refuse: bool,
    open: Arc<AtomicU64>,
}

impl ClassicOps for Classic {
    fn invalidate_range_start(&self, r: &Range) -> bool {
        if self.refuse && !r.blockable {
            return false;
        }
        self.open.fetch_add(1, SeqCst);
        true
    }
    fn invalidate_range_end(&self, _: &Range) {
        self.open.fetch_sub(1, SeqCst);
    }
}

/// A non-blockable start refused by a classic subscriber, against a fault:
/// the refusal rolls back (the fault neither hangs nor commits across it),
/// and the subscriber that accepted sees its end.
fn refusal_with_classic(planted: Option<PlantedBug>) {
    let subs = core(planted);
    let (drv, cpu) = shared();
    let open = Arc::new(AtomicU64::new(0));
    for refuse in [false, true] {
        let c = Classic {
            refuse,
            open: open.clone(),
        };
        subs.register(std::sync::Arc::new(c)).unwrap();
    }
    let iv = subs.insert(0, PAGE_SIZE, callback(&drv)).unwrap();
    let t = {
        let (subs, drv, cpu, iv) = (subs.clone(), drv.clone(), cpu.clone(), iv.clone());
        thread::spawn(move || {
            fault(&subs, &iv, &drv, &cpu);
        })
    };
    let r = Range::new(0, PAGE_SIZE, Event::Clear).non_blockable();
    assert!(matches!(
        subs.invalidate_range_start(&r),
        Err(InvalidateError::WouldBlock(_))
    ));
    assert_eq!(open.load(SeqCst), 0, "a start without its end");
    t.join().unwrap();
    assert!(subs.is_quiescent());
    subs.remove(&iv).unwrap();
}

/// A two-pass driver with a device TLB: the first pass zaps the PTE and
/// issues the flush, the finish completes it (drops the translation). A
/// fault that commits fills the TLB too.
struct TwoPass {
    drv: Driver,
    tlb: Arc<Mutex<Option<u64>>>,
}

impl notifier::IntervalOps for TwoPass {
    fn invalidate(&self, iv: &Interval, r: &Range, seq: u64) -> bool {
        self.invalidate_start(iv, r, seq).finish_now()
    }

    fn invalidate_start(&self, iv: &Interval, _: &Range, seq: u64) -> notifier::Start {
        let mut d = self.drv.lock().unwrap();
        iv.set_seq(seq).unwrap();
        d.pte = None;
        let tlb = self.tlb.clone();
        notifier::Start::Finish(Box::new(move || *tlb.lock().unwrap() = None))
    }
}

/// Two-pass callbacks against a fault: once invalidate_range_start has
/// returned, the device holds no translation of the range (between the
/// passes it may); and no stale PTE after the end.
fn two_pass_vs_fault(planted: Option<PlantedBug>) {
    let subs = core(planted);
    let (drv, cpu) = shared();
    let tlb = Arc::new(Mutex::new(None));
    let ops = TwoPass {
        drv: drv.clone(),
        tlb: tlb.clone(),
    };
    let iv = subs.insert(0, PAGE_SIZE, std::sync::Arc::new(ops)).unwrap();
    let t = {
        let (subs, drv, cpu, iv, tlb) = (
            subs.clone(),
            drv.clone(),
            cpu.clone(),
            iv.clone(),
            tlb.clone(),
        );
        thread::spawn(move || {
            if fault(&subs, &iv, &drv, &cpu) {
                // The device uses its new PTE: the translation is cached
                // under the driver lock, so only while the PTE is there.
                let d = drv.lock().unwrap();
                *tlb.lock().unwrap() = d.pte;
            }
        })
    };
    let inv = subs
        .invalidate_range_start(&Range::new(0, PAGE_SIZE, Event::Clear))
        .unwrap();
    if let Some(v) = *tlb.lock().unwrap() {
        // A translation now must come from a fault that sampled after the
        // change began: there is none yet, the change comes next.
        panic!("the device still translates to version {v} after the start returned");
    }
    cpu.fetch_add(1, SeqCst);
    subs.invalidate_range_end(inv);
    assert_fresh(&drv, &cpu);
    t.join().unwrap();
    assert_fresh(&drv, &cpu);
    assert!(subs.is_quiescent());
    subs.remove(&iv).unwrap();
}

/// A model: a short program over the blocking API, run under loom.
type Model = fn(Option<PlantedBug>);

const MODELS: [(&str, Model); 7] = [
    ("insert_remove", insert_remove),
    ("read_vs_invalidate", read_vs_invalidate),
    ("remove_during_cycle", remove_during_cycle),
    ("release_vs_fault", release_vs_fault),
    ("refusal_with_classic", refusal_with_classic),
    ("two_pass_vs_fault", two_pass_vs_fault),
    ("two_waiters", two_waiters),
];

#[test]
fn loom_insert_remove() {
    check("insert_remove", None, insert_remove);
}

#[test]
fn loom_read_vs_invalidate() {
    check("read_vs_invalidate", None, read_vs_invalidate);
}

#[test]
fn loom_remove_during_cycle() {
    check("remove_during_cycle", None, remove_during_cycle);
}

#[test]
fn loom_release_vs_fault() {
    check("release_vs_fault", None, release_vs_fault);
}

#[test]
fn loom_two_pass_vs_fault() {
    check("two_pass_vs_fault", None, two_pass_vs_fault);
}

#[test]
fn loom_two_waiters() {
    check("two_waiters", None, two_waiters);
}

#[test]
fn loom_refusal_with_classic() {
    check("refusal_with_classic", None, refusal_with_classic);
}

/// Runs one model with one planted bug when `MNFUZZ_LOOM_CHILD` says
/// which ("BUG MODEL"), as a child process of
/// [`loom_finds_the_concurrent_planted_bugs`]: loom reports a deadlock by a
/// panic that aborts the process, so a model expected to fail runs in a
/// process of its own. Without the variable, every model runs clean.
#[test]
fn loom_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        for (name, model) in MODELS {
            check(name, None, model);
        }
        return;
    };
    let (bug, model) = spec.split_once(' ').expect("BUG MODEL");
    let bug = PlantedBug::from_name(bug).expect("a planted bug");
    let (name, model) = MODELS
        .into_iter()
        .find(|(n, _)| *n == model)
        .expect("a model");
    check(name, Some(bug), model);
}

const CHILD: &str = "MNFUZZ_LOOM_CHILD";

/// The models that fail with `bug` planted, each with the first line of
/// loom's report.
#[cfg(feature = "planted-bugs")]
fn failing(bug: PlantedBug) -> Vec<(&'static str, String)> {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut out = Vec::new();
    for (name, _) in MODELS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "loom_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD, format!("{} {name}", bug.name()))
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // loom ends every model (a deadlock is a failure, not a hang);
        // the bound only turns a broken loom into a failure of this test.
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(300), "{name} ran away");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        if !status.success() {
            let why = err
                .lines()
                .skip_while(|l| !l.contains("panicked at"))
                .nth(1)
                .unwrap_or("")
                .to_string();
            out.push((name, why));
        }
    }
    out
}

/// Every planted bug of the concurrent class is found by some model, and
/// so are two split-phase classes that loom can see as well.
#[cfg(feature = "planted-bugs")]
#[test]
fn loom_finds_the_concurrent_planted_bugs() {
    let mut missed = Vec::new();
    // The core's: the mirror's concurrent bugs are the threads target's.
    let bugs = PlantedBug::CONCURRENT
        .into_iter()
        .filter(|b| b.component() == notifier::Component::Notifier)
        .chain([PlantedBug::ClassicFailHangs, PlantedBug::InsertNoMakeOdd]);
    for bug in bugs {
        let f = failing(bug);
        eprintln!("{}: found by {:?}", bug.name(), f);
        if f.is_empty() {
            missed.push(bug.name());
        }
    }
    assert!(missed.is_empty(), "loom missed {missed:?}");
}
