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
//! header  target threads seq task_size
//!   target      Target::ALL[b % len]
//!   threads     [2,2,2,1,3,3,4,4][b & 7]
//!   seq         0..=191 2 | ..=207 0 | ..=223 MAX-1 | ..=239 MAX-3 | ..=254 MAX-7
//!               | 255 ESC (8 bytes LE, low bit cleared)
//!   task_size   0..=191 MAX | ..=215 1<<47 | ..=239 1<<32 | ..=254 MIN_TASK_SIZE
//!               | 255 ESC (8 bytes LE, raised to MIN_TASK_SIZE)
//! step    tag operands...                (repeated while bytes remain,
//!                                         at most MAX_STEPS)
//!   tag         kind = KINDS[tag & 63], weights out of 64: start 14, end 10,
//!               read_begin 12, commit 6, insert 10, remove 5, check_retry 2,
//!               register 2, unregister 2, release 1;
//!               thread = (tag >> 6) % threads
//!   insert      slot span cb             slot = b % SLOTS
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
//!               | ..=229 0 | ..=243 ts-start | ..=254 u64::MAX | 255 ESC
//! flags   nonblock iff b & 7 == 7; owner = None if b >> 3 < 24, else Some((b >> 3) % 4)
//! cb      refuse = b & 15: 0..=11 Never | ..=14 NonBlockable | 15 Always;
//!         set_seq = b >> 4: 0..=13 Always | 14 Never | 15 SkipFor(event byte follows)
//! ```
//!
//! ESC is 255 and 8 raw little-endian bytes; ts is the task_size. The
//! target byte has one meaning today; it is there so that adding targets
//! keeps the layout.
//!
//! Byte 0 is the common case everywhere, so the empty input is the default
//! config with no steps, and zero padding means "the usual". The encoder
//! never hand-codes the inverse: for each operand it tries the codes in
//! order and emits the first whose decoding (in the same context) is the
//! value, else the escape. `decode` allocates nothing but the step vector.

use arbitrary::{Arbitrary, Unstructured};
use notifier::Event;
use oracles::{CallbackModel, Refuse, SetSeq};

use crate::program::{
    Op, Program, ProgramConfig, Step, Target, CLASSIC_SLOTS, MAX_STEPS, MIN_TASK_SIZE, OWNERS,
    PAGE, SLOTS, WINDOW_PAGES,
};

/// The code that is followed by 8 raw little-endian bytes.
const ESCAPE: u8 = 255;
/// Thread counts by `byte & 7`; 2 is the most common.
const THREADS: [u8; 8] = [2, 2, 2, 1, 3, 3, 4, 4];

/// The op kinds, as chosen by a step's tag byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
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
}

/// Each kind's share of the 64 entries of [`KINDS`].
const KIND_WEIGHTS: [(Kind, usize); 10] = [
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

/// `tag & 63` to kind.
const KINDS: [Kind; 64] = kind_table();

const fn kind_table() -> [Kind; 64] {
    let mut t = [Kind::Start; 64];
    let mut i = 0;
    let mut k = 0;
    while k < KIND_WEIGHTS.len() {
        let (kind, weight) = KIND_WEIGHTS[k];
        let mut j = 0;
        while j < weight {
            t[i] = kind;
            i += 1;
            j += 1;
        }
        k += 1;
    }
    assert!(i == 64, "KIND_WEIGHTS must sum to 64");
    t
}

/// The kind a tag byte chooses.
fn tag_kind(tag: u8) -> Kind {
    KINDS[(tag & 63) as usize]
}

fn kind_of(op: &Op) -> Kind {
    match op {
        Op::Insert { .. } => Kind::Insert,
        Op::Remove { .. } => Kind::Remove,
        Op::Start { .. } => Kind::Start,
        Op::End => Kind::End,
        Op::ReadBegin { .. } => Kind::ReadBegin,
        Op::Commit => Kind::Commit,
        Op::CheckRetry => Kind::CheckRetry,
        Op::Release => Kind::Release,
        Op::Register { .. } => Kind::Register,
        Op::Unregister { .. } => Kind::Unregister,
    }
}

// ---------------------------------------------------------------------------
// Code tables: one pure function per operand, shared by decoder and encoder.
// `None` means the escape.

fn target_code(b: u8) -> Target {
    Target::ALL[b as usize % Target::ALL.len()]
}

fn threads_code(b: u8) -> u8 {
    THREADS[(b & 7) as usize]
}

fn seq_code(b: u8) -> Option<u64> {
    Some(match b {
        0..=191 => 2,
        192..=207 => 0,
        208..=223 => u64::MAX - 1,
        224..=239 => u64::MAX - 3,
        240..=254 => u64::MAX - 7,
        ESCAPE => return None,
    })
}

fn seq_raw(raw: u64) -> u64 {
    raw & !1
}

fn task_size_code(b: u8) -> Option<u64> {
    Some(match b {
        0..=191 => u64::MAX,
        192..=215 => 1 << 47,
        216..=239 => 1 << 32,
        240..=254 => MIN_TASK_SIZE,
        ESCAPE => return None,
    })
}

fn task_size_raw(raw: u64) -> u64 {
    raw.max(MIN_TASK_SIZE)
}

/// What an address byte says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Addr {
    /// This address; a length byte follows.
    At(u64),
    /// Start 0, length `task_size`; no length byte.
    Whole,
    /// 8 raw bytes follow, then a length byte.
    Escape,
}

