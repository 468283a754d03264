//! The byte codec: how a fuzzing engine's raw input becomes a [`Program`].
//!
//! Engines mutate bytes blindly, so the format is built for them: every byte
//! string decodes (missing bytes read as zero, nothing is ever rejected),
//! each small operand is one byte, a byte's value maps onto the interesting
//! values of its operand by fixed ranges, and a flipped bit usually changes
//! one operand only. `encode` is the inverse for every program `decode`
//! produces and for every valid program, so corpora written from `.ops`
//! files and minimized programs replay exactly.
//!
//! ```text
//! header  target threads seq task_size [devices] [schedule]
//!   target      2 linux, else b % 2: even notifier, odd mirror (the threads
//!               target has no code: its inputs decode with `decode_as`,
//!               which ignores this byte; linux reads the mirror header:
//!               threads, seq and task_size bytes and the devices byte with
//!               its shift bytes are read as there, then threads = 1,
//!               task_size = the target's window (`real_task_size`: 128
//!               KiB, the kvm target 2 MiB) and no devices; its kinds are
//!               the mirror table's with every kind it cannot run replaced,
//!               see LINUX_KINDS). `decode_as(threads)` reads b % 4 == 1
//!               as the threads target's mirror form: a devices byte (and
//!               its shift bytes) follows task_size, and the steps are
//!               mirror steps; if that byte opens no device, the program
//!               is an ordinary threads program after all
//!   threads     [2,2,2,1,3,3,4,4][b & 7]
//!   seq         0..=191 2 | ..=207 0 | ..=223 MAX-1 | ..=239 MAX-3 | ..=254 MAX-7
//!               | 255 ESC (8 bytes LE, low bit cleared)
//!   task_size   0..=191 MAX | ..=215 1<<47 | ..=239 1<<32 | ..=254 MIN_TASK_SIZE
//!               | 255 ESC (8 bytes LE, raised to MIN_TASK_SIZE)
//!   devices     mirror target and the threads mirror form only (the notifier
//!               target reads no byte and has none): b, then one `shift` byte for each sized device (d0 first).
//!               k = KIND8[b & 7], h = b >> 3: 0..=19 [k, none]
//!               | ..=29 [k, PAIR10[h - 20]]
//!               | 30, 31 [none, M1ROW[(b & 7) + 8 * (h - 30)]]
//!   KIND8       [fullva, perfault, odp, vma, regcache, gpusvm, kfd, EXTRA]
//!               EXTRA: the first kind registered by another crate, else odp
//!   PAIR10      [fullva, perfault, odp, vma, regcache, gpusvm, kfd,
//!               kfd-noxnack, vma, regcache]
//!   M1ROW       [none, fullva, perfault, odp, vma, regcache, gpusvm, fullva,
//!               perfault, odp, vma, regcache, kfd, kfd-noxnack, perfault, odp]
//!               (codes name kinds by name; a code whose kind is missing from
//!               the registry means what it meant before that kind existed:
//!               gpusvm fullva, kfd perfault; in M1ROW none; kfd-noxnack odp
//!               in PAIR10, fullva in M1ROW)
//!   shift       ODP chunk shift 14 + ((s + 7) % 17): 0 is 2 MiB (21), and
//!               every shift 14..=30 has a code (any sized kind alike:
//!               min + ((s + default - min) % n) over its n sizes)
//!   schedule    threads target only: 8 bytes LE, the schedule seed
//! (threads steps are notifier steps, or mirror steps in the mirror form)
//! step    tag operands...                (repeated while bytes remain,
//!                                         at most MAX_STEPS)
//!   tag         thread = (tag >> 6) % threads; kind = the target's table[tag & 63]
//!
//! notifier steps
//!   kinds       weights out of 64: start 14, end 10, read_begin 12, commit 6,
//!               insert 10, remove 5, check_retry 2, register 2, unregister 2,
//!               release 1
//!   (mirror)    `step` (a turn that queues nothing) has weight 4 and no operands
//!   insert      slot span cb             slot = b % SLOTS; b >= 0xf8 instead:
//!               populate: count span    count = 64 + b / 2 if b < 128, else b - 127
//!   remove, read_begin                   slot
//!   commit, check_retry                  (none: the thread's latest fault)
//!   start       event span flags         event = Event::ALL[b % 8]; end = start + len
//!   end                                  (none)
//!   release     b                        release iff b < 64, else end: after a
//!                                        release every insert fails, so keep
//!                                        it to about one step in 256
//!   register    cslot refuse             cslot = b % CLASSIC_SLOTS; refuse as in cb
//!   unregister  cslot
//! span    addr [len]
//!   addr        page p = b % WINDOW_PAGES: 0..=191 p*PAGE | ..=207 +1 | ..=223 +PAGE-1
//!               | ..=239 +PAGE/2 | 240..=254 special, (b-240) % 5 picks
//!               0, ts-PAGE, ts-1, ts-2*PAGE, or WHOLE (start 0, len ts, no len byte)
//!               | 255 ESC
//!   len         n = (b % 8 + 1) pages: 0..=175 n | ..=191 n+1 | ..=207 n-1 | ..=219 1
//!               | ..=225 0 | ..=229 2 MiB | ..=243 ts-start | ..=254 u64::MAX | 255 ESC
//! flags   nonblock iff b & 7 == 7; owner = None if b >> 3 < 24, else Some((b >> 3) % 4)
//! cb      refuse = b & 15: 0..=11 Never | ..=14 NonBlockable | 15 Always;
//!         two_pass iff b & 15 is 10, 11 or 14 (never with Always: nothing
//!         to finish);
//!         set_seq = b >> 4: 0..=13 Always | 14 Never | 15 SkipFor(event byte follows)
//!
//! mirror steps: every mm op starts with an mm byte, every device op with a
//! dev byte (m1 and d1 iff b & 7 == 7)
//!   kinds       weights out of 64: read 5, write 5, dread 5, dwrite 5, mmap 5,
//!               step 5, munmap 3, mprotect 2, reclaim 2, mremap 2, dontneed 2,
//!               migrate 2, clear_refs 2, snapshot 2, dmigrate 2, fork 1, ksm 1,
//!               collapse 1, split 1, oom_reap 1, exit 1, open 1 (the older
//!               kinds' weights scaled to 56 by largest remainder; step's
//!               last entry, tag 55, is dattr 1), then
//!               dexclusive 2, devict 2, dregister 1, dunregister 1, dwork 1,
//!               expect 1
//!   mmap        mm mspan map             map: b & 7: 0..=4 anon | 5 shared
//!                                        | 6, 7 file:(b & 7) - 6; prot by b:
//!                                        0..=223 rw | ..=239 ro | 240.. none
//!   munmap, dontneed                     mm mspan
//!   mprotect    mm mspan prot            prot by b & 3: 0 ro | 1, 3 rw | 2 none
//!   mremap      mm mspan len remap [point]
//!                                        new_len is a len (start = addr);
//!                                        remap: dontunmap iff b & 7 == 7,
//!                                        a `to` point follows iff b >> 3 >= 24
//!   fork, clear_refs, oom_reap           mm
//!   read, reclaim, migrate, collapse, split
//!                                        mm point
//!   write       mm point value           value: 0..=254 b | 255 ESC
//!   ksm         mm point point
//!   exit        mm b                     exit iff b < 64, else `read` of point
//!                                        code b: exit ends the process, so
//!                                        keep it to about one step in 256
//!   open        dev mm strategy          strategy = KIND8[b & 7], a sized
//!                                        kind's size by `shift` of b >> 3;
//!                                        kfd (6) with b & 8: kfd-noxnack;
//!                                        code 7 with registered kinds: the
//!                                        registered kind (b >> 3) % count
//!   dread       dev point              a dev byte b >= 0xe0 with b & 7 != 7
//!                                        (codes that read as d0) is instead
//!   prefetch    dev point count [len]    on d1 iff b & 8; count: 1..=255
//!                                        (1 + (c - 1) % 64) * 16 KiB,
//!                                        0: a len follows
//!   dwrite      dev point value
//!   snapshot, dmigrate, dexclusive, devict, dregister, dattr
//!                                        dev mspan
//!   dunregister dev point
//!   dwork       dev
//!   expect      e [operands]             (no mm or dev byte) form by e & 7:
//!               0, 7 ok | 1 skipped | 2 error, kind by (e >> 3) % 7:
//!               0 any | k ErrKind::ALL[k - 1] | 3 value: value | 4 pages: value
//!               | 5 faults: d((e >> 3) & 1), value | 6 states: runs;
//!               e = 255 alone is error:eagain (the kind added last)
//!   runs        n = b % 9 runs, each `state count`: state = PageState::ALL[b % 12],
//!               count 0..=254 b + 1 | 255 ESC (raw % 512 + 1); adjacent runs of
//!               one state merge, pages past 512 are dropped
//! mspan   maddr [len]                    len as above
//!   maddr       page p = b % WINDOW_PAGES: 0..=207 p*PAGE | ..=223 2 MiB + p*PAGE
//!               | ..=231 +PAGE/2
//!               | ..=239 +PAGE-1 | 240..=254 the specials of addr | 255 ESC
//! point   maddr, where WHOLE means WINDOW_PAGES*PAGE (just past the window)
//! ```
//!
//! ESC is 255 and 8 raw little-endian bytes; ts is the task_size. The mirror
//! address table is the notifier's with more aligned codes: unaligned spans
//! are EINVAL there, so they stay the exception.
//!
//! Byte 0 is the common case everywhere, so the empty input is the default
//! config with no steps, and zero padding means "the usual". The encoder
//! never hand-codes the inverse: for each operand it tries the codes in
//! order and emits the first whose decoding (in the same context) is the
//! value, else the escape. `decode` allocates nothing but the step vector.

use arbitrary::{Arbitrary, Unstructured};
use notifier::Event;

// Each target's part of the format.
use crate::mirror::codec::*;
use crate::notifier::codec::*;
use crate::program::{
    DevStep, MmStep, Op, Program, ProgramConfig, Step, Target, DEVICES, FILES, MAX_STEPS,
    MIN_TASK_SIZE, MMS, PAGE, WINDOW_PAGES,
};

/// The code that is followed by 8 raw little-endian bytes.
pub(crate) const ESCAPE: u8 = 255;
/// Thread counts by `byte & 7`; 2 is the most common.
pub(crate) const THREADS: [u8; 8] = [2, 2, 2, 1, 3, 3, 4, 4];

// The mirror tables below spell out two address spaces, two devices and
// two files.
const _: () = assert!(MMS == 2 && DEVICES == 2 && FILES == 2);

/// The op kinds of both targets, as chosen by a step's tag byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    // The notifier target.
    Start,
    End,
    ReadBegin,
    Commit,
    Insert,
    Remove,
    CheckRetry,
    Register,
    Unregister,
    Release,
    // The mirror target.
    MmRead,
    MmWrite,
    DevRead,
    DevWrite,
    Mmap,
    Munmap,
    Mprotect,
    Reclaim,
    Mremap,
    Dontneed,
    MmMigrate,
    ClearRefs,
    Snapshot,
    DevMigrate,
    Fork,
    Ksm,
    Collapse,
    Split,
    OomReap,
    Exit,
    DevOpen,
    DevExclusive,
    DevEvict,
    DevRegister,
    DevUnregister,
    DevWork,
    Expect,
    DevAttr,
    Yield,
}

/// Number of [`Kind`]s.
pub(crate) const KIND_COUNT: usize = Kind::Yield as usize + 1;

/// Each notifier kind's share of the 64 entries of [`KINDS`].
pub(crate) const KIND_WEIGHTS: [(Kind, usize); 10] = [
    (Kind::Start, 14),
    (Kind::End, 10),
    (Kind::ReadBegin, 12),
    (Kind::Commit, 6),
    (Kind::Insert, 10),
    (Kind::Remove, 5),
    (Kind::CheckRetry, 2),
    (Kind::Register, 2),
    (Kind::Unregister, 2),
    (Kind::Release, 1),
];

/// Each mirror kind's share of the 64 entries of [`MIRROR_KINDS`]. The
/// kinds before the device-memory ops had 64 entries between them; their
/// weights are scaled to 56 by largest remainder, which keeps their order.
/// `dattr` took the last of `step`'s five entries (tag 55), which no
/// corpus input used.
pub(crate) const MIRROR_KIND_WEIGHTS: [(Kind, usize); 29] = [
    (Kind::MmRead, 5),
    (Kind::MmWrite, 5),
    (Kind::DevRead, 5),
    (Kind::DevWrite, 5),
    (Kind::Mmap, 5),
    (Kind::Munmap, 3),
    (Kind::Mprotect, 2),
    (Kind::Reclaim, 2),
    (Kind::Mremap, 2),
    (Kind::Dontneed, 2),
    (Kind::MmMigrate, 2),
    (Kind::ClearRefs, 2),
    (Kind::Snapshot, 2),
    (Kind::DevMigrate, 2),
    (Kind::Fork, 1),
    (Kind::Ksm, 1),
    (Kind::Collapse, 1),
    (Kind::Split, 1),
    (Kind::OomReap, 1),
    (Kind::Exit, 1),
    (Kind::DevOpen, 1),
    (Kind::Yield, 4),
    (Kind::DevAttr, 1),
    (Kind::DevExclusive, 2),
    (Kind::DevEvict, 2),
    (Kind::DevRegister, 1),
    (Kind::DevUnregister, 1),
    (Kind::DevWork, 1),
    (Kind::Expect, 1),
];

