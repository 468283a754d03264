//! The `.ops` text of the `notifier` target's ops: printing and parsing,
//! on the shared line reader of [`crate::text`].

use std::fmt::{self, Write as _};

use oracles::{CallbackModel, Refuse, SetSeq};

use crate::program::{Op, CLASSIC_SLOTS, MAX_POPULATE, OWNERS, SLOTS};
use crate::text::{Line, ParseError, Tok};

pub(crate) fn write_operands(s: &mut String, op: &Op) -> fmt::Result {
    match *op {
        Op::Insert {
            slot,
            start,
            len,
            cb,
        } => {
            write!(s, " i{slot} {start:#x} +{len:#x}")?;
            write_refuse(s, cb.refuse)?;
            match cb.set_seq {
                SetSeq::Always => {}
                SetSeq::Never => write!(s, " no-seq")?,
                SetSeq::SkipFor(e) => write!(s, " no-seq:{}", e.name())?,
            }
            if cb.two_pass {
                write!(s, " two-pass")?;
            }
            Ok(())
        }
        Op::Populate { count, start, len } => write!(s, " {count} {start:#x} +{len:#x}"),
        Op::Remove { slot } | Op::ReadBegin { slot } => write!(s, " i{slot}"),
        Op::Start {
            event,
            start,
            end,
            blockable,
            owner,
        } => {
            write!(s, " {} {start:#x}..{end:#x}", event.name())?;
            if !blockable {
                write!(s, " nonblock")?;
            }
            match owner {
                Some(o) => write!(s, " owner={o}"),
                None => Ok(()),
            }
        }
        Op::End | Op::Release | Op::Commit | Op::CheckRetry | Op::Yield => Ok(()),
        Op::Register { slot, refuse } => {
            write!(s, " c{slot}")?;
            write_refuse(s, refuse)
        }
        Op::Unregister { slot } => write!(s, " c{slot}"),
        // Printed by `write_mm`, `write_dev` and `format_step`.
        Op::Mm { .. } | Op::Dev { .. } | Op::Expect(_) => Ok(()),
    }
}

pub(crate) fn write_refuse(s: &mut String, refuse: Refuse) -> fmt::Result {
    match refuse {
        Refuse::Never => Ok(()),
        Refuse::NonBlockable => write!(s, " refuse-nb"),
        Refuse::Always => write!(s, " refuse"),
    }
}

/// The keywords of the notifier target.
pub(crate) const NOTIFIER_KEYWORDS: [&str; 11] = [
    "insert",
    "populate",
    "remove",
    "start",
    "end",
    "read_begin",
    "commit",
    "check_retry",
    "release",
    "register",
    "unregister",
];

/// The same, for messages.
pub(crate) const NOTIFIER_OPS: &str =
    "insert, populate, remove, start, end, read_begin, commit, check_retry, \
                            release, register or unregister";

