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
//! A mirror program drives address spaces `m0`, `m1` and devices `d0`,
//! `d1`; its config names the devices opened on `m0` before the first step:
//!
//! ```text
//! # mnfuzz mirror program, 5 steps
//! config target=mirror threads=2 initial_seq=0x2 task_size=0xffffffffffffffff devices=fullva,perfault
//! t0 m0 mmap 0x1000 +0x2000 anon
//! t0 m0 write 0x1000 7
//! t1 d0 read 0x1000
//! t0 m0 mprotect 0x1000 +0x1000 ro
//! t1 d1 open m1 perfault
//! ```
//!
//! Address space ops: `mmap A +LEN anon|shared|file:F [ro|none]` (`rw`
//! unless one is given), `munmap A +LEN`, `mprotect A +LEN none|ro|rw`,
//! `mremap A +OLD +NEW [to B] [dontunmap]`, `dontneed A +LEN`, `fork`,
//! `read A`, `write A V`, `reclaim A`, `migrate A`, `ksm A B`,
//! `collapse A`, `split A`, `clear_refs`, `oom_reap`, `exit`. Device ops:
//! `open mM STRATEGY`, `read A`, `write A V`, `snapshot A +LEN`,
//! `migrate A +LEN` (to device-private memory), `exclusive A +LEN`,
//! `evict A +LEN` (device-private pages back to system memory),
//! `register A +LEN`, `unregister A`, `work` (one item of deferred work),
//! `attr A +LEN` (set attributes: registers the range with a strategy that
//! has attributes; EINVAL for the others).
//! A strategy is `fullva`, `perfault`, `odp:SIZE` (a power of two from
//! `16k` to `1g`), `vma`, `regcache`, `kfd` or `kfd-noxnack`; `devices=` lists up to two
//! strategies or `none` (missing ones are `none`).
//!
//! Expectations (`tN expect ...`, mirror target) assert what thread N's
//! last finished op answered: `ok` (it succeeded), `skipped`, a value `V`
//! (what a read returned or a write stored, where an mmap or mremap
//! mapped), `error` or `error:KIND` (`einval`, `efault`, `eperm`,
//! `exited`, `enoent`, `notifier`, `eagain`), `pages=N` (what a migrate, evict,
//! exclusive or register reported) or `[STATE*COUNT ...]` (a snapshot's
//! page states, run-length encoded: at most 8 runs and 512 pages, `*1`
//! left out). `tN expect dD faults=N` asserts device D's fault count.
//!
//! `#` starts a comment, blank lines are ignored. The first line is the
//! `config` line (every key optional, defaults from
//! [`ProgramConfig::default`]); then one step per line, `tN OP OPERANDS`,
//! in schedule order. Numbers are decimal or `0x` hex, with optional `_`
//! separators. [`print()`] writes every key (`devices` for the mirror
//! target only), hex addresses and lengths, written values in decimal below
//! 256 and in hex above, and `parse(&print(&p)) == Ok(p)` for every valid
//! program.

use std::fmt::{self, Write as _};

use notifier::Event;
use oracles::Refuse;

use crate::mirror::text::{
    devices_text, parse_dev, parse_devices, parse_expect, parse_mm, write_dev, write_mm,
};
pub use crate::mirror::text::{expect_text, states_text};
use crate::notifier::text::{parse_notifier_op, write_operands, NOTIFIER_KEYWORDS};
use crate::program::{
    Op, Program, ProgramConfig, Step, StrategySpec, Target, DEVICES, MAX_THREADS, MIN_TASK_SIZE,
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
    let _ = write!(
        s,
        "config target={} threads={} initial_seq={:#x} task_size={:#x}",
        c.target.name(),
        c.threads,
        c.initial_seq,
        c.task_size
    );
    if c.target == Target::Mirror || (c.target == Target::Threads && c.has_devices()) {
        let _ = write!(s, " devices={}", devices_text(&c.devices));
    }
    if c.kernel_compat {
        s.push_str(" kernel_compat=1");
    }
    if c.target == Target::Threads {
        let _ = write!(s, " schedule={:#x}", c.schedule);
    }
    s.push('\n');
    for step in &p.steps {
        s.push_str(&format_step(step));
        s.push('\n');
    }
    s
}

/// Prints `p` like [`print()`], with `notes[i]` as a comment beside step
/// `i`, the comments aligned. What follows `#` is ignored when parsing.
pub fn print_with_notes(p: &Program, notes: &[String]) -> String {
    let plain = print(p);
    let mut lines: Vec<&str> = plain.lines().collect();
    let steps = lines.split_off(lines.len() - p.steps.len());
    let width = steps.iter().map(|l| l.len()).max().unwrap_or(0).min(48);
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    for (i, l) in steps.iter().enumerate() {
        match notes.get(i).filter(|n| !n.is_empty()) {
            Some(n) => {
                let _ = writeln!(s, "{l:<width$}  # {}", n.replace('\n', " "));
            }
            None => {
                let _ = writeln!(s, "{l}");
            }
        }
    }
    s
}

/// One step as its `.ops` line, without the newline: `t1 start unmap 0x0..0x4000`,
/// `t0 m0 mmap 0x1000 +0x2000 anon`, `t1 d0 read 0x1000`.
pub fn format_step(step: &Step) -> String {
    let mut s = format!("t{}", step.thread);
    // Writing to a String cannot fail.
    let _ = match step.op {
        Op::Mm { mm, op } => write_mm(&mut s, mm, op),
        Op::Dev { dev, op } => write_dev(&mut s, dev, op),
        Op::Expect(e) => write!(s, " expect {}", expect_text(&e)),
        op => {
            s.push(' ');
            s.push_str(op.keyword());
            write_operands(&mut s, &op)
        }
    };
    s
}

// ---------------------------------------------------------------------------
// Parsing.

/// A whitespace-separated word and its 1-based column.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tok<'s> {
    pub(crate) text: &'s str,
    pub(crate) col: usize,
}

impl<'s> Tok<'s> {
    /// The part of the token after its first `n` bytes, with its column.
    pub(crate) fn rest(self, n: usize) -> Tok<'s> {
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
pub(crate) struct Line<'s> {
    pub(crate) line: usize,
    pub(crate) toks: Vec<Tok<'s>>,
    pub(crate) pos: usize,
}

