//! The `.ops` text format: programs as people read, write and minimize them.
//!
//! ```text
//! # mnfuzz notifier program, 4 steps
//! config target=notifier threads=2 initial_seq=0x2 task_size=0xffffffffffffffff
//! t0 insert i3 0x1000 +0x2000 refuse-nb no-seq:unmap
//! t1 start unmap 0x0..0x4000 nonblock owner=2
//! t0 read_begin i3
//! t1 end
//! ```
//!
//! `#` starts a comment, blank lines are ignored. The first line is the
//! `config` line (every key optional, defaults from
//! [`ProgramConfig::default`]); then one step per line, `tN OP OPERANDS`,
//! in schedule order. Numbers are decimal or `0x` hex, with optional `_`
//! separators. [`print()`] writes every key and hex addresses, and
//! `parse(&print(&p)) == Ok(p)` for every valid program.

use std::fmt::{self, Write as _};

use notifier::Event;
use oracles::{CallbackModel, Refuse, SetSeq};

use crate::program::{
    Op, Program, ProgramConfig, Step, Target, CLASSIC_SLOTS, MAX_THREADS, MIN_TASK_SIZE, OWNERS,
    SLOTS,
};

/// Why an `.ops` text is not a program, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

// ---------------------------------------------------------------------------
// Printing.

/// Prints `p` as an `.ops` text: a comment line, the config line with every
/// key, then one line per step.
pub fn print(p: &Program) -> String {
    let c = &p.config;
    let n = p.steps.len();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# mnfuzz {} program, {} step{}",
        c.target.name(),
        n,
        if n == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        s,
        "config target={} threads={} initial_seq={:#x} task_size={:#x}",
        c.target.name(),
        c.threads,
        c.initial_seq,
        c.task_size
    );
    for step in &p.steps {
        s.push_str(&format_step(step));
        s.push('\n');
    }
    s
}

/// One step as its `.ops` line, without the newline: `t1 start unmap 0x0..0x4000`.
pub fn format_step(step: &Step) -> String {
    let mut s = format!("t{} {}", step.thread, step.op.keyword());
    // Writing to a String cannot fail.
    let _ = write_operands(&mut s, &step.op);
    s
}

fn write_operands(s: &mut String, op: &Op) -> fmt::Result {
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
                SetSeq::Always => Ok(()),
                SetSeq::Never => write!(s, " no-seq"),
                SetSeq::SkipFor(e) => write!(s, " no-seq:{}", e.name()),
            }
        }
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
        Op::End | Op::Release | Op::Commit | Op::CheckRetry => Ok(()),
        Op::Register { slot, refuse } => {
            write!(s, " c{slot}")?;
            write_refuse(s, refuse)
        }
        Op::Unregister { slot } => write!(s, " c{slot}"),
    }
}

fn write_refuse(s: &mut String, refuse: Refuse) -> fmt::Result {
    match refuse {
        Refuse::Never => Ok(()),
        Refuse::NonBlockable => write!(s, " refuse-nb"),
        Refuse::Always => write!(s, " refuse"),
    }
}

// ---------------------------------------------------------------------------
// Parsing.

/// A whitespace-separated word and its 1-based column.
#[derive(Clone, Copy, Debug)]
struct Tok<'s> {
    text: &'s str,
    col: usize,
}

impl<'s> Tok<'s> {
    /// The part of the token after its first `n` bytes, with its column.
    fn rest(self, n: usize) -> Tok<'s> {
        Tok {
            text: &self.text[n..],
            col: self.col + self.text[..n].chars().count(),
        }
    }
}

/// The words of one line, without its comment.
fn tokenize(line: &str) -> Vec<Tok<'_>> {
    let line = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    let mut toks = Vec::new();
    let mut start: Option<(usize, usize)> = None;
    let mut col = 0;
    for (i, ch) in line.char_indices() {
        col += 1;
        match (ch.is_whitespace(), start) {
            (false, None) => start = Some((i, col)),
            (true, Some((b, c))) => {
                toks.push(Tok {
                    text: &line[b..i],
                    col: c,
                });
                start = None;
            }
            _ => {}
        }
    }
    if let Some((b, c)) = start {
        toks.push(Tok {
            text: &line[b..],
            col: c,
        });
    }
    toks
}

/// The tokens of one line, consumed left to right.
struct Line<'s> {
    line: usize,
    toks: Vec<Tok<'s>>,
    pos: usize,
}