/// The linux target's stand-in for each mirror kind it cannot run (the
/// simulation-only mm ops, devices, `step`): [`LINUX_KINDS`] is the
/// mirror table with these replaced, so a mirror input decodes to a
/// linux program of the same shape and the kinds it keeps keep their tags.
pub(crate) const fn linux_kind(k: Kind) -> Kind {
    match k {
        Kind::DevRead | Kind::OomReap | Kind::DevUnregister => Kind::MmRead,
        Kind::DevWrite | Kind::Split | Kind::DevWork => Kind::MmWrite,
        Kind::Ksm | Kind::DevOpen | Kind::Yield => Kind::Mmap,
        Kind::Snapshot | Kind::DevEvict => Kind::Munmap,
        Kind::DevMigrate => Kind::Mprotect,
        Kind::Reclaim | Kind::Collapse | Kind::DevExclusive => Kind::Mremap,
        Kind::MmMigrate | Kind::DevAttr => Kind::Dontneed,
        Kind::DevRegister => Kind::ClearRefs,
        k => k,
    }
}

const fn linux_table(mirror: &[Kind; 64]) -> [Kind; 64] {
    let mut t = *mirror;
    let mut i = 0;
    while i < 64 {
        t[i] = linux_kind(t[i]);
        i += 1;
    }
    t
}

/// Linux `tag & 63` to kind: read 12, write 12, mmap 11, munmap 7,
/// mremap 7, dontneed 5, mprotect 4, clear_refs 3, fork 1, exit 1, expect 1.
pub(crate) const LINUX_KINDS: [Kind; 64] = linux_table(&MIRROR_KINDS);

/// The kvm target's stand-in for each mirror kind: device reads and
/// writes and `open` stay (a guest's accesses), the other device kinds
/// become guest reads (snapshot, exclusive), guest writes (migrate, evict)
/// or `open` (`step`), and the rest is the linux target's.
pub(crate) const fn kvm_kind(k: Kind) -> Kind {
    match k {
        Kind::DevRead | Kind::DevWrite | Kind::DevOpen | Kind::Ksm | Kind::Collapse => k,
        Kind::Snapshot | Kind::DevExclusive => Kind::DevRead,
        Kind::DevMigrate | Kind::DevEvict => Kind::DevWrite,
        Kind::Yield => Kind::DevOpen,
        k => linux_kind(k),
    }
}

const fn kvm_table(mirror: &[Kind; 64]) -> [Kind; 64] {
    let mut t = *mirror;
    let mut i = 0;
    while i < 64 {
        t[i] = kvm_kind(t[i]);
        i += 1;
    }
    t
}

/// Kvm `tag & 63` to kind: guest read 9, guest write 9, open 5, read 7,
/// write 7, mmap 5, dontneed 5, mremap 4, munmap 3, clear_refs 3,
/// mprotect 2, ksm 1, collapse 1, fork 1, exit 1, expect 1. The target has no code of its
/// own (like threads): only `decode_as` reads its programs.
pub(crate) const KVM_KINDS: [Kind; 64] = kvm_table(&MIRROR_KINDS);

/// Notifier `tag & 63` to kind.
pub(crate) const KINDS: [Kind; 64] = kind_table(&KIND_WEIGHTS);
/// Mirror `tag & 63` to kind.
pub(crate) const MIRROR_KINDS: [Kind; 64] = kind_table(&MIRROR_KIND_WEIGHTS);

pub(crate) const fn kind_table(weights: &[(Kind, usize)]) -> [Kind; 64] {
    let mut t = [weights[0].0; 64];
    let mut i = 0;
    let mut k = 0;
    while k < weights.len() {
        let (kind, weight) = weights[k];
        let mut j = 0;
        while j < weight {
            assert!(i < 64, "kind weights must sum to 64");
            t[i] = kind;
            i += 1;
            j += 1;
        }
        k += 1;
    }
    assert!(i == 64, "kind weights must sum to 64");
    t
}

/// The first `tag & 63` of each kind in its target's table, indexed by
/// `Kind as usize`.
pub(crate) const FIRST_TAG: [u8; KIND_COUNT] = first_tag_table();

pub(crate) const fn first_tag_table() -> [u8; KIND_COUNT] {
    let mut t = [u8::MAX; KIND_COUNT];
    let mut b = 64;
    while b > 0 {
        b -= 1;
        t[KINDS[b] as usize] = b as u8;
        t[MIRROR_KINDS[b] as usize] = b as u8;
    }
    let mut k = 0;
    while k < KIND_COUNT {
        assert!(t[k] != u8::MAX, "every kind needs a tag");
        k += 1;
    }
    t
}

/// The kind tables of `target`.
pub(crate) fn kinds(target: Target) -> &'static [Kind; 64] {
    match target {
        Target::Notifier | Target::Threads => &KINDS,
        Target::Mirror => &MIRROR_KINDS,
        Target::Linux => &LINUX_KINDS,
        Target::Kvm => &KVM_KINDS,
    }
}

/// The kind a tag byte chooses for `target`.
pub(crate) fn tag_kind(tag: u8, target: Target) -> Kind {
    kinds(target)[(tag & 63) as usize]
}

pub(crate) fn kind_of(op: &Op) -> Kind {
    match op {
        Op::Insert { .. } | Op::Populate { .. } => Kind::Insert,
        Op::Remove { .. } => Kind::Remove,
        Op::Start { .. } => Kind::Start,
        Op::End => Kind::End,
        Op::ReadBegin { .. } => Kind::ReadBegin,
        Op::Commit => Kind::Commit,
        Op::CheckRetry => Kind::CheckRetry,
        Op::Release => Kind::Release,
        Op::Register { .. } => Kind::Register,
        Op::Unregister { .. } => Kind::Unregister,
        Op::Yield => Kind::Yield,
        Op::Mm { op, .. } => match op {
            MmStep::Mmap { .. } => Kind::Mmap,
            MmStep::Munmap { .. } => Kind::Munmap,
            MmStep::Mprotect { .. } => Kind::Mprotect,
            MmStep::Mremap { .. } => Kind::Mremap,
            MmStep::Dontneed { .. } => Kind::Dontneed,
            MmStep::Fork => Kind::Fork,
            MmStep::Read { .. } => Kind::MmRead,
            MmStep::Write { .. } => Kind::MmWrite,
            MmStep::Reclaim { .. } => Kind::Reclaim,
            MmStep::Migrate { .. } => Kind::MmMigrate,
            MmStep::Ksm { .. } => Kind::Ksm,
            MmStep::Collapse { .. } => Kind::Collapse,
            MmStep::Split { .. } => Kind::Split,
            MmStep::ClearRefs => Kind::ClearRefs,
            MmStep::OomReap => Kind::OomReap,
            MmStep::Exit => Kind::Exit,
        },
        Op::Dev { op, .. } => match op {
            DevStep::Open { .. } => Kind::DevOpen,
            DevStep::Read { .. } => Kind::DevRead,
            DevStep::Write { .. } => Kind::DevWrite,
            DevStep::Snapshot { .. } => Kind::Snapshot,
            DevStep::Migrate { .. } => Kind::DevMigrate,
            DevStep::Exclusive { .. } => Kind::DevExclusive,
            DevStep::Evict { .. } => Kind::DevEvict,
            DevStep::Register { .. } => Kind::DevRegister,
            DevStep::Unregister { .. } => Kind::DevUnregister,
            DevStep::Work => Kind::DevWork,
            DevStep::Attr { .. } => Kind::DevAttr,
            // A `dread` whose device byte is a prefetch code.
            DevStep::Prefetch { .. } => Kind::DevRead,
        },
        Op::Expect(_) => Kind::Expect,
    }
}

// ---------------------------------------------------------------------------
// Code tables: one pure function per operand, shared by decoder and encoder.
// `None` means the escape.

/// Even notifier, odd mirror, as ever: the threads target has no code of
/// its own (its inputs decode with [`decode_as`]), so old seeds keep theirs.
pub(crate) fn target_code(b: u8) -> Target {
    // Byte 2 was a notifier byte that no corpus input has; every other
    // byte keeps its meaning.
    match b {
        2 => Target::Linux,
        _ => [Target::Notifier, Target::Mirror][b as usize % 2],
    }
}

pub(crate) fn threads_code(b: u8) -> u8 {
    THREADS[(b & 7) as usize]
}

pub(crate) fn seq_code(b: u8) -> Option<u64> {
    Some(match b {
        0..=191 => 2,
        192..=207 => 0,
        208..=223 => u64::MAX - 1,
        224..=239 => u64::MAX - 3,
        240..=254 => u64::MAX - 7,
        ESCAPE => return None,
    })
}

pub(crate) fn seq_raw(raw: u64) -> u64 {
    raw & !1
}

pub(crate) fn task_size_code(b: u8) -> Option<u64> {
    Some(match b {
        0..=191 => u64::MAX,
        192..=215 => 1 << 47,
        216..=239 => 1 << 32,
        240..=254 => MIN_TASK_SIZE,
        ESCAPE => return None,
    })
}

pub(crate) fn task_size_raw(raw: u64) -> u64 {
    raw.max(MIN_TASK_SIZE)
}

/// What an address byte says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Addr {
    /// This address; a length byte follows.
    At(u64),
    /// Start 0, length `task_size`; no length byte.
    Whole,
    /// 8 raw bytes follow, then a length byte.
    Escape,
}

/// The specials of both address tables, `240..=254`.
pub(crate) fn special_addr(b: u8, task_size: u64) -> Addr {
    match (b - 240) % 5 {
        0 => Addr::At(0),
        1 => Addr::At(task_size.wrapping_sub(PAGE)),
        2 => Addr::At(task_size.wrapping_sub(1)),
        3 => Addr::At(task_size.wrapping_sub(2 * PAGE)),
        _ => Addr::Whole,
    }
}

/// Notifier addresses.
pub(crate) fn addr_code(b: u8, task_size: u64) -> Addr {
    let page = (b as u64 % WINDOW_PAGES) * PAGE;
    match b {
        0..=191 => Addr::At(page),
        192..=207 => Addr::At(page + 1),
        208..=223 => Addr::At(page + PAGE - 1),
        224..=239 => Addr::At(page + PAGE / 2),
        240..=254 => special_addr(b, task_size),
        ESCAPE => Addr::Escape,
    }
}

/// Mirror addresses: more of them aligned.
pub(crate) fn maddr_code(b: u8, task_size: u64) -> Addr {
    let page = (b as u64 % WINDOW_PAGES) * PAGE;
    match b {
        0..=207 => Addr::At(page),
        // A second window at 2 MiB, so that a huge page can be mapped,
        // collapsed and partly invalidated.
        208..=223 => Addr::At(HUGE_WINDOW + page),
        224..=231 => Addr::At(page + PAGE / 2),
        232..=239 => Addr::At(page + PAGE - 1),
        240..=254 => special_addr(b, task_size),
        ESCAPE => Addr::Escape,
    }
}

/// The base of the mirror's second address window, and a length code: one
/// huge page.
pub(crate) const HUGE_WINDOW: u64 = 2 << 20;

/// What a mirror point's (a single address's) WHOLE code means.
pub(crate) const POINT_WHOLE: u64 = WINDOW_PAGES * PAGE;

/// A mirror point: `maddr_code`, with WHOLE meaning [`POINT_WHOLE`].
pub(crate) fn point_code(b: u8, task_size: u64) -> Option<u64> {
    match maddr_code(b, task_size) {
        Addr::At(a) => Some(a),
        Addr::Whole => Some(POINT_WHOLE),
        Addr::Escape => None,
    }
}

pub(crate) fn len_code(b: u8, start: u64, task_size: u64) -> Option<u64> {
    let pages = (b as u64 % 8 + 1) * PAGE;
    Some(match b {
        0..=175 => pages,
        176..=191 => pages + 1,
        192..=207 => pages - 1,
        208..=219 => 1,
        220..=225 => 0,
        226..=229 => HUGE_WINDOW,
        230..=243 => task_size.wrapping_sub(start),
        244..=254 => u64::MAX,
        ESCAPE => return None,
    })
}

