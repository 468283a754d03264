//! One or more tests per rule of the protocol (DESIGN.md §2).

use std::sync::{Arc, Mutex};

use crate::*;

const P: u64 = PAGE_SIZE;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Iv(IntervalId, Event, u64, u64, u64),
    Start(&'static str, Event),
    End(&'static str, Event),
    Release(&'static str),
}

#[derive(Default)]
struct Log(Mutex<Vec<Call>>);

impl Log {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
    fn push(&self, c: Call) {
        self.0.lock().unwrap().push(c);
    }
}

/// A well-behaved callback that records its calls; `refuse_nb` makes it
/// refuse non-blockable ranges.
fn cb(log: &Arc<Log>, refuse_nb: bool) -> Arc<dyn IntervalOps> {
    let log = log.clone();
    Arc::new(move |iv: &Interval, r: &Range, seq: u64| {
        if refuse_nb && !r.blockable {
            return false;
        }
        log.push(Call::Iv(iv.id(), r.event, r.start, r.end, seq));
        iv.set_seq(seq).unwrap();
        true
    })
}

struct Classic {
    name: &'static str,
    log: Arc<Log>,
    refuse_nb: bool,
}

impl ClassicOps for Classic {
    fn invalidate_range_start(&self, r: &Range) -> bool {
        if self.refuse_nb && !r.blockable {
            return false;
        }
        self.log.push(Call::Start(self.name, r.event));
        true
    }
    fn invalidate_range_end(&self, r: &Range) {
        self.log.push(Call::End(self.name, r.event));
    }
    fn release(&self) {
        self.log.push(Call::Release(self.name));
    }
}

fn core() -> (Subscriptions, Arc<Log>) {
    (
        Subscriptions::new(Config::default()).unwrap(),
        Arc::new(Log::default()),
    )
}

fn unmap(start: u64, end: u64) -> Range {
    Range::new(start, end, Event::Unmap)
}

fn ids(calls: &[Call]) -> Vec<IntervalId> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Iv(id, ..) => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn insert_rejects_zero_length_and_overflow() {
    let (s, log) = core();
    assert_eq!(
        s.insert(0, 0, cb(&log, false)).unwrap_err(),
        Error::ZeroLength
    );
    assert!(matches!(
        s.insert(u64::MAX - 1, 3, cb(&log, false)),
        Err(Error::Overflow { .. })
    ));
    // task_size is exclusive: the last byte below it is fine, reaching it is not.
    let top = s.config().task_size;
    assert!(s.insert(top - P, P, cb(&log, false)).is_ok());
    assert!(matches!(
        s.insert(top - P, P + 1, cb(&log, false)),
        Err(Error::Overflow { .. })
    ));
    assert_eq!(s.tree_len(), 1);
}

#[test]
fn odd_initial_seq_is_rejected() {
    let c = Config {
        initial_seq: 7,
        ..Config::default()
    };
    assert_eq!(Subscriptions::new(c).unwrap_err(), Error::OddInitialSeq(7));
    let c = Config {
        task_size: 0,
        ..Config::default()
    };
    assert_eq!(
        Subscriptions::new(c).unwrap_err(),
        Error::TaskSizeTooSmall(0)
    );
}

#[test]
fn bad_ranges_are_rejected_without_state_change() {
    let (s, _log) = core();
    for r in [
        unmap(P, P),
        unmap(2 * P, P),
        unmap(0, u64::MAX).with_owner(Owner(1)),
    ] {
        let r = Range {
            end: if r.end == u64::MAX { 0 } else { r.end },
            ..r
        };
        assert!(matches!(
            s.invalidate_range_start(&r),
            Err(InvalidateError::Bad(Error::BadRange { .. }))
        ));
    }
    let small = Subscriptions::new(Config {
        task_size: 1 << 20,
        ..Config::default()
    })
    .unwrap();
    assert!(small
        .invalidate_range_start(&unmap(0, (1 << 20) + 1))
        .is_err());
    assert!(s.is_quiescent() && small.is_quiescent());
}

#[test]
fn idle_insert_gets_odd_seq_below_global() {
    let (s, log) = core();
    let g = s.snapshot().seq;
    let iv = s.insert(P, P, cb(&log, false)).unwrap();
    assert_eq!(iv.seq(), g.wrapping_sub(1));
    assert_eq!(iv.seq() & 1, 1);
    assert!(matches!(s.read_begin_prepare(&iv).unwrap(), ReadBegin::Ready(x) if x == g - 1));
    assert_eq!(iv.phase(), Phase::InTree);
}

#[test]
fn start_that_hits_makes_seq_odd_and_passes_it_to_callbacks() {
    let (s, log) = core();
    let _a = s.insert(0, 4 * P, cb(&log, false)).unwrap();
    let inv = s.invalidate_range_start(&unmap(P, 2 * P)).unwrap();
    let snap = s.snapshot();
    assert_eq!(snap.seq & 1, 1);
    assert_eq!(snap.active, 1);
    assert_eq!(inv.cur_seq(), snap.seq);
    assert_eq!(
        log.take(),
        vec![Call::Iv(IntervalId(0), Event::Unmap, P, 2 * P, snap.seq)]
    );
    s.invalidate_range_end(inv);
    assert!(s.is_quiescent());
    assert_eq!(s.snapshot().seq, snap.seq + 1);
}

#[test]
fn start_that_misses_keeps_seq_even_and_tree_mutable() {
    let (s, log) = core();
    let _a = s.insert(0, P, cb(&log, false)).unwrap();
    let g = s.snapshot().seq;
    let inv = s.invalidate_range_start(&unmap(8 * P, 9 * P)).unwrap();
    assert!(!inv.hit());
    assert_eq!(s.snapshot().seq, g);
    assert!(log.take().is_empty());
    // Even but active: the insert goes straight into the tree.
    let b = s.insert(16 * P, P, cb(&log, false)).unwrap();
    assert_eq!(b.phase(), Phase::InTree);
    assert_eq!(s.tree_len(), 2);
    s.invalidate_range_end(inv);
    assert!(s.is_quiescent());
}

#[test]
fn callbacks_run_in_start_then_insertion_order() {
    let (s, log) = core();
    let c = s.insert(2 * P, P, cb(&log, false)).unwrap();
    let a = s.insert(0, 4 * P, cb(&log, false)).unwrap();
    let b = s.insert(0, P, cb(&log, false)).unwrap();
    let inv = s.invalidate_range_start(&unmap(0, 8 * P)).unwrap();
    assert_eq!(ids(&log.take()), vec![a.id(), b.id(), c.id()]);
    s.invalidate_range_end(inv);
}

#[test]
fn interval_callbacks_run_before_classic_and_end_in_order() {
    let (s, log) = core();
    let _iv = s.insert(0, P, cb(&log, false)).unwrap();
    for name in ["x", "y"] {
        s.register(Arc::new(Classic {
            name,
            log: log.clone(),
            refuse_nb: false,
        }))
        .unwrap();
    }
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    s.invalidate_range_end(inv);
    let calls = log.take();
    assert!(matches!(calls[0], Call::Iv(..)));
    assert_eq!(
        calls[1..],
        [
            Call::Start("x", Event::Unmap),
            Call::Start("y", Event::Unmap),
            Call::End("x", Event::Unmap),
            Call::End("y", Event::Unmap)
        ]
    );
}

#[test]
fn nested_ends_only_the_last_one_ends_the_cycle() {
    let (s, log) = core();
    let _a = s.insert(0, P, cb(&log, false)).unwrap();
    let i1 = s.invalidate_range_start(&unmap(0, P)).unwrap();
    let i2 = s.invalidate_range_start(&unmap(0, 2 * P)).unwrap();
    let odd = s.snapshot().seq;
    assert_eq!(i1.cur_seq(), i2.cur_seq());
    s.invalidate_range_end(i1);
    assert_eq!(s.snapshot().seq, odd);
    assert_eq!(s.snapshot().active, 1);
    s.invalidate_range_end(i2);
    assert_eq!(s.snapshot().seq, odd + 1);
    assert!(s.is_quiescent());
}

#[test]
fn insert_while_active_even_makes_seq_odd_and_first_read_begin_waits() {
    let (s, log) = core();
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    let g = s.snapshot().seq;
    assert_eq!(g & 1, 0);
    let iv = s.insert(0, P, cb(&log, false)).unwrap();
    assert_eq!(s.snapshot().seq, g | 1);
    assert_eq!(iv.seq(), g | 1);
    assert_eq!(iv.phase(), Phase::InTree);
    let ReadBegin::Wait(w) = s.read_begin_prepare(&iv).unwrap() else {
        panic!("first read_begin must wait for the running cycle");
    };
    assert!(!s.wait_is_ready(&w));
    s.invalidate_range_end(inv);
    assert!(s.wait_is_ready(&w));
    let seq = s.read_begin_finish(w);
    assert!(!iv.read_retry(seq));
    assert!(s.is_quiescent());
}

#[test]
fn insert_while_odd_is_deferred_until_the_final_end() {
    let (s, log) = core();
    let a = s.insert(0, P, cb(&log, false)).unwrap();
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    let odd = s.snapshot().seq;
    let b = s.insert(0, P, cb(&log, false)).unwrap();
    assert_eq!(b.phase(), Phase::PendingInsert);
    assert_eq!(b.seq(), odd);
    assert_eq!(s.snapshot().deferred, vec![Deferred::Insert(b.id())]);
    assert_eq!(s.tree_len(), 1);
    log.take();
    // Still frozen: a second start in the same cycle does not see b.
    let inv2 = s.invalidate_range_start(&unmap(0, P)).unwrap();
    assert_eq!(ids(&log.take()), vec![a.id()]);
    assert!(matches!(
        s.read_begin_prepare(&b).unwrap(),
        ReadBegin::Wait(_)
    ));
    s.invalidate_range_end(inv2);
    s.invalidate_range_end(inv);
    assert_eq!(b.phase(), Phase::InTree);
    assert_eq!(s.tree_len(), 2);
    assert!(matches!(s.read_begin_prepare(&b).unwrap(), ReadBegin::Ready(x) if x == odd));
}

#[test]
fn read_begin_waits_only_for_intervals_hit_in_this_cycle() {
    let (s, log) = core();
    let hit = s.insert(0, P, cb(&log, false)).unwrap();
    let miss = s.insert(8 * P, P, cb(&log, false)).unwrap();
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    let ReadBegin::Wait(w) = s.read_begin_prepare(&hit).unwrap() else {
        panic!("hit interval must wait");
    };
    let ReadBegin::Ready(m) = s.read_begin_prepare(&miss).unwrap() else {
        panic!("missed interval must not wait");
    };
    assert!(!s.wait_is_ready(&w));
    s.invalidate_range_end(inv);
    assert!(s.wait_is_ready(&w));
    let seq = s.read_begin_finish(w);
    assert!(!hit.read_retry(seq));
    assert!(!miss.read_retry(m));
}

#[test]
fn read_retry_reports_a_collision_since_read_begin() {
    let (s, log) = core();
    let iv = s.insert(0, 2 * P, cb(&log, false)).unwrap();
    let seq = s.read_begin(&iv).unwrap();
    assert!(!iv.read_retry(seq) && !iv.check_retry(seq));
    let inv = s.invalidate_range_start(&unmap(P, 2 * P)).unwrap();
    assert!(iv.read_retry(seq) && iv.check_retry(seq));
    s.invalidate_range_end(inv);
    assert!(iv.read_retry(seq));
    let seq2 = s.read_begin(&iv).unwrap();
    assert!(!iv.read_retry(seq2));
    // A range that does not touch the interval causes no collision.
    let inv = s.invalidate_range_start(&unmap(2 * P, 3 * P)).unwrap();
    s.invalidate_range_end(inv);
    assert!(!iv.read_retry(seq2));
}

#[test]
fn inclusive_last_and_exclusive_end_edges() {
    let (s, log) = core();
    // [P+1, 2P] inclusive: its last byte is the first byte of page 2.
    let iv = s.insert(P + 1, P, cb(&log, false)).unwrap();
    assert_eq!(iv.last(), 2 * P);
    let touch = |r: Range| {
        let inv = s.invalidate_range_start(&r).unwrap();
        let hit = inv.hit();
        s.invalidate_range_end(inv);
        log.take();
        hit
    };
    assert!(!touch(unmap(0, P + 1)), "end is exclusive");
    assert!(touch(unmap(0, P + 2)));
    assert!(touch(unmap(2 * P, 3 * P)), "a range starting on last hits");
    assert!(touch(unmap(2 * P, 2 * P + 1)), "one byte on last hits");
    assert!(!touch(unmap(2 * P + 1, 3 * P)));
}

#[test]
fn top_of_address_space_edges() {
    let (s, log) = core();
    let top = s.config().task_size;
    let iv = s.insert(top - P, P, cb(&log, false)).unwrap();
    assert_eq!(iv.last(), top - 1);
    let inv = s.invalidate_range_start(&unmap(top - 1, top)).unwrap();
    assert!(inv.hit());
    s.invalidate_range_end(inv);
    let whole = s.invalidate_range_start(&unmap(0, top)).unwrap();
    assert!(whole.hit());
    s.invalidate_range_end(whole);
    let zero = s.insert(0, 1, cb(&log, false)).unwrap();
    let inv = s.invalidate_range_start(&unmap(0, 1)).unwrap();
    assert_eq!(ids(&log.take()).last(), Some(&zero.id()));
    s.invalidate_range_end(inv);
}

#[test]
fn remove_when_not_invalidating_is_immediate() {
    let (s, log) = core();
    let iv = s.insert(0, P, cb(&log, false)).unwrap();
    assert!(matches!(s.remove_prepare(&iv).unwrap(), RemoveWait::Done));
    assert_eq!(iv.phase(), Phase::Removed);
    assert_eq!(s.tree_len(), 0);
    assert_eq!(s.remove(&iv).unwrap_err(), Error::NotRegistered(iv.id()));
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    assert!(log.take().is_empty());
    s.invalidate_range_end(inv);
    // Even but active: still immediate.
    let iv = s.insert(0, P, cb(&log, false)).unwrap();
    let miss = s.invalidate_range_start(&unmap(4 * P, 5 * P)).unwrap();
    assert!(matches!(s.remove_prepare(&iv).unwrap(), RemoveWait::Done));
    s.invalidate_range_end(miss);
}

#[test]
fn remove_during_a_cycle_waits_and_callbacks_stop_after_it_returns() {
    let (s, log) = core();
    let iv = s.insert(0, P, cb(&log, false)).unwrap();
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    let RemoveWait::Wait(w) = s.remove_prepare(&iv).unwrap() else {
        panic!("remove during the cycle must wait");
    };
    let rw = RemoveWait::Wait(w);
    assert_eq!(iv.phase(), Phase::PendingRemove);
    assert_eq!(s.snapshot().deferred, vec![Deferred::Remove(iv.id())]);
    log.take();
    // Still in the frozen tree: another start of the cycle calls it.
    let inv2 = s.invalidate_range_start(&unmap(0, P)).unwrap();
    assert_eq!(ids(&log.take()), vec![iv.id()]);
    assert_eq!(s.remove(&iv).unwrap_err(), Error::NotRegistered(iv.id()));
    s.invalidate_range_end(inv2);
    let RemoveWait::Wait(w) = &rw else {
        unreachable!()
    };
    assert!(!s.wait_is_ready(w));
    s.invalidate_range_end(inv);
    assert!(s.wait_is_ready(w));
    s.remove_finish(rw);
    assert_eq!(iv.phase(), Phase::Removed);
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    assert!(log.take().is_empty(), "no callback after remove");
    s.invalidate_range_end(inv);
}

#[test]
fn remove_of_a_pending_insert_just_drops_it() {
    let (s, log) = core();
    let _a = s.insert(0, P, cb(&log, false)).unwrap();
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    let b = s.insert(0, P, cb(&log, false)).unwrap();
    assert!(matches!(s.remove_prepare(&b).unwrap(), RemoveWait::Done));
    assert!(s.snapshot().deferred.is_empty());
    s.invalidate_range_end(inv);
    assert_eq!(b.phase(), Phase::Removed);
    assert_eq!(s.tree_len(), 1);
}

#[test]
fn deferred_list_is_applied_in_order() {
    let (s, log) = core();
    let a = s.insert(0, P, cb(&log, false)).unwrap();
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    let b = s.insert(P, P, cb(&log, false)).unwrap();
    let _ = s.remove_prepare(&a).unwrap();
    let c = s.insert(0, P, cb(&log, false)).unwrap();
    assert_eq!(
        s.snapshot().deferred,
        vec![
            Deferred::Insert(b.id()),
            Deferred::Remove(a.id()),
            Deferred::Insert(c.id())
        ]
    );
    s.invalidate_range_end(inv);
    let tree: Vec<_> = s.snapshot().tree.iter().map(|t| t.0).collect();
    assert_eq!(tree, vec![c.id(), b.id()]);
}

#[test]
fn remove_of_a_foreign_interval_is_an_error() {
    let (s, log) = core();
    let (t, _) = core();
    let iv = s.insert(0, P, cb(&log, false)).unwrap();
    assert_eq!(t.remove(&iv).unwrap_err(), Error::NotRegistered(iv.id()));
    assert!(t.read_begin(&iv).is_err());
    assert_eq!(s.tree_len(), 1);
}

#[test]
fn non_blockable_refusal_rolls_back_and_skips_the_rest() {
    let (s, log) = core();
    let a = s.insert(0, P, cb(&log, false)).unwrap();
    let b = s.insert(0, P, cb(&log, true)).unwrap();
    let _c = s.insert(0, P, cb(&log, false)).unwrap();
    let g = s.snapshot().seq;
    let err = s
        .invalidate_range_start(&unmap(0, P).non_blockable())
        .unwrap_err();
    assert_eq!(err, InvalidateError::WouldBlock(Culprit::Interval(b.id())));
    assert_eq!(ids(&log.take()), vec![a.id()]);
    let snap = s.snapshot();
    assert_eq!(snap.active, 0);
    assert_eq!(snap.seq, g + 2, "the cycle that started must have ended");
    assert!(s.is_quiescent());
}

#[test]
fn blockable_refusal_is_a_contract_violation() {
    let (s, _log) = core();
    let iv = s
        .insert(0, P, Arc::new(|_: &Interval, _: &Range, _: u64| false))
        .unwrap();
    let err = s.invalidate_range_start(&unmap(0, P)).unwrap_err();
    assert_eq!(
        err,
        InvalidateError::ContractViolation(Culprit::Interval(iv.id()))
    );
    assert!(s.is_quiescent());
}

#[test]
fn failed_classic_start_ends_earlier_ones_and_rolls_back_intervals() {
    let (s, log) = core();
    let _iv = s.insert(0, P, cb(&log, false)).unwrap();
    s.register(Arc::new(Classic {
        name: "ok",
        log: log.clone(),
        refuse_nb: false,
    }))
    .unwrap();
    let bad = s
        .register(Arc::new(Classic {
            name: "bad",
            log: log.clone(),
            refuse_nb: true,
        }))
        .unwrap();
    s.register(Arc::new(Classic {
        name: "never",
        log: log.clone(),
        refuse_nb: false,
    }))
    .unwrap();
    let err = s
        .invalidate_range_start(&unmap(0, P).non_blockable())
        .unwrap_err();
    assert_eq!(err, InvalidateError::WouldBlock(Culprit::Classic(bad)));
    let calls = log.take();
    assert!(matches!(calls[0], Call::Iv(..)));
    assert_eq!(
        calls[1..],
        [
            Call::Start("ok", Event::Unmap),
            Call::End("ok", Event::Unmap)
        ]
    );
    assert!(
        s.is_quiescent(),
        "the interval part must not be left hanging"
    );
}

#[test]
fn kernel_compat_leaves_the_interval_part_hanging_after_a_classic_refusal() {
    let s = Subscriptions::new(Config {
        kernel_compat: true,
        ..Config::default()
    })
    .unwrap();
    let log = Arc::new(Log::default());
    let iv = s.insert(0, P, cb(&log, false)).unwrap();
    let missed = s.insert(4 * P, P, cb(&log, false)).unwrap();
    let bad = s
        .register(Arc::new(Classic {
            name: "bad",
            log: log.clone(),
            refuse_nb: true,
        }))
        .unwrap();
    let err = s
        .invalidate_range_start(&unmap(0, P).non_blockable())
        .unwrap_err();
    assert_eq!(err, InvalidateError::WouldBlock(Culprit::Classic(bad)));
    // As Linux: the seq stays odd, so read_begin on the hit interval would
    // wait for a cycle end that no one will call.
    assert!(!s.is_quiescent());
    assert!(matches!(s.read_begin_prepare(&iv), Ok(ReadBegin::Wait(_))));
    // An interval the start did not hit is unaffected; one inserted
    // later joins the open cycle (odd seq, deferred) and is stuck too.
    assert!(matches!(
        s.read_begin_prepare(&missed),
        Ok(ReadBegin::Ready(_))
    ));
    let late = s.insert(8 * P, P, cb(&log, false)).unwrap();
    assert_eq!(late.phase(), Phase::PendingInsert);
    assert!(matches!(
        s.read_begin_prepare(&late),
        Ok(ReadBegin::Wait(_))
    ));
    // A refusal by an interval still ends the core's part in both modes.
    let t = Subscriptions::new(Config {
        kernel_compat: true,
        ..Config::default()
    })
    .unwrap();
    t.insert(0, P, cb(&log, true)).unwrap();
    assert!(t
        .invalidate_range_start(&unmap(0, P).non_blockable())
        .is_err());
    assert!(t.is_quiescent());
}

#[test]
fn release_invalidates_intervals_once_then_releases_classic() {
    let (s, log) = core();
    let a = s.insert(0, P, cb(&log, false)).unwrap();
    let b = s
        .insert(s.config().task_size - P, P, cb(&log, false))
        .unwrap();
    let c = s
        .register(Arc::new(Classic {
            name: "c",
            log: log.clone(),
            refuse_nb: false,
        }))
        .unwrap();
    s.release().unwrap();
    let calls = log.take();
    let top = s.config().task_size;
    let seq = match calls[0] {
        Call::Iv(_, _, _, _, seq) => seq,
        _ => panic!("interval release first"),
    };
    assert_eq!(
        calls,
        vec![
            Call::Iv(a.id(), Event::Release, 0, top, seq),
            Call::Iv(b.id(), Event::Release, 0, top, seq),
            Call::Release("c"),
        ]
    );
    assert!(s.is_quiescent());
    // Intervals stay registered; classic subscribers are gone.
    assert_eq!(s.tree_len(), 2);
    assert!(s.snapshot().classic.is_empty());
    assert_eq!(
        s.insert(0, P, cb(&log, false)).unwrap_err(),
        Error::Released
    );
    assert!(s
        .register(Arc::new(Classic {
            name: "late",
            log: log.clone(),
            refuse_nb: false
        }))
        .is_err());
    assert_eq!(
        s.release().unwrap_err(),
        InvalidateError::Bad(Error::AlreadyReleased)
    );
    s.unregister(c).unwrap();
    s.remove(&a).unwrap();
    s.remove(&b).unwrap();
    // Invalidations after release no longer reach classic subscribers.
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    s.invalidate_range_end(inv);
    assert!(log.take().is_empty());
}

#[test]
fn unregister_unknown_classic_is_an_error() {
    let (s, _) = core();
    assert_eq!(
        s.unregister(ClassicId(42)).unwrap_err(),
        Error::UnknownClassic(ClassicId(42))
    );
}

#[test]
fn seq_wraps_around_u64_max() {
    for initial in [u64::MAX - 1, 0] {
        let s = Subscriptions::new(Config {
            initial_seq: initial,
            ..Config::default()
        })
        .unwrap();
        let log = Arc::new(Log::default());
        let iv = s.insert(0, P, cb(&log, false)).unwrap();
        assert_eq!(iv.seq(), initial.wrapping_sub(1));
        let mut seq = s.read_begin(&iv).unwrap();
        for _ in 0..3 {
            let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
            assert_eq!(inv.cur_seq() & 1, 1);
            assert!(matches!(
                s.read_begin_prepare(&iv).unwrap(),
                ReadBegin::Wait(_)
            ));
            s.invalidate_range_end(inv);
            assert!(iv.read_retry(seq));
            seq = s.read_begin(&iv).unwrap();
            assert!(!iv.read_retry(seq));
            assert!(s.is_quiescent());
        }
        assert_eq!(s.snapshot().seq, initial.wrapping_add(6));
    }
}

/// How long a real-thread test waits for a step a correct core takes in
/// microseconds. Only a wrong core ever reaches it: the test then fails
/// instead of hanging, and a correct core's verdict never depends on it.
const HANG_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// A thread whose result is awaited for at most [`HANG_BOUND`].
struct Bounded<T> {
    rx: std::sync::mpsc::Receiver<T>,
    handle: std::thread::JoinHandle<()>,
}

fn spawn_bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Bounded<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    Bounded { rx, handle }
}

impl<T> Bounded<T> {
    fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    fn join(self, what: &str) -> T {
        use std::sync::mpsc::RecvTimeoutError;
        match self.rx.recv_timeout(HANG_BOUND) {
            Ok(v) => v,
            // The thread panicked: report its panic, not a timeout.
            Err(RecvTimeoutError::Disconnected) => match self.handle.join() {
                Err(e) => std::panic::resume_unwind(e),
                Ok(()) => unreachable!("{what}: thread ended without a result"),
            },
            Err(RecvTimeoutError::Timeout) => panic!("{what}: still blocked after {HANG_BOUND:?}"),
        }
    }
}

#[test]
fn blocking_calls_from_a_callback_are_rejected() {
    // A core that lets them through deadlocks on itself: bound it.
    spawn_bounded(blocking_calls_from_a_callback).join("a blocking call from a callback");
}

fn blocking_calls_from_a_callback() {
    let s = Arc::new(Subscriptions::new(Config::default()).unwrap());
    let seen: Arc<Mutex<Vec<Error>>> = Arc::default();
    let other = s.insert(8 * P, P, cb(&Arc::default(), false)).unwrap();
    let (s2, seen2, other2) = (s.clone(), seen.clone(), other.clone());
    let _iv = s
        .insert(
            0,
            P,
            Arc::new(move |iv: &Interval, _: &Range, seq: u64| {
                iv.set_seq(seq).unwrap();
                let mut v = seen2.lock().unwrap();
                v.push(s2.remove(&other2).unwrap_err());
                v.push(s2.read_begin(&other2).unwrap_err());
                // Another interval's seq is not this callback's to set.
                v.push(other2.set_seq(seq).unwrap_err());
                true
            }),
        )
        .unwrap();
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    s.invalidate_range_end(inv);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            Error::InCallback,
            Error::InCallback,
            Error::SetSeqOutsideCallback(other.id())
        ]
    );
    assert_eq!(other.phase(), Phase::InTree);
    assert_eq!(
        other.set_seq(1).unwrap_err(),
        Error::SetSeqOutsideCallback(other.id())
    );
}

