//! The `.ops` text of the `mirror` target's steps, expectations and
//! `devices=`: printing and parsing, on the shared line reader of
//! [`crate::text`].

use std::fmt::{self, Write as _};

use crate::program::{
    DevStep, ErrKind, Expect, MapKind, MmStep, Op, PageState, Prot, StrategySpec, DEVICES, FILES,
    MAX_RUNS, MAX_SNAPSHOT_PAGES, MMS,
};
use crate::text::{is_slot, Line, ParseError, Tok};

/// The value of `devices=`: the entries up to the last open one, `none`
/// for a closed one; `none` alone when no device is open.
pub(crate) fn devices_text(devices: &[Option<StrategySpec>]) -> String {
    let n = devices
        .iter()
        .rposition(Option::is_some)
        .map_or(1, |i| i + 1);
    let names: Vec<String> = devices[..n]
        .iter()
        .map(|d| d.map_or_else(|| "none".to_string(), StrategySpec::name))
        .collect();
    names.join(",")
}

/// A written value: decimal below 256, hex above.
pub(crate) struct Value(u64);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 256 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:#x}", self.0)
        }
    }
}

pub(crate) fn write_mm(s: &mut String, mm: u8, op: MmStep) -> fmt::Result {
    write!(s, " m{mm} {}", op.keyword())?;
    match op {
        MmStep::Mmap {
            addr,
            len,
            kind,
            prot,
        } => {
            write!(s, " {addr:#x} +{len:#x} ")?;
            match kind {
                MapKind::AnonPrivate => s.push_str("anon"),
                MapKind::AnonShared => s.push_str("shared"),
                MapKind::File(f) => write!(s, "file:{f}")?,
            }
            if prot != Prot::ReadWrite {
                write!(s, " {}", prot.name())?;
            }
            Ok(())
        }
        MmStep::Munmap { addr, len } | MmStep::Dontneed { addr, len } => {
            write!(s, " {addr:#x} +{len:#x}")
        }
        MmStep::Mprotect { addr, len, prot } => {
            write!(s, " {addr:#x} +{len:#x} {}", prot.name())
        }
        MmStep::Mremap {
            addr,
            old_len,
            new_len,
            to,
            dontunmap,
        } => {
            write!(s, " {addr:#x} +{old_len:#x} +{new_len:#x}")?;
            if let Some(to) = to {
                write!(s, " to {to:#x}")?;
            }
            if dontunmap {
                s.push_str(" dontunmap");
            }
            Ok(())
        }
        MmStep::Fork | MmStep::ClearRefs | MmStep::OomReap | MmStep::Exit => Ok(()),
        MmStep::Read { addr }
        | MmStep::Reclaim { addr }
        | MmStep::Migrate { addr }
        | MmStep::Collapse { addr }
        | MmStep::Split { addr } => write!(s, " {addr:#x}"),
        MmStep::Write { addr, value } => write!(s, " {addr:#x} {}", Value(value)),
        MmStep::Ksm { a, b } => write!(s, " {a:#x} {b:#x}"),
    }
}

/// A device op's keyword after its `dN`.
pub(crate) fn dev_keyword(op: DevStep) -> &'static str {
    match op {
        DevStep::Open { .. } => "open",
        DevStep::Read { .. } => "read",
        DevStep::Write { .. } => "write",
        DevStep::Snapshot { .. } => "snapshot",
        DevStep::Migrate { .. } => "migrate",
        DevStep::Exclusive { .. } => "exclusive",
        DevStep::Evict { .. } => "evict",
        DevStep::Register { .. } => "register",
        DevStep::Unregister { .. } => "unregister",
        DevStep::Work => "work",
        DevStep::Attr { .. } => "attr",
        DevStep::Prefetch { .. } => "prefetch",
    }
}

pub(crate) fn write_dev(s: &mut String, dev: u8, op: DevStep) -> fmt::Result {
    write!(s, " d{dev} {}", dev_keyword(op))?;
    match op {
        DevStep::Open { mm, strategy } if strategy == crate::program::KVM_DEVICE => {
            write!(s, " m{mm} kvm")
        }
        DevStep::Open { mm, strategy } => write!(s, " m{mm} {}", strategy.name()),
        DevStep::Read { addr } | DevStep::Unregister { addr } => write!(s, " {addr:#x}"),
        DevStep::Write { addr, value } => write!(s, " {addr:#x} {}", Value(value)),
        DevStep::Snapshot { addr, len }
        | DevStep::Migrate { addr, len }
        | DevStep::Exclusive { addr, len }
        | DevStep::Evict { addr, len }
        | DevStep::Register { addr, len }
        | DevStep::Attr { addr, len }
        | DevStep::Prefetch { addr, len } => write!(s, " {addr:#x} +{len:#x}"),
        DevStep::Work => Ok(()),
    }
}

