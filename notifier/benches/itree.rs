//! The interval tree against the alternatives (issue 9).
//!
//! `overlap/*`: one overlap query, iterating every hit, on a tree of n
//! intervals, n = 10, 1k, 100k, 1M. The same intervals and the same queries
//! go to:
//! * `itree`: `notifier::itree::IntervalTree`, the core's tree;
//! * `naive`: a list scanned the way `ReferenceNotifier::overlapping` scans
//!   its own (state filter, the same overlap test, hits sorted by
//!   `(start, id)`), written out here because the model keeps it private;
//! * `interavl` and `iset`: published interval trees with dynamic insert
//!   and remove (an AVL tree of boxed nodes, and an arena red-black tree).
//!
//! The layout is an address space: page-aligned intervals of 1 to 64 pages
//! whose starts are spread over 32 pages per interval, so every point is
//! covered by about one interval at every n; queries are 1 to 16 pages and
//! hit about two intervals. What changes with n is the search, not k.
//!
//! `insert_remove/*`: one insert plus one remove on a tree that stays at n.
//!
//! Run: `cargo bench -p notifier --bench itree`.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use notifier::itree::IntervalTree;

const PAGE: u64 = 4096;
const SIZES: [usize; 4] = [10, 1_000, 100_000, 1_000_000];
const QUERIES: usize = 4096;

/// splitmix64: the benches' only source of randomness, seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` distinct intervals `[start, last]` (inclusive, as the core keeps them).
fn intervals(n: usize, seed: u64) -> Vec<(u64, u64)> {
    let mut rng = Rng(seed);
    let span = n as u64 * 32;
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let start = rng.below(span) * PAGE;
        let pages = 1 + rng.below(64);
        if seen.insert((start, pages)) {
            out.push((start, start + pages * PAGE - 1));
        }
    }
    out
}

/// Query ranges `[start, last]` over the same space as `intervals(n)`.
fn queries(n: usize, seed: u64) -> Vec<(u64, u64)> {
    let mut rng = Rng(seed);
    let span = n as u64 * 32;
    (0..QUERIES)
        .map(|_| {
            let start = rng.below(span) * PAGE;
            (start, start + (1 + rng.below(16)) * PAGE - 1)
        })
        .collect()
}

/// The reference model's list, as `ReferenceNotifier` keeps and scans it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    InTree,
    PendingRemove,
    Removed,
}

struct NaiveEntry {
    id: u64,
    start: u64,
    last: u64,
    state: State,
}

struct Naive(Vec<NaiveEntry>);

impl Naive {
    /// `ReferenceNotifier::overlapping`: the indices of live entries that
    /// overlap, sorted by `(start, id)`.
    fn overlapping(&self, start: u64, last: u64) -> Vec<usize> {
        let mut hits: Vec<usize> = (0..self.0.len())
            .filter(|&i| {
                let e = &self.0[i];
                matches!(e.state, State::InTree | State::PendingRemove)
                    && e.start <= last
                    && e.last >= start
            })
            .collect();
        hits.sort_by_key(|&i| (self.0[i].start, self.0[i].id));
        hits
    }
}

struct Trees {
    itree: IntervalTree<u64>,
    naive: Naive,
    interavl: interavl::IntervalTree<u64, u64>,
    iset: iset::IntervalMap<u64, u64>,
}

fn build(ivs: &[(u64, u64)]) -> Trees {
    let mut t = Trees {
        itree: IntervalTree::with_capacity(ivs.len()),
        naive: Naive(Vec::with_capacity(ivs.len())),
        interavl: interavl::IntervalTree::default(),
        iset: iset::IntervalMap::with_capacity(ivs.len()),
    };
    for (id, &(start, last)) in ivs.iter().enumerate() {
        let id = id as u64;
        t.itree.insert(start, last, id, id);
        t.naive.0.push(NaiveEntry {
            id,
            start,
            last,
            state: if id.is_multiple_of(2) {
                State::InTree
            } else {
                State::PendingRemove
            },
        });
        assert!(t.interavl.insert(start..last + 1, id).is_none());
        assert!(t.iset.insert(start..last + 1, id).is_none());
    }
    // A few dead entries, as the model keeps them.
    t.naive.0.push(NaiveEntry {
        id: u64::MAX,
        start: 0,
        last: u64::MAX,
        state: State::Removed,
    });
    t
}

