//! State coverage (`mnfuzz reach`): which combinations of a few state
//! dimensions the executions exercised, and how often.
//!
//! The executors record one *cell* per event they run (a `u32` in
//! [`Outcome::cells`](crate::outcome::Outcome::cells)): a tuple of small
//! dimension values, packed. They also hand each cell to the built-in
//! engine as a feedback feature, so that an input that reaches a new
//! combination (a fault that commits while the page is device-private, an
//! invalidation of a tree of 64 under a deferred removal) is kept and
//! mutated: what the report counts is what the engine steers toward.
//!
//! Mirror cells: device strategy × event (mm op or device op) × the page's
//! state from the device's point of view × the phase of the device's fault
//! in flight × the device-memory state. Notifier cells: op or event × tree
//! size × collision/deferred state × blocking. One configuration point per
//! mirror execution ([`CONFIG_TAG`]): each device's strategy with its size
//! class, two-pass TLB flushes, huge pages, device memory; the report
//! checks which pairs of those were exercised.
//!
//! Everything is a pure function of the executions: counters, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use mirror::strategy::{Tlb, BUILTIN};
use mm::{Mm, Pte};

use crate::program::{StrategySpec, Target};

/// The top four bits of a mirror cell.
pub const MIRROR_TAG: u32 = 0x1;
/// The top four bits of a notifier cell.
pub const NOTIFIER_TAG: u32 = 0x2;
/// The top four bits of a mirror configuration point.
pub const CONFIG_TAG: u32 = 0x3;

/// Mirror events: the mm ops, then the device ops.
pub const MIRROR_EVENTS: [&str; 26] = [
    "read",
    "write",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "dontneed",
    "fork",
    "reclaim",
    "migrate",
    "ksm",
    "collapse",
    "split",
    "clear_refs",
    "oom_reap",
    "exit",
    "dread",
    "dwrite",
    "dprefetch",
    "dmigrate",
    "dexclusive",
    "devict",
    "dregister",
    "dunregister",
    "dwork",
    "dattr",
];

/// A page's state as device `owner` sees it.
pub const PAGE_STATES: [&str; 11] = [
    "n/a",
    "no-vma",
    "none",
    "swapped",
    "zero",
    "present-ro",
    "present-rw",
    "huge",
    "devpriv-local",
    "devpriv-remote",
    "exclusive",
];

/// The phase of the device's fault in flight when the event ran.
pub const FAULT_PHASES: [&str; 8] = [
    "no-fault",
    "begin",
    "read_begin-wait",
    "walk",
    "commit",
    "retry",
    "install",
    "remove",
];

/// Device-private pages of the address space, by owner.
pub const DEVMEM: [&str; 4] = ["none", "local", "remote", "both"];

/// Notifier tree sizes (live intervals), by bucket.
pub const TREE_SIZES: [&str; 6] = ["0", "1", "2-3", "4-15", "16-63", "64+"];

/// Notifier invalidation state: collision window and deferred list.
pub const NOTIFIER_STATES: [&str; 4] = ["quiet", "invalidating", "deferred", "inval+deferred"];

/// Whether the op could block.
pub const BLOCKING: [&str; 3] = ["ran", "blocked", "nonblock"];

/// The notifier ops other than `start`, which counts by event.
const NOTIFIER_OPS: [&str; 10] = [
    "insert",
    "populate",
    "remove",
    "end",
    "read_begin",
    "commit",
    "check_retry",
    "register",
    "unregister",
    "release",
];

/// Notifier events: the ops, `start` by event.
pub fn notifier_events() -> Vec<String> {
    let mut v: Vec<String> = NOTIFIER_OPS.iter().map(|s| s.to_string()).collect();
    v.extend(
        notifier::Event::ALL
            .iter()
            .map(|e| format!("start:{}", e.name())),
    );
    v
}

/// The index of notifier op `kw` (or `start` of `event`) in
/// [`notifier_events`].
pub fn notifier_event(kw: &str, event: Option<notifier::Event>) -> u32 {
    match event {
        Some(e) => {
            NOTIFIER_OPS.len() as u32
                + notifier::Event::ALL
                    .iter()
                    .position(|x| *x == e)
                    .unwrap_or(0) as u32
        }
        None => NOTIFIER_OPS.iter().position(|x| *x == kw).unwrap_or(0) as u32,
    }
}