pub(crate) fn event_code(b: u8) -> Event {
    Event::ALL[b as usize % Event::ALL.len()]
}

// ---------------------------------------------------------------------------
// Decoding.

/// Reads bytes from an `Unstructured`; past the end every byte is 0.
pub(crate) struct Reader<'r, 'a> {
    u: &'r mut Unstructured<'a>,
    opts: DecodeOptions,
}

/// Choices of a decoding that the bytes alone do not make.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Let bit 3 of the threads byte turn on `kernel_compat` in notifier
    /// programs. Off, the bit is ignored: a program with the kernel's
    /// rollback hole diverges on correct code, so only a run that asks for
    /// it (`mnfuzz fuzz --kernel-compat`) may generate one.
    pub kernel_compat: bool,
}

impl Reader<'_, '_> {
    pub(crate) fn byte(&mut self) -> u8 {
        match self.u.bytes(1) {
            Ok(b) => b[0],
            Err(_) => 0,
        }
    }

    pub(crate) fn raw(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    pub(crate) fn u64_with(&mut self, code: fn(u8) -> Option<u64>, raw: fn(u64) -> u64) -> u64 {
        match code(self.byte()) {
            Some(v) => v,
            None => raw(self.raw()),
        }
    }

    /// `(start, len)`, with addresses from `addr`.
    pub(crate) fn span_with(&mut self, addr: fn(u8, u64) -> Addr, task_size: u64) -> (u64, u64) {
        let start = match addr(self.byte(), task_size) {
            Addr::At(a) => a,
            Addr::Whole => return (0, task_size),
            Addr::Escape => self.raw(),
        };
        (start, self.len(start, task_size))
    }

    pub(crate) fn len(&mut self, start: u64, task_size: u64) -> u64 {
        match len_code(self.byte(), start, task_size) {
            Some(l) => l,
            None => self.raw(),
        }
    }

    /// A notifier `(start, len)`.
    pub(crate) fn span(&mut self, task_size: u64) -> (u64, u64) {
        self.span_with(addr_code, task_size)
    }

    /// A mirror `(addr, len)`.
    pub(crate) fn mspan(&mut self, task_size: u64) -> (u64, u64) {
        self.span_with(maddr_code, task_size)
    }

    /// A mirror point whose code byte `b` was read already.
    pub(crate) fn point_from(&mut self, b: u8, task_size: u64) -> u64 {
        match point_code(b, task_size) {
            Some(a) => a,
            None => self.raw(),
        }
    }

    pub(crate) fn point(&mut self, task_size: u64) -> u64 {
        let b = self.byte();
        self.point_from(b, task_size)
    }

    pub(crate) fn config(&mut self, target: Option<Target>) -> ProgramConfig {
        let byte = self.byte();
        let target = target.unwrap_or_else(|| target_code(byte));
        let tb = self.byte();
        let threads = threads_code(tb);
        let kernel_compat = self.opts.kernel_compat && target == Target::Notifier && tb & 8 != 0;
        let initial_seq = self.u64_with(seq_code, seq_raw);
        let task_size = self.u64_with(task_size_code, task_size_raw);
        let mut devices = match target {
            Target::Notifier => [None, None],
            // The mirror form of the threads target: an ignored target
            // byte of 1 mod 4 (0 in every older threads input).
            Target::Threads if byte % 4 != 1 => [None, None],
            Target::Threads | Target::Mirror | Target::Linux | Target::Kvm => {
                devices_code(self.byte())
            }
        };
        for d in devices.iter_mut().flatten() {
            if let Some(p) = size_param(*d) {
                d.param = shift_code(p, self.byte());
            }
        }
        if target.real() {
            return ProgramConfig {
                target,
                threads: 1,
                initial_seq,
                task_size: crate::program::real_task_size(target),
                devices: [None, None],
                kernel_compat: false,
                schedule: 0,
            };
        }
        let schedule = if target == Target::Threads {
            self.raw()
        } else {
            0
        };
        ProgramConfig {
            target,
            threads,
            initial_seq,
            task_size,
            devices,
            kernel_compat,
            schedule,
        }
    }

    pub(crate) fn step(&mut self, c: &ProgramConfig) -> Step {
        let tag = self.byte();
        let thread = (tag >> 6) % c.threads.max(1);
        let op = if c.speaks_mm() {
            // A threads program with devices speaks the mirror's ops.
            let table = match c.target {
                Target::Threads => Target::Mirror,
                t => t,
            };
            match (c.target, self.mirror_op(tag_kind(tag, table), c)) {
                (
                    Target::Kvm,
                    Op::Dev {
                        dev,
                        op: DevStep::Open { mm, .. },
                    },
                ) => Op::Dev {
                    dev,
                    op: DevStep::Open {
                        mm,
                        strategy: crate::program::KVM_DEVICE,
                    },
                },
                // A guest accesses one address per run: a prefetch's
                // bytes read its first page.
                (
                    Target::Kvm,
                    Op::Dev {
                        dev,
                        op: DevStep::Prefetch { addr, .. },
                    },
                ) => Op::Dev {
                    dev,
                    op: DevStep::Read { addr },
                },
                (_, op) => op,
            }
        } else {
            self.notifier_op(tag_kind(tag, c.target), c)
        };
        Step { thread, op }
    }

    pub(crate) fn program(&mut self, target: Option<Target>) -> Program {
        let config = self.config(target);
        // Steps take two or three bytes on average; growing the vector one
        // push at a time was a visible cost of decoding.
        let mut steps = Vec::with_capacity((self.u.len() / 2 + 1).min(MAX_STEPS));
        while !self.u.is_empty() && steps.len() < MAX_STEPS {
            steps.push(self.step(&config));
        }
        Program { config, steps }
    }
}

/// Decodes any bytes into a valid program. Never fails; bytes past
/// [`MAX_STEPS`] steps are ignored.
pub fn decode(bytes: &[u8]) -> Program {
    let mut u = Unstructured::new(bytes);
    Reader {
        u: &mut u,
        opts: DecodeOptions::default(),
    }
    .program(None)
}

/// Decodes any bytes into a valid `target` program: the target byte is
/// read but ignored, and everything after it decodes for `target` (its
/// config bytes and step table). Engines that fuzz one target use this so
/// that every input is a program of it; `encode` of the result gives bytes
/// that [`decode`] reads back the same.
pub fn decode_as(target: Target, bytes: &[u8]) -> Program {
    decode_as_with(target, bytes, DecodeOptions::default())
}

/// [`decode_as`], with the choices `opts` makes.
pub fn decode_as_with(target: Target, bytes: &[u8], opts: DecodeOptions) -> Program {
    let mut u = Unstructured::new(bytes);
    Reader { u: &mut u, opts }.program(Some(target))
}

/// Consumes all of `u` (like `arbitrary_take_rest`): the format has no
/// length prefix, steps run to the end of the data.
impl<'a> Arbitrary<'a> for Program {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Reader {
            u,
            opts: DecodeOptions::default(),
        }
        .program(None))
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Reader {
            u: &mut u,
            opts: DecodeOptions::default(),
        }
        .program(None))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (0, None)
    }
}

// ---------------------------------------------------------------------------
// Encoding.

/// The first code `b` (in order) for which `f(b)` holds.
pub(crate) fn first_code(f: impl Fn(u8) -> bool) -> Option<u8> {
    (0..=u8::MAX).find(|&b| f(b))
}

/// `first_code(f)` for an `f` that only the `candidates` (ascending) can
/// satisfy: the encoder's fast paths name the few codes that can decode to
/// a value instead of trying all 256, which was most of the engine's
/// mutation time. Tests check each against the full scan.
pub(crate) fn first_of(
    candidates: impl IntoIterator<Item = u8>,
    f: impl Fn(u8) -> bool,
) -> Option<u8> {
    candidates.into_iter().find(|&b| f(b))
}

/// The codes that can decode to `Addr::At(start)` or `Addr::Whole`, ascending:
/// the window code for the page offset `addr_code` gives, then the specials.
pub(crate) fn addr_candidates(start: u64) -> impl Iterator<Item = u8> {
    let (p, r) = (start / PAGE, start % PAGE);
    let huge = HUGE_WINDOW / PAGE;
    let window = match r {
        0 if (huge..huge + WINDOW_PAGES).contains(&p) => Some(208 + p - huge),
        _ if p >= WINDOW_PAGES => None,
        0 => Some(p),
        1 => Some(192 + p),
        r if r == PAGE - 1 => Some(208 + p),
        r if r == PAGE / 2 => Some(224 + p),
        _ => None,
    };
    window.map(|b| b as u8).into_iter().chain(240..=254)
}

/// [`addr_candidates`] for `maddr_code` (and so for points).
pub(crate) fn maddr_candidates(start: u64) -> impl Iterator<Item = u8> {
    let (p, r) = (start / PAGE, start % PAGE);
    let window = match r {
        _ if p >= WINDOW_PAGES => None,
        0 => Some(p),
        r if r == PAGE / 2 && p < 8 => Some(224 + p),
        r if r == PAGE - 1 && p >= 8 => Some(224 + p),
        _ => None,
    };
    window.map(|b| b as u8).into_iter().chain(240..=254)
}

/// The codes that can decode to length `len`, ascending: whole pages, one
/// more, one less, then the fixed codes.
pub(crate) fn len_candidates(len: u64) -> impl Iterator<Item = u8> {
    let pages = |v: u64| {
        (v & (PAGE - 1) == 0 && (1..=8).contains(&(v / PAGE))).then(|| (v / PAGE - 1) as u8)
    };
    [
        pages(len),
        pages(len.wrapping_sub(1)).map(|b| 176 + b),
        pages(len.wrapping_add(1)).map(|b| 192 + b),
    ]
    .into_iter()
    .flatten()
    .chain([208, 220, 226, 230, 244])
}

/// The first tag of `kind` run by `thread` when there are `threads`, else
/// the first tag of `kind`.
pub(crate) fn tag_code(kind: Kind, thread: u8, threads: u8) -> u8 {
    let lo = FIRST_TAG[kind as usize];
    first_of((0..4).map(|hi| hi << 6 | lo), |b| {
        (b >> 6) % threads == thread
    })
    .unwrap_or(lo)
}

/// Pushes the first short code of `code` that decodes to `v`, else the escape
/// and `v`'s raw bytes.
pub(crate) fn push_u64(out: &mut Vec<u8>, v: u64, code: impl Fn(u8) -> Option<u64>) {
    match first_code(|b| code(b) == Some(v)) {
        Some(b) => out.push(b),
        None => push_raw(out, v),
    }
}

