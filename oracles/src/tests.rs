//! The model on its own: a few rules stated as plainly as the model states them.

use notifier::{ClassicId, Culprit, Deferred, Error, Event, IntervalId, Range};

use crate::*;

const P: u64 = 4096;

fn unmap(a: u64, b: u64) -> Range {
    Range::new(a, b, Event::Unmap)
}

fn accepted(s: ModelStart) -> ModelInvalidation {
    match s {
        ModelStart::Accepted(i) => i,
        other => panic!("expected accepted, got {other:?}"),
    }
}

#[test]
fn cycle_blocks_readers_of_hit_intervals_only() {
    let mut m = ReferenceNotifier::new(u64::MAX);
    let a = m.insert(0, P, CallbackModel::GOOD).unwrap();
    let b = m.insert(4 * P, P, CallbackModel::GOOD).unwrap();
    let mut calls = Vec::new();
    let inv = accepted(m.invalidate_start(&unmap(0, P), &mut calls));
    assert_eq!(calls.len(), 1);
    assert!(m.invalidating());
    let ModelRead::Blocks(w, tok) = m.read_begin(a).unwrap() else {
        panic!("a was hit");
    };
    assert!(matches!(m.read_begin(b).unwrap(), ModelRead::Ready(_)));
    assert!(!m.wait_ready(&w));
    m.invalidate_end(&inv, &mut calls);
    assert!(m.wait_ready(&w) && !m.read_retry(a, tok));
    assert!(m.is_quiescent());
}

#[test]
fn inserts_and_removes_during_a_cycle_are_deferred_in_order() {
    let mut m = ReferenceNotifier::new(u64::MAX);
    let a = m.insert(0, P, CallbackModel::GOOD).unwrap();
    let mut calls = Vec::new();
    let inv = accepted(m.invalidate_start(&unmap(0, P), &mut calls));
    let b = m.insert(0, P, CallbackModel::GOOD).unwrap();
    assert!(matches!(m.remove(a).unwrap(), ModelRemove::Blocks(_)));
    assert_eq!(m.remove(a).unwrap_err(), Error::NotRegistered(a));
    assert_eq!(
        m.membership().deferred,
        vec![Deferred::Insert(b), Deferred::Remove(a)]
    );
    m.invalidate_end(&inv, &mut calls);
    assert_eq!(m.membership().tree, vec![(b, 0, P - 1)]);
    assert_eq!(m.state(a), Some(State::Removed));
}

#[test]
fn insert_while_active_even_starts_a_cycle() {
    let mut m = ReferenceNotifier::new(u64::MAX);
    let mut calls = Vec::new();
    let inv = accepted(m.invalidate_start(&unmap(0, P), &mut calls));
    assert!(!m.invalidating());
    let a = m.insert(0, P, CallbackModel::GOOD).unwrap();
    assert!(m.invalidating());
    assert!(matches!(m.read_begin(a).unwrap(), ModelRead::Blocks(..)));
    m.invalidate_end(&inv, &mut calls);
    assert!(matches!(m.read_begin(a).unwrap(), ModelRead::Ready(_)));
    assert_eq!(m.cycles_done(), 1);
}

#[test]
fn refusals_roll_back_and_classic_release_follows_interval_release() {
    let mut m = ReferenceNotifier::new(1 << 30);
    let a = m
        .insert(
            0,
            P,
            CallbackModel {
                refuse: Refuse::NonBlockable,
                set_seq: SetSeq::Always,
                two_pass: false,
            },
        )
        .unwrap();
    let c = m.register(Refuse::Never).unwrap();
    let mut calls = Vec::new();
    assert_eq!(
        m.invalidate_start(&unmap(0, P).non_blockable(), &mut calls),
        ModelStart::WouldBlock(Culprit::Interval(a))
    );
    assert!(m.is_quiescent());
    calls.clear();
    assert_eq!(m.release(&mut calls).unwrap(), None);
    assert_eq!(
        calls,
        vec![
            Expected::Interval {
                id: a,
                range: Range::new(0, 1 << 30, Event::Release),
                accepted: true
            },
            Expected::ClassicRelease { id: c }
        ]
    );
    assert_eq!(
        m.insert(0, P, CallbackModel::GOOD).unwrap_err(),
        Error::Released
    );
    assert_eq!(
        m.unregister(ClassicId(99)).unwrap_err(),
        Error::UnknownClassic(ClassicId(99))
    );
    assert_eq!(
        m.read_begin(IntervalId(7)).unwrap_err(),
        Error::NotRegistered(IntervalId(7))
    );
}

#[test]
fn kernel_compat_keeps_the_cycle_open_after_a_classic_refusal() {
    for compat in [false, true] {
        let mut m = ReferenceNotifier::new(u64::MAX).with_kernel_compat(compat);
        let a = m.insert(0, P, CallbackModel::GOOD).unwrap();
        let c = m.register(Refuse::NonBlockable).unwrap();
        let mut calls = Vec::new();
        assert_eq!(
            m.invalidate_start(&unmap(0, P).non_blockable(), &mut calls),
            ModelStart::WouldBlock(Culprit::Classic(c))
        );
        // Fixed: rolled back. Linux: the cycle stays open and a reader of
        // the hit interval waits for it.
        assert_eq!(m.is_quiescent(), !compat);
        assert_eq!(m.invalidating(), compat);
        let blocks = matches!(m.read_begin(a).unwrap(), ModelRead::Blocks(..));
        assert_eq!(blocks, compat);
    }
}
