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
use oracles::shadow::{coalesce, Mismatch, Refused, Region, RegionKind};

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
    /// applied, if it did ([`oracles::shadow::Shadow::follow_step`]).
    pub(super) fn shadow_step(&mut self, t: usize, mm: usize, task: &Task) -> Checked {
        // Only an mremap's move can be refused.
        self.shadow
            .follow_step(mm, task)
            .map_err(|why| self.shadow_inconsistent(t, mm, "mremap", why))
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
        match self.shadow.follow_done(mm, op, r) {
            Ok(()) => Ok(()),
            Err(Refused::Inconsistent(why)) => Err(self.shadow_inconsistent(t, mm, "mremap", why)),
            Err(Refused::Store(m)) => {
                Err(self.shadow_diverge(None, format!("t{t} m{mm} write {:#x}", m.addr), &m))
            }
        }
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
