//! `Mirror::backlog`: the feedback the harness draws from deferred work
//! that piles up (queued items, and the changes one item batches).

use mirror::{Fault, FaultStep, Mirror, StrategySpec};
use mm::{Mm, MmOp, Phys, PAGE};

mod common;

use common::{mapped, run_task, Idle, BASE};

fn fault(m: &Mirror, mm: &mut Mm, phys: &mut Phys, addr: u64) {
    let mut f = Fault::new(addr, false);
    for _ in 0..100 {
        match f.step(0, m, mm, phys, &Idle) {
            FaultStep::Done(r) => {
                r.expect("a fault on a mapped page");
                return;
            }
            FaultStep::Blocked(b) => panic!("a fault on an idle mm blocked: {b:?}"),
            _ => {}
        }
    }
    panic!("the fault did not finish in 100 steps");
}

fn munmap(mm: &mut Mm, phys: &mut Phys, addr: u64) {
    run_task(mm, phys, MmOp::Munmap { addr, len: PAGE });
}

#[test]
fn a_tracked_vma_batches_its_holes_for_one_item_of_work() {
    let (mut mm, mut phys) = mapped();
    let m = Mirror::open(0, &mm, StrategySpec::from_name("vma").unwrap(), None).unwrap();
    assert_eq!(m.backlog(), (0, 0));
    fault(&m, &mut mm, &mut phys, BASE);
    assert_eq!(m.backlog(), (0, 0), "a fault queues no work");
    munmap(&mut mm, &mut phys, BASE + PAGE);
    assert_eq!(
        m.backlog(),
        (1, 1),
        "the first hole queues the VMA's update"
    );
    munmap(&mut mm, &mut phys, BASE + 3 * PAGE);
    assert_eq!(m.backlog(), (1, 2), "the second joins the same item");
}

#[test]
fn a_strategy_without_batches_reports_its_queue_only() {
    let (mut mm, mut phys) = mapped();
    let m = Mirror::open(0, &mm, StrategySpec::from_name("fullva").unwrap(), None).unwrap();
    fault(&m, &mut mm, &mut phys, BASE);
    munmap(&mut mm, &mut phys, BASE + PAGE);
    assert_eq!(m.backlog().1, 0);
}
