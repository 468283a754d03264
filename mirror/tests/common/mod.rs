//! What the mirror's integration tests share: an idle environment and a
//! mapped address space.

use mm::{Env, MapKind, Mm, MmConfig, MmId, MmOp, Phys, Task, TaskStep, PAGE};
use notifier::Range;

pub const BASE: u64 = 1 << 30;

/// No other logical thread holds a driver lock.
pub struct Idle;

impl Env for Idle {
    fn callbacks_can_run(&self, _mm: MmId, _range: &Range) -> bool {
        true
    }
}

pub fn mapped() -> (Mm, Phys) {
    let mut phys = Phys::new();
    let mut mm = Mm::new(MmId(0), MmConfig::default());
    let op = MmOp::Mmap {
        addr: BASE,
        len: 4 * PAGE,
        kind: MapKind::AnonPrivate,
        prot: mm::Prot::ReadWrite,
    };
    run_task(&mut mm, &mut phys, op);
    (mm, phys)
}

/// Runs `op` on an idle `mm` to its successful end.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn run_task(mm: &mut Mm, phys: &mut Phys, op: MmOp) {
    let mut t = Task::new(op, 0);
    for _ in 0..100 {
        match t.step(mm, phys, &Idle) {
            TaskStep::Progress => {}
            TaskStep::Done(r) => {
                r.expect("an op on an idle mm");
                return;
            }
            TaskStep::Blocked(b) => panic!("an op blocked on an idle mm: {b:?}"),
        }
    }
    panic!("an op did not finish in 100 steps");
}
