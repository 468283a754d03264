//! Timed costs on real threads: device-fault throughput and invalidation
//! latency with one and two threads, per strategy, measured side by side
//! in one run.
//!
//! The simulated address space is one structure behind one mutex: each
//! thread takes it for one step of a fault or an mm task (as the executor
//! interleaves logical threads), so two threads contend on it as on the
//! mmap lock, the driver lock and the notifier's lock. What the second
//! thread shows is therefore how much a strategy's steps serialize, not
//! device parallelism. Wall-clock numbers belong here only; they never
//! enter a test.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mirror::{Fault, FaultStep, Mirror, StrategySpec};
use mm::{Env, MapKind, Mm, MmConfig, MmId, MmOp, Phys, Prot, Task, TaskStep, PAGE};
use notifier::Range;
use serde::{Deserialize, Serialize};

use super::workload::{ARENA, TASK_SIZE};

/// Pages of the buffer; each thread works on its own half.
const PAGES: u64 = 256;

/// One strategy's timed costs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TimedRow {
    /// The strategy.
    pub strategy: String,
    /// Device faults per second, one thread (for `regcache`: registration
    /// misses, each a register, a pin and an unregister).
    pub faults_per_s_1t: f64,
    /// Device faults per second, two threads together.
    pub faults_per_s_2t: f64,
    /// Mean ns of one invalidation (a one-page DONTNEED over a page the
    /// device maps), one thread.
    pub inval_ns_1t: f64,
    /// The same while a second thread faults.
    pub inval_ns_2t: f64,
}

struct Shared {
    mm: Mm,
    phys: Phys,
}

struct Env1<'a>(&'a Mirror);

impl Env for Env1<'_> {
    fn callbacks_can_run(&self, mm: MmId, range: &Range) -> bool {
        self.0.mm != mm || self.0.callback_can_run(range)
    }

    fn applied(&self, mm: &Mm, range: &Range) {
        self.0.own_range_done(mm, range);
    }
}

fn setup(spec: StrategySpec) -> Option<(Arc<Mutex<Shared>>, Arc<Mirror>)> {
    let cfg = MmConfig {
        task_size: TASK_SIZE,
        initial_seq: 2,
        planted: None,
    };
    let mm = Mm::new(MmId(0), cfg);
    let m = Mirror::open(0, &mm, spec, None).ok()?;
    let sh = Arc::new(Mutex::new(Shared {
        mm,
        phys: Phys::new(),
    }));
    let m = Arc::new(m);
    task(
        &sh,
        &m,
        0,
        MmOp::Mmap {
            addr: ARENA,
            len: PAGES * PAGE,
            kind: MapKind::AnonPrivate,
            prot: Prot::ReadWrite,
        },
    )?;
    {
        let s = sh.lock().ok()?;
        let _ = m.set_attr(&s.mm, ARENA, PAGES * PAGE);
    }
    for p in 0..PAGES {
        let addr = ARENA + p * PAGE;
        task(
            &sh,
            &m,
            0,
            MmOp::Access {
                addr,
                write: Some(p),
            },
        )?;
    }
    Some((sh, m))
}