impl<'s> Line<'s> {
    fn err(&self, col: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            column: col,
            message: message.into(),
        }
    }

    fn at(&self, tok: Tok<'_>, message: impl Into<String>) -> ParseError {
        self.err(tok.col, message)
    }

    /// The column just past the last token.
    fn end_col(&self) -> usize {
        self.toks
            .last()
            .map_or(1, |t| t.col + t.text.chars().count())
    }

    fn peek(&self) -> Option<Tok<'s>> {
        self.toks.get(self.pos).copied()
    }

    /// The next token; `what` names it when the line ends too soon.
    fn next(&mut self, what: &str) -> Result<Tok<'s>, ParseError> {
        match self.peek() {
            Some(t) => {
                self.pos += 1;
                Ok(t)
            }
            None => Err(self.err(self.end_col(), format!("missing {what}"))),
        }
    }

    /// Fails on anything left on the line.
    fn finish(&self) -> Result<(), ParseError> {
        match self.peek() {
            Some(t) => Err(self.at(t, format!("unexpected `{}`", t.text))),
            None => Ok(()),
        }
    }

    fn num(&self, tok: Tok<'_>, what: &str) -> Result<u64, ParseError> {
        parse_num(tok.text).map_err(|m| self.at(tok, format!("{what}: {m}")))
    }

    /// `iN` or `cN` below `limit`.
    fn slot(&mut self, prefix: char, limit: u8, what: &str) -> Result<u8, ParseError> {
        let tok = self.next(&format!("{what} `{prefix}N`"))?;
        let Some(digits) = tok.text.strip_prefix(prefix) else {
            return Err(self.at(
                tok,
                format!("expected {what} `{prefix}N`, found `{}`", tok.text),
            ));
        };
        let n = self.num(tok.rest(1), what)?;
        if n >= u64::from(limit) {
            return Err(self.at(
                tok,
                format!(
                    "{what} {prefix}{digits} out of range ({prefix}0..{prefix}{})",
                    limit - 1
                ),
            ));
        }
        Ok(n as u8)
    }

    fn event(&self, tok: Tok<'_>) -> Result<Event, ParseError> {
        Event::from_name(tok.text).ok_or_else(|| {
            let names: Vec<_> = Event::ALL.iter().map(|e| e.name()).collect();
            self.at(
                tok,
                format!(
                    "unknown event `{}` (expected one of {})",
                    tok.text,
                    names.join(", ")
                ),
            )
        })
    }

    /// The optional `refuse` or `refuse-nb` word of a callback.
    fn refuse_word(tok: Tok<'_>) -> Option<Refuse> {
        match tok.text {
            "refuse" => Some(Refuse::Always),
            "refuse-nb" => Some(Refuse::NonBlockable),
            _ => None,
        }
    }
}

/// Parses a decimal or `0x` hex number, `_` separators allowed.
fn parse_num(s: &str) -> Result<u64, String> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    let bad = || format!("bad number `{s}`");
    if !s.starts_with(|c: char| c.is_ascii_digit()) || !digits.contains(|c| c != '_') {
        return Err(bad());
    }
    let mut v: u64 = 0;
    for ch in digits.chars().filter(|&c| c != '_') {
        let d = ch.to_digit(radix).ok_or_else(bad)?;
        v = v
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or_else(|| format!("number `{s}` does not fit in 64 bits"))?;
    }
    Ok(v)
}

