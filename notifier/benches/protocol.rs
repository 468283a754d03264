//! The notifier protocol's hot paths (issue 9).
//!
//! * `read_begin_retry`: an uncontended `read_begin` + `read_retry`, the
//!   device fault's fast path (no invalidation running).
//! * `check_retry`: the lockless hint.
//! * `invalidate/{0,1,16}`: `invalidate_range_start` + `invalidate_range_end`
//!   of a range that overlaps 0, 1 or k = 16 intervals, in a core that holds
//!   1,000 other intervals. Each hit interval's callback calls `set_seq`, as
//!   the contract says. This includes collecting the hits into a `Vec`
//!   under the core lock.
//! * `insert_remove`: `Subscriptions::insert` + `remove` while idle, in a
//!   core of 1,000 intervals.
//!
//! Run: `cargo bench -p notifier --bench protocol`.
//!
//! A device fault end to end, per strategy, is in `mirror/benches/fault.rs`
//! (`cargo bench -p mirror --bench fault`). The strategies not built yet
//! (OdpImplicit, VmaTracking, RegistrationCache) are not measured anywhere.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use notifier::{Config, Event, Interval, IntervalOps, Range, Subscriptions, PAGE_SIZE};

/// A driver callback that keeps the contract: record the invalidation.
fn good_callback() -> Arc<dyn IntervalOps> {
    Arc::new(|iv: &Interval, _range: &Range, cur_seq: u64| {
        iv.set_seq(cur_seq).expect("inside the callback");
        true
    })
}

/// A core with `background` one-page intervals, one every other page from
/// page 1 << 20 on, far from the low pages the benches use.
fn core_with(background: u64) -> Subscriptions {
    let core = Subscriptions::new(Config::default()).expect("default config");
    for i in 0..background {
        let start = ((1 << 20) + 2 * i) * PAGE_SIZE;
        // Dropping the handle leaves the interval registered.
        core.insert(start, PAGE_SIZE, good_callback()).unwrap();
    }
    core
}

fn read_side(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    let core = core_with(1_000);
    let iv = core.insert(0, 16 * PAGE_SIZE, good_callback()).unwrap();
    g.bench_function("read_begin_retry", |b| {
        b.iter(|| {
            let seq = core.read_begin(black_box(&iv)).unwrap();
            black_box(iv.read_retry(seq))
        })
    });
    let seq = core.read_begin(&iv).unwrap();
    g.bench_function("check_retry", |b| {
        b.iter(|| black_box(&iv).check_retry(black_box(seq)))
    });
    g.finish();
}

fn invalidate(c: &mut Criterion) {
    let mut g = c.benchmark_group("invalidate");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for k in [0u64, 1, 16] {
        let core = core_with(1_000);
        // k one-page intervals at pages 0..k; the range covers pages 0..16.
        let ivs: Vec<Interval> = (0..k)
            .map(|p| {
                core.insert(p * PAGE_SIZE, PAGE_SIZE, good_callback())
                    .unwrap()
            })
            .collect();
        let range = Range::new(0, 16 * PAGE_SIZE, Event::Clear);
        let inv = core.invalidate_range_start(&range).unwrap();
        assert_eq!(inv.hit(), k > 0);
        core.invalidate_range_end(inv);
        g.bench_function(BenchmarkId::from_parameter(k), |b| {
            b.iter(|| {
                let inv = core.invalidate_range_start(black_box(&range)).unwrap();
                core.invalidate_range_end(inv);
            })
        });
        assert!(core.is_quiescent());
        drop(ivs);
    }
    g.finish();
}

fn insert_remove(c: &mut Criterion) {
    let mut g = c.benchmark_group("subscriptions");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    let core = core_with(1_000);
    let ops = good_callback();
    g.bench_function("insert_remove", |b| {
        b.iter(|| {
            let iv = core
                .insert(black_box(3 * PAGE_SIZE), PAGE_SIZE, ops.clone())
                .unwrap();
            core.remove(&iv).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, read_side, invalidate, insert_remove);
criterion_main!(benches);
