//! Accessors that reports and the split-phase executors rely on: they
//! return the core's state, not a default.

use std::sync::Arc;

use notifier::{Config, Event, Interval, Range, ReadBegin, Subscriptions};

fn accept() -> Arc<dyn notifier::IntervalOps> {
    Arc::new(|iv: &Interval, _: &Range, seq: u64| {
        iv.set_seq(seq).unwrap();
        true
    })
}

#[test]
fn the_core_reports_its_config_cycle_and_wait_target() {
    let s = Subscriptions::new(Config {
        initial_seq: 10,
        task_size: 1 << 40,
        ..Config::default()
    })
    .unwrap();
    assert_eq!(
        (s.config().initial_seq, s.config().task_size),
        (10, 1 << 40)
    );
    let iv = s.insert(0x1000, 0x1000, accept()).unwrap();
    assert!(!s.is_invalidating());
    let inv = s
        .invalidate_range_start(&Range::new(0x1000, 0x2000, Event::Clear))
        .unwrap();
    assert!(s.is_invalidating(), "a hitting invalidation is in progress");
    let ReadBegin::Wait(w) = s.read_begin_prepare(&iv).unwrap() else {
        panic!("read_begin must wait during the invalidation");
    };
    assert_eq!(
        w.seq(),
        s.snapshot().seq,
        "waits for the current seq to move"
    );
    assert_eq!(w.seq() % 2, 1);
    s.invalidate_range_end(inv);
    assert!(!s.is_invalidating());
    let seq = s.read_begin_finish(w);
    assert!(!iv.read_retry(seq));
    // Debug forms name the type and are not empty: they go into reports.
    assert!(format!("{s:?}").contains("Subscriptions"));
    assert!(format!("{iv:?}").contains("Interval"));
}

#[test]
fn quiescence_needs_no_start_running_even_one_that_hits_nothing() {
    let s = Subscriptions::new(Config::default()).unwrap();
    assert!(s.is_quiescent());
    // Even seq, but one start running: not quiescent.
    let inv = s
        .invalidate_range_start(&Range::new(0, 4096, Event::Clear))
        .unwrap();
    assert!(!s.is_invalidating());
    assert!(!s.is_quiescent());
    s.invalidate_range_end(inv);
    assert!(s.is_quiescent());
    // Odd seq: not quiescent either.
    let iv = s.insert(0, 4096, accept()).unwrap();
    let inv = s
        .invalidate_range_start(&Range::new(0, 4096, Event::Clear))
        .unwrap();
    assert!(s.is_invalidating());
    assert!(!s.is_quiescent());
    s.invalidate_range_end(inv);
    assert!(s.is_quiescent());
    s.remove(&iv).unwrap();
}

#[test]
fn release_is_a_collision_for_a_read_that_began_before_it() {
    let s = Subscriptions::new(Config::default()).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let iv = s
        .insert(
            0,
            4096,
            Arc::new(move |iv: &Interval, r: &Range, seq: u64| {
                iv.set_seq(seq).unwrap();
                log.lock().unwrap().push((r.event, seq));
                true
            }),
        )
        .unwrap();
    let before = s.read_begin(&iv).unwrap();
    s.release().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (event, seq) = seen[0];
    assert_eq!(event, Event::Release);
    assert_eq!(seq & 1, 1, "the release cycle's seq must be odd");
    assert!(iv.read_retry(before), "a read across release must retry");
    assert!(s.is_quiescent());
    s.remove(&iv).unwrap();
}