fn parse_config(l: &mut Line<'_>) -> Result<ProgramConfig, ParseError> {
    let first = l.next("config")?;
    if first.text != "config" {
        return Err(l.at(
            first,
            format!("expected the `config` line first, found `{}`", first.text),
        ));
    }
    let mut c = ProgramConfig::default();
    let mut seen: Vec<&str> = Vec::new();
    while let Some(tok) = l.peek() {
        l.pos += 1;
        let Some(eq) = tok.text.find('=') else {
            return Err(l.at(tok, format!("expected KEY=VALUE, found `{}`", tok.text)));
        };
        let key = &tok.text[..eq];
        let val = tok.rest(eq + 1);
        if seen.contains(&key) {
            return Err(l.at(tok, format!("duplicate key `{key}`")));
        }
        match key {
            "target" => {
                c.target = Target::from_name(val.text).ok_or_else(|| {
                    let names: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
                    l.at(
                        val,
                        format!(
                            "unknown target `{}` (expected one of {})",
                            val.text,
                            names.join(", ")
                        ),
                    )
                })?;
            }
            "threads" => {
                let n = l.num(val, "threads")?;
                if !(1..=u64::from(MAX_THREADS)).contains(&n) {
                    return Err(l.at(val, format!("threads must be 1..={MAX_THREADS}")));
                }
                c.threads = n as u8;
            }
            "initial_seq" => {
                c.initial_seq = l.num(val, "initial_seq")?;
                if c.initial_seq & 1 == 1 {
                    return Err(l.at(val, "initial_seq must be even"));
                }
            }
            "task_size" => {
                c.task_size = l.num(val, "task_size")?;
                if c.task_size < MIN_TASK_SIZE {
                    return Err(l.at(
                        val,
                        format!("task_size must be at least {MIN_TASK_SIZE:#x}"),
                    ));
                }
            }
            _ => {
                return Err(l.at(
                    tok,
                    format!(
                        "unknown key `{key}` (expected target, threads, initial_seq or task_size)"
                    ),
                ))
            }
        }
        seen.push(key);
    }
    // Whatever else the program module demands of a config.
    c.validate().map_err(|m| l.err(1, m))?;
    Ok(c)
}

fn parse_step(l: &mut Line<'_>, c: &ProgramConfig) -> Result<Step, ParseError> {
    let tok = l.next("thread")?;
    if tok.text == "config" {
        return Err(l.at(tok, "duplicate config line"));
    }
    let Some(digits) = tok.text.strip_prefix('t') else {
        return Err(l.at(tok, format!("expected thread `tN`, found `{}`", tok.text)));
    };
    let thread = l.num(tok.rest(1), "thread")?;
    if thread >= u64::from(c.threads) {
        return Err(l.at(
            tok,
            format!("thread t{digits} out of range (threads={})", c.threads),
        ));
    }
    let thread = thread as u8;
    let kw = l.next("op")?;
    let op = match kw.text {
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
            while let Some(w) = l.peek() {
                l.pos += 1;
                if let Some(r) = Line::refuse_word(w) {
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
                            "unexpected `{}` (callback words: refuse, refuse-nb, no-seq, no-seq:EVENT)",
                            w.text
                        ),
                    ));
                }
            }
            Op::Insert {
                slot,
                start,
                len,
                cb,
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
                format!(
                    "unknown op `{other}` (expected insert, remove, start, end, read_begin, \
                     commit, check_retry, release, register or unregister)"
                ),
            ))
        }
    };
    l.finish()?;
    Ok(Step { thread, op })
}

/// Where `Program::validate` objects to `p`: the config line or the line
/// of the first offending step. `lines[i]` is step `i`'s line.
fn locate_invalid(p: &Program, config_line: usize, lines: &[usize]) -> Result<(), ParseError> {
    let Err(message) = p.validate() else {
        return Ok(());
    };
    let line = if p.config.validate().is_err() {
        config_line
    } else {
        p.steps
            .iter()
            .position(|s| {
                Program {
                    config: p.config,
                    steps: vec![*s],
                }
                .validate()
                .is_err()
            })
            .map_or(config_line, |i| lines[i])
    };
    Err(ParseError {
        line,
        column: 1,
        message,
    })
}