fn addr_code(b: u8, task_size: u64) -> Addr {
    let page = (b as u64 % WINDOW_PAGES) * PAGE;
    match b {
        0..=191 => Addr::At(page),
        192..=207 => Addr::At(page + 1),
        208..=223 => Addr::At(page + PAGE - 1),
        224..=239 => Addr::At(page + PAGE / 2),
        240..=254 => match (b - 240) % 5 {
            0 => Addr::At(0),
            1 => Addr::At(task_size.wrapping_sub(PAGE)),
            2 => Addr::At(task_size.wrapping_sub(1)),
            3 => Addr::At(task_size.wrapping_sub(2 * PAGE)),
            _ => Addr::Whole,
        },
        ESCAPE => Addr::Escape,
    }
}

fn len_code(b: u8, start: u64, task_size: u64) -> Option<u64> {
    let pages = (b as u64 % 8 + 1) * PAGE;
    Some(match b {
        0..=175 => pages,
        176..=191 => pages + 1,
        192..=207 => pages - 1,
        208..=219 => 1,
        220..=229 => 0,
        230..=243 => task_size.wrapping_sub(start),
        244..=254 => u64::MAX,
        ESCAPE => return None,
    })
}

fn event_code(b: u8) -> Event {
    Event::ALL[b as usize % Event::ALL.len()]
}

/// `(blockable, owner)`.
fn flags_code(b: u8) -> (bool, Option<u8>) {
    let blockable = b & 7 != 7;
    let owner = if b >> 3 < 24 {
        None
    } else {
        Some((b >> 3) % OWNERS)
    };
    (blockable, owner)
}

fn refuse_code(b: u8) -> Refuse {
    match b & 15 {
        0..=11 => Refuse::Never,
        12..=14 => Refuse::NonBlockable,
        _ => Refuse::Always,
    }
}

/// The `set_seq` half of a callback byte, before the event byte of `SkipFor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeqHead {
    Always,
    Never,
    Skip,
}

fn seq_head_code(b: u8) -> SeqHead {
    match b >> 4 {
        0..=13 => SeqHead::Always,
        14 => SeqHead::Never,
        _ => SeqHead::Skip,
    }
}

// ---------------------------------------------------------------------------
// Decoding.

/// Reads bytes from an `Unstructured`; past the end every byte is 0.
struct Reader<'r, 'a> {
    u: &'r mut Unstructured<'a>,
}

impl Reader<'_, '_> {
    fn byte(&mut self) -> u8 {
        match self.u.bytes(1) {
            Ok(b) => b[0],
            Err(_) => 0,
        }
    }