pub(crate) fn parse_notifier_op(l: &mut Line<'_>, kw: Tok<'_>) -> Result<Op, ParseError> {
    Ok(match kw.text {
        "insert" => {
            let slot = l.slot('i', SLOTS, "interval slot")?;
            let start = l.next("start address")?;
            let start = l.num(start, "start address")?;
            let len = l.next("length `+LEN`")?;
            let Some(_) = len.text.strip_prefix('+') else {
                return Err(l.at(len, format!("expected length `+LEN`, found `{}`", len.text)));
            };
            let len = l.num(len.rest(1), "length")?;
            let mut cb = CallbackModel::GOOD;
            let (mut refuse_seen, mut seq_seen) = (false, false);
            let mut two_pass_at = None;
            while let Some(w) = l.peek() {
                l.pos += 1;
                if w.text == "two-pass" {
                    if cb.two_pass {
                        return Err(l.at(w, "duplicate `two-pass`".to_string()));
                    }
                    cb.two_pass = true;
                    two_pass_at = Some(w);
                } else if let Some(r) = Line::refuse_word(w) {
                    if refuse_seen {
                        return Err(l.at(w, format!("duplicate refuse word `{}`", w.text)));
                    }
                    refuse_seen = true;
                    cb.refuse = r;
                } else if w.text == "no-seq" || w.text.starts_with("no-seq:") {
                    if seq_seen {
                        return Err(l.at(w, format!("duplicate `{}`", w.text)));
                    }
                    seq_seen = true;
                    cb.set_seq = match w.text.strip_prefix("no-seq:") {
                        None => SetSeq::Never,
                        Some(_) => SetSeq::SkipFor(l.event(w.rest("no-seq:".len()))?),
                    };
                } else {
                    return Err(l.at(
                        w,
                        format!(
                            "unexpected `{}` (callback words: refuse, refuse-nb, no-seq, no-seq:EVENT, two-pass)",
                            w.text
                        ),
                    ));
                }
            }
            if let (Some(w), Refuse::Always) = (two_pass_at, cb.refuse) {
                return Err(l.at(
                    w,
                    "`two-pass` with `refuse`: a callback that always refuses has nothing to finish"
                        .to_string(),
                ));
            }
            Op::Insert {
                slot,
                start,
                len,
                cb,
            }
        }
        "populate" => {
            let n = l.next("count")?;
            let count = l.num(n, "count")?;
            if !(1..=u64::from(MAX_POPULATE)).contains(&count) {
                return Err(l.at(n, format!("count must be 1..={MAX_POPULATE}")));
            }
            Op::Populate {
                count: count as u8,
                start: l.number("start address")?,
                len: l.plus("length", "+LEN")?,
            }
        }
        "remove" => Op::Remove {
            slot: l.slot('i', SLOTS, "interval slot")?,
        },
        "read_begin" => Op::ReadBegin {
            slot: l.slot('i', SLOTS, "interval slot")?,
        },
        "commit" => Op::Commit,
        "check_retry" => Op::CheckRetry,
        "start" => {
            let ev = l.next("event")?;
            let event = l.event(ev)?;
            let range = l.next("range `START..END`")?;
            let Some(dots) = range.text.find("..") else {
                return Err(l.at(
                    range,
                    format!("expected range `START..END`, found `{}`", range.text),
                ));
            };
            let start = l.num(
                Tok {
                    text: &range.text[..dots],
                    col: range.col,
                },
                "range start",
            )?;
            let end = l.num(range.rest(dots + 2), "range end")?;
            let (mut blockable, mut owner) = (true, None);
            while let Some(w) = l.peek() {
                l.pos += 1;
                if w.text == "nonblock" {
                    if !blockable {
                        return Err(l.at(w, "duplicate `nonblock`"));
                    }
                    blockable = false;
                } else if let Some(v) = w.text.strip_prefix("owner=") {
                    if owner.is_some() {
                        return Err(l.at(w, "duplicate `owner=`"));
                    }
                    let val = w.rest("owner=".len());
                    let o = l.num(val, "owner")?;
                    if o >= u64::from(OWNERS) {
                        return Err(
                            l.at(val, format!("owner {v} out of range (0..={})", OWNERS - 1))
                        );
                    }
                    owner = Some(o as u8);
                } else {
                    return Err(l.at(
                        w,
                        format!("unexpected `{}` (expected nonblock or owner=N)", w.text),
                    ));
                }
            }
            Op::Start {
                event,
                start,
                end,
                blockable,
                owner,
            }
        }
        "end" => Op::End,
        "release" => Op::Release,
        "register" => {
            let slot = l.slot('c', CLASSIC_SLOTS, "classic slot")?;
            let mut refuse = Refuse::Never;
            if let Some(r) = l.peek().and_then(Line::refuse_word) {
                l.pos += 1;
                refuse = r;
            }
            Op::Register { slot, refuse }
        }
        "unregister" => Op::Unregister {
            slot: l.slot('c', CLASSIC_SLOTS, "classic slot")?,
        },
        other => {
            return Err(l.at(
                kw,
                format!("unknown op `{other}` (expected {NOTIFIER_OPS})"),
            ))
        }
    })
}