/// Parses an `.ops` text into a valid program.
pub fn parse(s: &str) -> Result<Program, ParseError> {
    let mut config: Option<(ProgramConfig, usize)> = None;
    let mut steps = Vec::new();
    let mut lines = Vec::new();
    for (i, text) in s.lines().enumerate() {
        let mut l = Line {
            line: i + 1,
            toks: tokenize(text),
            pos: 0,
        };
        if l.toks.is_empty() {
            continue;
        }
        match &config {
            None => config = Some((parse_config(&mut l)?, l.line)),
            Some((c, _)) => {
                steps.push(parse_step(&mut l, c)?);
                lines.push(l.line);
            }
        }
    }
    let Some((config, config_line)) = config else {
        return Err(ParseError {
            line: s.lines().count().max(1),
            column: 1,
            message: "missing the `config` line".into(),
        });
    };
    let p = Program { config, steps };
    locate_invalid(&p, config_line, &lines)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, tests::arb_program};
    use crate::program::PAGE;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn decoded_programs_roundtrip(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let p = decode(&bytes);
            let text = print(&p);
            prop_assert_eq!(parse(&text), Ok(p), "{}", text);
        }

        #[test]
        fn valid_programs_roundtrip(p in arb_program()) {
            let text = print(&p);
            prop_assert_eq!(parse(&text), Ok(p), "{}", text);
        }

        #[test]
        fn comments_and_blank_lines_change_nothing(p in arb_program(), seed in any::<u64>()) {
            let text = print(&p);
            let mut noisy = String::from("\n   \n# leading comment\n");
            let mut x = seed | 1;
            for line in text.lines() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x % 5 {
                    0 => noisy.push_str("\n\t\n"),
                    1 => noisy.push_str("   # indented comment t0 end\n"),
                    2 => noisy.push_str("#\n"),
                    _ => {}
                }
                if x % 3 == 0 {
                    noisy.push_str(&format!("  {line}   # trailing t9 bogus\r\n"));
                } else {
                    noisy.push_str(&format!("{line}\n"));
                }
            }
            noisy.push_str("# the end");
            prop_assert_eq!(parse(&noisy), Ok(p), "{}", noisy);
        }

        #[test]
        fn parse_never_panics(s in "[ -~\n]{0,200}") {
            let _ = parse(&s);
            let _ = parse(&format!("config\n{s}"));
        }
    }

    fn golden_program() -> Program {
        Program {
            config: ProgramConfig {
                target: Target::Notifier,
                threads: 3,
                initial_seq: u64::MAX - 3,
                task_size: 1 << 47,
            },
            steps: vec![
                Step {
                    thread: 0,
                    op: Op::Insert {
                        slot: 3,
                        start: 0x1000,
                        len: 0x2000,
                        cb: CallbackModel::GOOD,
                    },
                },
                Step {
                    thread: 0,
                    op: Op::Insert {
                        slot: 2,
                        start: 0x3fff,
                        len: u64::MAX,
                        cb: CallbackModel {
                            refuse: Refuse::NonBlockable,
                            set_seq: SetSeq::SkipFor(Event::ProtectionVma),
                        },
                    },
                },
                Step {
                    thread: 1,
                    op: Op::Start {
                        event: Event::Migrate,
                        start: 0,
                        end: 0x4000,
                        blockable: false,
                        owner: Some(2),
                    },
                },
                Step {
                    thread: 2,
                    op: Op::Register {
                        slot: 1,
                        refuse: Refuse::Always,
                    },
                },
                Step {
                    thread: 0,
                    op: Op::ReadBegin { slot: 3 },
                },
                Step {
                    thread: 1,
                    op: Op::End,
                },
                Step {
                    thread: 0,
                    op: Op::CheckRetry,
                },
                Step {
                    thread: 0,
                    op: Op::Commit,
                },
                Step {
                    thread: 0,
                    op: Op::Remove { slot: 2 },
                },
                Step {
                    thread: 2,
                    op: Op::Unregister { slot: 1 },
                },
                Step {
                    thread: 1,
                    op: Op::Insert {
                        slot: 0,
                        start: 0,
                        len: 1,
                        cb: CallbackModel {
                            refuse: Refuse::Always,
                            set_seq: SetSeq::Never,
                        },
                    },
                },
                Step {
                    thread: 2,
                    op: Op::Release,
                },
            ],
        }
    }

    const GOLDEN: &str = "\
# mnfuzz notifier program, 12 steps
config target=notifier threads=3 initial_seq=0xfffffffffffffffc task_size=0x800000000000
t0 insert i3 0x1000 +0x2000
t0 insert i2 0x3fff +0xffffffffffffffff refuse-nb no-seq:protection_vma
t1 start migrate 0x0..0x4000 nonblock owner=2
t2 register c1 refuse
t0 read_begin i3
t1 end
t0 check_retry
t0 commit
t0 remove i2
t2 unregister c1
t1 insert i0 0x0 +0x1 refuse no-seq
t2 release
";

    #[test]
    fn golden() {
        assert_eq!(print(&golden_program()), GOLDEN);
        assert_eq!(parse(GOLDEN), Ok(golden_program()));
    }

    #[test]
    fn header_counts_steps() {
        let mut p = Program::default();
        assert!(print(&p).starts_with("# mnfuzz notifier program, 0 steps\n"));
        p.steps.push(Step {
            thread: 0,
            op: Op::End,
        });
        assert_eq!(
            print(&p),
            "# mnfuzz notifier program, 1 step\n\
             config target=notifier threads=2 initial_seq=0x2 task_size=0xffffffffffffffff\n\
             t0 end\n"
        );
    }

    #[test]
    fn hand_written_forms() {
        let text = "config task_size=0x1_0000_0000 threads=0x4 target=notifier initial_seq=1_000\n\
                    t3 insert i3 4096 +16_384 no-seq refuse-nb\n\
                    t0 start unmap 0X10..0x0 owner=0 nonblock\n\
                    t1 register c3 refuse-nb\n\
                    t2 register c0\n";
        let p = parse(text).unwrap();
        assert_eq!(
            p.config,
            ProgramConfig {
                target: Target::Notifier,
                threads: 4,
                initial_seq: 1000,
                task_size: 1 << 32,
            }
        );
        assert_eq!(
            p.steps,
            vec![
                Step {
                    thread: 3,
                    op: Op::Insert {
                        slot: 3,
                        start: PAGE,
                        len: 4 * PAGE,
                        cb: CallbackModel {
                            refuse: Refuse::NonBlockable,
                            set_seq: SetSeq::Never,
                        },
                    },
                },
                Step {
                    thread: 0,
                    op: Op::Start {
                        event: Event::Unmap,
                        start: 0x10,
                        end: 0,
                        blockable: false,
                        owner: Some(0),
                    },
                },
                Step {
                    thread: 1,
                    op: Op::Register {
                        slot: 3,
                        refuse: Refuse::NonBlockable,
                    },
                },
                Step {
                    thread: 2,
                    op: Op::Register {
                        slot: 0,
                        refuse: Refuse::Never,
                    },
                },
            ]
        );
        // Every key is optional.
        assert_eq!(parse("config"), Ok(Program::default()));
        assert_eq!(
            parse("  config  # nothing else\n\n"),
            Ok(Program::default())
        );
    }

    /// `(line, column)` of the error `text` gives, and its message.
    fn err(text: &str) -> (usize, usize, String) {
        let e = parse(text).expect_err(text);
        assert_eq!(
            e.to_string(),
            format!("line {}, column {}: {}", e.line, e.column, e.message)
        );
        (e.line, e.column, e.message)
    }

    #[track_caller]
    fn check(text: &str, line: usize, column: usize, needle: &str) {
        let (l, c, m) = err(text);
        assert_eq!((l, c), (line, column), "{text:?}: {m}");
        assert!(m.contains(needle), "{text:?}: {m:?} lacks {needle:?}");
    }

    #[test]
    fn errors_point_at_the_token() {
        let h = "# header\nconfig threads=2\n\n";
        // Unknown op.
        check(
            &format!("{h}t0 frobnicate i1"),
            4,
            4,
            "unknown op `frobnicate`",
        );
        // Missing operands: the column just past the line's last token.
        check(&format!("{h}t0 remove"), 4, 10, "missing interval slot");
        check(&format!("{h}t0 insert i1 0x1000"), 4, 20, "missing length");
        check(
            &format!("{h}t1 start   # unmap 0..1"),
            4,
            9,
            "missing event",
        );
        check(&format!("{h}t1"), 4, 3, "missing op");
        // Bad numbers.
        check(
            &format!("{h}t0 insert i1 0x1g000 +0x1000"),
            4,
            14,
            "bad number `0x1g000`",
        );
        check(
            &format!("{h}t0 insert i1 0x1000 +0x"),
            4,
            22,
            "bad number `0x`",
        );
        check(
            &format!("{h}t0 insert i1 0x1000 0x1000"),
            4,
            21,
            "expected length `+LEN`",
        );
        check(
            &format!("{h}t0 insert i1 0x1_0000_0000_0000_0000 +1"),
            4,
            14,
            "does not fit",
        );
        check(&format!("{h}t0 remove i_1"), 4, 12, "bad number");
        // Unknown events, in start and in no-seq.
        check(
            &format!("{h}t0 start unmapp 0x0..0x1000"),
            4,
            10,
            "unknown event `unmapp`",
        );
        check(
            &format!("{h}t0 insert i1 0 +1 no-seq:bogus"),
            4,
            26,
            "unknown event `bogus`",
        );
        // Ranges.
        check(
            &format!("{h}t0 start unmap 0x0-0x1000"),
            4,
            16,
            "expected range",
        );
        check(
            &format!("{h}t0 start unmap 0x0..0xzz"),
            4,
            21,
            "range end: bad number",
        );
        check(
            &format!("{h}t0 start unmap ..0x10"),
            4,
            16,
            "range start: bad number",
        );
        // Config keys and values.
        check("config thread=2", 1, 8, "unknown key `thread`");
        check(
            "config threads=2 threads=3",
            1,
            18,
            "duplicate key `threads`",
        );
        check("config threads", 1, 8, "expected KEY=VALUE");
        check("config target=kernel", 1, 15, "unknown target `kernel`");
        check("\n config initial_seq=3", 2, 21, "initial_seq must be even");
        check("config threads=5", 1, 16, "threads must be 1..=4");
        check("config threads=0", 1, 16, "threads must be 1..=4");
        check(
            "config task_size=0x1000",
            1,
            18,
            "task_size must be at least",
        );
        check("t0 end\nconfig", 1, 1, "expected the `config` line first");
        check("# nothing\n\n", 2, 1, "missing the `config` line");
        check("config\nconfig", 2, 1, "duplicate config line");
        // Trailing garbage.
        check(&format!("{h}t1 end now"), 4, 8, "unexpected `now`");
        check(
            &format!("{h}t1 remove i1 i2 # comment"),
            4,
            14,
            "unexpected `i2`",
        );
        check(
            &format!("{h}t1 register c1 refuse x"),
            4,
            23,
            "unexpected `x`",
        );
        check(
            &format!("{h}t1 start clear 0..1 nonblock nonblock"),
            4,
            30,
            "duplicate",
        );
        check(
            &format!("{h}t1 insert i0 0 +1 refuse refuse-nb"),
            4,
            26,
            "duplicate",
        );
        check(
            &format!("{h}t1 insert i0 0 +1 sometimes"),
            4,
            19,
            "unexpected `sometimes`",
        );
        // Operands out of range.
        check(&format!("{h}t2 end"), 4, 1, "thread t2 out of range");
        check(&format!("{h}x0 end"), 4, 1, "expected thread");
        check(
            &format!("{h}t0 remove i8"),
            4,
            11,
            "interval slot i8 out of range",
        );
        check(&format!("{h}t0 remove c1"), 4, 11, "expected interval slot");
        check(
            &format!("{h}t0 unregister c4"),
            4,
            15,
            "classic slot c4 out of range",
        );
        check(
            &format!("{h}t0 start exclusive 0..1 owner=4"),
            4,
            31,
            "owner 4 out of range",
        );
        check(
            &format!("{h}t0 start exclusive 0..1 owner=-1"),
            4,
            31,
            "owner: bad number",
        );
    }

    #[test]
    fn non_ascii_columns_count_characters() {
        check(
            "config   # é\nt0 start ünmap 0..1",
            2,
            10,
            "unknown event `ünmap`",
        );
        // U+00A0 and U+2003 are whitespace of two and three bytes.
        check("config\nt0\u{a0}end\u{2003}x", 2, 8, "unexpected `x`");
        check("config\nt0\u{a0}remove", 2, 10, "missing interval slot");
    }

    #[test]
    fn validation_errors_name_the_offending_line() {
        // The parser already rejects these with columns; the safety net that
        // runs `Program::validate` must still name the right line.
        let p = Program {
            config: ProgramConfig::default(),
            steps: vec![
                Step {
                    thread: 0,
                    op: Op::End,
                },
                Step {
                    thread: 1,
                    op: Op::Remove { slot: 9 },
                },
                Step {
                    thread: 5,
                    op: Op::End,
                },
            ],
        };
        let e = locate_invalid(&p, 2, &[3, 7, 9]).unwrap_err();
        assert_eq!((e.line, e.column), (7, 1));
        assert_eq!(e.message, p.validate().unwrap_err());
        let bad_config = Program {
            config: ProgramConfig {
                initial_seq: 1,
                ..ProgramConfig::default()
            },
            steps: p.steps.clone(),
        };
        let e = locate_invalid(&bad_config, 2, &[3, 7, 9]).unwrap_err();
        assert_eq!((e.line, e.column), (2, 1));
        assert_eq!(locate_invalid(&Program::default(), 1, &[]), Ok(()));
    }
}