/// A mirror cell.
pub fn mirror_cell(strategy: u8, event: &str, page: u8, phase: u8, devmem: u8) -> u32 {
    let ev = MIRROR_EVENTS.iter().position(|e| *e == event).unwrap_or(0) as u32;
    MIRROR_TAG << 28
        | u32::from(strategy & 15) << 20
        | ev << 12
        | u32::from(page & 15) << 8
        | u32::from(phase & 15) << 4
        | u32::from(devmem & 3)
}

/// A notifier cell.
pub fn notifier_cell(event: u32, live: usize, state: u8, blocking: u8) -> u32 {
    let size = match live {
        0 => 0,
        1 => 1,
        2..=3 => 2,
        4..=15 => 3,
        16..=63 => 4,
        _ => 5,
    };
    NOTIFIER_TAG << 28
        | (event & 31) << 12
        | size << 8
        | u32::from(state & 15) << 4
        | u32::from(blocking & 3)
}

/// The state of the page at `addr` of `mm` as the device `owner` sees it
/// (an index into [`PAGE_STATES`]).
pub fn page_state(mm: &Mm, addr: u64, owner: u64) -> u8 {
    if mm.vma_at(addr).is_none() {
        return 1;
    }
    match mm.pte(addr) {
        None => 2,
        Some(Pte::Swap { .. }) => 3,
        Some(Pte::Present {
            frame: mm::FrameId(0),
            ..
        }) => 4,
        Some(Pte::Present { .. }) if mm.is_huge(addr) => 7,
        Some(Pte::Present { writable, .. }) => 5 + u8::from(writable),
        Some(Pte::Device { owner: o, .. }) => 8 + u8::from(o != owner),
        Some(Pte::Exclusive { .. }) => 10,
    }
}

/// Device-private pages of `mm` by owner, relative to `owner` (an index
/// into [`DEVMEM`]).
pub fn devmem(mm: &Mm, owner: u64) -> u8 {
    let mut st = 0u8;
    for (_, p) in mm.ptes() {
        if let Pte::Device { owner: o, .. } = p {
            st |= if o == owner { 1 } else { 2 };
        }
    }
    st
}

/// A fault phase name (`mirror::Fault::phase`) and retry count as an index
/// into [`FAULT_PHASES`].
pub fn fault_phase(phase: &str, retries: u32) -> u8 {
    match phase {
        "begin" if retries > 0 => 5,
        "begin" => 1,
        "read_begin wait" => 2,
        "walk" => 3,
        "commit" => 4,
        "install" => 6,
        "remove" => 7,
        _ => 0,
    }
}

/// The configuration labels of one device: its kind, a sized kind by size
/// class (its three smallest sizes, its default, or another), or none.
pub fn spec_labels() -> Vec<String> {
    let mut v = vec!["none".to_string()];
    for k in BUILTIN {
        match k.param {
            Some(_) => {
                for c in ["small", "default", "other"] {
                    v.push(format!("{}:{c}", k.name));
                }
            }
            None => v.push(k.name.to_string()),
        }
    }
    v
}

/// The label index (into [`spec_labels`]) of a device.
pub fn spec_label(spec: Option<StrategySpec>) -> u8 {
    let Some(s) = spec else { return 0 };
    let mut i = 1u8;
    for (n, k) in BUILTIN.iter().enumerate() {
        let width = if k.param.is_some() { 3 } else { 1 };
        if n == usize::from(s.kind) {
            return match k.param {
                Some(p) if s.param < p.min + 3 && s.param != p.default => i,
                Some(p) if s.param == p.default => i + 1,
                Some(_) => i + 2,
                None => i,
            };
        }
        i += width;
    }
    0
}

/// A configuration point: both devices' labels, two-pass flushes, huge
/// pages seen, device memory seen.
pub fn config_point(devs: [Option<StrategySpec>; 2], huge: bool, dm: bool) -> u32 {
    let tp = devs.iter().flatten().any(|s| s.tlb == Tlb::TwoPass);
    CONFIG_TAG << 28
        | u32::from(spec_label(devs[0])) << 16
        | u32::from(spec_label(devs[1])) << 8
        | u32::from(tp) << 2
        | u32::from(huge) << 1
        | u32::from(dm)
}