fn lock(sh: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    sh.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs an mm task to its end, one step per hold of the world lock.
fn task(sh: &Mutex<Shared>, m: &Mirror, me: u8, op: MmOp) -> Option<()> {
    let mut t = Task::new(op, me);
    loop {
        let r = {
            let mut g = lock(sh);
            let s = &mut *g;
            t.step(&mut s.mm, &mut s.phys, &Env1(m))
        };
        match r {
            TaskStep::Progress => {}
            TaskStep::Blocked(_) => std::thread::yield_now(),
            TaskStep::Done(r) => return r.ok().map(|_| ()),
        }
    }
}

/// Runs a fault to its end, one step per hold of the world lock.
fn fault(sh: &Mutex<Shared>, m: &Mirror, me: u8, mut f: Fault) -> bool {
    let mut blocked = 0u32;
    loop {
        let r = {
            let mut g = lock(sh);
            let s = &mut *g;
            f.step(me, m, &mut s.mm, &mut s.phys, &Env1(m))
        };
        match r {
            FaultStep::Progress | FaultStep::Installed(_) => {}
            FaultStep::Blocked(_) => {
                blocked += 1;
                if blocked > 1_000_000 {
                    return false;
                }
                std::thread::yield_now();
            }
            FaultStep::Done(r) => return r.is_ok(),
        }
    }
}

/// Drains the device's deferred work (any thread may).
fn work(sh: &Mutex<Shared>, m: &Mirror) {
    while let Some(mut item) = m.take_work() {
        for _ in 0..1_000_000 {
            let r = {
                let g = lock(sh);
                item.step(m, &g.mm)
            };
            match r {
                mirror::DeferredStep::Progress => {}
                mirror::DeferredStep::Blocked => std::thread::yield_now(),
                mirror::DeferredStep::Done(_) => break,
            }
        }
    }
}

/// One device fault (or registration miss) on `addr`.
fn one_fault(sh: &Mutex<Shared>, m: &Mirror, me: u8, addr: u64) -> bool {
    if m.uses_registrations() {
        let f = {
            let g = lock(sh);
            match m.register(&g.mm, addr, PAGE) {
                Ok(f) => f,
                Err(_) => return false,
            }
        };
        let ok = fault(sh, m, me, f);
        loop {
            let r = {
                let mut g = lock(sh);
                let s = &mut *g;
                m.unregister(me, &s.mm, &mut s.phys, addr)
            };
            match r {
                Ok(None) => std::thread::yield_now(),
                Ok(Some(w)) => {
                    let mut w = Some(w);
                    while let Some(x) = w.take() {
                        let g = lock(sh);
                        w = mirror::finish_remove(&g.mm, x);
                        drop(g);
                        if w.is_some() {
                            std::thread::yield_now();
                        }
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        ok
    } else {
        let ok = fault(sh, m, me, Fault::new(addr, false));
        work(sh, m);
        ok
    }
}

/// Faults per second over `dur` on `threads` threads.
fn throughput(spec: StrategySpec, threads: u8, dur: Duration) -> f64 {
    let Some((sh, m)) = setup(spec) else {
        return 0.0;
    };
    let count = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (sh, m, count, stop) = (&sh, &m, &count, &stop);
            s.spawn(move || {
                let half = PAGES / u64::from(threads);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let addr = ARENA + (u64::from(t) * half + i % half) * PAGE;
                    if one_fault(sh, m, t, addr) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            });
        }
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Mean ns of a one-page DONTNEED over a device-mapped page, with a
/// second thread faulting when `threads` is 2.
fn inval_latency(spec: StrategySpec, threads: u8, dur: Duration) -> f64 {
    let Some((sh, m)) = setup(spec) else {
        return 0.0;
    };
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let n = AtomicU64::new(0);
    std::thread::scope(|s| {
        let (shr, mr, stopr) = (&sh, &m, &stop);
        if threads > 1 {
            s.spawn(move || {
                let mut i = 0u64;
                while !stopr.load(Ordering::Relaxed) {
                    let addr = ARENA + (PAGES / 2 + i % (PAGES / 2)) * PAGE;
                    one_fault(shr, mr, 1, addr);
                    i += 1;
                }
            });
        }
        let (total, n) = (&total, &n);
        s.spawn(move || {
            let mut i = 0u64;
            let end = Instant::now() + dur;
            while Instant::now() < end {
                let addr = ARENA + (i % (PAGES / 2)) * PAGE;
                // Map it on the device (untimed), then time its invalidation.
                one_fault(shr, mr, 0, addr);
                let t0 = Instant::now();
                task(shr, mr, 0, MmOp::Dontneed { addr, len: PAGE });
                total.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                n.fetch_add(1, Ordering::Relaxed);
                work(shr, mr);
                i += 1;
            }
            stopr.store(true, Ordering::Relaxed);
        });
    });
    total.load(Ordering::Relaxed) as f64 / n.load(Ordering::Relaxed).max(1) as f64
}

/// Rounds of measurements; the median of each is kept.
pub const REPEATS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One round of the four measurements of `spec`, `dur` each.
pub fn measure(spec: StrategySpec, dur: Duration) -> [f64; 4] {
    [
        throughput(spec, 1, dur),
        throughput(spec, 2, dur),
        inval_latency(spec, 1, dur),
        inval_latency(spec, 2, dur),
    ]
}

/// The timed costs of every strategy: [`REPEATS`] rounds, each measuring
/// every strategy in turn (so that a change of machine load falls on all
/// of them alike), and the median of each figure. `tick` runs after each
/// strategy of each round.
pub fn measure_all(
    specs: &[StrategySpec],
    dur: Duration,
    mut tick: impl FnMut(&str),
) -> Vec<TimedRow> {
    let mut samples: Vec<[Vec<f64>; 4]> = specs.iter().map(|_| Default::default()).collect();
    for _ in 0..REPEATS {
        for (spec, s) in specs.iter().zip(samples.iter_mut()) {
            for (v, x) in s.iter_mut().zip(measure(*spec, dur)) {
                v.push(x);
            }
            tick(&spec.name());
        }
    }
    specs
        .iter()
        .zip(samples)
        .map(|(spec, [a, b, c, d])| TimedRow {
            strategy: spec.name(),
            faults_per_s_1t: median(a),
            faults_per_s_2t: median(b),
            inval_ns_1t: median(c),
            inval_ns_2t: median(d),
        })
        .collect()
}