impl<'s> Line<'s> {
    pub(crate) fn err(&self, col: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            column: col,
            message: message.into(),
        }
    }

    pub(crate) fn at(&self, tok: Tok<'_>, message: impl Into<String>) -> ParseError {
        self.err(tok.col, message)
    }

    /// The column just past the last token.
    pub(crate) fn end_col(&self) -> usize {
        self.toks
            .last()
            .map_or(1, |t| t.col + t.text.chars().count())
    }

    pub(crate) fn peek(&self) -> Option<Tok<'s>> {
        self.toks.get(self.pos).copied()
    }

    /// The next token; `what` names it when the line ends too soon.
    pub(crate) fn next(&mut self, what: &str) -> Result<Tok<'s>, ParseError> {
        match self.peek() {
            Some(t) => {
                self.pos += 1;
                Ok(t)
            }
            None => Err(self.err(self.end_col(), format!("missing {what}"))),
        }
    }

    /// Fails on anything left on the line.
    pub(crate) fn finish(&self) -> Result<(), ParseError> {
        match self.peek() {
            Some(t) => Err(self.at(t, format!("unexpected `{}`", t.text))),
            None => Ok(()),
        }
    }

    pub(crate) fn num(&self, tok: Tok<'_>, what: &str) -> Result<u64, ParseError> {
        parse_num(tok.text).map_err(|m| self.at(tok, format!("{what}: {m}")))
    }

    /// `iN`, `cN`, `mN` or `dN` below `limit`.
    pub(crate) fn slot(&mut self, prefix: char, limit: u8, what: &str) -> Result<u8, ParseError> {
        let tok = self.next(&format!("{what} `{prefix}N`"))?;
        self.slot_tok(tok, prefix, limit, what)
    }

    /// [`Line::slot`] of a token already taken.
    pub(crate) fn slot_tok(
        &self,
        tok: Tok<'_>,
        prefix: char,
        limit: u8,
        what: &str,
    ) -> Result<u8, ParseError> {
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

    /// A number operand: `what` names it when it is missing or bad.
    pub(crate) fn number(&mut self, what: &str) -> Result<u64, ParseError> {
        let tok = self.next(what)?;
        self.num(tok, what)
    }

    /// A `+N` operand; `form` is how the message spells it (`+LEN`).
    pub(crate) fn plus(&mut self, what: &str, form: &str) -> Result<u64, ParseError> {
        let tok = self.next(&format!("{what} `{form}`"))?;
        if !tok.text.starts_with('+') {
            return Err(self.at(
                tok,
                format!("expected {what} `{form}`, found `{}`", tok.text),
            ));
        }
        self.num(tok.rest(1), what)
    }

    /// Takes the next token if it is `word`.
    pub(crate) fn word(&mut self, word: &str) -> bool {
        let found = self.peek().is_some_and(|t| t.text == word);
        if found {
            self.pos += 1;
        }
        found
    }

    /// A device strategy; `more` extends the list of names in the message.
    pub(crate) fn strategy(
        &self,
        tok: Tok<'_>,
        more: Option<&str>,
    ) -> Result<StrategySpec, ParseError> {
        StrategySpec::from_name(tok.text).ok_or_else(|| {
            // Names and sizes as the strategy registry has them.
            let kinds = mirror::strategy::kinds();
            let mut names: Vec<String> = kinds
                .iter()
                .map(|k| match k.param {
                    Some(_) => format!("{}:SIZE", k.name),
                    None => k.name.to_string(),
                })
                .collect();
            names.extend(more.map(str::to_string));
            let last = names.pop().unwrap_or_default();
            // One sentence per range of sizes, with each kind's default.
            let mut ranges: Vec<((u8, u8), Vec<String>)> = Vec::new();
            for k in &kinds {
                let Some(p) = k.param else { continue };
                let eg = format!("{}:{}", k.name, mirror::strategy::size_name(p.default));
                match ranges.iter_mut().find(|(r, _)| *r == (p.min, p.max)) {
                    Some((_, egs)) => egs.push(eg),
                    None => ranges.push(((p.min, p.max), vec![eg])),
                }
            }
            let sizes: Vec<String> = ranges
                .iter()
                .map(|((min, max), egs)| {
                    format!(
                        "SIZE is a power of two from {} to {}, e.g. {}",
                        mirror::strategy::size_name(*min),
                        mirror::strategy::size_name(*max),
                        egs.join(", "),
                    )
                })
                .collect();
            self.at(
                tok,
                format!(
                    "unknown strategy `{}` (expected {} or {last}; {})",
                    tok.text,
                    names.join(", "),
                    sizes.join("; "),
                ),
            )
        })
    }

    pub(crate) fn event(&self, tok: Tok<'_>) -> Result<Event, ParseError> {
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
    pub(crate) fn refuse_word(tok: Tok<'_>) -> Option<Refuse> {
        match tok.text {
            "refuse" => Some(Refuse::Always),
            "refuse-nb" => Some(Refuse::NonBlockable),
            _ => None,
        }
    }
}

/// Parses a decimal or `0x` hex number, `_` separators allowed.
pub(crate) fn parse_num(s: &str) -> Result<u64, String> {
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
    let mut devices_tok = None;
    let mut compat_tok = None;
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
            "devices" => {
                c.devices = parse_devices(l, val)?;
                devices_tok = Some(tok);
            }
            "kernel_compat" => {
                c.kernel_compat = match val.text {
                    "0" => false,
                    "1" => true,
                    _ => return Err(l.at(val, "kernel_compat must be 0 or 1")),
                };
                compat_tok = Some(tok);
            }
            "schedule" => c.schedule = l.num(val, "schedule")?,
            _ => {
                return Err(l.at(
                    tok,
                    format!(
                        "unknown key `{key}` (expected target, threads, initial_seq, \
                         task_size, devices, kernel_compat or schedule)"
                    ),
                ))
            }
        }
        seen.push(key);
    }
    // A linux program's thread count and task_size are fixed: the keys
    // may be left out.
    if c.target.real() {
        if !seen.contains(&"threads") {
            c.threads = 1;
        }
        if !seen.contains(&"task_size") {
            c.task_size = crate::program::real_task_size(c.target);
        }
    }
    // Whatever else the program module demands of a config: devices of a
    // notifier program are the `devices` key's fault.
    c.validate().map_err(|m| {
        let col = match (devices_tok, compat_tok) {
            (Some(t), _) if c.target != Target::Mirror && c.devices != [None; DEVICES as usize] => {
                t.col
            }
            (_, Some(t)) if c.target != Target::Notifier && c.kernel_compat => t.col,
            _ => 1,
        };
        l.err(col, m)
    })?;
    Ok(c)
}

