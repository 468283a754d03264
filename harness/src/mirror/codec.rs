//! The byte codec's `mirror` part: how its config's devices, its address-
//! space steps, device steps and expectations are read and written. The
//! format is documented with the rest of it in [`crate::codec`].

use crate::codec::*;
use crate::program::{
    DevStep, ErrKind, Expect, MapKind, MmStep, Op, PageState, ProgramConfig, Prot, StrategySpec,
    DEVICES, FILES, MAX_PREFETCH, MAX_RUNS, MAX_SNAPSHOT_PAGES, PREFETCH_STRIDE,
};
use mirror::strategy::Tlb;

pub(crate) type Devices = [Option<StrategySpec>; DEVICES as usize];

/// What a code names: a built-in kind by its name (names, not registry
/// indices, so that the order in which kinds were built in never matters),
/// and what the code named before that kind was built in, as a registry
/// index (`None` for no device). The fallback keeps the corpus decoding
/// while a kind is missing from the registry.
type Code = (&'static str, Option<u8>);

/// The low three bits of a kind byte: codes 0-4 are the five 2019-2020
/// designs; 5 and 6 the GPU SVM designs (`gpusvm`, `kfd`), which were
/// `fullva` and `perfault` again before; 7 is `odp` again, or the first
/// kind registered by another crate.
const KIND8: [Code; 8] = [
    ("fullva", Some(0)),
    ("perfault", Some(1)),
    ("odp", Some(2)),
    ("vma", Some(3)),
    ("regcache", Some(4)),
    ("gpusvm", Some(0)),
    ("kfd", Some(1)),
    ("odp", Some(2)),
];

/// A second device's kind in a pair config (h = 20..=29): each built-in
/// kind, then the GPU SVM designs (`kfd-noxnack` on what was `odp` again),
/// then two of the first ones again.
const PAIR10: [Code; 10] = [
    ("fullva", Some(0)),
    ("perfault", Some(1)),
    ("odp", Some(2)),
    ("vma", Some(3)),
    ("regcache", Some(4)),
    ("gpusvm", Some(0)),
    ("kfd", Some(1)),
    ("kfd-noxnack", Some(2)),
    ("vma", Some(3)),
    ("regcache", Some(4)),
];

/// The device of `m1` alone (h = 30..=31, by `(b & 7) + 8 * (h - 30)`):
/// none, the five first kinds, and so on round; two of the repeated
/// "none" codes became the GPU SVM designs, and one repeated `fullva`
/// became `kfd-noxnack`.
const M1ROW: [Code; 16] = [
    ("", None),
    ("fullva", Some(0)),
    ("perfault", Some(1)),
    ("odp", Some(2)),
    ("vma", Some(3)),
    ("regcache", Some(4)),
    ("gpusvm", None),
    ("fullva", Some(0)),
    ("perfault", Some(1)),
    ("odp", Some(2)),
    ("vma", Some(3)),
    ("regcache", Some(4)),
    ("kfd", None),
    ("kfd-noxnack", Some(0)),
    ("perfault", Some(1)),
    ("odp", Some(2)),
];

/// The kind of a code: the built-in kind of its name if there is one, else
/// its fallback.
fn builtin((name, fallback): Code) -> Option<StrategySpec> {
    match mirror::strategy::BUILTIN
        .iter()
        .position(|k| k.name == name)
    {
        Some(i) => Some(StrategySpec::of(i as u8)),
        None => fallback.map(StrategySpec::of),
    }
}

/// The kinds registered by other crates, after the built-in ones.
fn extras() -> std::ops::Range<u8> {
    let first = mirror::strategy::BUILTIN.len() as u8;
    first..mirror::strategy::kinds().len() as u8
}

/// A strategy kind by three bits (KIND8); a sized kind at its default
/// size, a stand-in until its `shift` byte is read.
pub(crate) fn kind8(b: u8) -> StrategySpec {
    match (b & 7, extras().next()) {
        (7, Some(first)) => StrategySpec::default_of(first).unwrap_or(StrategySpec::of(2)),
        (k, _) => builtin(KIND8[usize::from(k)]).unwrap_or(StrategySpec::of(0)),
    }
}

/// The devices a mirror program opens on `m0` before its first step, sized
/// ones with the stand-in size: their `shift` bytes follow.
pub(crate) fn devices_code(b: u8) -> Devices {
    let k = kind8(b);
    match b >> 3 {
        0..=19 => [Some(k), None],
        h @ 20..=29 => [Some(k), builtin(PAIR10[usize::from(h - 20)])],
        h => [None, builtin(M1ROW[usize::from((b & 7) + 8 * (h - 30))])],
    }
}

/// The size parameter of `s`'s kind, if it takes one.
pub(crate) fn size_param(s: StrategySpec) -> Option<mirror::strategy::SizeParam> {
    mirror::strategy::kind(s.kind)?.param
}

/// A size (an ODP chunk shift): every one of `p.min..=p.max`, the default
/// (2 MiB) first.
pub(crate) fn shift_code(p: mirror::strategy::SizeParam, b: u8) -> u8 {
    let n = p.max - p.min + 1;
    p.min + ((b % n) + (p.default - p.min)) % n
}

/// `s` with the stand-in size if it takes one: what the kind tables hold.
pub(crate) fn kind_of_strategy(s: StrategySpec) -> StrategySpec {
    s.with_default_param().with_tlb(Tlb::Sync)
}

/// `m0` mostly, `m1` iff `b & 7 == 7`; devices alike.
pub(crate) fn slot2_code(b: u8) -> u8 {
    u8::from(b & 7 == 7)
}

/// A `dread`'s device byte that makes it a `prefetch` instead, and of
/// which device: the codes from 0xe0 that [`slot2_code`] read as `d0`
/// (those with `b & 7 == 7` stay `d1` reads); `d1` iff bit 3 is set.
pub(crate) fn prefetch_code(b: u8) -> Option<u8> {
    (b >= 0xe0 && b & 7 != 7).then_some(u8::from(b & 8 != 0))
}

/// The first prefetch code of device `dev`.
pub(crate) fn prefetch_byte(dev: u8) -> u8 {
    first_of(0xe0..=0xff, |b| prefetch_code(b) == Some(dev)).unwrap_or(0xe0)
}

/// A prefetch's length by its count byte: `(1 + (b - 1) % 64)` strides
/// (most prefetches span dozens of chunks); 0: a `len` follows.
pub(crate) fn prefetch_len_code(b: u8) -> Option<u64> {
    (b != 0).then(|| (1 + u64::from(b - 1) % MAX_PREFETCH) * PREFETCH_STRIDE)
}

/// An `open`'s strategy: the kind by the low three bits, a size (or,
/// for code 7, which registered kind) by the rest; `kfd` (code 6, no size)
/// with bit 3 set is `kfd-noxnack`, which no other `open` code or config
/// byte gives `d0`.
pub(crate) fn strategy_code(b: u8) -> StrategySpec {
    let kfd = || mirror::strategy::kind(kind8(b).kind).is_some_and(|k| k.name == "kfd");
    if b & 7 == 6 && b & 8 != 0 && kfd() {
        if let Some(s) = builtin(("kfd-noxnack", None)) {
            return s;
        }
    }
    let extra = extras();
    let k = match b & 7 {
        7 if !extra.is_empty() => {
            let n = extra.end - extra.start;
            return StrategySpec::default_of(extra.start + (b >> 3) % n)
                .unwrap_or(StrategySpec::of(2));
        }
        _ => kind8(b),
    };
    match size_param(k) {
        Some(p) => StrategySpec {
            param: shift_code(p, b >> 3),
            ..k
        },
        None => k,
    }
}

/// `(kind, prot)` of an mmap.
pub(crate) fn map_code(b: u8) -> (MapKind, Prot) {
    let kind = match b & 7 {
        0..=4 => MapKind::AnonPrivate,
        5 => MapKind::AnonShared,
        k => MapKind::File(u32::from(k - 6)),
    };
    let prot = match b {
        0..=223 => Prot::ReadWrite,
        224..=239 => Prot::Read,
        _ => Prot::None,
    };
    (kind, prot)
}

/// mprotect's protection: `rw` half the time.
pub(crate) fn prot_code(b: u8) -> Prot {
    match b & 3 {
        0 => Prot::Read,
        2 => Prot::None,
        _ => Prot::ReadWrite,
    }
}

/// What an expectation's first byte says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExpectHead {
    Ok,
    Skipped,
    Error(Option<ErrKind>),
    Value,
    Pages,
    Faults(u8),
    States,
}