/// Every implementation finds the same hits; returns the mean hit count.
fn check_agreement(t: &Trees, qs: &[(u64, u64)]) -> f64 {
    let mut total = 0;
    for &(s, l) in qs.iter().take(256) {
        let mut a: Vec<u64> = t.itree.overlapping(s, l).map(|e| *e.value).collect();
        let mut b: Vec<u64> = t
            .naive
            .overlapping(s, l)
            .into_iter()
            .map(|i| t.naive.0[i].id)
            .collect();
        let mut c: Vec<u64> = t
            .interavl
            .iter_overlaps(&(s..l + 1))
            .map(|(_, v)| *v)
            .collect();
        let mut d: Vec<u64> = t.iset.values(s..l + 1).copied().collect();
        for v in [&mut a, &mut b, &mut c, &mut d] {
            v.sort_unstable();
        }
        assert_eq!(a, b, "naive disagrees on [{s:#x}, {l:#x}]");
        assert_eq!(a, c, "interavl disagrees on [{s:#x}, {l:#x}]");
        assert_eq!(a, d, "iset disagrees on [{s:#x}, {l:#x}]");
        total += a.len();
    }
    total as f64 / qs.len().min(256) as f64
}

fn overlap(c: &mut Criterion) {
    let mut g = c.benchmark_group("overlap");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for n in SIZES {
        let ivs = intervals(n, 1);
        let qs = queries(n, 2);
        let t = build(&ivs);
        let k = check_agreement(&t, &qs);
        eprintln!("overlap n={n}: {k:.2} hits per query");

        g.bench_function(BenchmarkId::new("itree", n), |b| {
            let mut q = 0;
            b.iter(|| {
                let (s, l) = qs[q % QUERIES];
                q += 1;
                let mut sum = 0u64;
                for e in t.itree.overlapping(black_box(s), black_box(l)) {
                    sum = sum.wrapping_add(*e.value);
                }
                sum
            })
        });
        g.bench_function(BenchmarkId::new("interavl", n), |b| {
            let mut q = 0;
            b.iter(|| {
                let (s, l) = qs[q % QUERIES];
                q += 1;
                let mut sum = 0u64;
                let r = black_box(s)..black_box(l) + 1;
                for (_, v) in t.interavl.iter_overlaps(&r) {
                    sum = sum.wrapping_add(*v);
                }
                sum
            })
        });
        g.bench_function(BenchmarkId::new("iset", n), |b| {
            let mut q = 0;
            b.iter(|| {
                let (s, l) = qs[q % QUERIES];
                q += 1;
                let mut sum = 0u64;
                for v in t.iset.values(black_box(s)..black_box(l) + 1) {
                    sum = sum.wrapping_add(*v);
                }
                sum
            })
        });
        if n >= 100_000 {
            // A scan of a million entries takes milliseconds: fewer samples.
            g.sample_size(10);
        }
        g.bench_function(BenchmarkId::new("naive", n), |b| {
            let mut q = 0;
            b.iter(|| {
                let (s, l) = qs[q % QUERIES];
                q += 1;
                let mut sum = 0u64;
                for i in t.naive.overlapping(black_box(s), black_box(l)) {
                    sum = sum.wrapping_add(t.naive.0[i].id);
                }
                sum
            })
        });
        g.sample_size(100);
    }
    g.finish();
}

fn insert_remove(c: &mut Criterion) {
    let mut g = c.benchmark_group("insert_remove");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for n in SIZES {
        let ivs = intervals(n, 1);
        // New intervals: distinct from the tree's (odd byte offsets).
        let fresh: Vec<(u64, u64)> = queries(n, 3).into_iter().map(|(s, l)| (s + 1, l)).collect();
        let mut t = build(&ivs);
        g.bench_function(BenchmarkId::new("itree", n), |b| {
            let mut q = 0;
            let mut order = n as u64;
            b.iter(|| {
                let (s, l) = fresh[q % QUERIES];
                q += 1;
                order += 1;
                let h = t.itree.insert(black_box(s), black_box(l), order, order);
                t.itree.remove(h)
            })
        });
        g.bench_function(BenchmarkId::new("interavl", n), |b| {
            let mut q = 0;
            b.iter(|| {
                let (s, l) = fresh[q % QUERIES];
                q += 1;
                t.interavl.insert(black_box(s)..black_box(l) + 1, 7);
                t.interavl.remove(&(s..l + 1))
            })
        });
        g.bench_function(BenchmarkId::new("iset", n), |b| {
            let mut q = 0;
            b.iter(|| {
                let (s, l) = fresh[q % QUERIES];
                q += 1;
                t.iset.insert(black_box(s)..black_box(l) + 1, 7);
                t.iset.remove(s..l + 1)
            })
        });
        assert_eq!(t.itree.len(), n);
        assert_eq!(t.iset.len(), n);
    }
    g.finish();
}

criterion_group!(benches, overlap, insert_remove);
criterion_main!(benches);
