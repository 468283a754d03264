//! The device TLB: what a device access translates through, what a flush
//! drops, and when a two-pass callback's flush completes (after the walk,
//! before the start returns).

use std::sync::{Arc, Mutex};

use mirror::{Dev, DevPte, Fault, FaultStep, Mirror, StrategySpec, Tlb};
use mm::{FrameId, Mm, Phys, HUGE, PAGE};
use notifier::{Event, Interval, Range};

mod common;

use common::{mapped, Idle, BASE};

/// Faults `addr` in for reading; returns the frame installed.
fn fault(m: &Mirror, mm: &mut Mm, phys: &mut Phys, addr: u64) -> FrameId {
    let mut f = Fault::new(addr, false);
    let mut installed = None;
    for _ in 0..100 {
        match f.step(0, m, mm, phys, &Idle) {
            FaultStep::Progress => {}
            FaultStep::Installed(fr) => installed = Some(fr),
            FaultStep::Done(r) => {
                r.expect("fault on a mapped page");
                return installed.expect("a completed fault installed a PTE");
            }
            FaultStep::Blocked(b) => panic!("a fault on an idle mm blocked: {b:?}"),
        }
    }
    panic!("the fault did not finish in 100 steps");
}

fn tlb_len(m: &Mirror) -> usize {
    m.with_tlb(|t| t.count())
}

#[test]
fn an_access_translates_through_the_tlb_and_a_start_flushes_it_in_both_modes() {
    for tlb in Tlb::ALL {
        let (mut mm, mut phys) = mapped();
        let spec = StrategySpec::from_name("fullva").unwrap().with_tlb(tlb);
        let m = Arc::new(Mirror::open(0, &mm, spec, None).unwrap());
        let frame = fault(&m, &mut mm, &mut phys, BASE);
        // The faulting access goes on with the translation it installed.
        assert_eq!(tlb_len(&m), 1, "{tlb:?}");
        assert_eq!(m.translate(BASE, false), Some(frame));
        assert_eq!(m.translate(BASE + PAGE, false), None, "not faulted in");

        // A second interval, after fullva's in the walk: its first pass
        // runs between fullva's first pass and fullva's finish.
        let seen: Arc<Mutex<Option<usize>>> = Arc::default();
        let (peek, s2) = (m.clone(), seen.clone());
        let cb = move |iv: &Interval, _r: &Range, seq: u64| {
            iv.set_seq(seq).unwrap();
            *s2.lock().unwrap() = Some(tlb_len(&peek));
            true
        };
        mm.notifier.insert(BASE, PAGE, Arc::new(cb)).unwrap();
        let before = m.tlb_flushes();
        let r = Range::new(BASE, BASE + PAGE, Event::Clear);
        let inv = mm.notifier.invalidate_range_start(&r).unwrap();
        let mid = seen
            .lock()
            .unwrap()
            .take()
            .expect("the second interval ran");
        match tlb {
            // One pass: flushed before the callback returned.
            Tlb::Sync => assert_eq!(mid, 0),
            // Two-pass: issued in the first pass, the stale translation
            // still usable until the finish.
            Tlb::TwoPass => assert_eq!(mid, 1),
        }
        assert_eq!(tlb_len(&m), 0, "{tlb:?}: stale after the start returned");
        assert!(m.tlb_flushes() > before);
        assert_eq!(m.pte(BASE), None);
        mm.notifier.invalidate_range_end(inv);
        // Nothing cached, nothing mapped: the next access faults.
        assert_eq!(m.translate(BASE, false), None);
    }
}

fn huge(frame: u32) -> DevPte {
    DevPte {
        frame: FrameId(frame),
        write: true,
        atomic: false,
        huge: true,
    }
}

#[test]
fn a_flush_drops_a_huge_entry_that_starts_before_the_range() {
    let mut d = Dev::default();
    d.dpt.insert(0, huge(512));
    assert_eq!(d.tlb_translate(5 * PAGE, true), Some(FrameId(517)));
    assert_eq!(d.tlb.len(), 1, "cached once, as the table holds it");
    d.flush_tlb(5 * PAGE, 6 * PAGE);
    assert!(d.tlb.is_empty(), "the huge entry covers the flushed page");
    // Small entries elsewhere stay; a huge fill replaces the small ones.
    d.tlb_fill(HUGE, DevPte::small(FrameId(7), false));
    d.tlb_fill(HUGE + PAGE, DevPte::small(FrameId(8), false));
    d.flush_tlb(0, PAGE);
    assert_eq!(d.tlb.len(), 2);
    d.tlb_fill(HUGE, huge(1024));
    assert_eq!(d.tlb.len(), 1);
    // A read-only entry does not serve a write: the table is asked again.
    d.tlb.clear();
    d.dpt.clear();
    d.dpt.insert(0, DevPte::small(FrameId(3), false));
    assert_eq!(d.tlb_translate(0, true), None);
    assert_eq!(d.tlb_translate(0, false), Some(FrameId(3)));
    assert_eq!(d.tlb_translate(0, true), None);
}