pub(crate) fn push_raw(out: &mut Vec<u8>, v: u64) {
    out.push(ESCAPE);
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn push_len(out: &mut Vec<u8>, start: u64, len: u64, task_size: u64) {
    match first_of(len_candidates(len), |b| {
        len_code(b, start, task_size) == Some(len)
    }) {
        Some(b) => out.push(b),
        None => push_raw(out, len),
    }
}

/// A span whose addresses come from `addr`, whose candidates are `cands`.
pub(crate) fn push_span_with<I: Iterator<Item = u8>>(
    out: &mut Vec<u8>,
    (start, len, task_size): (u64, u64, u64),
    addr: fn(u8, u64) -> Addr,
    cands: fn(u64) -> I,
) {
    if (start, len) == (0, task_size) {
        if let Some(b) = first_of(cands(start), |b| addr(b, task_size) == Addr::Whole) {
            out.push(b);
            return;
        }
    }
    match first_of(cands(start), |b| addr(b, task_size) == Addr::At(start)) {
        Some(b) => out.push(b),
        None => push_raw(out, start),
    }
    push_len(out, start, len, task_size);
}

pub(crate) fn push_span(out: &mut Vec<u8>, start: u64, len: u64, task_size: u64) {
    push_span_with(out, (start, len, task_size), addr_code, addr_candidates);
}

pub(crate) fn push_mspan(out: &mut Vec<u8>, addr: u64, len: u64, task_size: u64) {
    push_span_with(out, (addr, len, task_size), maddr_code, maddr_candidates);
}

pub(crate) fn push_point(out: &mut Vec<u8>, addr: u64, task_size: u64) {
    match first_of(maddr_candidates(addr), |b| {
        point_code(b, task_size) == Some(addr)
    }) {
        Some(b) => out.push(b),
        None => push_raw(out, addr),
    }
}

pub(crate) fn push_value(out: &mut Vec<u8>, v: u64) {
    match u8::try_from(v) {
        Ok(b) if value_code(b) == Some(v) => out.push(b),
        _ => push_raw(out, v),
    }
}

pub(crate) fn push_event(out: &mut Vec<u8>, event: Event) {
    out.push(first_code(|b| event_code(b) == event).unwrap_or(0));
}

/// Encodes `p` so that [`decode`] gives it back (with `kernel_compat`
/// allowed, if `p` has it), for every valid program
/// (with at most [`MAX_STEPS`] steps) and every program `decode` produces.
/// Other programs come back as a nearby valid one; this never panics.
pub fn encode(p: &Program) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + 4 * p.steps.len());
    let c = &p.config;
    let threads_mm = c.target == Target::Threads && c.has_devices();
    out.push(match threads_mm {
        true => 1,
        false => first_code(|b| target_code(b) == c.target).unwrap_or(0),
    });
    let compat = if c.kernel_compat { 8 } else { 0 };
    out.push(first_code(|b| threads_code(b) == c.threads).unwrap_or(0) | compat);
    push_u64(&mut out, c.initial_seq, seq_code);
    push_u64(&mut out, c.task_size, task_size_code);
    if c.target.speaks_mm() || threads_mm {
        let kinds = c.devices.map(|d| d.map(kind_of_strategy));
        let b = first_code(|b| devices_code(b) == kinds).unwrap_or(0);
        out.push(b);
        // The shift bytes of the devices that byte opens with a size.
        for (d, k) in c.devices.iter().zip(devices_code(b)) {
            if let Some((k, p)) = k.and_then(|k| Some((k, size_param(k)?))) {
                let shift = match d {
                    Some(d) if d.kind == k.kind => d.param,
                    _ => p.default,
                };
                out.push(first_code(|s| shift_code(p, s) == shift).unwrap_or(0));
            }
        }
    }
    if c.target == Target::Threads {
        out.extend_from_slice(&c.schedule.to_le_bytes());
    }
    // The context steps decode in: the config as decode will see it.
    let Program { config: c, .. } = decode_as(c.target, &out);
    for s in p.steps.iter().take(MAX_STEPS) {
        out.push(tag_code(kind_of(&s.op), s.thread, c.threads));
        match s.op {
            Op::Mm { mm, op } => {
                out.push(slot2_byte(mm));
                push_mm(&mut out, op, c.task_size);
            }
            Op::Dev { dev, op } => {
                out.push(match op {
                    DevStep::Prefetch { .. } => prefetch_byte(dev),
                    _ => slot2_byte(dev),
                });
                push_dev(&mut out, op, c.task_size);
            }
            Op::Expect(e) => push_expect(&mut out, e),
            op => push_notifier_op(&mut out, op, c.task_size),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::program::{
        ErrKind, Expect, MapKind, PageState, Prot, StrategySpec, MAX_RUNS, MAX_SNAPSHOT_PAGES,
    };
    use crate::program::{CLASSIC_SLOTS, MAX_THREADS, OWNERS, SLOTS};
    use oracles::{CallbackModel, Refuse, SetSeq};
    use proptest::prelude::*;
    // Not the mirror's `Strategy`, which both globs would otherwise offer.
    use proptest::strategy::Strategy;

    /// Interesting and arbitrary u64 operands alike.
    fn any_addr() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            (0..WINDOW_PAGES * PAGE * 2),
            Just(0u64),
            Just(u64::MAX),
            (0..8u64).prop_map(|p| p * PAGE),
        ]
    }

    fn any_event() -> impl Strategy<Value = Event> {
        (0..Event::ALL.len()).prop_map(|i| Event::ALL[i])
    }

    fn any_refuse() -> impl Strategy<Value = Refuse> {
        prop_oneof![
            Just(Refuse::Never),
            Just(Refuse::NonBlockable),
            Just(Refuse::Always)
        ]
    }

    fn any_cb() -> impl Strategy<Value = CallbackModel> {
        let set_seq = prop_oneof![
            Just(SetSeq::Always),
            Just(SetSeq::Never),
            any_event().prop_map(SetSeq::SkipFor),
        ];
        (any_refuse(), set_seq, any::<bool>()).prop_map(|(refuse, set_seq, two_pass)| {
            CallbackModel {
                refuse,
                set_seq,
                // A callback that always refuses has nothing to finish.
                two_pass: two_pass && refuse != Refuse::Always,
            }
        })
    }

    fn any_notifier_op() -> impl Strategy<Value = Op> {
        let slot = 0..SLOTS;
        let cslot = 0..CLASSIC_SLOTS;
        prop_oneof![
            (slot.clone(), any_addr(), any_addr(), any_cb()).prop_map(|(slot, start, len, cb)| {
                Op::Insert {
                    slot,
                    start,
                    len,
                    cb,
                }
            }),
            slot.clone().prop_map(|slot| Op::Remove { slot }),
            (
                any_event(),
                any_addr(),
                any_addr(),
                any::<bool>(),
                proptest::option::of(0..OWNERS)
            )
                .prop_map(|(event, start, end, blockable, owner)| Op::Start {
                    event,
                    start,
                    end,
                    blockable,
                    owner
                }),
            Just(Op::End),
            (1..=crate::program::MAX_POPULATE, any_addr(), any_addr())
                .prop_map(|(count, start, len)| Op::Populate { count, start, len }),
            slot.clone().prop_map(|slot| Op::ReadBegin { slot }),
            Just(Op::Commit),
            Just(Op::CheckRetry),
            Just(Op::Release),
            (cslot.clone(), any_refuse()).prop_map(|(slot, refuse)| Op::Register { slot, refuse }),
            cslot.prop_map(|slot| Op::Unregister { slot }),
        ]
    }

    /// Every strategy an `open` can name.
    fn any_strategy() -> impl Strategy<Value = StrategySpec> {
        let opens: Vec<StrategySpec> = (0..=u8::MAX).map(strategy_code).collect();
        let every = StrategySpec::every();
        proptest::sample::select(
            every
                .into_iter()
                .filter(|s| opens.contains(s))
                .collect::<Vec<_>>(),
        )
    }

    fn any_prot() -> impl Strategy<Value = Prot> {
        (0..Prot::ALL.len()).prop_map(|i| Prot::ALL[i])
    }

    /// Canonical `States` from arbitrary runs: merged, at most 512 pages.
    pub(crate) fn canonical_states(raw: &[(PageState, u16)]) -> Expect {
        let mut states = Vec::new();
        for &(st, n) in raw {
            states.extend(std::iter::repeat_n(st, usize::from(n)));
        }
        states.truncate(usize::from(MAX_SNAPSHOT_PAGES));
        Expect::states(&states).expect("at most MAX_RUNS runs")
    }

    fn any_expect() -> impl Strategy<Value = Expect> {
        let state = (0..PageState::ALL.len()).prop_map(|i| PageState::ALL[i]);
        let kind = (0..ErrKind::ALL.len()).prop_map(|i| ErrKind::ALL[i]);
        prop_oneof![
            Just(Expect::Ok),
            Just(Expect::Skipped),
            any_value().prop_map(Expect::Value),
            proptest::option::of(kind).prop_map(Expect::Error),
            any_value().prop_map(Expect::Pages),
            (0..DEVICES, any_value()).prop_map(|(dev, n)| Expect::Faults { dev, n }),
            proptest::collection::vec((state, 1..=300u16), 0..=MAX_RUNS)
                .prop_map(|runs| canonical_states(&runs)),
        ]
    }

    fn any_map_kind() -> impl Strategy<Value = MapKind> {
        prop_oneof![
            Just(MapKind::AnonPrivate),
            Just(MapKind::AnonShared),
            (0..FILES).prop_map(MapKind::File),
        ]
    }

    /// Written values: mostly the one-byte domain, sometimes anything.
    fn any_value() -> impl Strategy<Value = u64> {
        prop_oneof![0..=255u64, any::<u64>(), Just(u64::MAX)]
    }

    fn any_mm_step() -> impl Strategy<Value = MmStep> {
        prop_oneof![
            (any_addr(), any_addr(), any_map_kind(), any_prot()).prop_map(
                |(addr, len, kind, prot)| MmStep::Mmap {
                    addr,
                    len,
                    kind,
                    prot
                }
            ),
            (any_addr(), any_addr()).prop_map(|(addr, len)| MmStep::Munmap { addr, len }),
            (any_addr(), any_addr(), any_prot()).prop_map(|(addr, len, prot)| MmStep::Mprotect {
                addr,
                len,
                prot
            }),
            (
                any_addr(),
                any_addr(),
                any_addr(),
                proptest::option::of(any_addr()),
                any::<bool>()
            )
                .prop_map(|(addr, old_len, new_len, to, dontunmap)| MmStep::Mremap {
                    addr,
                    old_len,
                    new_len,
                    to,
                    dontunmap
                }),
            (any_addr(), any_addr()).prop_map(|(addr, len)| MmStep::Dontneed { addr, len }),
            Just(MmStep::Fork),
            any_addr().prop_map(|addr| MmStep::Read { addr }),
            (any_addr(), any_value()).prop_map(|(addr, value)| MmStep::Write { addr, value }),
            any_addr().prop_map(|addr| MmStep::Reclaim { addr }),
            any_addr().prop_map(|addr| MmStep::Migrate { addr }),
            (any_addr(), any_addr()).prop_map(|(a, b)| MmStep::Ksm { a, b }),
            any_addr().prop_map(|addr| MmStep::Collapse { addr }),
            any_addr().prop_map(|addr| MmStep::Split { addr }),
            Just(MmStep::ClearRefs),
            Just(MmStep::OomReap),
            Just(MmStep::Exit),
        ]
    }

    fn any_dev_step() -> impl Strategy<Value = DevStep> {
        prop_oneof![
            (0..MMS, any_strategy()).prop_map(|(mm, strategy)| DevStep::Open { mm, strategy }),
            any_addr().prop_map(|addr| DevStep::Read { addr }),
            (any_addr(), any_value()).prop_map(|(addr, value)| DevStep::Write { addr, value }),
            (any_addr(), any_addr()).prop_map(|(addr, len)| DevStep::Snapshot { addr, len }),
            (any_addr(), any_addr()).prop_map(|(addr, len)| DevStep::Migrate { addr, len }),
            (any_addr(), any_addr()).prop_map(|(addr, len)| DevStep::Exclusive { addr, len }),
            (any_addr(), any_addr()).prop_map(|(addr, len)| DevStep::Evict { addr, len }),
            (any_addr(), any_addr()).prop_map(|(addr, len)| DevStep::Register { addr, len }),
            any_addr().prop_map(|addr| DevStep::Unregister { addr }),
            Just(DevStep::Work),
            (any_addr(), any_addr()).prop_map(|(addr, len)| DevStep::Attr { addr, len }),
            (any_addr(), any_addr()).prop_map(|(addr, len)| DevStep::Prefetch { addr, len }),
        ]
    }

    fn any_mirror_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..MMS, any_mm_step()).prop_map(|(mm, op)| Op::Mm { mm, op }),
            2 => (0..DEVICES, any_dev_step()).prop_map(|(dev, op)| Op::Dev { dev, op }),
            1 => Just(Op::Yield),
            1 => any_expect().prop_map(Op::Expect),
        ]
    }

    fn any_op(target: Target) -> BoxedStrategy<Op> {
        match target {
            Target::Notifier | Target::Threads => any_notifier_op().boxed(),
            Target::Mirror => any_mirror_op().boxed(),
            Target::Linux => prop_oneof![
                6 => (0..MMS, any_mm_step())
                    .prop_filter("a linux op", |(_, op)| crate::program::linux_op(op))
                    .prop_map(|(mm, op)| Op::Mm { mm, op }),
                1 => any_expect().prop_map(Op::Expect),
            ]
            .boxed(),
            Target::Kvm => prop_oneof![
                6 => (0..MMS, any_mm_step())
                    .prop_filter("a linux op", |(_, op)| crate::program::linux_op(op))
                    .prop_map(|(mm, op)| Op::Mm { mm, op }),
                3 => (0..DEVICES, any_dev_step())
                    .prop_map(|(dev, op)| {
                        let op = match op {
                            DevStep::Open { mm, .. } => DevStep::Open {
                                mm,
                                strategy: crate::program::KVM_DEVICE,
                            },
                            op => op,
                        };
                        Op::Dev { dev, op }
                    })
                    .prop_filter("a kvm op", crate::program::kvm_op),
                1 => any_expect().prop_map(Op::Expect),
            ]
            .boxed(),
        }
    }

    fn any_devices() -> impl Strategy<Value = [Option<StrategySpec>; DEVICES as usize]> {
        // `d0`: a kind the devices byte names (`open`'s `kfd-noxnack`
        // code has no devices byte).
        let d0_kinds: Vec<u8> = (0..=u8::MAX)
            .filter_map(|b| devices_code(b)[0])
            .map(|s| s.kind)
            .collect();
        (
            proptest::option::of(
                any_strategy().prop_filter("a d0 kind", move |s| d0_kinds.contains(&s.kind)),
            ),
            proptest::option::of(any_strategy()),
        )
            .prop_map(|(a, b)| [a, b])
    }

    /// Valid programs of both targets with arbitrary operands, built by
    /// hand rather than decoded.
    pub(crate) fn arb_program() -> impl Strategy<Value = Program> {
        let config = (
            prop_oneof![
                Just(Target::Notifier),
                Just(Target::Mirror),
                Just(Target::Linux)
            ],
            1..=MAX_THREADS,
            prop_oneof![any::<u64>().prop_map(|s| s & !1), Just(2u64), Just(0u64)],
            prop_oneof![
                MIN_TASK_SIZE..=u64::MAX,
                Just(u64::MAX),
                Just(MIN_TASK_SIZE)
            ],
            any_devices(),
        )
            .prop_map(|(target, threads, initial_seq, task_size, devices)| {
                let linux = target.real();
                ProgramConfig {
                    target,
                    threads: if linux { 1 } else { threads },
                    initial_seq,
                    task_size: if linux {
                        crate::program::real_task_size(target)
                    } else {
                        task_size
                    },
                    devices: match target {
                        Target::Notifier | Target::Threads | Target::Linux | Target::Kvm => {
                            [None, None]
                        }
                        Target::Mirror => devices,
                    },
                    kernel_compat: false,
                    schedule: 0,
                }
            });
        config.prop_flat_map(|config| {
            let step = (0..config.threads, any_op(config.target))
                .prop_map(|(thread, op)| Step { thread, op });
            proptest::collection::vec(step, 0..80).prop_map(move |steps| Program { config, steps })
        })
    }

    /// A small deterministic generator for the statistical tests.
    fn xorshift_bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn roundtrip(p: &Program) {
        let bytes = encode(p);
        assert_eq!(&decode(&bytes), p, "bytes {bytes:02x?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decoded_programs_are_valid_and_roundtrip(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let p = decode(&bytes);
            prop_assert_eq!(p.validate(), Ok(()));
            prop_assert!(p.steps.len() <= MAX_STEPS);
            let again = decode(&encode(&p));
            prop_assert_eq!(again, p);
        }

        #[test]
        fn arbitrary_matches_decode(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let p = decode(&bytes);
            let mut u = Unstructured::new(&bytes);
            prop_assert_eq!(&Program::arbitrary(&mut u).unwrap(), &p);
            prop_assert!(u.is_empty() || p.steps.len() == MAX_STEPS);
            prop_assert_eq!(&Program::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap(), &p);
        }

        #[test]
        fn valid_programs_roundtrip(p in arb_program()) {
            prop_assert_eq!(p.validate(), Ok(()));
            let again = decode(&encode(&p));
            prop_assert_eq!(again, p);
        }

        #[test]
        fn encoding_is_a_fixed_point(bytes in proptest::collection::vec(any::<u8>(), 0..500)) {
            // Re-encoding a decoded program's encoding changes nothing: the
            // encoder is canonical.
            let e = encode(&decode(&bytes));
            prop_assert_eq!(encode(&decode(&e)), e);
        }
    }

    #[test]
    fn empty_input_is_the_default_config() {
        let p = decode(&[]);
        assert_eq!(p.config, ProgramConfig::default());
        assert!(p.steps.is_empty());
        assert_eq!(encode(&p), vec![0, 0, 0, 0]);
        let mut u = Unstructured::new(&[]);
        assert_eq!(Program::arbitrary(&mut u).unwrap(), p);
    }

    #[test]
    fn zero_bytes_are_the_usual_values() {
        // A zero step byte is thread 0's `start unmap` of the first page.
        let p = decode(&[0; 8]);
        assert_eq!(
            p.steps,
            vec![Step {
                thread: 0,
                op: Op::Start {
                    event: Event::Unmap,
                    start: 0,
                    end: PAGE,
                    blockable: true,
                    owner: None,
                },
            }]
        );
    }

    #[test]
    fn small_operands_take_one_byte_each() {
        let config = ProgramConfig::default();
        let cases: [(Op, usize); 6] = [
            (
                Op::Insert {
                    slot: 3,
                    start: 5 * PAGE + 1,
                    len: 2 * PAGE - 1,
                    cb: CallbackModel::GOOD,
                },
                5,
            ),
            (
                Op::Insert {
                    slot: 3,
                    start: 0x1000,
                    len: u64::MAX,
                    cb: CallbackModel {
                        refuse: Refuse::NonBlockable,
                        set_seq: SetSeq::SkipFor(Event::Migrate),
                        two_pass: false,
                    },
                },
                6,
            ),
            (
                Op::Start {
                    event: Event::Exclusive,
                    start: 0x1000,
                    end: u64::MAX,
                    blockable: false,
                    owner: Some(3),
                },
                5,
            ),
            (
                Op::Start {
                    event: Event::Clear,
                    start: u64::MAX - PAGE,
                    end: u64::MAX - PAGE + 1,
                    blockable: true,
                    owner: None,
                },
                5,
            ),
            (
                Op::Register {
                    slot: 2,
                    refuse: Refuse::Always,
                },
                3,
            ),
            (Op::Release, 2),
        ];
        for (op, n) in cases {
            let p = Program {
                config,
                steps: vec![Step { thread: 1, op }],
            };
            let bytes = encode(&p);
            assert_eq!(bytes.len(), 4 + n, "{op:?}: {bytes:02x?}");
            assert_eq!(decode(&bytes), p);
        }
    }

    #[test]
    fn odd_values_escape() {
        let p = Program {
            config: ProgramConfig {
                target: Target::Notifier,
                threads: 4,
                initial_seq: 0x1234_5678,
                task_size: MIN_TASK_SIZE + 1,
                devices: [None, None],
                kernel_compat: false,
                schedule: 0,
            },
            steps: vec![Step {
                thread: 3,
                op: Op::Insert {
                    slot: 3,
                    start: 0xdead_beef,
                    len: 0x1_0000_0001,
                    cb: CallbackModel::GOOD,
                },
            }],
        };
        let bytes = encode(&p);
        // 2 + 9 + 9 header, tag slot 9 9 cb.
        assert_eq!(bytes.len(), 2 + 9 + 9 + 1 + 1 + 9 + 9 + 1, "{bytes:02x?}");
        assert_eq!(decode(&bytes), p);
    }

    #[test]
    fn whole_range_is_one_byte() {
        for task_size in [u64::MAX, 1 << 47, MIN_TASK_SIZE] {
            let p = Program {
                config: ProgramConfig {
                    task_size,
                    ..ProgramConfig::default()
                },
                steps: vec![Step {
                    thread: 0,
                    op: Op::Start {
                        event: Event::Release,
                        start: 0,
                        end: task_size,
                        blockable: true,
                        owner: None,
                    },
                }],
            };
            let bytes = encode(&p);
            assert_eq!(bytes.len(), 4 + 4, "{bytes:02x?}");
            assert_eq!(decode(&bytes), p);
        }
    }

    #[test]
    fn kind_distribution_matches_weights() {
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        let mut threads = [0usize; MAX_THREADS as usize];
        let mut total = 0;
        for seed in 0..400 {
            let mut bytes = xorshift_bytes(seed * 7919 + 1, 1500);
            bytes[0] = 0; // notifier
            bytes[1] = 0; // two threads
            let p = decode(&bytes);
            assert_eq!(p.config.threads, 2);
            for s in &p.steps {
                *counts.entry(s.op.keyword()).or_default() += 1;
                threads[s.thread as usize] += 1;
                total += 1;
            }
        }
        assert!(total > 50_000, "{total}");
        let expected = [
            ("start", 0.20),
            ("end", 0.18),
            ("read_begin", 0.14),
            ("commit", 0.14),
            ("insert", 0.12),
            ("remove", 0.08),
            ("check_retry", 0.04),
            ("register", 0.03),
            ("unregister", 0.03),
            ("release", 0.01),
        ];
        for (kw, want) in expected {
            let got = counts.get(kw).copied().unwrap_or(0) as f64 / total as f64;
            assert!(
                (got - want).abs() <= want * 0.35 + 0.003,
                "{kw}: {got:.4} vs {want}"
            );
        }
        let t0 = threads[0] as f64 / total as f64;
        assert!((0.45..0.55).contains(&t0), "thread 0 share {t0}");
    }

    #[test]
    fn operand_distributions_are_skewed_to_the_usual() {
        let (mut aligned, mut inwindow, mut addrs) = (0usize, 0usize, 0usize);
        let (mut blockable, mut owned, mut starts) = (0usize, 0usize, 0usize);
        for seed in 0..200 {
            let mut bytes = xorshift_bytes(seed * 104_729 + 3, 1500);
            bytes[0] = 0; // notifier
            let p = decode(&bytes);
            for s in &p.steps {
                match s.op {
                    Op::Insert { start, .. } => {
                        addrs += 1;
                        aligned += (start & (PAGE - 1) == 0) as usize;
                        inwindow += (start < WINDOW_PAGES * PAGE) as usize;
                    }
                    Op::Start {
                        blockable: b,
                        owner,
                        ..
                    } => {
                        starts += 1;
                        blockable += b as usize;
                        owned += owner.is_some() as usize;
                    }
                    _ => {}
                }
            }
        }
        let frac = |n: usize, d: usize| n as f64 / d as f64;
        assert!(
            frac(aligned, addrs) > 0.7,
            "aligned {}",
            frac(aligned, addrs)
        );
        assert!(
            frac(inwindow, addrs) > 0.9,
            "window {}",
            frac(inwindow, addrs)
        );
        let nb = 1.0 - frac(blockable, starts);
        assert!((0.09..0.16).contains(&nb), "nonblock {nb}");
        let ow = frac(owned, starts);
        assert!((0.19..0.31).contains(&ow), "owned {ow}");
    }

    /// The encoder's fast paths name candidate codes instead of trying all
    /// 256: for every value some code decodes to, and for other values
    /// around them, they must pick what the full scan picks.
    #[test]
    fn encoder_fast_paths_match_the_full_scan() {
        let sizes = [
            u64::MAX,
            1 << 47,
            1 << 32,
            MIN_TASK_SIZE,
            MIN_TASK_SIZE + 1,
            MIN_TASK_SIZE + PAGE,
            0x1234_5678_9abc,
        ];
        let noise = xorshift_bytes(99, 64 * 8);
        let random: Vec<u64> = noise
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for ts in sizes {
            let whole = |b| addr_code(b, ts) == Addr::Whole;
            assert_eq!(first_of(addr_candidates(0), whole), first_code(whole));
            let mut addrs: Vec<u64> = (0..=255u8)
                .filter_map(|b| match addr_code(b, ts) {
                    Addr::At(a) => Some(a),
                    _ => None,
                })
                .collect();
            addrs.extend(random.iter().copied());
            for a in addrs.clone() {
                for a in [a, a.wrapping_sub(1), a.wrapping_add(1)] {
                    let at = |b| addr_code(b, ts) == Addr::At(a);
                    assert_eq!(
                        first_of(addr_candidates(a), at),
                        first_code(at),
                        "addr {a:#x} ts {ts:#x}"
                    );
                }
            }
            for start in addrs.iter().copied().step_by(5) {
                let mut lens: Vec<u64> =
                    (0..=255u8).filter_map(|b| len_code(b, start, ts)).collect();
                lens.extend(random.iter().copied().take(8));
                for l in lens {
                    for l in [l, l.wrapping_sub(1), l.wrapping_add(1)] {
                        let is = |b| len_code(b, start, ts) == Some(l);
                        assert_eq!(
                            first_of(len_candidates(l), is),
                            first_code(is),
                            "len {l:#x} start {start:#x} ts {ts:#x}"
                        );
                    }
                }
            }
        }
        for blockable in [true, false] {
            for owner in std::iter::once(None).chain((0..=255u8).map(Some)) {
                let want = first_code(|b| flags_code(b) == (blockable, owner)).unwrap_or(0);
                let got = flags_candidate(blockable, owner)
                    .filter(|&b| flags_code(b) == (blockable, owner))
                    .unwrap_or(0);
                assert_eq!(got, want, "flags {blockable} {owner:?}");
            }
        }
        let tables = [
            (Target::Notifier, &KIND_WEIGHTS[..]),
            (Target::Mirror, &MIRROR_KIND_WEIGHTS[..]),
        ];
        for (target, &(kind, _)) in tables
            .iter()
            .flat_map(|(t, w)| w.iter().map(move |k| (*t, k)))
        {
            let is_kind = |b: u8| tag_kind(b, target) == kind;
            for threads in 1..=MAX_THREADS {
                for thread in 0..=255u8 {
                    let want = first_code(|b| is_kind(b) && (b >> 6) % threads == thread)
                        .or_else(|| first_code(is_kind))
                        .unwrap_or(0);
                    assert_eq!(
                        tag_code(kind, thread, threads),
                        want,
                        "{kind:?} t{thread}/{threads}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_code_of_every_table_decodes_and_roundtrips() {
        // One step of each kind, with every value of its first operand byte.
        for tag in 0..64u8 {
            for b in 0..=u8::MAX {
                for task in [0u8, 192, 240] {
                    let bytes = [0, 5, 0, task, tag, b, b, b, b, 0xff];
                    let p = decode(&bytes);
                    assert_eq!(p.validate(), Ok(()));
                    roundtrip(&p);
                }
            }
        }
    }

    #[test]
    fn ff_filled_and_truncated_escapes_do_not_panic() {
        for n in 0..200 {
            let p = decode(&vec![0xff; n]);
            assert_eq!(p.validate(), Ok(()), "{n}");
            roundtrip(&p);
        }
        // Every prefix of an encoding full of escapes.
        let p = Program {
            config: ProgramConfig {
                target: Target::Notifier,
                threads: 3,
                initial_seq: 0xffff_0000_0000_0010,
                task_size: 0xffff_ffff_f000,
                devices: [None, None],
                kernel_compat: false,
                schedule: 0,
            },
            steps: vec![
                Step {
                    thread: 2,
                    op: Op::Start {
                        event: Event::Migrate,
                        start: 0x1234_5678_9abc,
                        end: 0x1_0000,
                        blockable: false,
                        owner: Some(1),
                    },
                },
                Step {
                    thread: 1,
                    op: Op::Insert {
                        slot: 2,
                        start: 12345,
                        len: 67890,
                        cb: CallbackModel {
                            refuse: Refuse::Always,
                            set_seq: SetSeq::SkipFor(Event::SoftDirty),
                            two_pass: false,
                        },
                    },
                },
            ],
        };
        let bytes = encode(&p);
        assert_eq!(decode(&bytes), p);
        for cut in 0..bytes.len() {
            let q = decode(&bytes[..cut]);
            assert_eq!(q.validate(), Ok(()), "cut {cut}");
            roundtrip(&q);
        }
        // A truncated escape reads the missing bytes as zero.
        let q = decode(&[0, 0, ESCAPE, 0x10]);
        assert_eq!(q.config.initial_seq, 0x10);
        let q = decode(&[0, 0, 0, ESCAPE, 1]);
        assert_eq!(q.config.task_size, MIN_TASK_SIZE);
    }

    #[test]
    fn escaped_config_values_are_made_valid() {
        let mut bytes = vec![0, 0, ESCAPE];
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.push(ESCAPE);
        bytes.extend_from_slice(&5u64.to_le_bytes());
        let p = decode(&bytes);
        assert_eq!(p.config.initial_seq, 6);
        assert_eq!(p.config.task_size, MIN_TASK_SIZE);
        assert!(p.steps.is_empty());
    }

    #[test]
    fn decoding_stops_at_max_steps() {
        let mut bytes = vec![0u8; 4];
        // `end` steps: one byte each.
        let end_tag = first_code(|b| KINDS[(b & 63) as usize] == Kind::End).unwrap();
        bytes.resize(4 + MAX_STEPS + 10, end_tag);
        let p = decode(&bytes);
        assert_eq!(p.steps.len(), MAX_STEPS);
        assert_eq!(encode(&p).len(), 4 + MAX_STEPS);
        roundtrip(&p);
    }

    #[test]
    fn invalid_programs_encode_without_panicking() {
        let p = Program {
            config: ProgramConfig {
                target: Target::Notifier,
                threads: 9,
                initial_seq: 3,
                task_size: 1,
                devices: [None, None],
                kernel_compat: false,
                schedule: 0,
            },
            steps: vec![
                Step {
                    thread: 7,
                    op: Op::Remove { slot: 200 },
                },
                Step {
                    thread: 0,
                    op: Op::Start {
                        event: Event::Unmap,
                        start: 0,
                        end: 1,
                        blockable: true,
                        owner: Some(99),
                    },
                },
            ],
        };
        let q = decode(&encode(&p));
        assert_eq!(q.validate(), Ok(()));
        assert_eq!(q.steps.len(), 2);
    }

    /// A mirror program of `threads` threads and these steps.
    fn mirror(threads: u8, steps: Vec<Step>) -> Program {
        Program {
            config: ProgramConfig {
                target: Target::Mirror,
                threads,
                devices: [Some(FULLVA), None],
                ..ProgramConfig::default()
            },
            steps,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn decoded_mirror_programs_are_valid_and_roundtrip(tail in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let mut bytes = vec![1];
            bytes.extend_from_slice(&tail);
            let p = decode(&bytes);
            prop_assert_eq!(p.config.target, Target::Mirror);
            prop_assert_eq!(p.validate(), Ok(()));
            prop_assert_eq!(decode(&encode(&p)), p);
        }

        #[test]
        fn decode_as_forces_the_target(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            for target in Target::ALL {
                let p = decode_as(target, &bytes);
                prop_assert_eq!(p.config.target, target);
                prop_assert_eq!(p.validate(), Ok(()));
                prop_assert_eq!(&decode_as(target, &encode(&p)), &p);
                // The threads and kvm targets have no target code: only
                // decode_as reads them.
                if !matches!(target, Target::Threads | Target::Kvm) {
                    prop_assert_eq!(&decode(&encode(&p)), &p);
                }
                // When the byte already says `target`, nothing changes.
                if bytes.first().map_or(target == Target::Notifier, |&b| target_code(b) == target) {
                    prop_assert_eq!(&decode(&bytes), &p);
                }
            }
        }
    }

    #[test]
    fn the_kvm_table_keeps_guest_accesses_and_the_linux_ops() {
        let count = |k: Kind| KVM_KINDS.iter().filter(|&&x| x == k).count();
        assert_eq!(
            (
                count(Kind::DevRead),
                count(Kind::DevWrite),
                count(Kind::DevOpen)
            ),
            (9, 9, 5)
        );
        // KSM and THP, which only a real process with a guest runs.
        assert_eq!((count(Kind::Ksm), count(Kind::Collapse)), (1, 1));
        for (b, k) in KVM_KINDS.iter().enumerate() {
            assert_eq!(*k, kvm_kind(MIRROR_KINDS[b]));
            // Every kind it keeps keeps its tag: encode's first tags hold.
            assert_eq!(KVM_KINDS[FIRST_TAG[*k as usize] as usize], *k, "tag {b}");
            if !matches!(
                k,
                Kind::DevRead | Kind::DevWrite | Kind::DevOpen | Kind::Ksm | Kind::Collapse
            ) {
                assert_eq!(*k, LINUX_KINDS[b], "tag {b}");
            }
        }
        // Whatever the bytes, a kvm program's device ops are kvm ops.
        let p = decode_as(Target::Kvm, &[0u8, 0, 0, 0, 0, 19, 1, 0, 20, 0, 5]);
        assert_eq!(p.validate(), Ok(()));
        assert!(p.steps.iter().all(|s| crate::program::kvm_op(&s.op)));
    }

    #[test]
    fn the_linux_target_byte_is_two_and_keeps_the_others() {
        assert_eq!(target_code(2), Target::Linux);
        for b in (0..=u8::MAX).filter(|&b| b != 2) {
            let old = [Target::Notifier, Target::Mirror][b as usize % 2];
            assert_eq!(target_code(b), old, "byte {b}");
        }
        // Its kinds: the mirror table's, minus what a real process cannot
        // be made to do.
        for (b, k) in LINUX_KINDS.iter().enumerate() {
            assert_eq!(*k, linux_kind(MIRROR_KINDS[b]));
            assert!(
                !matches!(
                    k,
                    Kind::DevRead
                        | Kind::DevWrite
                        | Kind::Yield
                        | Kind::Reclaim
                        | Kind::Ksm
                        | Kind::Collapse
                        | Kind::Split
                        | Kind::OomReap
                        | Kind::MmMigrate
                ),
                "{k:?}"
            );
        }
    }

    #[test]
    fn random_bytes_cover_both_targets() {
        let mut seen = [0usize; 2];
        for seed in 0..200 {
            let p = decode(&xorshift_bytes(seed * 31 + 5, 64));
            assert_eq!(p.validate(), Ok(()));
            seen[(p.config.target == Target::Mirror) as usize] += 1;
            roundtrip(&p);
        }
        assert!(seen[0] > 60 && seen[1] > 60, "{seen:?}");
    }

    #[test]
    fn notifier_encodings_have_no_devices_byte() {
        // The mirror header has one more byte; the notifier one is unchanged.
        assert_eq!(encode(&Program::default()), vec![0, 0, 0, 0]);
        let p = mirror(2, vec![]);
        assert_eq!(encode(&p), vec![1, 0, 0, 0, 0]);
        assert_eq!(decode(&[1]), p);
        assert_eq!(decode(&[1, 0, 0, 0, 0]), p);
    }

    /// Every strategy the op language has: each kind, ODP with every chunk shift.
    fn every_strategy() -> Vec<StrategySpec> {
        StrategySpec::every()
    }

    const FULLVA: StrategySpec = StrategySpec::of(0);
    const PERFAULT: StrategySpec = StrategySpec::of(1);
    const ODP: StrategySpec = StrategySpec::of(2);
    const GPUSVM: StrategySpec = StrategySpec::of(5);

    fn odp(chunk_shift: u8) -> StrategySpec {
        StrategySpec {
            param: chunk_shift,
            ..ODP
        }
    }

    #[test]
    fn every_devices_byte_decodes_and_every_devices_config_roundtrips() {
        let mut counts = std::collections::HashMap::new();
        for b in 0..=u8::MAX {
            let p = decode(&[1, 0, 0, 0, b]);
            assert_eq!(p.validate(), Ok(()));
            roundtrip(&p);
            *counts.entry(p.config.devices).or_insert(0usize) += 1;
        }
        // d0 is almost always open; d1 mostly not.
        let d0_open: usize = counts
            .iter()
            .filter(|(d, _)| d[0].is_some())
            .map(|(_, n)| n)
            .sum();
        assert_eq!(d0_open, 240);
        let d1_open: usize = counts
            .iter()
            .filter(|(d, _)| d[1].is_some())
            .map(|(_, n)| n)
            .sum();
        // m1 alone: every code but "none".
        assert_eq!(d1_open, 80 + 15, "{counts:?}");
        assert_eq!(counts[&[Some(FULLVA), None]], 20);
        assert_eq!(counts[&[Some(GPUSVM), None]], 20);
        // A missing shift byte is the 2 MiB chunk.
        assert_eq!(decode(&[1, 0, 0, 0, 2]).config.devices, [Some(ODP), None]);
        // Every pair, with every size: one byte, and one more per sized
        // (ODP, GPU SVM) device.
        let all: Vec<Option<StrategySpec>> = std::iter::once(None)
            .chain(every_strategy().into_iter().map(Some))
            .collect();
        let noxnack = StrategySpec::from_name("kfd-noxnack");
        for &d0 in &all {
            for &d1 in &all {
                // No devices code opens `kfd-noxnack` as d0 (KIND8 is full).
                if d0.is_some() && d0 == noxnack {
                    continue;
                }
                let mut p = mirror(1, vec![]);
                p.config.devices = [d0, d1];
                let bytes = encode(&p);
                let sized = [d0, d1]
                    .iter()
                    .filter(|d| d.is_some_and(|d| size_param(d).is_some()))
                    .count();
                assert_eq!(bytes.len(), 5 + sized, "{d0:?} {d1:?}: {bytes:02x?}");
                assert_eq!(decode(&bytes), p);
            }
        }
    }

    /// Decodings pinned from the codec before strategies moved into the
    /// registry (commit 71193cd): seeds must keep meaning what they meant.
    /// The codes reserved for `gpusvm` (KIND8 and PAIR10 5, M1ROW 6: 0x55,
    /// 0x0d, 0xcc, 0xf6 below) name it since it is built in; no seed of
    /// the corpus used them.
    #[test]
    fn strategy_decodings_are_pinned() {
        let name = |d: Option<StrategySpec>| d.map_or("none".to_string(), StrategySpec::name);
        let cases: [(u8, u8, &str); 29] = [
            (0x00, 0, "fullva,none"),
            (0x00, 16, "fullva,none"),
            (0x02, 0, "odp:2m,none"),
            (0x02, 16, "odp:1m,none"),
            (0x04, 0, "regcache,none"),
            (0x07, 0, "odp:2m,none"),
            (0x07, 16, "odp:1m,none"),
            (0x55, 0, "gpusvm:64k,none"),
            (0x55, 16, "gpusvm:32k,none"),
            (0xf6, 0, "none,gpusvm:64k"),
            (0xf6, 16, "none,gpusvm:32k"),
            (0x9a, 0, "odp:2m,none"),
            (0x9a, 16, "odp:1m,none"),
            (0xa3, 0, "vma,fullva"),
            (0xa3, 16, "vma,fullva"),
            (0xb2, 0, "odp:2m,odp:2m"),
            (0xb2, 16, "odp:1m,odp:4m"),
            (0xea, 0, "odp:2m,regcache"),
            (0xea, 16, "odp:1m,regcache"),
            (0xf0, 0, "none,none"),
            (0xf0, 16, "none,none"),
            (0xf7, 0, "none,fullva"),
            (0xf7, 16, "none,fullva"),
            (0xfa, 0, "none,vma"),
            (0xfa, 16, "none,vma"),
            (0xff, 0, "none,odp:2m"),
            (0xff, 16, "none,odp:1m"),
            (0xab, 0, "vma,perfault"),
            (0xcc, 0, "regcache,gpusvm:64k"),
        ];
        for (b, s, want) in cases {
            let d = decode(&[1, 0, 0, 0, b, s, s ^ 0x55]).config.devices;
            assert_eq!(format!("{},{}", name(d[0]), name(d[1])), want, "{b:#x} {s}");
        }
        let opens: [(u8, &str); 8] = [
            (0x00, "fullva"),
            (0x01, "perfault"),
            (0x02, "odp:2m"),
            (0x0a, "odp:4m"),
            (0x3a, "odp:256m"),
            (0x52, "odp:16k"),
            (0x0b, "vma"),
            (0x0d, "gpusvm:128k"),
        ];
        for (b, want) in opens {
            assert_eq!(strategy_code(b).name(), want, "{b:#x}");
        }
    }

    #[test]
    fn every_strategy_and_chunk_shift_has_a_code() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=u8::MAX {
            seen.insert(strategy_code(b));
            seen.insert(match devices_code(b)[0] {
                Some(d) => match size_param(d) {
                    Some(p) => StrategySpec {
                        param: shift_code(p, b),
                        ..d
                    },
                    None => d,
                },
                None => FULLVA,
            });
            // A second device: `kfd-noxnack` has no code of its own in
            // KIND8 (all eight are taken), only in PAIR10 and M1ROW.
            if let Some(d) = devices_code(b)[1].filter(|d| size_param(*d).is_none()) {
                seen.insert(d);
            }
        }
        let all = every_strategy();
        assert_eq!(seen.len(), all.len());
        let opens: std::collections::HashSet<StrategySpec> =
            (0..=u8::MAX).map(strategy_code).collect();
        let no_open: Vec<String> = all
            .iter()
            .filter(|s| !opens.contains(s))
            .map(|s| s.name())
            .collect();
        // `kfd-noxnack` too, since `open`'s kfd code with bit 3 set.
        assert!(no_open.is_empty(), "{no_open:?}");
        for s in all {
            assert!(seen.contains(&s), "{s:?}");
            if !opens.contains(&s) {
                continue;
            }
            let p = mirror(
                1,
                vec![Step {
                    thread: 0,
                    op: Op::Dev {
                        dev: 1,
                        op: DevStep::Open { mm: 1, strategy: s },
                    },
                }],
            );
            assert_eq!(p.validate(), Ok(()));
            let bytes = encode(&p);
            assert_eq!(bytes.len(), 5 + 4, "{s:?}: {bytes:02x?}");
            assert_eq!(decode(&bytes), p);
        }
        // The usual chunk is the first code.
        assert_eq!(shift_code(size_param(ODP).unwrap(), 0), 21);
    }

    #[test]
    fn every_new_op_roundtrips() {
        let dev = |dev, op| Op::Dev { dev, op };
        let mut ops = vec![
            dev(
                0,
                DevStep::Exclusive {
                    addr: PAGE,
                    len: 2 * PAGE,
                },
            ),
            dev(
                1,
                DevStep::Evict {
                    addr: 0x1234_5678,
                    len: u64::MAX,
                },
            ),
            dev(
                0,
                DevStep::Register {
                    addr: 0,
                    len: MIN_TASK_SIZE,
                },
            ),
            dev(1, DevStep::Unregister { addr: PAGE + 3 }),
            dev(0, DevStep::Work),
            Op::Expect(Expect::Ok),
            Op::Expect(Expect::Skipped),
            Op::Expect(Expect::Error(None)),
            Op::Expect(Expect::Value(0)),
            Op::Expect(Expect::Value(u64::MAX)),
            Op::Expect(Expect::Pages(0)),
            Op::Expect(Expect::Pages(1 << 40)),
            Op::Expect(Expect::Faults { dev: 0, n: 0 }),
            Op::Expect(Expect::Faults { dev: 1, n: 255 }),
            Op::Expect(Expect::states(&[]).unwrap()),
            Op::Expect(canonical_states(&[(PageState::Exclusive, 512)])),
            Op::Expect(canonical_states(
                &PageState::ALL[..MAX_RUNS]
                    .iter()
                    .map(|&s| (s, 64))
                    .collect::<Vec<_>>(),
            )),
            Op::Expect(canonical_states(&[
                (PageState::HugeWrite, 256),
                (PageState::RemoteRead, 1),
                (PageState::HugeWrite, 255),
            ])),
        ];
        for k in ErrKind::ALL {
            ops.push(Op::Expect(Expect::Error(Some(k))));
        }
        for st in PageState::ALL {
            ops.push(Op::Expect(canonical_states(&[
                (st, 1),
                (PageState::None, 2),
            ])));
        }
        for prot in Prot::ALL {
            ops.push(Op::Mm {
                mm: 1,
                op: MmStep::Mprotect {
                    addr: PAGE,
                    len: PAGE,
                    prot,
                },
            });
            for kind in [MapKind::AnonPrivate, MapKind::AnonShared, MapKind::File(1)] {
                ops.push(Op::Mm {
                    mm: 0,
                    op: MmStep::Mmap {
                        addr: 0,
                        len: PAGE,
                        kind,
                        prot,
                    },
                });
            }
        }
        let steps: Vec<Step> = ops
            .iter()
            .enumerate()
            .map(|(i, &op)| Step {
                thread: (i % 3) as u8,
                op,
            })
            .collect();
        let p = mirror(3, steps);
        assert_eq!(p.validate(), Ok(()));
        roundtrip(&p);
        // Each alone, and every prefix of the whole.
        for s in &p.steps {
            roundtrip(&mirror(3, vec![*s]));
        }
        let bytes = encode(&p);
        for cut in 0..bytes.len() {
            let q = decode(&bytes[..cut]);
            assert_eq!(q.validate(), Ok(()), "cut {cut}");
            roundtrip(&q);
        }
    }

    #[test]
    fn decoded_states_are_canonical() {
        let tag = FIRST_TAG[Kind::Expect as usize];
        let states = first_code(|b| expect_head_code(b) == ExpectHead::States).unwrap();
        let write = first_code(|b| state_code(b) == PageState::Write).unwrap();
        let none = first_code(|b| state_code(b) == PageState::None).unwrap();
        // Nine runs asked for (n = 8 at most), adjacent writes merged, and
        // pages past 512 dropped.
        let mut bytes = vec![1, 0, 0, 0, 0, tag, states, 8];
        bytes.extend([write, 9, write, 0, none, 254, none, 254, write, ESCAPE]);
        bytes.extend(1000u64.to_le_bytes());
        bytes.extend([write, 3]);
        let p = decode(&bytes);
        assert_eq!(p.validate(), Ok(()));
        // 10 + 1 writes, then 510 pages left: 255 + 255 none, nothing more.
        assert_eq!(
            p.steps[0].op,
            Op::Expect(canonical_states(&[
                (PageState::Write, 11),
                (PageState::None, 501)
            ]))
        );
        roundtrip(&p);
    }

    #[test]
    fn mirror_zero_bytes_are_the_usual_values() {
        // A zero step byte is thread 0's `m0 read` of the first page.
        let p = decode(&[1, 0, 0, 0, 0, 0]);
        assert_eq!(
            p.steps,
            vec![Step {
                thread: 0,
                op: Op::Mm {
                    mm: 0,
                    op: MmStep::Read { addr: 0 },
                },
            }]
        );
        assert_eq!(p.config.devices, [Some(FULLVA), None]);
    }

    #[test]
    fn mirror_operands_take_one_byte_each() {
        let mm = |mm, op| Op::Mm { mm, op };
        let dev = |dev, op| Op::Dev { dev, op };
        let cases: Vec<(Op, usize)> = vec![
            (
                mm(
                    1,
                    MmStep::Mmap {
                        addr: 3 * PAGE,
                        len: 2 * PAGE,
                        kind: MapKind::File(1),
                        prot: Prot::Read,
                    },
                ),
                4,
            ),
            (
                mm(
                    0,
                    MmStep::Mmap {
                        addr: 0,
                        len: MIN_TASK_SIZE,
                        kind: MapKind::AnonShared,
                        prot: Prot::ReadWrite,
                    },
                ),
                3,
            ),
            (
                mm(
                    0,
                    MmStep::Mprotect {
                        addr: 15 * PAGE + PAGE - 1,
                        len: PAGE + 1,
                        prot: Prot::ReadWrite,
                    },
                ),
                4,
            ),
            (
                mm(
                    0,
                    MmStep::Mremap {
                        addr: PAGE,
                        old_len: PAGE,
                        new_len: 8 * PAGE,
                        to: Some(7 * PAGE + PAGE / 2),
                        dontunmap: true,
                    },
                ),
                6,
            ),
            (
                mm(
                    1,
                    MmStep::Mremap {
                        addr: PAGE,
                        old_len: PAGE,
                        new_len: 0,
                        to: None,
                        dontunmap: false,
                    },
                ),
                5,
            ),
            (mm(1, MmStep::Fork), 1),
            (
                mm(
                    0,
                    MmStep::Write {
                        addr: 9 * PAGE,
                        value: 254,
                    },
                ),
                3,
            ),
            (
                mm(
                    0,
                    MmStep::Ksm {
                        a: PAGE,
                        b: POINT_WHOLE,
                    },
                ),
                3,
            ),
            (mm(0, MmStep::Exit), 2),
            (mm(1, MmStep::Split { addr: 0 }), 2),
            (
                dev(
                    1,
                    DevStep::Open {
                        mm: 1,
                        strategy: PERFAULT,
                    },
                ),
                3,
            ),
            (dev(0, DevStep::Read { addr: 4 * PAGE }), 2),
            (
                dev(
                    1,
                    DevStep::Write {
                        addr: 4 * PAGE,
                        value: 7,
                    },
                ),
                3,
            ),
            (
                dev(
                    0,
                    DevStep::Migrate {
                        addr: 2 * PAGE,
                        len: u64::MAX,
                    },
                ),
                3,
            ),
            (
                mm(
                    0,
                    MmStep::Mmap {
                        addr: PAGE,
                        len: PAGE,
                        kind: MapKind::AnonPrivate,
                        prot: Prot::None,
                    },
                ),
                4,
            ),
            (
                mm(
                    0,
                    MmStep::Mprotect {
                        addr: PAGE,
                        len: PAGE,
                        prot: Prot::None,
                    },
                ),
                4,
            ),
            (
                dev(
                    0,
                    DevStep::Open {
                        mm: 0,
                        strategy: odp(30),
                    },
                ),
                3,
            ),
            (
                dev(
                    1,
                    DevStep::Exclusive {
                        addr: 3 * PAGE,
                        len: 2 * PAGE,
                    },
                ),
                3,
            ),
            (dev(0, DevStep::Evict { addr: 0, len: PAGE }), 3),
            (
                dev(
                    0,
                    DevStep::Register {
                        addr: PAGE,
                        len: 8 * PAGE,
                    },
                ),
                3,
            ),
            (dev(1, DevStep::Unregister { addr: PAGE }), 2),
            (dev(1, DevStep::Work), 1),
            (Op::Expect(Expect::Ok), 1),
            (Op::Expect(Expect::Skipped), 1),
            (Op::Expect(Expect::Error(None)), 1),
            (Op::Expect(Expect::Error(Some(ErrKind::Notifier))), 1),
            (Op::Expect(Expect::Value(42)), 2),
            (Op::Expect(Expect::Pages(3)), 2),
            (Op::Expect(Expect::Faults { dev: 1, n: 2 }), 2),
            (
                Op::Expect(canonical_states(&[
                    (PageState::None, 1),
                    (PageState::Write, 3),
                    (PageState::LocalWrite, 255),
                ])),
                2 + 3 * 2,
            ),
        ];
        for (op, n) in cases {
            let p = Program {
                config: ProgramConfig {
                    task_size: MIN_TASK_SIZE,
                    ..mirror(2, vec![]).config
                },
                steps: vec![Step { thread: 1, op }],
            };
            assert_eq!(p.validate(), Ok(()));
            let bytes = encode(&p);
            assert_eq!(bytes.len(), 5 + 1 + n, "{op:?}: {bytes:02x?}");
            assert_eq!(decode(&bytes), p);
        }
    }

    #[test]
    fn wide_mirror_values_escape() {
        let p = mirror(
            1,
            vec![
                Step {
                    thread: 0,
                    op: Op::Mm {
                        mm: 0,
                        op: MmStep::Write {
                            addr: 0x1234_5678,
                            value: 255,
                        },
                    },
                },
                Step {
                    thread: 0,
                    op: Op::Dev {
                        dev: 0,
                        op: DevStep::Write {
                            addr: PAGE + 3,
                            value: u64::MAX,
                        },
                    },
                },
            ],
        );
        let bytes = encode(&p);
        // header, then tag mm 9 9 and tag dev 9 9.
        assert_eq!(bytes.len(), 5 + 2 * (2 + 9 + 9), "{bytes:02x?}");
        assert_eq!(decode(&bytes), p);
    }

    #[test]
    fn mirror_exit_needs_a_confirm_byte() {
        let exit_tag = FIRST_TAG[Kind::Exit as usize];
        // Confirmed: exit.
        let p = decode(&[1, 0, 0, 0, 0, exit_tag, 7, 63]);
        assert_eq!(
            p.steps[0].op,
            Op::Mm {
                mm: 1,
                op: MmStep::Exit
            }
        );
        // Not confirmed: a read of the address the byte codes.
        let p = decode(&[1, 0, 0, 0, 0, exit_tag, 0, 64 + 3]);
        assert_eq!(
            p.steps[0].op,
            Op::Mm {
                mm: 0,
                op: MmStep::Read { addr: 3 * PAGE }
            }
        );
        roundtrip(&p);
        // An unconfirmed escape reads 8 raw bytes.
        let mut bytes = vec![1, 0, 0, 0, 0, exit_tag, 0, ESCAPE];
        bytes.extend_from_slice(&0xabcdu64.to_le_bytes());
        let p = decode(&bytes);
        assert_eq!(
            p.steps,
            vec![Step {
                thread: 0,
                op: Op::Mm {
                    mm: 0,
                    op: MmStep::Read { addr: 0xabcd }
                }
            }]
        );
        roundtrip(&p);
    }

    #[test]
    fn mirror_kind_distribution_matches_weights() {
        let keyword = |k: Kind| match k {
            Kind::MmRead => "read",
            Kind::MmWrite => "write",
            Kind::DevRead => "dread",
            Kind::DevWrite => "dwrite",
            Kind::Mmap => "mmap",
            Kind::Munmap => "munmap",
            Kind::Mprotect => "mprotect",
            Kind::Reclaim => "reclaim",
            Kind::Mremap => "mremap",
            Kind::Dontneed => "dontneed",
            Kind::MmMigrate => "migrate",
            Kind::ClearRefs => "clear_refs",
            Kind::Snapshot => "snapshot",
            Kind::DevMigrate => "dmigrate",
            Kind::Fork => "fork",
            Kind::Ksm => "ksm",
            Kind::Collapse => "collapse",
            Kind::Split => "split",
            Kind::OomReap => "oom_reap",
            Kind::Exit => "exit",
            Kind::DevOpen => "open",
            Kind::DevExclusive => "dexclusive",
            Kind::DevEvict => "devict",
            Kind::DevRegister => "dregister",
            Kind::DevUnregister => "dunregister",
            Kind::DevWork => "dwork",
            Kind::DevAttr => "dattr",
            Kind::Expect => "expect",
            Kind::Yield => "step",
            k => panic!("{k:?} is not a mirror kind"),
        };
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        let (mut m1, mut d1, mut mms, mut devs, mut total) = (0usize, 0usize, 0usize, 0usize, 0);
        let (mut aligned, mut inwindow, mut small, mut points) = (0usize, 0usize, 0usize, 0usize);
        for seed in 0..400 {
            let mut bytes = xorshift_bytes(seed * 7919 + 11, 1500);
            bytes[0] = 1; // mirror
            bytes[1] = 0; // two threads
            let p = decode(&bytes);
            assert_eq!(p.config.target, Target::Mirror);
            for s in &p.steps {
                *counts.entry(s.op.keyword()).or_default() += 1;
                total += 1;
                match s.op {
                    Op::Mm { mm, op } => {
                        mms += 1;
                        m1 += mm as usize;
                        if let MmStep::Read { addr } | MmStep::Write { addr, .. } = op {
                            points += 1;
                            aligned += (addr & (PAGE - 1) == 0) as usize;
                            inwindow += (addr < WINDOW_PAGES * PAGE
                                || (HUGE_WINDOW..HUGE_WINDOW + WINDOW_PAGES * PAGE).contains(&addr))
                                as usize;
                        }
                        if let MmStep::Write { value, .. } = op {
                            small += (value < 256) as usize;
                        }
                    }
                    Op::Dev { dev, .. } => {
                        devs += 1;
                        d1 += dev as usize;
                    }
                    Op::Yield | Op::Expect(_) => {}
                    _ => panic!("{s:?} in a mirror program"),
                }
            }
        }
        assert!(total > 30_000, "{total}");
        for (kind, weight) in MIRROR_KIND_WEIGHTS {
            let mut want = weight as f64 / 64.0;
            // An unconfirmed exit (3 in 4) is a read.
            match kind {
                Kind::Exit => want /= 4.0,
                Kind::MmRead => want += 0.75 / 64.0,
                _ => {}
            }
            let kw = keyword(kind);
            let got = counts.get(kw).copied().unwrap_or(0) as f64 / total as f64;
            assert!(
                (got - want).abs() <= want * 0.35 + 0.002,
                "{kw}: {got:.4} vs {want:.4}"
            );
        }
        let frac = |n: usize, d: usize| n as f64 / d as f64;
        assert!(
            (0.09..0.16).contains(&frac(m1, mms)),
            "m1 {}",
            frac(m1, mms)
        );
        assert!(
            (0.09..0.16).contains(&frac(d1, devs)),
            "d1 {}",
            frac(d1, devs)
        );
        assert!(
            frac(aligned, points) > 0.85,
            "aligned {}",
            frac(aligned, points)
        );
        assert!(
            frac(inwindow, points) > 0.9,
            "window {}",
            frac(inwindow, points)
        );
        assert!(frac(small, counts["write"]) > 0.99);
    }

    #[test]
    fn every_mirror_code_decodes_and_roundtrips() {
        // One step of each mirror kind, with every value of its operand bytes.
        for tag in 0..64u8 {
            for b in 0..=u8::MAX {
                for task in [0u8, 192, 240] {
                    let bytes = [1, 5, 0, task, b, tag, b, b, b, b, b, 0xff];
                    let p = decode(&bytes);
                    assert_eq!(p.validate(), Ok(()));
                    roundtrip(&p);
                    let bytes = [1, 0, 0, task, 0, tag, 0, b, b, 0, b, 0xff];
                    let p = decode(&bytes);
                    assert_eq!(p.validate(), Ok(()));
                    roundtrip(&p);
                }
            }
        }
    }

    #[test]
    fn fast_paths_agree_with_the_full_scan() {
        let task_sizes = [u64::MAX, 1 << 47, 1 << 32, MIN_TASK_SIZE, MIN_TASK_SIZE + 1];
        let mut values: Vec<u64> = vec![0, 1, u64::MAX, POINT_WHOLE, 2 * PAGE + 7];
        for p in 0..WINDOW_PAGES + 2 {
            for off in [0, 1, PAGE / 2, PAGE - 1, 2] {
                values.push(p * PAGE + off);
            }
        }
        for ts in task_sizes {
            for d in [0, 1, 2, PAGE, PAGE - 1, 2 * PAGE, 2 * PAGE - 1] {
                values.push(ts.wrapping_sub(d));
            }
        }
        for &ts in &task_sizes {
            for &v in &values {
                for (code, cands) in [
                    (
                        addr_code as fn(u8, u64) -> Addr,
                        addr_candidates(v).collect::<Vec<_>>(),
                    ),
                    (maddr_code, maddr_candidates(v).collect()),
                ] {
                    for want in [Addr::At(v), Addr::Whole] {
                        assert_eq!(
                            first_of(cands.iter().copied(), |b| code(b, ts) == want),
                            first_code(|b| code(b, ts) == want),
                            "{v:#x} {ts:#x} {want:?}"
                        );
                    }
                }
                assert_eq!(
                    first_of(maddr_candidates(v), |b| point_code(b, ts) == Some(v)),
                    first_code(|b| point_code(b, ts) == Some(v)),
                    "point {v:#x} {ts:#x}"
                );
                for &start in &values[..8] {
                    assert_eq!(
                        first_of(len_candidates(v), |b| len_code(b, start, ts) == Some(v)),
                        first_code(|b| len_code(b, start, ts) == Some(v)),
                        "len {v:#x} start {start:#x} {ts:#x}"
                    );
                }
            }
        }
        for blockable in [false, true] {
            for owner in [None, Some(0), Some(3), Some(4)] {
                let f = |b| flags_code(b) == (blockable, owner);
                let fast = flags_candidate(blockable, owner).filter(|&b| f(b));
                assert_eq!(fast, first_code(f));
            }
        }
        for threads in 1..=MAX_THREADS {
            for thread in 0..threads {
                for (k, _) in KIND_WEIGHTS.iter().chain(&MIRROR_KIND_WEIGHTS) {
                    let target = if KINDS.contains(k) {
                        Target::Notifier
                    } else {
                        Target::Mirror
                    };
                    let f = |b| tag_kind(b, target) == *k && (b >> 6) % threads == thread;
                    assert_eq!(Some(tag_code(*k, thread, threads)), first_code(f));
                }
            }
        }
        for slot in 0..2 {
            assert_eq!(
                Some(slot2_byte(slot)),
                first_code(|b| slot2_code(b) == slot)
            );
        }
        for prot in Prot::ALL {
            for kind in [
                MapKind::AnonPrivate,
                MapKind::AnonShared,
                MapKind::File(0),
                MapKind::File(1),
            ] {
                assert_eq!(
                    Some(map_byte(kind, prot)),
                    first_code(|b| map_code(b) == (kind, prot))
                );
            }
        }
        for to in [false, true] {
            for dontunmap in [false, true] {
                let p = decode(&encode(&mirror(
                    1,
                    vec![Step {
                        thread: 0,
                        op: Op::Mm {
                            mm: 0,
                            op: MmStep::Mremap {
                                addr: 0,
                                old_len: PAGE,
                                new_len: PAGE,
                                to: to.then_some(PAGE),
                                dontunmap,
                            },
                        },
                    }],
                )));
                let Op::Mm {
                    op:
                        MmStep::Mremap {
                            to: t,
                            dontunmap: d,
                            ..
                        },
                    ..
                } = p.steps[0].op
                else {
                    panic!("{p:?}");
                };
                assert_eq!((t.is_some(), d), (to, dontunmap));
            }
        }
    }

    #[test]
    fn mismatched_ops_encode_without_panicking() {
        // Mirror ops in a notifier program and the reverse: invalid, but the
        // encoder still gives bytes of a nearby valid program.
        let mut p = mirror(
            2,
            vec![
                Step {
                    thread: 1,
                    op: Op::Release,
                },
                Step {
                    thread: 0,
                    op: Op::Mm {
                        mm: 9,
                        op: MmStep::Mmap {
                            addr: 0,
                            len: PAGE,
                            kind: MapKind::File(77),
                            prot: Prot::ReadWrite,
                        },
                    },
                },
                Step {
                    thread: 0,
                    op: Op::Dev {
                        dev: 5,
                        op: DevStep::Open {
                            mm: 4,
                            strategy: PERFAULT,
                        },
                    },
                },
            ],
        );
        assert!(p.validate().is_err());
        assert_eq!(decode(&encode(&p)).validate(), Ok(()));
        p.config.target = Target::Notifier;
        assert_eq!(decode(&encode(&p)).validate(), Ok(()));
    }

    #[test]
    fn kernel_compat_comes_from_the_bytes_only_when_allowed() {
        let text = "config target=notifier threads=3 kernel_compat=1\n\
                    t0 insert i0 0x0 +0x1000\n\
                    t1 register c0 refuse-nb\n";
        let p = crate::text::parse(text).unwrap();
        assert!(p.config.kernel_compat);
        assert_eq!(crate::text::parse(&crate::text::print(&p)).unwrap(), p);
        let bytes = encode(&p);
        let on = DecodeOptions {
            kernel_compat: true,
        };
        assert_eq!(decode_as_with(Target::Notifier, &bytes, on), p);
        let plain = decode_as(Target::Notifier, &bytes);
        assert!(!plain.config.kernel_compat);
        assert_eq!(plain.steps, p.steps);
        // The mirror target never has it, whatever the option says.
        assert!(
            !decode_as_with(Target::Mirror, &bytes, on)
                .config
                .kernel_compat
        );
        // Without the flag, the bit stays clear in the encoding.
        let mut q = p.clone();
        q.config.kernel_compat = false;
        assert_eq!(decode_as_with(Target::Notifier, &encode(&q), on), q);
    }
}
