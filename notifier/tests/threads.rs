//! Real threads: faulters and invalidators run concurrently, and a shadow
//! kept independently of the core checks that no fault commits across a
//! collision.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use notifier::{Config, Event, Interval, Range, Subscriptions, PAGE_SIZE};

const INTERVALS: u64 = 4;
const SPAN: u64 = 4 * PAGE_SIZE;

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
    let stop = Arc::new(AtomicBool::new(false));

    let invalidators: Vec<_> = (0..2)
        .map(|t| {
            let (subs, driver) = (subs.clone(), driver.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9 + t);
                for _ in 0..3000 {
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
            })
        })
        .collect();

    let faulters: Vec<_> = (0..2)
        .map(|t| {
            let (subs, driver, stop) = (subs.clone(), driver.clone(), stop.clone());
            let intervals = intervals.clone();
            thread::spawn(move || {
                let mut rng = Rng(0x51_7cc1 + t);
                while !stop.load(Ordering::Relaxed) {
                    let iv = &intervals[(rng.next() % INTERVALS) as usize];
                    let seq = subs.read_begin(iv).unwrap();
                    let before = driver.lock.lock().unwrap().callbacks[index(iv)];
                    thread::yield_now();
                    let sh = driver.lock.lock().unwrap();
                    if iv.read_retry(seq) {
                        driver.retries.fetch_add(1, Ordering::Relaxed);
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

    // Faulters run until every invalidator is done.
    for h in invalidators {
        h.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for h in faulters {
        h.join().unwrap();
    }
    assert!(subs.is_quiescent());
    assert_eq!(driver.violations.load(Ordering::Relaxed), 0);
    assert_eq!(
        driver.lock.lock().unwrap().in_flight,
        [0; INTERVALS as usize]
    );
    assert!(driver.commits.load(Ordering::Relaxed) > 0);
    for iv in &intervals {
        subs.remove(iv).unwrap();
    }
    assert_eq!(subs.tree_len(), 0);
}