pub(crate) fn expect_head_code(b: u8) -> ExpectHead {
    // The one code of the error kind added last (it read as `ok` before).
    if b == 255 {
        return ExpectHead::Error(Some(ErrKind::Again));
    }
    let hi = b >> 3;
    match b & 7 {
        1 => ExpectHead::Skipped,
        2 => ExpectHead::Error(match hi % 7 {
            0 => None,
            k => Some(ErrKind::ALL[(k - 1) as usize]),
        }),
        3 => ExpectHead::Value,
        4 => ExpectHead::Pages,
        5 => ExpectHead::Faults(hi & 1),
        6 => ExpectHead::States,
        _ => ExpectHead::Ok,
    }
}

pub(crate) fn state_code(b: u8) -> PageState {
    PageState::ALL[b as usize % PageState::ALL.len()]
}

/// A run's page count, `1..=MAX_SNAPSHOT_PAGES`.
pub(crate) fn count_code(b: u8) -> Option<u64> {
    (b != ESCAPE).then_some(u64::from(b) + 1)
}

pub(crate) fn count_raw(raw: u64) -> u64 {
    raw % u64::from(MAX_SNAPSHOT_PAGES) + 1
}

/// `(to follows, dontunmap)` of an mremap.
pub(crate) fn remap_code(b: u8) -> (bool, bool) {
    (b >> 3 >= 24, b & 7 == 7)
}