#[test]
fn blocking_read_begin_and_remove_wake_on_real_threads() {
    let s = Arc::new(Subscriptions::new(Config::default()).unwrap());
    let log = Arc::new(Log::default());
    let iv = s.insert(0, P, cb(&log, false)).unwrap();
    let inv = s.invalidate_range_start(&unmap(0, P)).unwrap();
    let (s1, iv1) = (s.clone(), iv.clone());
    let reader = spawn_bounded(move || {
        let seq = s1.read_begin(&iv1).unwrap();
        (seq, s1.is_invalidating())
    });
    let (s2, iv2) = (s.clone(), iv.clone());
    let remover = spawn_bounded(move || {
        s2.remove(&iv2).unwrap();
        iv2.phase()
    });
    // Both must block until the end: returning earlier is the bug, and
    // never blocking (or never counting as a waiter) must not hang here.
    let deadline = std::time::Instant::now() + HANG_BOUND;
    while s.snapshot().waiters < 2 {
        assert!(
            !reader.is_finished(),
            "read_begin returned mid-invalidation"
        );
        assert!(!remover.is_finished(), "remove returned mid-invalidation");
        assert!(
            std::time::Instant::now() < deadline,
            "waiters stuck at {} after {HANG_BOUND:?}",
            s.snapshot().waiters
        );
        std::thread::yield_now();
    }
    s.invalidate_range_end(inv);
    let (seq, invalidating) = reader.join("read_begin after the end");
    assert!(!invalidating);
    assert!(!iv.read_retry(seq));
    assert_eq!(remover.join("remove after the end"), Phase::Removed);
    assert!(s.is_quiescent());
    assert_eq!(s.snapshot().waiters, 0, "a woken waiter is still counted");
}

#[test]
fn core_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Subscriptions>();
    check::<Interval>();
    check::<Invalidation>();
}
