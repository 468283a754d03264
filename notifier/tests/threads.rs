//! Real threads: faulters and invalidators run concurrently, and a shadow
//! kept independently of the core checks that no fault commits across a
//! collision.
//!
//! Both sides stop on progress, never on time: the invalidators run until
//! the faulters have committed, so scheduling cannot leave the check empty;
//! the faulters run until the invalidators are done and they have
//! committed enough. Every wait is bounded so that a wrong core fails the
//! test instead of hanging it; a correct one never comes near the bound.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use notifier::{Config, Event, Interval, Range, Subscriptions, PAGE_SIZE};

const INTERVALS: u64 = 4;
const SPAN: u64 = 4 * PAGE_SIZE;
/// Each invalidator runs at least this many cycles...
const MIN_CYCLES: u64 = 3000;
/// ...and then on until the faulters have committed this often in all...
const MIN_COMMITS: u64 = 200;
/// ...but never more than this many cycles, in case a schedule lets no
/// fault through: the faulters then commit once the invalidations stop.
const MAX_CYCLES: u64 = 30_000;
/// How long a join waits. A correct core needs a fraction of it; a wrong
/// one that blocks for ever fails here instead of hanging the test.
const HANG_BOUND: Duration = Duration::from_secs(60);

/// Joins a thread spawned with [`spawn_bounded`], failing after [`HANG_BOUND`].
fn join_bounded<T>(rx: mpsc::Receiver<T>, h: thread::JoinHandle<()>, what: &str) -> T {
    match rx.recv_timeout(HANG_BOUND) {
        Ok(v) => v,
        Err(RecvTimeoutError::Disconnected) => match h.join() {
            Err(e) => std::panic::resume_unwind(e),
            Ok(()) => unreachable!("{what}: thread ended without a result"),
        },
        Err(RecvTimeoutError::Timeout) => panic!("{what}: not done after {HANG_BOUND:?}"),
    }
}

fn spawn_bounded<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> (mpsc::Receiver<T>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let _ = tx.send(f());
    });
    (rx, h)
}

/// What the driver lock protects, per interval: how many callbacks ran and
/// how many invalidations are between their callback and their end.
#[derive(Default)]
struct Shadow {
    callbacks: [u64; INTERVALS as usize],
    in_flight: [u64; INTERVALS as usize],
}

struct Driver {
    lock: Mutex<Shadow>,
    commits: AtomicU64,
    retries: AtomicU64,
    violations: AtomicU64,
}

fn index(iv: &Interval) -> usize {
    (iv.start() / SPAN) as usize
}

/// A tiny xorshift so every thread's choices are seeded and reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn concurrent_faults_never_commit_across_a_collision() {
    let subs = Arc::new(
        Subscriptions::new(Config {
            initial_seq: u64::MAX - 63,
            ..Config::default()
        })
        .unwrap(),
    );
    let driver = Arc::new(Driver {
        lock: Mutex::default(),
        commits: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        violations: AtomicU64::new(0),
    });
    let intervals: Vec<Interval> = (0..INTERVALS)
        .map(|i| {
            let d = driver.clone();
            subs.insert(
                i * SPAN,
                SPAN,
                Arc::new(move |iv: &Interval, _: &Range, seq: u64| {
                    let mut sh = d.lock.lock().unwrap();
                    iv.set_seq(seq).unwrap();
                    sh.callbacks[index(iv)] += 1;
                    sh.in_flight[index(iv)] += 1;
                    true
                }),
            )
            .unwrap()
        })
        .collect();
    // Set once every invalidator has returned: no invalidation can start
    // after it, so a read that begins after it must not be told to retry.
    let quiet = Arc::new(AtomicBool::new(false));

    let invalidators: Vec<_> = (0..2)
        .map(|t| {
            let (subs, driver) = (subs.clone(), driver.clone());
            spawn_bounded(move || {
                let mut rng = Rng(0x9e37_79b9 + t);
                let mut cycles = 0;
                while cycles < MIN_CYCLES
                    || cycles < MAX_CYCLES && driver.commits.load(Ordering::Relaxed) < MIN_COMMITS
                {
                    cycles += 1;
                    let a = rng.next() % (INTERVALS * 4);
                    let b = a + 1 + rng.next() % 4;
                    let r = Range::new(a * PAGE_SIZE, b * PAGE_SIZE, Event::Clear);
                    let inv = subs.invalidate_range_start(&r).unwrap();
                    thread::yield_now();
                    // The CPU page table would change here; the shadow's
                    // in-flight marks are dropped before the end, which is
                    // what lets waiting faults go on.
                    {
                        let mut sh = driver.lock.lock().unwrap();
                        for i in (a * PAGE_SIZE / SPAN)..=((b * PAGE_SIZE - 1) / SPAN) {
                            // Every interval exists for the whole run, so the
                            // hit set is exactly the indices the range spans.
                            if i < INTERVALS {
                                let i = i as usize;
                                assert!(sh.in_flight[i] > 0, "callback missing for {i}");
                                sh.in_flight[i] -= 1;
                            }
                        }
                    }
                    subs.invalidate_range_end(inv);
                }
                cycles
            })
        })
        .collect();

    let faulters: Vec<_> = (0..2)
        .map(|t| {
            let (subs, driver, quiet) = (subs.clone(), driver.clone(), quiet.clone());
            let intervals = intervals.clone();
            spawn_bounded(move || {
                let mut rng = Rng(0x51_7cc1 + t);
                loop {
                    let was_quiet = quiet.load(Ordering::Acquire);
                    if was_quiet && driver.commits.load(Ordering::Relaxed) >= MIN_COMMITS {
                        break;
                    }
                    let iv = &intervals[(rng.next() % INTERVALS) as usize];
                    let seq = subs.read_begin(iv).unwrap();
                    let before = driver.lock.lock().unwrap().callbacks[index(iv)];
                    thread::yield_now();
                    let sh = driver.lock.lock().unwrap();
                    if iv.read_retry(seq) {
                        driver.retries.fetch_add(1, Ordering::Relaxed);
                        if was_quiet {
                            // Nothing invalidated since read_begin: a
                            // retry here is wrong, and would loop for ever.
                            driver.violations.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        continue;
                    }
                    let collided = sh.callbacks[index(iv)] != before;
                    let mid_invalidation = sh.in_flight[index(iv)] != 0;
                    if collided || mid_invalidation {
                        driver.violations.fetch_add(1, Ordering::Relaxed);
                    }
                    driver.commits.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    for (rx, h) in invalidators {
        let cycles = join_bounded(rx, h, "invalidator");
        assert!((MIN_CYCLES..=MAX_CYCLES).contains(&cycles));
    }
    quiet.store(true, Ordering::Release);
    for (rx, h) in faulters {
        join_bounded(rx, h, "faulter");
    }
    assert!(subs.is_quiescent());
    assert_eq!(
        driver.violations.load(Ordering::Relaxed),
        0,
        "faults committed across a collision, or told to retry with none"
    );
    assert_eq!(
        driver.lock.lock().unwrap().in_flight,
        [0; INTERVALS as usize]
    );
    assert!(driver.commits.load(Ordering::Relaxed) >= MIN_COMMITS);
    for iv in &intervals {
        subs.remove(iv).unwrap();
    }
    assert_eq!(subs.tree_len(), 0);
}
