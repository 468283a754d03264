//! Driving the shadow memory oracle (oracles::shadow) from the mirror
//! executor: it is told what each finished or applied operation did, and
//! checks every load, CPU or device, and every page at the end.
//!
//! Timing: an operation changes memory at its apply steps (between the
//! start and the end of an invalidation), and the shadow follows it there,
//! range by range, so that loads by other threads in between are checked
//! exactly. What an operation does at its finish (mmap's new mapping,
//! mremap's in-place growth, fork's copy, exit, a load or store) the
//! shadow learns from its result.

use mm::{MmOp, Outcome as MmOutcome, Task, PAGE};
use notifier::Range;
use oracles::shadow::{coalesce, page_len, Mismatch, Region, RegionKind};

use super::{show, Access, World};
use crate::outcome::{Divergence, DivergenceKind};

type Checked = Result<(), Box<Divergence>>;

impl World<'_> {
    fn shadow_diverge(&self, at: Option<usize>, doing: String, m: &Mismatch) -> Box<Divergence> {
        self.diverge(
            DivergenceKind::Shadow,
            at,
            doing,
            format!(
                "m{} {:#x}: {} (the access saw {})",
                m.mm,
                m.addr,
                m.why,
                show(m.got)
            ),
            format!("the shadow memory holds {}", show(m.expected)),
        )
    }

    fn shadow_inconsistent(&self, t: usize, mm: usize, what: &str, why: String) -> Box<Divergence> {
        self.diverge(
            DivergenceKind::Shadow,
            None,
            format!("t{t} m{mm} {what}"),
            why,
            "the shadow memory's mappings allow it".into(),
        )
    }

    /// After each step of an address space task: the range it just
    /// applied, if it did.
    pub(super) fn shadow_step(&mut self, t: usize, mm: usize, task: &Task) -> Checked {
        if !task.just_applied() {
            return Ok(());
        }
        let Some(r) = task.open_range() else {
            return Ok(());
        };
        self.shadow_apply(t, mm, task, r)
    }

    fn shadow_apply(&mut self, t: usize, mm: usize, task: &Task, r: Range) -> Checked {
        let sh = &mut self.shadow;
        match *task.op() {
            MmOp::Mmap { .. } | MmOp::Munmap { .. } => sh.unmap(mm, r.start, r.end),
            MmOp::Mprotect { prot, .. } => sh.protect(mm, r.start, r.end, prot),
            MmOp::Dontneed { .. } | MmOp::OomReap | MmOp::Exit => sh.zap(mm, r.start, r.end),
            MmOp::Mremap {
                addr,
                old_len,
                new_len,
                new_addr,
                dontunmap,
            } => match task.destination() {
                // The source range: it moves now. A duplicate (old length
                // 0) moves nothing: its destination is cleared here and
                // mapped when the mremap succeeds.
                Some(dst) if r.start == addr && page_len(old_len) != 0 => {
                    let (old_len, new_len) = (page_len(old_len), page_len(new_len));
                    if new_addr.is_none() && sh.any_mapped(mm, dst, dst.saturating_add(new_len)) {
                        return Err(self.shadow_inconsistent(
                            t,
                            mm,
                            "mremap",
                            format!("mremap without MREMAP_FIXED moved {addr:#x} over a mapping at {dst:#x}"),
                        ));
                    }
                    if let Err(why) = sh.move_range(mm, addr, old_len, new_len, dst, dontunmap) {
                        return Err(self.shadow_inconsistent(t, mm, "mremap", why));
                    }
                }
                // The destination of MREMAP_FIXED, or a shrunk tail.
                _ => sh.unmap(mm, r.start, r.end),
            },
            _ => {}
        }
        Ok(())
    }

    /// An address space task finished with `r`: what it did at its finish.
    /// A load's value is checked by [`World::shadow_load`].
    pub(super) fn shadow_done(
        &mut self,
        t: usize,
        mm: usize,
        op: MmOp,
        r: &Result<MmOutcome, mm::MmError>,
    ) -> Checked {
        let Ok(out) = r else {
            return Ok(());
        };
        match (op, out) {
            (
                MmOp::Mmap {
                    len, kind, prot, ..
                },
                MmOutcome::Addr(a),
            ) => self.shadow.map(mm, *a, len, kind, prot),
            // Applied range by range already, unless it had no
            // invalidation to apply under; again is harmless (the write
            // lock held all along).
            (MmOp::Mprotect { addr, len, prot }, _) => {
                self.shadow
                    .protect(mm, addr, addr.saturating_add(page_len(len)), prot)
            }
            (
                MmOp::Mremap {
                    addr,
                    old_len,
                    new_len,
                    ..
                },
                MmOutcome::Addr(a),
            ) => {
                let (old_len, new_len) = (page_len(old_len), page_len(new_len));
                if old_len == 0 && *a != addr {
                    // A duplicate of a shared mapping (old length 0): the
                    // source stays, the new range maps the same object.
                    if let Err(why) = self.shadow.move_range(mm, addr, 0, new_len, *a, true) {
                        return Err(self.shadow_inconsistent(t, mm, "mremap", why));
                    }
                } else if *a == addr && new_len > old_len {
                    if let Err(why) = self.shadow.grow(mm, addr, old_len, new_len) {
                        return Err(self.shadow_inconsistent(t, mm, "mremap", why));
                    }
                }
            }
            (MmOp::Fork, MmOutcome::Forked(_)) => self.shadow.fork(mm, 1),
            (MmOp::Exit, _) => self.shadow.exit(mm),
            (
                MmOp::Access {
                    addr,
                    write: Some(_),
                },
                MmOutcome::Value(v),
            ) => {
                if let Err(m) = self.shadow.store(mm, addr, *v) {
                    return Err(self.shadow_diverge(
                        None,
                        format!("t{t} m{mm} write {addr:#x}"),
                        &m,
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A CPU load of `addr` in `mm` returned `v`.
    pub(super) fn shadow_load(&self, t: usize, mm: usize, addr: u64, v: u64) -> Checked {
        self.shadow
            .check_load(mm, addr, v)
            .map_err(|m| self.shadow_diverge(None, format!("t{t} m{mm} read {addr:#x}"), &m))
    }

    /// Device `d` (on `mm`) read `v` at `addr`, or stored it.
    pub(super) fn shadow_device(
        &mut self,
        d: usize,
        mm: usize,
        addr: u64,
        access: &Access,
        v: u64,
        at: Option<usize>,
    ) -> Checked {
        let r = match access {
            Access::Read => self.shadow.check_load(mm, addr, v),
            Access::Write(_) => self.shadow.store(mm, addr, v),
        };
        r.map_err(|m| {
            let what = match access {
                Access::Read => format!("d{d} read {addr:#x}"),
                Access::Write(_) => format!("d{d} write {addr:#x} {v:#x}"),
            };
            self.shadow_diverge(at, what, &m)
        })
    }

    /// At the end of a program: every address space's layout is the
    /// shadow's, and every page that was stored to, or that the CPU maps,
    /// holds what the shadow says.
    pub(super) fn shadow_final(&self) -> Checked {
        for (i, mm) in self.mms.iter().enumerate() {
            let Some(mm) = mm else { continue };
            if mm.exited || !self.shadow.live(i) {
                if mm.exited == self.shadow.live(i) {
                    return Err(self.diverge(
                        DivergenceKind::Shadow,
                        None,
                        "checking memory at the end".into(),
                        format!("m{i} exited: {}", mm.exited),
                        format!("the shadow has m{i} live: {}", self.shadow.live(i)),
                    ));
                }
                continue;
            }
            let seen = coalesce(
                mm.vmas()
                    .map(|v| Region {
                        start: v.start,
                        end: v.end,
                        kind: match v.backing {
                            mm::Backing::AnonPrivate => RegionKind::Private,
                            mm::Backing::AnonShared { .. } => RegionKind::AnonShared,
                            mm::Backing::File { file } => RegionKind::File {
                                file,
                                pgoff: v.pgoff,
                            },
                        },
                        read: v.read,
                        write: v.write,
                    })
                    .collect(),
            );
            let want = self.shadow.layout(i);
            if seen != want {
                return Err(self.diverge(
                    DivergenceKind::Shadow,
                    None,
                    "checking mappings at the end".into(),
                    format!("m{i} maps {}", regions(&seen)),
                    format!("the shadow maps {}", regions(&want)),
                ));
            }
            let mut pages = self.shadow.stored_pages(i);
            pages.extend(mm.ptes().map(|(a, _)| a));
            pages.sort_unstable();
            pages.dedup();
            for a in pages {
                let (got, want) = (mm.cpu_view(&self.phys, a), self.shadow.value(i, a));
                if got != want {
                    return Err(self.diverge(
                        DivergenceKind::Shadow,
                        None,
                        "checking memory at the end".into(),
                        format!("m{i} {a:#x} holds {}", show(got)),
                        format!("the shadow memory holds {}", show(want)),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn regions(rs: &[Region]) -> String {
    let mut s = Vec::new();
    for r in rs {
        let kind = match r.kind {
            RegionKind::Private => "anon".to_string(),
            RegionKind::AnonShared => "shared".to_string(),
            RegionKind::File { file, pgoff } => format!("file:{file}@{:#x}", pgoff * PAGE),
        };
        let prot = match (r.read, r.write) {
            (true, true) => "rw",
            (true, false) => "ro",
            _ => "none",
        };
        s.push(format!(
            "{:#x}+{:#x} {kind} {prot}",
            r.start,
            r.end - r.start
        ));
    }
    if s.is_empty() {
        "nothing".into()
    } else {
        s.join(", ")
    }
}
