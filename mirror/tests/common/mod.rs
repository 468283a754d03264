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
    let mut t = Task::new(
        MmOp::Mmap {
            addr: BASE,
            len: 4 * PAGE,
            kind: MapKind::AnonPrivate,
            prot: mm::Prot::ReadWrite,
        },
        0,
    );
    for _ in 0..100 {
        match t.step(&mut mm, &mut phys, &Idle) {
            TaskStep::Progress => {}
            TaskStep::Done(r) => {
                r.expect("mmap");
                return (mm, phys);
            }
            TaskStep::Blocked(b) => panic!("mmap blocked on an idle mm: {b:?}"),
        }
    }
    panic!("mmap did not finish in 100 steps");
}
