//! Two-pass interval callbacks: every finish runs after the walk over all
//! overlapping intervals and before the start returns, also when a
//! non-blockable start is refused; finishes run like callbacks.

use std::sync::{Arc, Mutex, Weak};

use notifier::{
    ClassicOps, Config, Error, Event, Interval, IntervalOps, InvalidateError, Range, Start,
    Subscriptions, PAGE_SIZE,
};

type Log = Arc<Mutex<Vec<String>>>;

/// An interval's ops: one pass, two passes, or refusing when it may.
struct Ops {
    name: &'static str,
    two_pass: bool,
    refuse: bool,
    log: Log,
    /// The core, to try a blocking call from the finish.
    subs: Option<Weak<Subscriptions>>,
}

impl IntervalOps for Ops {
    fn invalidate(&self, iv: &Interval, r: &Range, seq: u64) -> bool {
        self.invalidate_start(iv, r, seq).finish_now()
    }

    fn invalidate_start(&self, iv: &Interval, r: &Range, seq: u64) -> Start {
        if self.refuse && !r.blockable {
            self.log
                .lock()
                .unwrap()
                .push(format!("refuse {}", self.name));
            return Start::Refused;
        }
        iv.set_seq(seq).unwrap();
        self.log
            .lock()
            .unwrap()
            .push(format!("start {}", self.name));
        if !self.two_pass {
            return Start::Done;
        }
        let (log, name, subs, iv) = (self.log.clone(), self.name, self.subs.clone(), iv.clone());
        Start::Finish(Box::new(move || {
            let mut entry = format!("finish {name}");
            if let Some(subs) = subs.and_then(|w| w.upgrade()) {
                // The split-phase form: a wrong core answers Wait here
                // instead of blocking the test for ever.
                let blocked = subs.read_begin_prepare(&iv).map(|_| ());
                entry += &format!(" read_begin={blocked:?}");
            }
            log.lock().unwrap().push(entry);
        }))
    }
}

struct Classic(Log);

impl ClassicOps for Classic {
    fn invalidate_range_start(&self, _: &Range) -> bool {
        self.0.lock().unwrap().push("classic start".into());
        true
    }
    fn invalidate_range_end(&self, _: &Range) {
        self.0.lock().unwrap().push("classic end".into());
    }
}

fn ops(name: &'static str, two_pass: bool, refuse: bool, log: &Log) -> Arc<Ops> {
    Arc::new(Ops {
        name,
        two_pass,
        refuse,
        log: log.clone(),
        subs: None,
    })
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn finishes_run_after_the_walk_and_before_the_start_returns() {
    let subs = Subscriptions::new(Config::default()).unwrap();
    let log: Log = Arc::default();
    subs.register(Arc::new(Classic(log.clone()))).unwrap();
    let a = subs
        .insert(0, PAGE_SIZE, ops("a", true, false, &log))
        .unwrap();
    let b = subs
        .insert(PAGE_SIZE, PAGE_SIZE, ops("b", false, false, &log))
        .unwrap();
    let c = subs
        .insert(2 * PAGE_SIZE, PAGE_SIZE, ops("c", true, false, &log))
        .unwrap();
    let inv = subs
        .invalidate_range_start(&Range::new(0, 3 * PAGE_SIZE, Event::Unmap))
        .unwrap();
    assert_eq!(
        take(&log),
        [
            "start a",
            "start b",
            "start c",
            "finish a",
            "finish c",
            "classic start"
        ]
    );
    // A start that misses the two-pass intervals collects nothing.
    subs.invalidate_range_end(inv);
    assert_eq!(take(&log), ["classic end"]);
    let inv = subs
        .invalidate_range_start(&Range::new(PAGE_SIZE, 2 * PAGE_SIZE, Event::Clear))
        .unwrap();
    subs.invalidate_range_end(inv);
    assert_eq!(take(&log), ["start b", "classic start", "classic end"]);
    for iv in [a, b, c] {
        subs.remove(&iv).unwrap();
    }
}

#[test]
fn a_refusal_still_runs_the_finishes_collected_then_ends_the_core_part() {
    let subs = Subscriptions::new(Config::default()).unwrap();
    let log: Log = Arc::default();
    subs.register(Arc::new(Classic(log.clone()))).unwrap();
    let a = subs
        .insert(0, PAGE_SIZE, ops("a", true, false, &log))
        .unwrap();
    let b = subs
        .insert(PAGE_SIZE, PAGE_SIZE, ops("b", true, true, &log))
        .unwrap();
    let c = subs
        .insert(2 * PAGE_SIZE, PAGE_SIZE, ops("c", true, false, &log))
        .unwrap();
    let r = Range::new(0, 3 * PAGE_SIZE, Event::Clear).non_blockable();
    let err = subs.invalidate_range_start(&r).unwrap_err();
    assert!(matches!(err, InvalidateError::WouldBlock(_)), "{err:?}");
    // c is skipped, a's finish runs, the classic subscriber never starts.
    assert_eq!(take(&log), ["start a", "refuse b", "finish a"]);
    assert!(subs.is_quiescent(), "the core's part must be ended");
    // Nothing waits: a read_begin on the interval that finished returns.
    let seq = subs.read_begin(&a).unwrap();
    assert!(!a.read_retry(seq));
    for iv in [a, b, c] {
        subs.remove(&iv).unwrap();
    }
}

#[test]
fn blocking_calls_from_a_finish_are_rejected() {
    let subs = Arc::new(Subscriptions::new(Config::default()).unwrap());
    let log: Log = Arc::default();
    let a = subs
        .insert(
            0,
            PAGE_SIZE,
            Arc::new(Ops {
                name: "a",
                two_pass: true,
                refuse: false,
                log: log.clone(),
                subs: Some(Arc::downgrade(&subs)),
            }),
        )
        .unwrap();
    let inv = subs
        .invalidate_range_start(&Range::new(0, PAGE_SIZE, Event::Clear))
        .unwrap();
    subs.invalidate_range_end(inv);
    assert_eq!(
        take(&log),
        [
            "start a".to_string(),
            format!("finish a read_begin={:?}", Err::<(), _>(Error::InCallback)),
        ]
    );
    subs.remove(&a).unwrap();
}

#[test]
fn release_runs_the_finishes_once() {
    let subs = Subscriptions::new(Config::default()).unwrap();
    let log: Log = Arc::default();
    let a = subs
        .insert(0, PAGE_SIZE, ops("a", true, false, &log))
        .unwrap();
    subs.release().unwrap();
    assert_eq!(take(&log), ["start a", "finish a"]);
    subs.remove(&a).unwrap();
}
