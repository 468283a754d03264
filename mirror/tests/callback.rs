//! The shared callback against a fault that holds the driver lock, and the
//! classic subscriber's release: what the harness's executor never lets
//! happen (it schedules such waits before a callback runs) is checked here
//! directly.

use mirror::{Fault, FaultStep, Mirror, StrategySpec};
use mm::{Mm, Phys, PAGE};
use notifier::{Event, InvalidateError, Range};

mod common;

use common::{mapped, Idle, BASE};

fn open(mm: &Mm, name: &str) -> Mirror {
    Mirror::open(0, mm, StrategySpec::from_name(name).unwrap(), None).unwrap()
}

/// Steps a read fault of `BASE` until the driver lock is taken (its
/// commit), or to its end; returns whether it holds the lock.
fn fault_to_commit(f: &mut Fault, m: &Mirror, mm: &mut Mm, phys: &mut Phys) -> bool {
    for _ in 0..100 {
        match f.step(0, m, mm, phys, &Idle) {
            FaultStep::Progress | FaultStep::Installed(_) => {}
            FaultStep::Done(r) => {
                r.expect("fault on a mapped page");
                return false;
            }
            FaultStep::Blocked(b) => panic!("a fault on an idle mm blocked: {b:?}"),
        }
        if m.lock_holder().is_some() {
            return true;
        }
    }
    panic!("the fault did not finish in 100 steps");
}

#[test]
fn a_callback_that_would_wait_for_the_driver_lock_refuses_only_a_non_blockable_range() {
    let (mut mm, mut phys) = mapped();
    let m = open(&mm, "fullva");
    assert!(m.lock_free());
    let mut f = Fault::new(BASE, false);
    assert!(fault_to_commit(&mut f, &m, &mut mm, &mut phys), "no commit");
    assert!(!m.lock_free());
    assert_eq!(m.sleeps(), 0);
    let r = Range::new(BASE, BASE + PAGE, Event::Clear);
    // The OOM reaper's path may not sleep: the callback refuses.
    match mm.notifier.invalidate_range_start(&r.non_blockable()) {
        Err(InvalidateError::WouldBlock(_)) => {}
        other => panic!("expected WouldBlock, got {other:?}"),
    }
    assert_eq!(m.sleeps(), 0, "a refusal does not sleep");
    // A blockable range waits for the lock (counted as one sleep).
    let inv = mm.notifier.invalidate_range_start(&r).expect("blockable");
    assert_eq!(m.sleeps(), 1);
    mm.notifier.invalidate_range_end(inv);
    assert!(mm.notifier.is_quiescent());
}

#[test]
fn the_classic_subscribers_release_drops_every_device_mapping() {
    let (mut mm, mut phys) = mapped();
    // perfault removes its temporary interval after each fault: at exit
    // only its classic subscriber hears of it, through `release`.
    let m = open(&mm, "perfault");
    let mut f = Fault::new(BASE, false);
    if fault_to_commit(&mut f, &m, &mut mm, &mut phys) {
        // Finish the fault: install, then remove the temporary interval.
        for _ in 0..100 {
            match f.step(0, &m, &mut mm, &mut phys, &Idle) {
                FaultStep::Done(r) => {
                    r.expect("fault on a mapped page");
                    break;
                }
                FaultStep::Blocked(b) => panic!("blocked: {b:?}"),
                _ => {}
            }
        }
    }
    assert!(!m.ptes().is_empty(), "the fault installed nothing");
    assert_eq!(mm.notifier.tree_len(), 0, "perfault keeps no interval");
    mm.notifier.release().unwrap();
    assert!(m.ptes().is_empty(), "{:?} outlived release", m.ptes());
}