    fn raw(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    fn u64_with(&mut self, code: fn(u8) -> Option<u64>, raw: fn(u64) -> u64) -> u64 {
        match code(self.byte()) {
            Some(v) => v,
            None => raw(self.raw()),
        }
    }

    /// `(start, len)`.
    fn span(&mut self, task_size: u64) -> (u64, u64) {
        let start = match addr_code(self.byte(), task_size) {
            Addr::At(a) => a,
            Addr::Whole => return (0, task_size),
            Addr::Escape => self.raw(),
        };
        let len = match len_code(self.byte(), start, task_size) {
            Some(l) => l,
            None => self.raw(),
        };
        (start, len)
    }

    fn callback(&mut self) -> CallbackModel {
        let b = self.byte();
        let set_seq = match seq_head_code(b) {
            SeqHead::Always => SetSeq::Always,
            SeqHead::Never => SetSeq::Never,
            SeqHead::Skip => SetSeq::SkipFor(event_code(self.byte())),
        };
        CallbackModel {
            refuse: refuse_code(b),
            set_seq,
        }
    }

    fn config(&mut self) -> ProgramConfig {
        let target = target_code(self.byte());
        let threads = threads_code(self.byte());
        let initial_seq = self.u64_with(seq_code, seq_raw);
        let task_size = self.u64_with(task_size_code, task_size_raw);
        ProgramConfig {
            target,
            threads,
            initial_seq,
            task_size,
        }
    }

    fn step(&mut self, c: &ProgramConfig) -> Step {
        let tag = self.byte();
        let thread = (tag >> 6) % c.threads.max(1);
        let op = match tag_kind(tag) {
            Kind::Insert => {
                let slot = self.byte() % SLOTS;
                let (start, len) = self.span(c.task_size);
                let cb = self.callback();
                Op::Insert {
                    slot,
                    start,
                    len,
                    cb,
                }
            }
            Kind::Remove => Op::Remove {
                slot: self.byte() % SLOTS,
            },
            Kind::Start => {
                let event = event_code(self.byte());
                let (start, len) = self.span(c.task_size);
                let (blockable, owner) = flags_code(self.byte());
                Op::Start {
                    event,
                    start,
                    end: start.wrapping_add(len),
                    blockable,
                    owner,
                }
            }
            Kind::End => Op::End,
            Kind::ReadBegin => Op::ReadBegin {
                slot: self.byte() % SLOTS,
            },
            Kind::Commit => Op::Commit,
            Kind::CheckRetry => Op::CheckRetry,
            Kind::Release if self.byte() < 64 => Op::Release,
            Kind::Release => Op::End,
            Kind::Register => {
                let slot = self.byte() % CLASSIC_SLOTS;
                Op::Register {
                    slot,
                    refuse: refuse_code(self.byte()),
                }
            }
            Kind::Unregister => Op::Unregister {
                slot: self.byte() % CLASSIC_SLOTS,
            },
        };
        Step { thread, op }
    }

    fn program(&mut self) -> Program {
        let config = self.config();
        let mut steps = Vec::new();
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
    Reader { u: &mut u }.program()
}

/// Consumes all of `u` (like `arbitrary_take_rest`): the format has no
/// length prefix, steps run to the end of the data.
impl<'a> Arbitrary<'a> for Program {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Reader { u }.program())
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Reader { u: &mut u }.program())
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (0, None)
    }
}

// ---------------------------------------------------------------------------
// Encoding.

/// The first code `b` (in order) for which `f(b)` holds.
fn first_code(f: impl Fn(u8) -> bool) -> Option<u8> {
    (0..=u8::MAX).find(|&b| f(b))
}

/// Pushes the first short code of `code` that decodes to `v`, else the escape
/// and `v`'s raw bytes.
fn push_u64(out: &mut Vec<u8>, v: u64, code: impl Fn(u8) -> Option<u64>) {
    match first_code(|b| code(b) == Some(v)) {
        Some(b) => out.push(b),
        None => push_raw(out, v),
    }
}

fn push_raw(out: &mut Vec<u8>, v: u64) {
    out.push(ESCAPE);
    out.extend_from_slice(&v.to_le_bytes());
}

fn push_span(out: &mut Vec<u8>, start: u64, len: u64, task_size: u64) {
    if (start, len) == (0, task_size) {
        if let Some(b) = first_code(|b| addr_code(b, task_size) == Addr::Whole) {
            out.push(b);
            return;
        }
    }
    match first_code(|b| addr_code(b, task_size) == Addr::At(start)) {
        Some(b) => out.push(b),
        None => push_raw(out, start),
    }
    push_u64(out, len, |b| len_code(b, start, task_size));
}

fn push_refuse(out: &mut Vec<u8>, refuse: Refuse) {
    out.push(first_code(|b| refuse_code(b) == refuse).unwrap_or(0));
}