/// An expectation as it follows `expect`: `ok`, `skipped`, `0x1000` (a
/// value: decimal below 256, hex above), `error`, `error:efault`,
/// `pages=3`, `d1 faults=2`, `[none write*3]`.
pub fn expect_text(e: &Expect) -> String {
    match *e {
        Expect::Ok => "ok".into(),
        Expect::Skipped => "skipped".into(),
        Expect::Value(v) => Value(v).to_string(),
        Expect::Error(None) => "error".into(),
        Expect::Error(Some(k)) => format!("error:{}", k.name()),
        Expect::Pages(n) => format!("pages={n}"),
        Expect::Faults { dev, n } => format!("d{dev} faults={n}"),
        Expect::States { runs, len } => {
            let used = &runs[..usize::from(len).min(MAX_RUNS)];
            states_text(used.iter().map(|&(st, n)| (st, u64::from(n))))
        }
    }
}

/// Run-length encoded page states as `expect` writes them: `[none write*3]`.
pub fn states_text(runs: impl IntoIterator<Item = (PageState, u64)>) -> String {
    let items: Vec<String> = runs
        .into_iter()
        .map(|(st, n)| {
            if n == 1 {
                st.name().to_string()
            } else {
                format!("{}*{n}", st.name())
            }
        })
        .collect();
    format!("[{}]", items.join(" "))
}

/// `devices=S[,S]`, each a strategy or `none`; missing ones are `none`.
pub(crate) fn parse_devices(
    l: &Line<'_>,
    val: Tok<'_>,
) -> Result<[Option<StrategySpec>; DEVICES as usize], ParseError> {
    let mut devices = [None; DEVICES as usize];
    let mut at = 0;
    for (i, item) in val.text.split(',').enumerate() {
        let tok = Tok {
            text: item,
            col: val.col + val.text[..at].chars().count(),
        };
        at += item.len() + 1;
        if i >= devices.len() {
            return Err(l.at(
                tok,
                format!("too many devices (at most {DEVICES}: d0..d{})", DEVICES - 1),
            ));
        }
        devices[i] = match item {
            "none" => None,
            _ => Some(l.strategy(tok, Some("none"))?),
        };
    }
    Ok(devices)
}

/// `mM OP ...`, `slot` being the `mM`.
pub(crate) fn parse_mm(l: &mut Line<'_>, slot: Tok<'_>) -> Result<Op, ParseError> {
    let mm = l.slot_tok(slot, 'm', MMS, "address space")?;
    let kw = l.next("address space op")?;
    let op = match kw.text {
        "mmap" => {
            let addr = l.number("address")?;
            let len = l.plus("length", "+LEN")?;
            let kind = parse_map_kind(l)?;
            let prot = if l.word("ro") {
                Prot::Read
            } else if l.word("none") {
                Prot::None
            } else {
                Prot::ReadWrite
            };
            MmStep::Mmap {
                addr,
                len,
                kind,
                prot,
            }
        }
        "munmap" => MmStep::Munmap {
            addr: l.number("address")?,
            len: l.plus("length", "+LEN")?,
        },
        "dontneed" => MmStep::Dontneed {
            addr: l.number("address")?,
            len: l.plus("length", "+LEN")?,
        },
        "mprotect" => {
            let addr = l.number("address")?;
            let len = l.plus("length", "+LEN")?;
            let tok = l.next("protection `none`, `ro` or `rw`")?;
            let Some(prot) = Prot::from_name(tok.text) else {
                return Err(l.at(
                    tok,
                    format!(
                        "expected protection `none`, `ro` or `rw`, found `{}`",
                        tok.text
                    ),
                ));
            };
            MmStep::Mprotect { addr, len, prot }
        }
        "mremap" => {
            let addr = l.number("address")?;
            let old_len = l.plus("old length", "+OLD")?;
            let new_len = l.plus("new length", "+NEW")?;
            let (mut to, mut dontunmap) = (None, false);
            while let Some(w) = l.peek() {
                l.pos += 1;
                match w.text {
                    "to" if to.is_some() => return Err(l.at(w, "duplicate `to`")),
                    "to" => to = Some(l.number("destination address after `to`")?),
                    "dontunmap" if dontunmap => return Err(l.at(w, "duplicate `dontunmap`")),
                    "dontunmap" => dontunmap = true,
                    other => {
                        return Err(l.at(
                            w,
                            format!("unexpected `{other}` (expected `to ADDR` or dontunmap)"),
                        ))
                    }
                }
            }
            MmStep::Mremap {
                addr,
                old_len,
                new_len,
                to,
                dontunmap,
            }
        }
        "fork" => MmStep::Fork,
        "read" => MmStep::Read {
            addr: l.number("address")?,
        },
        "write" => MmStep::Write {
            addr: l.number("address")?,
            value: l.number("value")?,
        },
        "reclaim" => MmStep::Reclaim {
            addr: l.number("address")?,
        },
        "migrate" => MmStep::Migrate {
            addr: l.number("address")?,
        },
        "ksm" => MmStep::Ksm {
            a: l.number("address of the page kept")?,
            b: l.number("address of the page merged")?,
        },
        "collapse" => MmStep::Collapse {
            addr: l.number("address")?,
        },
        "split" => MmStep::Split {
            addr: l.number("address")?,
        },
        "clear_refs" => MmStep::ClearRefs,
        "oom_reap" => MmStep::OomReap,
        "exit" => MmStep::Exit,
        other => {
            return Err(l.at(
                kw,
                format!(
                    "unknown address space op `{other}` (expected mmap, munmap, mprotect, \
                     mremap, dontneed, fork, read, write, reclaim, migrate, ksm, collapse, \
                     split, clear_refs, oom_reap or exit)"
                ),
            ))
        }
    };
    Ok(Op::Mm { mm, op })
}