/// Whether `tok` is a slot `mN`/`dN` (a digit follows the prefix).
pub(crate) fn is_slot(tok: Tok<'_>, prefix: char) -> bool {
    tok.text
        .strip_prefix(prefix)
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

/// What a mirror step looks like.
const MIRROR_OPS: &str =
    "mirror steps are `tN mM OP ...`, `tN dN OP ...`, `tN step` or `tN expect ...`";

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
    let mirror = is_slot(kw, 'm') || is_slot(kw, 'd');
    // A threads program with devices speaks the mirror ops.
    let target = if c.speaks_mm() && c.target == Target::Threads {
        Target::Mirror
    } else {
        c.target
    };
    let op = match (target, mirror) {
        (Target::Mirror | Target::Linux | Target::Kvm, false) if kw.text == "step" => Op::Yield,
        (Target::Mirror | Target::Linux | Target::Kvm, false) if kw.text == "expect" => {
            Op::Expect(parse_expect(l)?)
        }
        (Target::Mirror | Target::Linux | Target::Kvm, true) if is_slot(kw, 'm') => {
            parse_mm(l, kw)?
        }
        (Target::Mirror | Target::Linux | Target::Kvm, true) => parse_dev(l, kw)?,
        (Target::Mirror | Target::Linux | Target::Kvm, false) => {
            let what = if NOTIFIER_KEYWORDS.contains(&kw.text) {
                format!("`{}` is not an op of the mirror target", kw.text)
            } else {
                format!("unknown op `{}`", kw.text)
            };
            return Err(l.at(kw, format!("{what} ({MIRROR_OPS})")));
        }
        (Target::Notifier | Target::Threads, false) if kw.text == "step" || kw.text == "expect" => {
            return Err(l.at(
                kw,
                format!(
                    "`{}` belongs to the mirror target (this program's target is {})",
                    kw.text,
                    c.target.name()
                ),
            ))
        }
        (Target::Notifier | Target::Threads, true) => {
            return Err(l.at(
                kw,
                format!(
                    "`{}` ops belong to the mirror target (this program's target is {})",
                    kw.text,
                    c.target.name()
                ),
            ))
        }
        (Target::Notifier | Target::Threads, false) => parse_notifier_op(l, kw)?,
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
    use crate::program::{
        DevStep, ErrKind, Expect, MapKind, MmStep, PageState, Prot, MAX_RUNS, PAGE,
    };
    use oracles::{CallbackModel, SetSeq};
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
        fn kvm_programs_roundtrip(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let p = crate::codec::decode_as(Target::Kvm, &bytes);
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
                devices: [None, None],
                kernel_compat: false,
                schedule: 0,
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
                            two_pass: false,
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
                            two_pass: false,
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
                devices: [None, None],
                kernel_compat: false,
                schedule: 0,
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
                            two_pass: false,
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
        check(
            "config kernel_compat=2",
            1,
            22,
            "kernel_compat must be 0 or 1",
        );
        check(
            "config target=mirror devices=fullva kernel_compat=1",
            1,
            37,
            "kernel_compat belongs to the notifier target",
        );
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
            &format!("{h}t1 insert i0 0 +1 two-pass two-pass"),
            4,
            28,
            "duplicate `two-pass`",
        );
        check(
            &format!("{h}t1 insert i0 0 +1 two-pass refuse"),
            4,
            19,
            "nothing to finish",
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

    fn mirror_golden_program() -> Program {
        let (full_va, per_fault) = (StrategySpec::of(0), StrategySpec::of(1));
        let mm = |thread, mm, op| Step {
            thread,
            op: Op::Mm { mm, op },
        };
        let dev = |thread, dev, op| Step {
            thread,
            op: Op::Dev { dev, op },
        };
        Program {
            config: ProgramConfig {
                target: Target::Mirror,
                threads: 2,
                initial_seq: 2,
                task_size: 1 << 47,
                devices: [Some(full_va), None],
                kernel_compat: false,
                schedule: 0,
            },
            steps: vec![
                mm(
                    0,
                    0,
                    MmStep::Mmap {
                        addr: 0x1000,
                        len: 0x2000,
                        kind: MapKind::AnonPrivate,
                        prot: Prot::ReadWrite,
                    },
                ),
                mm(
                    0,
                    0,
                    MmStep::Mmap {
                        addr: 0x8000,
                        len: 0x1000,
                        kind: MapKind::File(1),
                        prot: Prot::Read,
                    },
                ),
                mm(
                    1,
                    0,
                    MmStep::Mmap {
                        addr: 0xa000,
                        len: 0x1000,
                        kind: MapKind::AnonShared,
                        prot: Prot::ReadWrite,
                    },
                ),
                mm(
                    0,
                    0,
                    MmStep::Write {
                        addr: 0x1000,
                        value: 7,
                    },
                ),
                mm(
                    0,
                    0,
                    MmStep::Write {
                        addr: 0x2000,
                        value: 0x100,
                    },
                ),
                dev(1, 0, DevStep::Read { addr: 0x1000 }),
                dev(
                    1,
                    0,
                    DevStep::Write {
                        addr: 0x2000,
                        value: 255,
                    },
                ),
                mm(
                    0,
                    0,
                    MmStep::Mprotect {
                        addr: 0x1000,
                        len: 0x1000,
                        prot: Prot::Read,
                    },
                ),
                mm(
                    0,
                    0,
                    MmStep::Mprotect {
                        addr: 0x1000,
                        len: 0x1000,
                        prot: Prot::ReadWrite,
                    },
                ),
                mm(0, 0, MmStep::Fork),
                dev(
                    1,
                    1,
                    DevStep::Open {
                        mm: 1,
                        strategy: per_fault,
                    },
                ),
                dev(1, 1, DevStep::Read { addr: 0x1000 }),
                mm(
                    0,
                    1,
                    MmStep::Mremap {
                        addr: 0x1000,
                        old_len: 0x1000,
                        new_len: 0x2000,
                        to: Some(0x5000),
                        dontunmap: true,
                    },
                ),
                mm(
                    0,
                    0,
                    MmStep::Mremap {
                        addr: 0x1000,
                        old_len: 0x2000,
                        new_len: 0x1000,
                        to: None,
                        dontunmap: false,
                    },
                ),
                mm(
                    0,
                    0,
                    MmStep::Dontneed {
                        addr: 0x1000,
                        len: 0x1000,
                    },
                ),
                mm(0, 0, MmStep::Reclaim { addr: 0x1000 }),
                mm(0, 0, MmStep::Migrate { addr: 0x2000 }),
                mm(
                    1,
                    0,
                    MmStep::Ksm {
                        a: 0x1000,
                        b: 0x2000,
                    },
                ),
                mm(1, 0, MmStep::Collapse { addr: 0x0 }),
                mm(1, 0, MmStep::Split { addr: 0x0 }),
                dev(
                    1,
                    0,
                    DevStep::Snapshot {
                        addr: 0x0,
                        len: 0x10000,
                    },
                ),
                dev(
                    1,
                    0,
                    DevStep::Migrate {
                        addr: 0x1000,
                        len: 0x2000,
                    },
                ),
                mm(0, 0, MmStep::ClearRefs),
                mm(0, 1, MmStep::OomReap),
                mm(
                    0,
                    0,
                    MmStep::Munmap {
                        addr: 0x0,
                        len: 0x800000000000,
                    },
                ),
                mm(0, 1, MmStep::Exit),
            ],
        }
    }

    const MIRROR_GOLDEN: &str = "\
# mnfuzz mirror program, 26 steps
config target=mirror threads=2 initial_seq=0x2 task_size=0x800000000000 devices=fullva
t0 m0 mmap 0x1000 +0x2000 anon
t0 m0 mmap 0x8000 +0x1000 file:1 ro
t1 m0 mmap 0xa000 +0x1000 shared
t0 m0 write 0x1000 7
t0 m0 write 0x2000 0x100
t1 d0 read 0x1000
t1 d0 write 0x2000 255
t0 m0 mprotect 0x1000 +0x1000 ro
t0 m0 mprotect 0x1000 +0x1000 rw
t0 m0 fork
t1 d1 open m1 perfault
t1 d1 read 0x1000
t0 m1 mremap 0x1000 +0x1000 +0x2000 to 0x5000 dontunmap
t0 m0 mremap 0x1000 +0x2000 +0x1000
t0 m0 dontneed 0x1000 +0x1000
t0 m0 reclaim 0x1000
t0 m0 migrate 0x2000
t1 m0 ksm 0x1000 0x2000
t1 m0 collapse 0x0
t1 m0 split 0x0
t1 d0 snapshot 0x0 +0x10000
t1 d0 migrate 0x1000 +0x2000
t0 m0 clear_refs
t0 m1 oom_reap
t0 m0 munmap 0x0 +0x800000000000
t0 m1 exit
";

    #[test]
    fn mirror_golden() {
        assert_eq!(print(&mirror_golden_program()), MIRROR_GOLDEN);
        assert_eq!(parse(MIRROR_GOLDEN), Ok(mirror_golden_program()));
        // format_step is what traces print.
        let p = mirror_golden_program();
        for (step, line) in p.steps.iter().zip(MIRROR_GOLDEN.lines().skip(2)) {
            assert_eq!(format_step(step), line);
        }
    }

    #[test]
    fn devices_key_forms() {
        let (full_va, per_fault) = (StrategySpec::of(0), StrategySpec::of(1));
        let cases = [
            (
                "devices=fullva,perfault",
                [Some(full_va), Some(per_fault)],
                "fullva,perfault",
            ),
            ("devices=fullva", [Some(full_va), None], "fullva"),
            ("devices=fullva,none", [Some(full_va), None], "fullva"),
            (
                "devices=none,perfault",
                [None, Some(per_fault)],
                "none,perfault",
            ),
            ("devices=none", [None, None], "none"),
            ("devices=none,none", [None, None], "none"),
            ("", [None, None], "none"),
        ];
        for (key, devices, printed) in cases {
            let p = parse(&format!("config target=mirror {key}")).unwrap();
            assert_eq!(p.config.devices, devices, "{key}");
            let text = print(&p);
            assert!(
                text.lines()
                    .nth(1)
                    .unwrap()
                    .ends_with(&format!(" devices={printed}")),
                "{text}"
            );
            assert_eq!(parse(&text), Ok(p));
        }
        // The notifier target prints no devices key, and takes only `none`.
        assert!(!print(&Program::default()).contains("devices"));
        assert_eq!(parse("config devices=none,none"), Ok(Program::default()));
    }

    #[test]
    fn hand_written_mirror_forms() {
        let text = "config target=mirror threads=1 devices=perfault\n\
                    t0 m0 mmap 4096 +8_192 file:0\n\
                    t0 m1 mremap 0x1000 +0x1000 +0x1000 dontunmap to 0X3000\n\
                    t0 m0 write 0x1000 0xff\n\
                    t0 d1 write 0x1000 1_000\n";
        let p = parse(text).unwrap();
        assert_eq!(
            p.steps.iter().map(|s| s.op).collect::<Vec<_>>(),
            vec![
                Op::Mm {
                    mm: 0,
                    op: MmStep::Mmap {
                        addr: 0x1000,
                        len: 0x2000,
                        kind: MapKind::File(0),
                        prot: Prot::ReadWrite,
                    },
                },
                Op::Mm {
                    mm: 1,
                    op: MmStep::Mremap {
                        addr: 0x1000,
                        old_len: 0x1000,
                        new_len: 0x1000,
                        to: Some(0x3000),
                        dontunmap: true,
                    },
                },
                Op::Mm {
                    mm: 0,
                    op: MmStep::Write {
                        addr: 0x1000,
                        value: 255,
                    },
                },
                Op::Dev {
                    dev: 1,
                    op: DevStep::Write {
                        addr: 0x1000,
                        value: 1000,
                    },
                },
            ]
        );
        let printed = print(&p);
        assert!(printed.contains("t0 m0 write 0x1000 255\n"), "{printed}");
        assert!(printed.contains("t0 d1 write 0x1000 0x3e8\n"), "{printed}");
        assert!(
            printed.contains("t0 m1 mremap 0x1000 +0x1000 +0x1000 to 0x3000 dontunmap\n"),
            "{printed}"
        );
    }

    #[test]
    fn mirror_errors_point_at_the_token() {
        let h = "config target=mirror threads=2 devices=fullva\n";
        // Slots out of range and malformed.
        check(
            &format!("{h}t0 m2 read 0x1000"),
            2,
            4,
            "address space m2 out of range (m0..m1)",
        );
        check(
            &format!("{h}t1 d3 read 0x1000"),
            2,
            4,
            "device d3 out of range (d0..d1)",
        );
        check(
            &format!("{h}t0 d0 open m2 fullva"),
            2,
            12,
            "address space m2 out of range",
        );
        check(
            &format!("{h}t0 d0 open x1 fullva"),
            2,
            12,
            "expected address space `mN`",
        );
        check(
            &format!("{h}t0 m0x read 0"),
            2,
            5,
            "address space: bad number",
        );
        // Bad strategies.
        check(
            &format!("{h}t0 d0 open m1 gpu"),
            2,
            15,
            "unknown strategy `gpu` (expected fullva, perfault, odp:SIZE, vma, regcache, \
             gpusvm:SIZE, kfd or kfd-noxnack; SIZE is a power of two from 16k to 1g, e.g. \
             odp:2m, gpusvm:64k)",
        );
        check(&format!("{h}t0 d0 open m1"), 2, 14, "missing strategy");
        // Missing operands.
        check(&format!("{h}t0 m0 write 0x1000"), 2, 19, "missing value");
        check(&format!("{h}t0 m0"), 2, 6, "missing address space op");
        check(&format!("{h}t1 d1"), 2, 6, "missing device op");
        check(
            &format!("{h}t0 m0 mprotect 0x0 +0x1000"),
            2,
            27,
            "missing protection `none`, `ro` or `rw`",
        );
        check(
            &format!("{h}t0 m0 mmap 0x0 +0x1000"),
            2,
            23,
            "missing mapping",
        );
        check(
            &format!("{h}t0 m0 mremap 0 +1 +2 to"),
            2,
            24,
            "missing destination address after `to`",
        );
        check(
            &format!("{h}t0 m0 ksm 0x1000"),
            2,
            17,
            "missing address of the page merged",
        );
        check(
            &format!("{h}t0 d0 snapshot 0x0"),
            2,
            19,
            "missing length `+LEN`",
        );
        // Bad operands.
        check(
            &format!("{h}t0 m0 mmap 0x1000 +0x1000 file:9"),
            2,
            32,
            "file 9 out of range (file:0..file:1)",
        );
        check(
            &format!("{h}t0 m0 mmap 0x1000 +0x1000 file:"),
            2,
            32,
            "file: bad number",
        );
        check(
            &format!("{h}t0 m0 mmap 0x1000 +0x1000 private"),
            2,
            27,
            "unknown mapping `private`",
        );
        check(
            &format!("{h}t0 m0 mmap 0x1000 +0x1000 anon rw"),
            2,
            32,
            "unexpected `rw`",
        );
        check(
            &format!("{h}t0 m0 mprotect 0x1000 +0x1000 rx"),
            2,
            31,
            "expected protection `none`, `ro` or `rw`, found `rx`",
        );
        check(
            &format!("{h}t0 m0 mremap 0x1000 0x1000 +0x2000"),
            2,
            21,
            "expected old length `+OLD`",
        );
        check(
            &format!("{h}t0 m0 mremap 0x1000 +0x1000 0x2000"),
            2,
            29,
            "expected new length `+NEW`",
        );
        check(
            &format!("{h}t0 m0 mremap 0 +1 +1 dontunmap dontunmap"),
            2,
            32,
            "duplicate `dontunmap`",
        );
        check(
            &format!("{h}t0 m0 mremap 0 +1 +1 to 0 to 1"),
            2,
            27,
            "duplicate `to`",
        );
        check(
            &format!("{h}t0 m0 mremap 0 +1 +1 fixed"),
            2,
            22,
            "unexpected `fixed`",
        );
        check(
            &format!("{h}t0 m0 write 0x1000 0xzz"),
            2,
            20,
            "value: bad number",
        );
        check(&format!("{h}t0 m0 fork now"), 2, 12, "unexpected `now`");
        check(&format!("{h}t0 d0 read 0x0 0x1"), 2, 16, "unexpected `0x1`");
        // Unknown ops.
        check(
            &format!("{h}t0 m0 frob 0x0"),
            2,
            7,
            "unknown address space op `frob`",
        );
        check(
            &format!("{h}t0 d0 mmap 0x0 +0x1000 anon"),
            2,
            7,
            "unknown device op `mmap`",
        );
        // Ops of the other target.
        check(
            &format!("{h}t0 end"),
            2,
            4,
            "`end` is not an op of the mirror target",
        );
        check(&format!("{h}t0 frob"), 2, 4, "unknown op `frob`");
        check(
            "config threads=2\n\nt1 m0 fork",
            3,
            4,
            "`m0` ops belong to the mirror target",
        );
        check(
            "config\nt0 d0 read 0",
            2,
            4,
            "`d0` ops belong to the mirror target",
        );
        // The devices key.
        check(
            "config target=mirror devices=fullva,gpu",
            1,
            37,
            "unknown strategy `gpu` (expected fullva, perfault, odp:SIZE, vma, regcache, \
             gpusvm:SIZE, kfd, kfd-noxnack or none;",
        );
        check(
            "config target=mirror devices=fullva,perfault,none",
            1,
            46,
            "too many devices",
        );
        check(
            "config target=mirror devices=fullva,",
            1,
            37,
            "unknown strategy ``",
        );
        check(
            "config devices=fullva threads=1",
            1,
            8,
            "devices belong to the mirror target",
        );
        check(
            "config devices=fullva target=mirror devices=none",
            1,
            37,
            "duplicate key `devices`",
        );
    }

    fn device_memory_golden_program() -> Program {
        let odp = |param| StrategySpec {
            kind: 2,
            param,
            tlb: mirror::Tlb::Sync,
        };
        let reg_cache = StrategySpec::of(4);
        let mm = |thread, op| Step {
            thread,
            op: Op::Mm { mm: 0, op },
        };
        let dev = |thread, dev, op| Step {
            thread,
            op: Op::Dev { dev, op },
        };
        let expect = |thread, e| Step {
            thread,
            op: Op::Expect(e),
        };
        let protect = |prot| {
            mm(
                0,
                MmStep::Mprotect {
                    addr: 0x1000,
                    len: 0x1000,
                    prot,
                },
            )
        };
        let span = (0x1000, 0x2000);
        Program {
            config: ProgramConfig {
                target: Target::Mirror,
                threads: 2,
                initial_seq: 2,
                task_size: 1 << 47,
                devices: [Some(odp(14)), Some(reg_cache)],
                kernel_compat: false,
                schedule: 0,
            },
            steps: vec![
                mm(
                    0,
                    MmStep::Mmap {
                        addr: 0x1000,
                        len: 0x4000,
                        kind: MapKind::AnonPrivate,
                        prot: Prot::None,
                    },
                ),
                mm(
                    0,
                    MmStep::Mmap {
                        addr: 0x8000,
                        len: 0x1000,
                        kind: MapKind::AnonShared,
                        prot: Prot::Read,
                    },
                ),
                expect(0, Expect::Value(0x8000)),
                protect(Prot::None),
                protect(Prot::Read),
                protect(Prot::ReadWrite),
                dev(
                    1,
                    1,
                    DevStep::Open {
                        mm: 0,
                        strategy: odp(30),
                    },
                ),
                dev(
                    1,
                    0,
                    DevStep::Exclusive {
                        addr: span.0,
                        len: span.1,
                    },
                ),
                expect(1, Expect::Pages(2)),
                dev(
                    1,
                    0,
                    DevStep::Evict {
                        addr: span.0,
                        len: span.1,
                    },
                ),
                expect(1, Expect::Error(None)),
                dev(
                    1,
                    1,
                    DevStep::Register {
                        addr: 0x1000,
                        len: 0x4000,
                    },
                ),
                expect(1, Expect::Error(Some(ErrKind::NoEnt))),
                dev(1, 1, DevStep::Unregister { addr: 0x1000 }),
                expect(1, Expect::Skipped),
                dev(1, 0, DevStep::Work),
                expect(1, Expect::Ok),
                dev(
                    0,
                    0,
                    DevStep::Snapshot {
                        addr: 0,
                        len: 0x10000,
                    },
                ),
                expect(
                    0,
                    Expect::states(
                        &[
                            vec![PageState::None],
                            vec![PageState::Read; 2],
                            vec![PageState::HugeWrite; 3],
                            vec![PageState::LocalRead; 256],
                            vec![PageState::Exclusive],
                        ]
                        .concat(),
                    )
                    .unwrap(),
                ),
                expect(0, Expect::states(&[]).unwrap()),
                expect(0, Expect::Faults { dev: 1, n: 0 }),
                expect(0, Expect::Value(255)),
                expect(0, Expect::Value(256)),
            ],
        }
    }

    const DEVICE_MEMORY_GOLDEN: &str = "\
# mnfuzz mirror program, 23 steps
config target=mirror threads=2 initial_seq=0x2 task_size=0x800000000000 devices=odp:16k,regcache
t0 m0 mmap 0x1000 +0x4000 anon none
t0 m0 mmap 0x8000 +0x1000 shared ro
t0 expect 0x8000
t0 m0 mprotect 0x1000 +0x1000 none
t0 m0 mprotect 0x1000 +0x1000 ro
t0 m0 mprotect 0x1000 +0x1000 rw
t1 d1 open m0 odp:1g
t1 d0 exclusive 0x1000 +0x2000
t1 expect pages=2
t1 d0 evict 0x1000 +0x2000
t1 expect error
t1 d1 register 0x1000 +0x4000
t1 expect error:enoent
t1 d1 unregister 0x1000
t1 expect skipped
t1 d0 work
t1 expect ok
t0 d0 snapshot 0x0 +0x10000
t0 expect [none read*2 write+huge*3 local+read*256 exclusive]
t0 expect []
t0 expect d1 faults=0
t0 expect 255
t0 expect 0x100
";

    #[test]
    fn device_memory_golden() {
        let p = device_memory_golden_program();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(print(&p), DEVICE_MEMORY_GOLDEN);
        assert_eq!(parse(DEVICE_MEMORY_GOLDEN), Ok(p.clone()));
        for (step, line) in p.steps.iter().zip(DEVICE_MEMORY_GOLDEN.lines().skip(2)) {
            assert_eq!(format_step(step), line);
        }
        assert_eq!(crate::codec::decode(&crate::codec::encode(&p)), p);
    }

    #[test]
    fn hand_written_device_memory_forms() {
        let h = "config target=mirror threads=1 devices=fullva\n";
        let one = |line: &str| -> Op {
            let p = parse(&format!("{h}{line}")).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(p.steps.len(), 1);
            p.steps[0].op
        };
        let prot = |line: &str| match one(line) {
            Op::Mm {
                op: MmStep::Mmap { prot, .. } | MmStep::Mprotect { prot, .. },
                ..
            } => prot,
            op => panic!("{op:?}"),
        };
        // The old spellings still mean what they meant.
        assert_eq!(prot("t0 m0 mmap 0x0 +0x1000 anon"), Prot::ReadWrite);
        assert_eq!(prot("t0 m0 mmap 0x0 +0x1000 anon ro"), Prot::Read);
        assert_eq!(prot("t0 m0 mmap 0x0 +0x1000 file:1 none"), Prot::None);
        assert_eq!(prot("t0 m0 mprotect 0x0 +0x1000 ro"), Prot::Read);
        assert_eq!(prot("t0 m0 mprotect 0x0 +0x1000 rw"), Prot::ReadWrite);
        assert_eq!(prot("t0 m0 mprotect 0x0 +0x1000 none"), Prot::None);
        // Values in decimal or hex; counts and pages too.
        assert_eq!(one("t0 expect 42"), Op::Expect(Expect::Value(42)));
        assert_eq!(one("t0 expect 0x2a"), Op::Expect(Expect::Value(42)));
        assert_eq!(one("t0 expect pages=0x10"), Op::Expect(Expect::Pages(16)));
        assert_eq!(
            one("t0 expect d0 faults=1_000"),
            Op::Expect(Expect::Faults { dev: 0, n: 1000 })
        );
        // States: brackets may stand apart, `*1` is optional, adjacent runs
        // of one state merge, so that the printed form is canonical.
        let want = Expect::states(&[
            PageState::None,
            PageState::Write,
            PageState::Write,
            PageState::Write,
            PageState::RemoteWrite,
        ])
        .unwrap();
        for line in [
            "t0 expect [none write*3 remote+write]",
            "t0 expect [ none write write*2 remote+write*1 ]",
            "t0 expect [none*1 write*1 write*1 write remote+write]",
        ] {
            let op = one(line);
            assert_eq!(op, Op::Expect(want), "{line}");
            assert_eq!(
                format_step(&Step { thread: 0, op }),
                "t0 expect [none write*3 remote+write]"
            );
        }
        let empty = Op::Expect(Expect::states(&[]).unwrap());
        assert_eq!(one("t0 expect []"), empty);
        assert_eq!(one("t0 expect [ ]"), empty);
        assert_eq!(one("t0 expect [\t]  # nothing"), empty);
        // Runs that merge do not count against the limit of 8.
        assert!(matches!(
            one("t0 expect [none none none none none none none none none read]"),
            Op::Expect(Expect::States { len: 2, .. })
        ));
        assert!(matches!(
            one("t0 expect [none*511 read]"),
            Op::Expect(Expect::States { len: 2, .. })
        ));
        // Every strategy, in both places.
        let all = StrategySpec::every();
        assert_eq!(all.len(), 6 + 17 + 17);
        for st in all {
            let name = st.name();
            assert_eq!(
                one(&format!("t0 d1 open m0 {name}")),
                Op::Dev {
                    dev: 1,
                    op: DevStep::Open {
                        mm: 0,
                        strategy: st
                    }
                }
            );
            let p = parse(&format!("config target=mirror devices=none,{name}")).unwrap();
            assert_eq!(p.config.devices, [None, Some(st)]);
            assert_eq!(parse(&print(&p)), Ok(p));
        }
        assert_eq!(
            parse("config target=mirror devices=odp:2m,regcache")
                .unwrap()
                .config
                .devices,
            [
                Some(StrategySpec {
                    kind: 2,
                    param: 21,
                    tlb: mirror::Tlb::Sync
                }),
                Some(StrategySpec {
                    kind: 4,
                    param: 0,
                    tlb: mirror::Tlb::Sync
                })
            ]
        );
    }

    #[test]
    fn device_memory_errors_point_at_the_token() {
        let h = "config target=mirror threads=2 devices=fullva\n";
        // Protections.
        check(
            &format!("{h}t0 m0 mprotect 0x0 +0x1000 read"),
            2,
            28,
            "expected protection `none`, `ro` or `rw`, found `read`",
        );
        check(
            &format!("{h}t0 m0 mmap 0x0 +0x1000 anon ro none"),
            2,
            32,
            "unexpected `none`",
        );
        check(
            &format!("{h}t0 m0 mmap 0x0 +0x1000 anon rw"),
            2,
            29,
            "unexpected `rw`",
        );
        // Strategies: unknown, and ODP sizes that are not powers of two,
        // out of range, or not in their canonical spelling.
        for bad in [
            "odp:3m",
            "odp:8k",
            "odp:2g",
            "odp:2048k",
            "odp:",
            "odp",
            "regcache:1",
        ] {
            check(
                &format!("{h}t0 d0 open m1 {bad}"),
                2,
                15,
                &format!("unknown strategy `{bad}` (expected fullva, perfault, odp:SIZE"),
            );
        }
        check(
            "config target=mirror devices=odp:2m,odp:1t",
            1,
            37,
            "unknown strategy `odp:1t`",
        );
        // The new device ops' operands.
        check(
            &format!("{h}t0 d0 exclusive 0x0"),
            2,
            20,
            "missing length `+LEN`",
        );
        check(
            &format!("{h}t0 d0 evict 0x0 0x1000"),
            2,
            17,
            "expected length `+LEN`, found `0x1000`",
        );
        check(&format!("{h}t0 d0 register"), 2, 15, "missing address");
        check(
            &format!("{h}t0 d0 unregister 0x1000 +0x1000"),
            2,
            25,
            "unexpected `+0x1000`",
        );
        check(&format!("{h}t0 d0 work now"), 2, 12, "unexpected `now`");
        check(
            &format!("{h}t0 d0 evicts 0x0 +0x1000"),
            2,
            7,
            "unknown device op `evicts` (expected open, read, write, snapshot, migrate, \
             exclusive, evict, register, unregister, work, attr or prefetch)",
        );
        // Expectations.
        check(
            &format!("{h}t0 expect"),
            2,
            10,
            "missing expectation (expected ok,",
        );
        check(
            &format!("{h}t0 expect maybe"),
            2,
            11,
            "unknown expectation `maybe` (expected ok, skipped, a value, error, error:KIND, \
             pages=N, dD faults=N or [STATE*COUNT ...])",
        );
        check(
            &format!("{h}t0 expect none"),
            2,
            11,
            "unknown expectation `none`",
        );
        check(
            &format!("{h}t0 expect error:eintr"),
            2,
            17,
            "unknown error kind `eintr` (expected one of einval, efault, eperm, exited, \
             enoent, notifier, eagain)",
        );
        check(
            &format!("{h}t0 expect error:"),
            2,
            17,
            "unknown error kind ``",
        );
        check(
            &format!("{h}t0 expect pages=x"),
            2,
            17,
            "pages: bad number `x`",
        );
        check(
            &format!("{h}t0 expect pages="),
            2,
            17,
            "pages: bad number ``",
        );
        check(&format!("{h}t0 expect 0xzz"), 2, 11, "value: bad number");
        check(
            &format!("{h}t0 expect 1_0000_0000_0000_0000_0000"),
            2,
            11,
            "does not fit in 64 bits",
        );
        check(&format!("{h}t0 expect ok now"), 2, 14, "unexpected `now`");
        check(&format!("{h}t0 expect error x"), 2, 17, "unexpected `x`");
        check(
            &format!("{h}t0 expect d2 faults=1"),
            2,
            11,
            "device d2 out of range (d0..d1)",
        );
        check(&format!("{h}t0 expect d1"), 2, 13, "missing `faults=N`");
        check(
            &format!("{h}t0 expect d1 fault=1"),
            2,
            14,
            "expected `faults=N`, found `fault=1`",
        );
        check(
            &format!("{h}t0 expect d1 faults=-1"),
            2,
            21,
            "faults: bad number `-1`",
        );
        check(
            &format!("{h}t0 expect d1 faults=1 pages=2"),
            2,
            23,
            "unexpected `pages=2`",
        );
        // Page states.
        check(
            &format!("{h}t0 expect [none write"),
            2,
            22,
            "missing `]` after the page states",
        );
        check(&format!("{h}t0 expect ["), 2, 12, "missing `]`");
        check(
            &format!("{h}t0 expect [none wrote]"),
            2,
            17,
            "unknown page state `wrote` (expected one of none, error, zero, read, write, \
             read+huge, write+huge, local+read, local+write, remote+read, remote+write, \
             exclusive)",
        );
        check(
            &format!("{h}t0 expect [none]]"),
            2,
            12,
            "unknown page state `none]`",
        );
        check(
            &format!("{h}t0 expect [none [read]"),
            2,
            17,
            "unknown page state `[read`",
        );
        check(
            &format!("{h}t0 expect [*3]"),
            2,
            12,
            "unknown page state ``",
        );
        check(
            &format!("{h}t0 expect [none*0]"),
            2,
            17,
            "count must be at least 1",
        );
        check(
            &format!("{h}t0 expect [none*x]"),
            2,
            17,
            "count: bad number `x`",
        );
        check(
            &format!("{h}t0 expect [write*]"),
            2,
            18,
            "count: bad number ``",
        );
        check(
            &format!("{h}t0 expect [write*513]"),
            2,
            12,
            "more than 512 pages of states",
        );
        check(
            &format!("{h}t0 expect [write*300 none*300]"),
            2,
            22,
            "more than 512 pages of states",
        );
        check(
            &format!("{h}t0 expect [none*99999999999999999999]"),
            2,
            17,
            "count: number `99999999999999999999` does not fit in 64 bits",
        );
        check(
            &format!("{h}t0 expect [none read none read none read none read none]"),
            2,
            52,
            "more than 8 runs of states",
        );
        check(&format!("{h}t0 expect [none] x"), 2, 18, "unexpected `x`");
        // Mirror-only ops in a notifier program.
        check(
            "config\nt0 expect ok",
            2,
            4,
            "`expect` belongs to the mirror target (this program's target is notifier)",
        );
        check(
            "config\nt0 step",
            2,
            4,
            "`step` belongs to the mirror target",
        );
    }

    #[test]
    fn validate_rejects_out_of_range_new_operands() {
        let base =
            parse("config target=mirror threads=2 devices=fullva\nt0 step\nt1 step\n").unwrap();
        let with = |op: Op| {
            let mut p = base.clone();
            p.steps[1].op = op;
            p
        };
        let mut runs = [(PageState::None, 0u16); MAX_RUNS];
        runs[0] = (PageState::Read, 1);
        let cases = [
            (
                Op::Expect(Expect::Faults { dev: 2, n: 0 }),
                "step 1: device d2 out of range",
            ),
            (
                Op::Expect(Expect::States { runs, len: 9 }),
                "step 1: more than 8 runs of states",
            ),
            (
                Op::Expect(Expect::States { runs, len: 2 }),
                "step 1: a run of states with count 0",
            ),
            (
                Op::Expect(Expect::States {
                    runs: {
                        let mut r = runs;
                        r[1] = (PageState::Read, 2);
                        r
                    },
                    len: 2,
                }),
                "step 1: adjacent runs of the same state",
            ),
            (
                Op::Expect(Expect::States {
                    runs: {
                        let mut r = runs;
                        r[0].1 = 300;
                        r[1] = (PageState::Write, 213);
                        r
                    },
                    len: 2,
                }),
                "step 1: more than 512 pages of states",
            ),
            (
                Op::Expect(Expect::States {
                    runs: {
                        let mut r = runs;
                        r[3] = (PageState::Write, 1);
                        r
                    },
                    len: 1,
                }),
                "step 1: unused runs of states must be empty",
            ),
            (
                Op::Dev {
                    dev: 0,
                    op: DevStep::Open {
                        mm: 0,
                        strategy: StrategySpec {
                            kind: 2,
                            param: 13,
                            tlb: mirror::Tlb::Sync,
                        },
                    },
                },
                "step 1: operand out of range",
            ),
            (
                Op::Dev {
                    dev: 0,
                    op: DevStep::Open {
                        mm: 0,
                        strategy: StrategySpec {
                            kind: 2,
                            param: 31,
                            tlb: mirror::Tlb::Sync,
                        },
                    },
                },
                "step 1: operand out of range",
            ),
            (
                Op::Dev {
                    dev: 2,
                    op: DevStep::Work,
                },
                "step 1: operand out of range",
            ),
        ];
        for (op, msg) in cases {
            let p = with(op);
            assert_eq!(p.validate(), Err(msg.to_string()), "{op:?}");
            let e = locate_invalid(&p, 1, &[4, 6]).unwrap_err();
            assert_eq!((e.line, e.column), (6, 1), "{op:?}");
            // The encoder still gives a valid program.
            assert_eq!(
                crate::codec::decode(&crate::codec::encode(&p)).validate(),
                Ok(())
            );
        }
        // A notifier program has no expectations.
        let mut p = Program::default();
        p.steps.push(Step {
            thread: 0,
            op: Op::Expect(Expect::Ok),
        });
        assert_eq!(
            p.validate(),
            Err("step 0: expect is not an op of the notifier target".into())
        );
        // Nor does a config take an ODP chunk out of range.
        let mut c = base.config;
        c.devices[1] = Some(StrategySpec {
            kind: 2,
            param: 40,
            tlb: mirror::Tlb::Sync,
        });
        assert!(c
            .validate()
            .unwrap_err()
            .contains("ODP chunk shift out of range"));
    }

    #[test]
    fn kvm_devices_belong_to_the_kvm_target() {
        let p = parse("config target=kvm\nt0 d1 open m1 kvm\nt0 d1 write 0x1000 5\n")
            .expect("a kvm program");
        assert_eq!(p.config.threads, 1);
        assert_eq!(p.config.task_size, crate::program::KVM_TASK_SIZE);
        assert_eq!(
            p.steps[0].op,
            Op::Dev {
                dev: 1,
                op: DevStep::Open {
                    mm: 1,
                    strategy: crate::program::KVM_DEVICE
                }
            }
        );
        assert_eq!(format_step(&p.steps[0]), "t0 d1 open m1 kvm");
        // A mirror program cannot open a kvm device, and a kvm program
        // takes no strategy, no other device op, no simulation-only op.
        let bad = [
            "config target=mirror\nt0 d0 open m0 kvm\n",
            "config target=kvm\nt0 d0 open m0 fullva\n",
            "config target=kvm\nt0 d0 snapshot 0x0 +0x1000\n",
            "config target=kvm\nt0 m0 reclaim 0x0\n",
            "config target=kvm\nt0 step\n",
            "config target=linux\nt0 d0 open m0 kvm\n",
        ];
        for text in bad {
            assert!(parse(text).is_err(), "{text}");
        }
    }
}