fn push_event(out: &mut Vec<u8>, event: Event) {
    out.push(first_code(|b| event_code(b) == event).unwrap_or(0));
}

fn push_callback(out: &mut Vec<u8>, cb: CallbackModel) {
    let head = match cb.set_seq {
        SetSeq::Always => SeqHead::Always,
        SetSeq::Never => SeqHead::Never,
        SetSeq::SkipFor(_) => SeqHead::Skip,
    };
    out.push(first_code(|b| refuse_code(b) == cb.refuse && seq_head_code(b) == head).unwrap_or(0));
    if let SetSeq::SkipFor(e) = cb.set_seq {
        push_event(out, e);
    }
}

/// Encodes `p` so that [`decode`] gives it back, for every valid program
/// (with at most [`MAX_STEPS`] steps) and every program `decode` produces.
/// Other programs come back as a nearby valid one; this never panics.
pub fn encode(p: &Program) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * p.steps.len());
    let c = &p.config;
    out.push(first_code(|b| target_code(b) == c.target).unwrap_or(0));
    out.push(first_code(|b| threads_code(b) == c.threads).unwrap_or(0));
    push_u64(&mut out, c.initial_seq, seq_code);
    push_u64(&mut out, c.task_size, task_size_code);
    // The context steps decode in: the config as decode will see it.
    let Program { config: c, .. } = decode(&out);
    for s in p.steps.iter().take(MAX_STEPS) {
        let kind = kind_of(&s.op);
        let is_kind = |b: u8| tag_kind(b) == kind;
        let tag = first_code(|b| is_kind(b) && (b >> 6) % c.threads == s.thread)
            .or_else(|| first_code(is_kind))
            .unwrap_or(0);
        out.push(tag);
        match s.op {
            Op::Insert {
                slot,
                start,
                len,
                cb,
            } => {
                out.push(slot);
                push_span(&mut out, start, len, c.task_size);
                push_callback(&mut out, cb);
            }
            Op::Remove { slot } | Op::ReadBegin { slot } | Op::Unregister { slot } => {
                out.push(slot)
            }
            Op::Start {
                event,
                start,
                end,
                blockable,
                owner,
            } => {
                push_event(&mut out, event);
                push_span(&mut out, start, end.wrapping_sub(start), c.task_size);
                out.push(first_code(|b| flags_code(b) == (blockable, owner)).unwrap_or(0));
            }
            Op::Release => out.push(0),
            Op::End | Op::Commit | Op::CheckRetry => {}
            Op::Register { slot, refuse } => {
                out.push(slot);
                push_refuse(&mut out, refuse);
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::program::MAX_THREADS;
    use proptest::prelude::*;

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
        (any_refuse(), set_seq).prop_map(|(refuse, set_seq)| CallbackModel { refuse, set_seq })
    }

    fn any_op() -> impl Strategy<Value = Op> {
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
            slot.clone().prop_map(|slot| Op::ReadBegin { slot }),
            Just(Op::Commit),
            Just(Op::CheckRetry),
            Just(Op::Release),
            (cslot.clone(), any_refuse()).prop_map(|(slot, refuse)| Op::Register { slot, refuse }),
            cslot.prop_map(|slot| Op::Unregister { slot }),
        ]
    }

    /// Valid programs with arbitrary operands, built by hand rather than decoded.
    pub(crate) fn arb_program() -> impl Strategy<Value = Program> {
        let config = (
            1..=MAX_THREADS,
            prop_oneof![any::<u64>().prop_map(|s| s & !1), Just(2u64), Just(0u64)],
            prop_oneof![
                MIN_TASK_SIZE..=u64::MAX,
                Just(u64::MAX),
                Just(MIN_TASK_SIZE)
            ],
        )
            .prop_map(|(threads, initial_seq, task_size)| ProgramConfig {
                target: Target::Notifier,
                threads,
                initial_seq,
                task_size,
            });
        config.prop_flat_map(|config| {
            let step = (0..config.threads, any_op()).prop_map(|(thread, op)| Step { thread, op });
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
            let p = decode(&xorshift_bytes(seed * 104_729 + 3, 1500));
            for s in &p.steps {
                match s.op {
                    Op::Insert { start, .. } => {
                        addrs += 1;
                        aligned += (start % PAGE == 0) as usize;
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
}