/// Aggregated cells: executions that reached each cell, and each value
/// of each dimension.
#[derive(Clone, Debug, Default)]
pub struct ReachCounts {
    /// Cell -> executions.
    pub cells: BTreeMap<u32, u64>,
    /// (tag, dimension, value) -> executions.
    pub values: BTreeMap<(u32, u8, u8), u64>,
    /// Executions.
    pub execs: u64,
}

/// Each tag's dimensions: (shift, width), as [`dims`] lays them out.
fn layout(tag: u32) -> &'static [(u32, u32)] {
    match tag {
        MIRROR_TAG => &[(20, 4), (12, 8), (8, 4), (4, 4), (0, 2)],
        NOTIFIER_TAG => &[(12, 5), (8, 4), (4, 4), (0, 2)],
        _ => &[],
    }
}

impl ReachCounts {
    /// Adds one execution's cells (each cell and value counted once).
    pub fn add(&mut self, cells: &[u32]) {
        self.execs += 1;
        let mut set: Vec<u32> = cells.to_vec();
        set.sort_unstable();
        set.dedup();
        let mut values = BTreeSet::new();
        for &c in &set {
            *self.cells.entry(c).or_insert(0) += 1;
            for (d, &(shift, width)) in layout(c >> 28).iter().enumerate() {
                values.insert((c >> 28, d as u8, field(c, shift, width) as u8));
            }
        }
        for v in values {
            *self.values.entry(v).or_insert(0) += 1;
        }
    }

    /// Adds another count.
    pub fn merge(&mut self, o: ReachCounts) {
        self.execs += o.execs;
        for (c, n) in o.cells {
            *self.cells.entry(c).or_insert(0) += n;
        }
        for (v, n) in o.values {
            *self.values.entry(v).or_insert(0) += n;
        }
    }
}

/// The dimensions of `target`'s cells: name, value names, bit shift,
/// bit width.
fn dims(target: Target) -> Vec<(&'static str, Vec<String>, u32, u32)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match target {
        Target::Notifier => vec![
            ("event", notifier_events(), 12, 5),
            ("tree size", s(&TREE_SIZES), 8, 4),
            ("collision/deferred", s(&NOTIFIER_STATES), 4, 4),
            ("blocking", s(&BLOCKING), 0, 2),
        ],
        _ => vec![
            (
                "strategy",
                BUILTIN.iter().map(|k| k.name.to_string()).collect(),
                20,
                4,
            ),
            ("event", s(&MIRROR_EVENTS), 12, 8),
            ("page state", s(&PAGE_STATES), 8, 4),
            ("fault phase", s(&FAULT_PHASES), 4, 4),
            ("device memory", s(&DEVMEM), 0, 2),
        ],
    }
}

fn field(c: u32, shift: u32, width: u32) -> usize {
    ((c >> shift) & ((1 << width) - 1)) as usize
}

/// The configuration factors: name, value names, shift, width.
fn config_factors() -> Vec<(&'static str, Vec<String>, u32, u32)> {
    let yn = || vec!["no".to_string(), "yes".to_string()];
    vec![
        ("d0", spec_labels(), 16, 8),
        ("d1", spec_labels(), 8, 8),
        ("twopass", yn(), 2, 1),
        ("huge pages", yn(), 1, 1),
        ("device memory", yn(), 0, 1),
    ]
}

/// Pairwise coverage of the configuration factors: (exercised, total,
/// the pairs not exercised).
pub fn config_pairs(r: &ReachCounts) -> (usize, usize, Vec<String>) {
    let f = config_factors();
    let points: Vec<u32> = r
        .cells
        .keys()
        .copied()
        .filter(|c| c >> 28 == CONFIG_TAG)
        .collect();
    let (mut seen, mut total, mut missing) = (0, 0, Vec::new());
    for a in 0..f.len() {
        for b in a + 1..f.len() {
            let mut hit = BTreeSet::new();
            for &p in &points {
                hit.insert((field(p, f[a].2, f[a].3), field(p, f[b].2, f[b].3)));
            }
            for (i, va) in f[a].1.iter().enumerate() {
                for (j, vb) in f[b].1.iter().enumerate() {
                    total += 1;
                    if hit.contains(&(i, j)) {
                        seen += 1;
                    } else {
                        missing.push(format!("{}={va} × {}={vb}", f[a].0, f[b].0));
                    }
                }
            }
        }
    }
    (seen, total, missing)
}