/// `anon`, `shared` or `file:F`.
pub(crate) fn parse_map_kind(l: &mut Line<'_>) -> Result<MapKind, ParseError> {
    let tok = l.next("mapping `anon`, `shared` or `file:F`")?;
    match tok.text {
        "anon" => Ok(MapKind::AnonPrivate),
        "shared" => Ok(MapKind::AnonShared),
        t if t.starts_with("file:") => {
            let n = tok.rest("file:".len());
            let f = l.num(n, "file")?;
            if f >= u64::from(FILES) {
                return Err(l.at(
                    n,
                    format!("file {} out of range (file:0..file:{})", n.text, FILES - 1),
                ));
            }
            Ok(MapKind::File(f as u32))
        }
        other => Err(l.at(
            tok,
            format!("unknown mapping `{other}` (expected anon, shared or file:F)"),
        )),
    }
}

/// `dN OP ...`, `slot` being the `dN`.
pub(crate) fn parse_dev(l: &mut Line<'_>, slot: Tok<'_>) -> Result<Op, ParseError> {
    let dev = l.slot_tok(slot, 'd', DEVICES, "device")?;
    let kw = l.next("device op")?;
    let op = match kw.text {
        "open" => {
            let mm = l.slot('m', MMS, "address space")?;
            let tok = l.next("strategy")?;
            let strategy = if tok.text == "kvm" {
                crate::program::KVM_DEVICE
            } else {
                l.strategy(tok, None)?
            };
            DevStep::Open { mm, strategy }
        }
        "read" => DevStep::Read {
            addr: l.number("address")?,
        },
        "write" => DevStep::Write {
            addr: l.number("address")?,
            value: l.number("value")?,
        },
        "snapshot" => DevStep::Snapshot {
            addr: l.number("address")?,
            len: l.plus("length", "+LEN")?,
        },
        "migrate" => DevStep::Migrate {
            addr: l.number("address")?,
            len: l.plus("length", "+LEN")?,
        },
        "exclusive" => DevStep::Exclusive {
            addr: l.number("address")?,
            len: l.plus("length", "+LEN")?,
        },
        "evict" => DevStep::Evict {
            addr: l.number("address")?,
            len: l.plus("length", "+LEN")?,
        },
        "register" => DevStep::Register {
            addr: l.number("address")?,
            len: l.plus("length", "+LEN")?,
        },
        "unregister" => DevStep::Unregister {
            addr: l.number("address")?,
        },
        "work" => DevStep::Work,
        "attr" => DevStep::Attr {
            addr: l.number("address")?,
            len: l.plus("length", "+LEN")?,
        },
        "prefetch" => DevStep::Prefetch {
            addr: l.number("address")?,
            len: l.plus("length", "+LEN")?,
        },
        other => {
            return Err(l.at(
                kw,
                format!(
                    "unknown device op `{other}` (expected open, read, write, snapshot, \
                     migrate, exclusive, evict, register, unregister, work, attr or prefetch)"
                ),
            ))
        }
    };
    Ok(Op::Dev { dev, op })
}

