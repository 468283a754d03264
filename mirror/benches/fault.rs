//! A device fault end to end, per strategy (issue 9).
//!
//! One read fault of one page on an idle address space whose CPU page is
//! already present: begin (find or insert the interval, read_begin), walk
//! (sample the CPU page table), commit (driver lock, read_retry) and
//! install (device PTE, unlock), plus the removal of the temporary
//! interval for `perfault`. The faults cycle over 64 pages of an anonymous
//! mapping, so each one replaces a device PTE that is already there.
//!
//! Every registered strategy with device faults is measured (its default
//! parameter); one whose accesses go through registrations has none.
//!
//! Run: `cargo bench -p mirror --bench fault`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mirror::{Fault, FaultStep, Mirror, StrategySpec};
use mm::{Env, MapKind, Mm, MmConfig, MmId, MmOp, Phys, Task, TaskStep, PAGE};
use notifier::Range;

const PAGES: u64 = 64;
const BASE: u64 = 1 << 30;

/// No other logical thread holds a driver lock.
struct Idle;

impl Env for Idle {
    fn callbacks_can_run(&self, _mm: MmId, _range: &Range) -> bool {
        true
    }
}

fn run_task(op: MmOp, mm: &mut Mm, phys: &mut Phys) {
    let mut t = Task::new(op, 0);
    loop {
        match t.step(mm, phys, &Idle) {
            TaskStep::Progress => {}
            TaskStep::Done(r) => {
                r.expect("setup op");
                return;
            }
            TaskStep::Blocked(b) => panic!("setup op blocked on an idle mm: {b:?}"),
        }
    }
}

/// One fault, stepped to the end.
fn fault(m: &Mirror, mm: &mut Mm, phys: &mut Phys, addr: u64) -> mm::FrameId {
    let mut f = Fault::new(addr, false);
    let mut installed = None;
    loop {
        match f.step(0, m, mm, phys, &Idle) {
            FaultStep::Progress => {}
            FaultStep::Installed(pte) => installed = Some(pte),
            FaultStep::Done(r) => {
                r.expect("fault on a mapped page");
                assert_eq!(f.retries, 0, "an idle fault retried");
                return installed.expect("the fault installed a PTE");
            }
            FaultStep::Blocked(b) => panic!("a fault on an idle mm blocked: {b:?}"),
        }
    }
}

fn device_fault(c: &mut Criterion) {
    let mut g = c.benchmark_group("device_fault");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for (i, _) in mirror::strategy::kinds().iter().enumerate() {
        let Some(strategy) = StrategySpec::default_of(i as u8) else {
            continue;
        };
        let mut phys = Phys::new();
        let mut mm = Mm::new(MmId(0), MmConfig::default());
        run_task(
            MmOp::Mmap {
                addr: BASE,
                len: PAGES * PAGE,
                kind: MapKind::AnonPrivate,
                prot: mm::Prot::ReadWrite,
            },
            &mut mm,
            &mut phys,
        );
        let m = Mirror::open(0, &mm, strategy, None).expect("open the mirror");
        // A registration cache has no device faults, only registrations.
        if m.uses_registrations() {
            continue;
        }
        // Fault every page in on the CPU and on the device once.
        for p in 0..PAGES {
            fault(&m, &mut mm, &mut phys, BASE + p * PAGE);
        }
        g.bench_function(BenchmarkId::from_parameter(strategy.name()), |b| {
            let mut p = 0;
            b.iter(|| {
                let addr = BASE + (p % PAGES) * PAGE;
                p += 1;
                fault(&m, &mut mm, &mut phys, black_box(addr))
            })
        });
        assert!(mm.notifier.is_quiescent());
    }
    g.finish();
}

criterion_group!(benches, device_fault);
criterion_main!(benches);