/// A written value: small on purpose, so that contents collide.
pub(crate) fn value_code(b: u8) -> Option<u64> {
    (b != ESCAPE).then_some(u64::from(b))
}

pub(crate) fn value_raw(raw: u64) -> u64 {
    raw
}

// Decoding.

impl Reader<'_, '_> {
    pub(crate) fn mirror_op(&mut self, kind: Kind, c: &ProgramConfig) -> Op {
        match kind {
            Kind::Yield => Op::Yield,
            Kind::Expect => Op::Expect(self.expect()),
            Kind::DevRead => {
                let b = self.byte();
                if let Some(dev) = prefetch_code(b) {
                    let addr = self.point(c.task_size);
                    let len = match prefetch_len_code(self.byte()) {
                        Some(len) => len,
                        None => self.len(addr, c.task_size),
                    };
                    return Op::Dev {
                        dev,
                        op: DevStep::Prefetch { addr, len },
                    };
                }
                let dev = slot2_code(b);
                let op = self.dev_op(kind, c.task_size);
                Op::Dev { dev, op }
            }
            Kind::DevOpen
            | Kind::DevWrite
            | Kind::Snapshot
            | Kind::DevMigrate
            | Kind::DevExclusive
            | Kind::DevEvict
            | Kind::DevRegister
            | Kind::DevUnregister
            | Kind::DevWork
            | Kind::DevAttr => {
                let dev = slot2_code(self.byte());
                let op = self.dev_op(kind, c.task_size);
                Op::Dev { dev, op }
            }
            _ => {
                let mm = slot2_code(self.byte());
                let op = self.mm_op(kind, c.task_size);
                Op::Mm { mm, op }
            }
        }
    }

    pub(crate) fn dev_op(&mut self, kind: Kind, ts: u64) -> DevStep {
        match kind {
            Kind::DevOpen => {
                let b = self.byte();
                let mm = slot2_code(b);
                let strategy = strategy_code(self.byte()).with_tlb(tlb_code(b));
                DevStep::Open { mm, strategy }
            }
            Kind::DevWrite => {
                let addr = self.point(ts);
                let value = self.u64_with(value_code, value_raw);
                DevStep::Write { addr, value }
            }
            Kind::Snapshot => {
                let (addr, len) = self.mspan(ts);
                DevStep::Snapshot { addr, len }
            }
            Kind::DevMigrate => {
                let (addr, len) = self.mspan(ts);
                DevStep::Migrate { addr, len }
            }
            Kind::DevExclusive => {
                let (addr, len) = self.mspan(ts);
                DevStep::Exclusive { addr, len }
            }
            Kind::DevEvict => {
                let (addr, len) = self.mspan(ts);
                DevStep::Evict { addr, len }
            }
            Kind::DevRegister => {
                let (addr, len) = self.mspan(ts);
                DevStep::Register { addr, len }
            }
            Kind::DevUnregister => DevStep::Unregister {
                addr: self.point(ts),
            },
            Kind::DevWork => DevStep::Work,
            Kind::DevAttr => {
                let (addr, len) = self.mspan(ts);
                DevStep::Attr { addr, len }
            }
            // DevRead.
            _ => DevStep::Read {
                addr: self.point(ts),
            },
        }
    }