/// What may follow `expect`, for messages.
pub(crate) const EXPECTATIONS: &str =
    "ok, skipped, a value, error, error:KIND, pages=N, dD faults=N or [STATE*COUNT ...]";

/// The operands of `expect`.
pub(crate) fn parse_expect(l: &mut Line<'_>) -> Result<Expect, ParseError> {
    let tok = l.next(&format!("expectation (expected {EXPECTATIONS})"))?;
    Ok(match tok.text {
        "ok" => Expect::Ok,
        "skipped" => Expect::Skipped,
        "error" => Expect::Error(None),
        t if t.starts_with("error:") => {
            let k = tok.rest("error:".len());
            let Some(kind) = ErrKind::from_name(k.text) else {
                let names: Vec<_> = ErrKind::ALL.iter().map(|k| k.name()).collect();
                return Err(l.at(
                    k,
                    format!(
                        "unknown error kind `{}` (expected one of {})",
                        k.text,
                        names.join(", ")
                    ),
                ));
            };
            Expect::Error(Some(kind))
        }
        t if t.starts_with("pages=") => Expect::Pages(l.num(tok.rest("pages=".len()), "pages")?),
        t if t.starts_with('[') => parse_states(l, tok)?,
        _ if is_slot(tok, 'd') => {
            let dev = l.slot_tok(tok, 'd', DEVICES, "device")?;
            let f = l.next("`faults=N`")?;
            if !f.text.starts_with("faults=") {
                return Err(l.at(f, format!("expected `faults=N`, found `{}`", f.text)));
            }
            let n = l.num(f.rest("faults=".len()), "faults")?;
            Expect::Faults { dev, n }
        }
        t if t.starts_with(|c: char| c.is_ascii_digit()) => Expect::Value(l.num(tok, "value")?),
        other => {
            return Err(l.at(
                tok,
                format!("unknown expectation `{other}` (expected {EXPECTATIONS})"),
            ))
        }
    })
}

/// `[STATE[*COUNT] ...]`, `first` being the token that starts with `[`;
/// adjacent runs of one state merge.
pub(crate) fn parse_states(l: &mut Line<'_>, first: Tok<'_>) -> Result<Expect, ParseError> {
    let mut runs = [(PageState::None, 0u16); MAX_RUNS];
    let mut len = 0;
    let mut total = 0u64;
    let mut tok = first.rest(1);
    loop {
        let (item, closed) = match tok.text.strip_suffix(']') {
            Some(t) => (
                Tok {
                    text: t,
                    col: tok.col,
                },
                true,
            ),
            None => (tok, false),
        };
        if !item.text.is_empty() {
            let (name, n) = match item.text.find('*') {
                Some(i) => {
                    let c = item.rest(i + 1);
                    let n = l.num(c, "count")?;
                    if n == 0 {
                        return Err(l.at(c, "count must be at least 1"));
                    }
                    (&item.text[..i], n)
                }
                None => (item.text, 1),
            };
            let Some(st) = PageState::from_name(name) else {
                let names: Vec<_> = PageState::ALL.iter().map(|s| s.name()).collect();
                return Err(l.at(
                    item,
                    format!(
                        "unknown page state `{name}` (expected one of {})",
                        names.join(", ")
                    ),
                ));
            };
            total = total.saturating_add(n);
            if total > u64::from(MAX_SNAPSHOT_PAGES) {
                return Err(l.at(
                    item,
                    format!("more than {MAX_SNAPSHOT_PAGES} pages of states"),
                ));
            }
            // Within MAX_SNAPSHOT_PAGES, so within u16.
            let n = n as u16;
            if len > 0 && runs[len - 1].0 == st {
                runs[len - 1].1 += n;
            } else {
                if len == MAX_RUNS {
                    return Err(l.at(item, format!("more than {MAX_RUNS} runs of states")));
                }
                runs[len] = (st, n);
                len += 1;
            }
        }
        if closed {
            break;
        }
        tok = match l.peek() {
            Some(t) => {
                l.pos += 1;
                t
            }
            None => return Err(l.err(l.end_col(), "missing `]` after the page states")),
        };
    }
    Ok(Expect::States {
        runs,
        len: len as u8,
    })
}