/// The cells of `target` in `r`, by the values of dimension `d`:
/// executions that reached each value.
pub fn by_value(r: &ReachCounts, target: Target, d: usize) -> Vec<(String, u64)> {
    let dims = dims(target);
    let tag = tag(target);
    let names = &dims[d].1;
    names
        .iter()
        .enumerate()
        .map(|(v, name)| {
            let n = r.values.get(&(tag, d as u8, v as u8)).copied().unwrap_or(0);
            (name.clone(), n)
        })
        .collect()
}

fn tag(target: Target) -> u32 {
    match target {
        Target::Notifier => NOTIFIER_TAG,
        _ => MIRROR_TAG,
    }
}

/// Pairs of values of dimensions `a` and `b` reached: (reached, total,
/// the missing ones).
pub fn dim_pairs(
    r: &ReachCounts,
    target: Target,
    a: usize,
    b: usize,
) -> (usize, usize, Vec<String>) {
    let dims = dims(target);
    let tag = tag(target);
    let mut hit = BTreeSet::new();
    for &c in r.cells.keys() {
        if c >> 28 == tag {
            hit.insert((
                field(c, dims[a].2, dims[a].3),
                field(c, dims[b].2, dims[b].3),
            ));
        }
    }
    let mut missing = Vec::new();
    let mut total = 0;
    for (i, va) in dims[a].1.iter().enumerate() {
        for (j, vb) in dims[b].1.iter().enumerate() {
            total += 1;
            if !hit.contains(&(i, j)) {
                missing.push(format!("{va} × {vb}"));
            }
        }
    }
    (total - missing.len(), total, missing)
}

/// Distinct cells of `target` reached.
pub fn distinct(r: &ReachCounts, target: Target) -> usize {
    let tag = tag(target);
    r.cells.keys().filter(|c| *c >> 28 == tag).count()
}

/// The readable report.
pub fn render(r: &ReachCounts, target: Target) -> String {
    let mut s = String::new();
    let dims = dims(target);
    let _ = writeln!(
        s,
        "reach: target={} execs={} distinct cells={}",
        target.name(),
        r.execs,
        distinct(r, target)
    );
    let _ = writeln!(
        s,
        "(counts: executions that reached the value at least once)"
    );
    for (d, (name, _, _, _)) in dims.iter().enumerate() {
        let _ = writeln!(s, "\n{name}:");
        let mut unreached = Vec::new();
        for (v, n) in by_value(r, target, d) {
            if n == 0 {
                unreached.push(v);
            } else {
                let _ = writeln!(
                    s,
                    "  {v:<20} {n:>10}  {:>5.1}%",
                    100.0 * n as f64 / r.execs.max(1) as f64
                );
            }
        }
        if !unreached.is_empty() {
            let _ = writeln!(s, "  unreached: {}", unreached.join(", "));
        }
    }
    let _ = writeln!(s, "\npairs of dimensions (reached / all):");
    for a in 0..dims.len() {
        for b in a + 1..dims.len() {
            let (hit, total, missing) = dim_pairs(r, target, a, b);
            let _ = writeln!(s, "  {} × {}: {hit}/{total}", dims[a].0, dims[b].0);
            // Mirror: the strategy's pairs only (the others are long).
            let listed = target == Target::Notifier || a == 0;
            if listed && !missing.is_empty() && missing.len() <= 40 {
                let _ = writeln!(s, "    unreached: {}", missing.join("; "));
            }
        }
    }
    if target == Target::Mirror {
        let (hit, total, missing) = config_pairs(r);
        let _ = writeln!(
            s,
            "\nconfiguration pairs (d0, d1 by kind and size class, twopass, huge pages, device memory): {hit}/{total} exercised"
        );
        for m in &missing {
            let _ = writeln!(s, "  not exercised: {m}");
        }
    }
    s
}