    pub(crate) fn expect(&mut self) -> Expect {
        match expect_head_code(self.byte()) {
            ExpectHead::Ok => Expect::Ok,
            ExpectHead::Skipped => Expect::Skipped,
            ExpectHead::Error(k) => Expect::Error(k),
            ExpectHead::Value => Expect::Value(self.u64_with(value_code, value_raw)),
            ExpectHead::Pages => Expect::Pages(self.u64_with(value_code, value_raw)),
            ExpectHead::Faults(dev) => Expect::Faults {
                dev,
                n: self.u64_with(value_code, value_raw),
            },
            ExpectHead::States => {
                let n = self.byte() % (MAX_RUNS as u8 + 1);
                let mut runs = [(PageState::None, 0u16); MAX_RUNS];
                let (mut len, mut total) = (0usize, 0u64);
                for _ in 0..n {
                    let st = state_code(self.byte());
                    let count = self.u64_with(count_code, count_raw);
                    // Within MAX_SNAPSHOT_PAGES: fits in u16.
                    let count = count.min(u64::from(MAX_SNAPSHOT_PAGES) - total) as u16;
                    if count == 0 {
                        continue;
                    }
                    total += u64::from(count);
                    if len > 0 && runs[len - 1].0 == st {
                        runs[len - 1].1 += count;
                    } else {
                        runs[len] = (st, count);
                        len += 1;
                    }
                }
                Expect::States {
                    runs,
                    len: len as u8,
                }
            }
        }
    }

    pub(crate) fn mm_op(&mut self, kind: Kind, ts: u64) -> MmStep {
        match kind {
            Kind::Mmap => {
                let (addr, len) = self.mspan(ts);
                let (kind, prot) = map_code(self.byte());
                MmStep::Mmap {
                    addr,
                    len,
                    kind,
                    prot,
                }
            }
            Kind::Munmap => {
                let (addr, len) = self.mspan(ts);
                MmStep::Munmap { addr, len }
            }
            Kind::Dontneed => {
                let (addr, len) = self.mspan(ts);
                MmStep::Dontneed { addr, len }
            }
            Kind::Mprotect => {
                let (addr, len) = self.mspan(ts);
                MmStep::Mprotect {
                    addr,
                    len,
                    prot: prot_code(self.byte()),
                }
            }
            Kind::Mremap => {
                let (addr, old_len) = self.mspan(ts);
                let new_len = self.len(addr, ts);
                let (has_to, dontunmap) = remap_code(self.byte());
                let to = has_to.then(|| self.point(ts));
                MmStep::Mremap {
                    addr,
                    old_len,
                    new_len,
                    to,
                    dontunmap,
                }
            }
            Kind::Fork => MmStep::Fork,
            Kind::ClearRefs => MmStep::ClearRefs,
            Kind::OomReap => MmStep::OomReap,
            Kind::MmWrite => {
                let addr = self.point(ts);
                let value = self.u64_with(value_code, value_raw);
                MmStep::Write { addr, value }
            }
            Kind::Reclaim => MmStep::Reclaim {
                addr: self.point(ts),
            },
            Kind::MmMigrate => MmStep::Migrate {
                addr: self.point(ts),
            },
            Kind::Collapse => MmStep::Collapse {
                addr: self.point(ts),
            },
            Kind::Split => MmStep::Split {
                addr: self.point(ts),
            },
            Kind::Ksm => {
                let a = self.point(ts);
                let b = self.point(ts);
                MmStep::Ksm { a, b }
            }
            Kind::Exit => match self.byte() {
                0..=63 => MmStep::Exit,
                b => MmStep::Read {
                    addr: self.point_from(b, ts),
                },
            },
            // MmRead.
            _ => MmStep::Read {
                addr: self.point(ts),
            },
        }
    }
}

// Encoding.

/// The first code of an `m`/`d` slot byte (out of range: the first code).
/// An `open`'s TLB mode: bit 3 of its address-space byte, which
/// [`slot2_code`] leaves alone. Config devices have no spare bit: they
/// flush in one pass unless a text program or a pin says otherwise.
pub(crate) fn tlb_code(b: u8) -> Tlb {
    if b & 8 != 0 {
        Tlb::TwoPass
    } else {
        Tlb::Sync
    }
}

pub(crate) fn tlb_bit(t: Tlb) -> u8 {
    match t {
        Tlb::Sync => 0,
        Tlb::TwoPass => 8,
    }
}

pub(crate) fn slot2_byte(slot: u8) -> u8 {
    first_of([0, 7], |b| slot2_code(b) == slot).unwrap_or(0)
}

/// The first code of an mmap's kind and protection: the low three bits
/// pick the kind, 224 adds `ro`, 240 `none`.
pub(crate) fn map_byte(kind: MapKind, prot: Prot) -> u8 {
    let low = match kind {
        MapKind::AnonPrivate => Some(0),
        MapKind::AnonShared => Some(5),
        MapKind::File(f) if f < FILES => Some(6 + f as u8),
        MapKind::File(_) => None,
    };
    let high = match prot {
        Prot::ReadWrite => 0,
        Prot::Read => 224,
        Prot::None => 240,
    };
    let b = low.map(|l| high | l);
    b.filter(|&b| map_code(b) == (kind, prot)).unwrap_or(0)
}

