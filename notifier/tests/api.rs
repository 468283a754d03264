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
