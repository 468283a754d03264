//! The byte codec's `notifier` part: how its interval, invalidation,
//! fault and classic-subscriber steps are read and written. The format is
//! documented with the rest of it in [`crate::codec`].

use oracles::{CallbackModel, Refuse, SetSeq};

use crate::codec::*;
use crate::program::{Op, ProgramConfig, CLASSIC_SLOTS, MAX_POPULATE, OWNERS, SLOTS};

/// `(blockable, owner)`.
pub(crate) fn flags_code(b: u8) -> (bool, Option<u8>) {
    let blockable = b & 7 != 7;
    let owner = if b >> 3 < 24 {
        None
    } else {
        Some((b >> 3) % OWNERS)
    };
    (blockable, owner)
}

pub(crate) fn refuse_code(b: u8) -> Refuse {
    match b & 15 {
        0..=11 => Refuse::Never,
        12..=14 => Refuse::NonBlockable,
        _ => Refuse::Always,
    }
}

/// An insert whose slot byte is at least this is a `populate`: one insert
/// in 32. With counts drawn mostly from 64 up, a tree of 64 shows in about
/// one execution in eight; big trees cost about three times a small one's
/// instructions, so rarer and bigger beats frequent and mixed (issue 18).
pub(crate) const POPULATE_CODE: u8 = 0xf8;

/// `populate`'s count: half the codes give a big tree (64..=127), the
/// other half any count (1..=128).
pub(crate) fn populate_count(b: u8) -> u8 {
    match b {
        0..=127 => 64 + b / 2,
        _ => 1 + (b - 128) % MAX_POPULATE,
    }
}

/// Whether a callback byte's interval is two-pass: a fifth of the codes of
/// each refusal that can accept.
pub(crate) fn two_pass_code(b: u8) -> bool {
    matches!(b & 15, 10 | 11 | 14)
}

/// The `set_seq` half of a callback byte, before the event byte of `SkipFor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SeqHead {
    Always,
    Never,
    Skip,
}

pub(crate) fn seq_head_code(b: u8) -> SeqHead {
    match b >> 4 {
        0..=13 => SeqHead::Always,
        14 => SeqHead::Never,
        _ => SeqHead::Skip,
    }
}

/// The one code that can be the first to decode to these flags.
pub(crate) fn flags_candidate(blockable: bool, owner: Option<u8>) -> Option<u8> {
    let low = if blockable { 0 } else { 7 };
    match owner {
        None => Some(low),
        Some(o) if o < OWNERS => Some((24 + o) << 3 | low),
        Some(_) => None,
    }
}

pub(crate) fn push_refuse(out: &mut Vec<u8>, refuse: Refuse) {
    out.push(first_code(|b| refuse_code(b) == refuse).unwrap_or(0));
}

pub(crate) fn push_callback(out: &mut Vec<u8>, cb: CallbackModel) {
    let head = match cb.set_seq {
        SetSeq::Always => SeqHead::Always,
        SetSeq::Never => SeqHead::Never,
        SetSeq::SkipFor(_) => SeqHead::Skip,
    };
    out.push(
        first_code(|b| {
            refuse_code(b) == cb.refuse
                && seq_head_code(b) == head
                && two_pass_code(b) == cb.two_pass
        })
        .unwrap_or(0),
    );
    if let SetSeq::SkipFor(e) = cb.set_seq {
        push_event(out, e);
    }
}

/// Pushes the operands of a notifier op (its tag is out already).
pub(crate) fn push_notifier_op(out: &mut Vec<u8>, op: Op, task_size: u64) {
    match op {
        Op::Insert {
            slot,
            start,
            len,
            cb,
        } => {
            out.push(slot);
            push_span(out, start, len, task_size);
            push_callback(out, cb);
        }
        Op::Populate { count, start, len } => {
            out.push(POPULATE_CODE);
            out.push(first_code(|b| populate_count(b) == count).unwrap_or(0));
            push_span(out, start, len, task_size);
        }
        Op::Remove { slot } | Op::ReadBegin { slot } | Op::Unregister { slot } => out.push(slot),
        Op::Start {
            event,
            start,
            end,
            blockable,
            owner,
        } => {
            push_event(out, event);
            push_span(out, start, end.wrapping_sub(start), task_size);
            let flags = flags_candidate(blockable, owner)
                .filter(|&b| flags_code(b) == (blockable, owner))
                .unwrap_or(0);
            out.push(flags);
        }
        Op::Release => out.push(0),
        Op::End | Op::Commit | Op::CheckRetry | Op::Yield => {}
        Op::Register { slot, refuse } => {
            out.push(slot);
            push_refuse(out, refuse);
        }
        // The mirror's steps are pushed by `encode` itself.
        Op::Mm { .. } | Op::Dev { .. } | Op::Expect(_) => {}
    }
}

impl Reader<'_, '_> {
    pub(crate) fn callback(&mut self) -> CallbackModel {
        let b = self.byte();
        let set_seq = match seq_head_code(b) {
            SeqHead::Always => SetSeq::Always,
            SeqHead::Never => SetSeq::Never,
            SeqHead::Skip => SetSeq::SkipFor(event_code(self.byte())),
        };
        CallbackModel {
            refuse: refuse_code(b),
            set_seq,
            two_pass: two_pass_code(b),
        }
    }

    pub(crate) fn notifier_op(&mut self, kind: Kind, c: &ProgramConfig) -> Op {
        match kind {
            Kind::Insert => {
                let b = self.byte();
                if b >= POPULATE_CODE {
                    let count = populate_count(self.byte());
                    let (start, len) = self.span(c.task_size);
                    return Op::Populate { count, start, len };
                }
                let slot = b % SLOTS;
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
            Kind::ReadBegin => Op::ReadBegin {
                slot: self.byte() % SLOTS,
            },
            Kind::Commit => Op::Commit,
            Kind::CheckRetry => Op::CheckRetry,
            Kind::Release if self.byte() < 64 => Op::Release,
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
            // End, and the release that was not confirmed.
            _ => Op::End,
        }
    }
}