pub(crate) fn push_mm(out: &mut Vec<u8>, op: MmStep, ts: u64) {
    match op {
        MmStep::Mmap {
            addr,
            len,
            kind,
            prot,
        } => {
            push_mspan(out, addr, len, ts);
            out.push(map_byte(kind, prot));
        }
        MmStep::Munmap { addr, len } | MmStep::Dontneed { addr, len } => {
            push_mspan(out, addr, len, ts)
        }
        MmStep::Mprotect { addr, len, prot } => {
            push_mspan(out, addr, len, ts);
            out.push(first_code(|b| prot_code(b) == prot).unwrap_or(0));
        }
        MmStep::Mremap {
            addr,
            old_len,
            new_len,
            to,
            dontunmap,
        } => {
            push_mspan(out, addr, old_len, ts);
            push_len(out, addr, new_len, ts);
            let flags = (if to.is_some() { 24 << 3 } else { 0 }) | (u8::from(dontunmap) * 7);
            out.push(flags);
            if let Some(to) = to {
                push_point(out, to, ts);
            }
        }
        MmStep::Fork | MmStep::ClearRefs | MmStep::OomReap => {}
        MmStep::Write { addr, value } => {
            push_point(out, addr, ts);
            push_value(out, value);
        }
        MmStep::Read { addr }
        | MmStep::Reclaim { addr }
        | MmStep::Migrate { addr }
        | MmStep::Collapse { addr }
        | MmStep::Split { addr } => push_point(out, addr, ts),
        MmStep::Ksm { a, b } => {
            push_point(out, a, ts);
            push_point(out, b, ts);
        }
        MmStep::Exit => out.push(0),
    }
}

pub(crate) fn push_dev(out: &mut Vec<u8>, op: DevStep, ts: u64) {
    match op {
        DevStep::Open { mm, strategy } => {
            out.push(slot2_byte(mm) | tlb_bit(strategy.tlb));
            let base = strategy.with_tlb(Tlb::Sync);
            out.push(first_code(|b| strategy_code(b) == base).unwrap_or(0));
        }
        DevStep::Read { addr } | DevStep::Unregister { addr } => push_point(out, addr, ts),
        DevStep::Write { addr, value } => {
            push_point(out, addr, ts);
            push_value(out, value);
        }
        DevStep::Snapshot { addr, len }
        | DevStep::Migrate { addr, len }
        | DevStep::Exclusive { addr, len }
        | DevStep::Evict { addr, len }
        | DevStep::Register { addr, len }
        | DevStep::Attr { addr, len } => push_mspan(out, addr, len, ts),
        DevStep::Prefetch { addr, len } => {
            push_point(out, addr, ts);
            match first_code(|b| prefetch_len_code(b) == Some(len)) {
                Some(b) => out.push(b),
                None => {
                    out.push(0);
                    push_len(out, addr, len, ts);
                }
            }
        }
        DevStep::Work => {}
    }
}

pub(crate) fn push_expect(out: &mut Vec<u8>, e: Expect) {
    let head = match e {
        Expect::Ok => ExpectHead::Ok,
        Expect::Skipped => ExpectHead::Skipped,
        Expect::Error(k) => ExpectHead::Error(k),
        Expect::Value(_) => ExpectHead::Value,
        Expect::Pages(_) => ExpectHead::Pages,
        Expect::Faults { dev, .. } => ExpectHead::Faults(dev),
        Expect::States { .. } => ExpectHead::States,
    };
    out.push(first_code(|b| expect_head_code(b) == head).unwrap_or(0));
    match e {
        Expect::Value(v) | Expect::Pages(v) | Expect::Faults { n: v, .. } => push_value(out, v),
        Expect::States { runs, len } => {
            let runs = &runs[..usize::from(len).min(MAX_RUNS)];
            out.push(runs.len() as u8);
            for &(st, count) in runs {
                out.push(first_code(|b| state_code(b) == st).unwrap_or(0));
                let count = u64::from(count);
                match first_code(|b| count_code(b) == Some(count)) {
                    Some(b) => out.push(b),
                    None => push_raw(out, count.wrapping_sub(1)),
                }
            }
        }
        Expect::Ok | Expect::Skipped | Expect::Error(_) => {}
    }
}
