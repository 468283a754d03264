//! Shadow memory (DESIGN §5): what every page of every address space
//! holds, kept from the operations alone.
//!
//! The other mirror oracles take the expected value of an access from the
//! simulated mm itself (the reference mirror walks the same CPU page
//! table), so a bug that corrupts the mm's own state makes the model and
//! the oracle agree. The shadow never looks at a page table, a frame, a
//! VMA or a swap slot: it is told what each operation did, as its caller
//! saw it succeed (an mmap at the address it returned, a store of a
//! value, a fork), and works out what every page must hold from the
//! contract alone:
//!
//! - a fresh private page reads zero; a shared page reads its object's
//!   page (zero for anonymous shared memory, the file's contents for a
//!   file), whoever maps it;
//! - a store, by the CPU or by a device, is what the page holds from then
//!   on, in that address space (private) or in the object (shared);
//! - munmap forgets the range; madvise(DONTNEED), the OOM reaper and exit
//!   make private pages fresh again and leave shared ones alone;
//! - mremap carries the contents along (the tail of a grown mapping is
//!   fresh; MREMAP_DONTUNMAP leaves an empty private mapping behind);
//! - fork gives the child a copy of the parent's private contents and the
//!   same objects for shared mappings; after that the two never see each
//!   other's private stores;
//! - mprotect, swap, KSM, THP collapse and split, NUMA migration and
//!   migration to device memory and back change no content.
//!
//! The shadow also knows which pages are mapped and with what protection,
//! so a load that succeeds where nothing readable is mapped, or a store
//! that succeeds where nothing writable is, is a divergence too. A load or
//! store that fails is never one: the simulation may refuse an access for
//! reasons of its own (a fault that lost a race too often).

use std::collections::BTreeMap;

use mm::{MapKind, MmError, MmOp, Outcome as MmOutcome, Prot, Task, PAGE};
use notifier::Range;

/// What a page of file `file` at page offset `pgoff` holds before anyone
/// stores to it: the fixture's file contents, one distinct word per page
/// so that a read of the wrong page shows.
pub fn file_page(file: u32, pgoff: u64) -> u64 {
    0xf11e_0000_0000_0000 | (u64::from(file) << 32) | pgoff
}

/// A shared object: a file, or anonymous shared memory (numbered by the
/// shadow itself, in the order of the mmaps that created them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Object {
    /// A file.
    File(u32),
    /// Anonymous shared memory.
    Anon(u32),
}

/// What backs a mapping, as the shadow knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backing {
    Private,
    // The object and the page offset of the mapping's first page.
    Shared { obj: Object, pgoff: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    end: u64,
    backing: Backing,
    read: bool,
    write: bool,
}

/// The kind of a region of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Private anonymous memory.
    Private,
    /// Anonymous shared memory.
    AnonShared,
    /// A file, from this page offset on.
    File {
        /// The file.
        file: u32,
        /// Page offset of the region's first page.
        pgoff: u64,
    },
}

/// One region of an address space's layout: what `/proc/PID/maps` would
/// show, with adjacent regions of the same kind and protection merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What backs it.
    pub kind: RegionKind,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
}

/// Merges adjacent regions that continue each other (same kind and
/// protection, a file's page offsets running on), after sorting.
pub fn coalesce(mut regions: Vec<Region>) -> Vec<Region> {
    regions.sort_by_key(|r| r.start);
    let mut out: Vec<Region> = Vec::with_capacity(regions.len());
    for r in regions {
        if let Some(last) = out.last_mut() {
            let continues = match (last.kind, r.kind) {
                (
                    RegionKind::File { file: a, pgoff: p },
                    RegionKind::File { file: b, pgoff: q },
                ) => a == b && p + (last.end - last.start) / PAGE == q,
                (a, b) => a == b,
            };
            if last.end == r.start && continues && last.read == r.read && last.write == r.write {
                last.end = r.end;
                continue;
            }
        }
        out.push(r);
    }
    out
}

#[derive(Clone, Debug, Default)]
struct Space {
    // Mappings by start.
    maps: BTreeMap<u64, Mapping>,
    // Private pages' contents by page address; absent: fresh (zero).
    private: BTreeMap<u64, u64>,
    exited: bool,
}

impl Space {
    fn at(&self, addr: u64) -> Option<(u64, &Mapping)> {
        self.maps
            .range(..=addr)
            .next_back()
            .filter(|(_, m)| addr < m.end)
            .map(|(&s, m)| (s, m))
    }

    // No mapping straddles `addr` afterwards.
    fn split(&mut self, addr: u64) {
        let Some((s, m)) = self.at(addr).map(|(s, m)| (s, *m)) else {
            return;
        };
        if s == addr {
            return;
        }
        let right = Mapping {
            backing: match m.backing {
                Backing::Private => Backing::Private,
                Backing::Shared { obj, pgoff } => Backing::Shared {
                    obj,
                    pgoff: pgoff + (addr - s) / PAGE,
                },
            },
            ..m
        };
        self.maps.insert(s, Mapping { end: addr, ..m });
        self.maps.insert(addr, right);
    }

    fn forget_private(&mut self, start: u64, end: u64) {
        let pages: Vec<u64> = self.private.range(start..end).map(|(&p, _)| p).collect();
        for p in pages {
            self.private.remove(&p);
        }
    }

    fn unmap(&mut self, start: u64, end: u64) {
        self.split(start);
        self.split(end);
        let keys: Vec<u64> = self.maps.range(start..end).map(|(&k, _)| k).collect();
        for k in keys {
            self.maps.remove(&k);
        }
        self.forget_private(start, end);
    }
}

/// A value or a permission that the contract does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The address space.
    pub mm: usize,
    /// The address.
    pub addr: u64,
    /// What the access saw (None: it found nothing mapped).
    pub got: Option<u64>,
    /// What the shadow says is there (None: nothing readable is mapped).
    pub expected: Option<u64>,
    /// What was wrong, in words.
    pub why: String,
}

/// The shadow memory of every address space.
#[derive(Clone, Debug, Default)]
pub struct Shadow {
    spaces: Vec<Option<Space>>,
    // Shared objects' pages that have been stored to.
    objects: BTreeMap<(Object, u64), u64>,
    next_anon: u32,
}

fn page_of(addr: u64) -> u64 {
    addr / PAGE * PAGE
}

/// `len` rounded up to whole pages (saturating: the caller's operation
/// succeeded, so it did not overflow).
pub fn page_len(len: u64) -> u64 {
    len.div_ceil(PAGE).saturating_mul(PAGE)
}

impl Shadow {
    /// Room for `spaces` address spaces, none of them existing yet.
    pub fn new(spaces: usize) -> Shadow {
        Shadow {
            spaces: vec![None; spaces],
            objects: BTreeMap::new(),
            next_anon: 0,
        }
    }

    /// Address space `mm` comes into existence, empty.
    pub fn create(&mut self, mm: usize) {
        if let Some(s) = self.spaces.get_mut(mm) {
            *s = Some(Space::default());
        }
    }

    fn space(&self, mm: usize) -> Option<&Space> {
        self.spaces.get(mm)?.as_ref().filter(|s| !s.exited)
    }

    fn space_mut(&mut self, mm: usize) -> Option<&mut Space> {
        self.spaces.get_mut(mm)?.as_mut().filter(|s| !s.exited)
    }

    /// Whether `mm` exists and has not exited: only then does the shadow
    /// know what it holds.
    pub fn live(&self, mm: usize) -> bool {
        self.space(mm).is_some()
    }

    /// mmap(MAP_FIXED) of `[addr, addr + len)` succeeded: whatever was
    /// there is gone, and the range holds fresh pages.
    pub fn map(&mut self, mm: usize, addr: u64, len: u64, kind: MapKind, prot: Prot) {
        let backing = match kind {
            MapKind::AnonPrivate => Backing::Private,
            MapKind::AnonShared => {
                self.next_anon += 1;
                Backing::Shared {
                    obj: Object::Anon(self.next_anon),
                    pgoff: 0,
                }
            }
            MapKind::File(f) => Backing::Shared {
                obj: Object::File(f),
                pgoff: 0,
            },
        };
        let Some(s) = self.space_mut(mm) else {
            return;
        };
        let end = addr.saturating_add(page_len(len));
        s.unmap(addr, end);
        s.maps.insert(
            addr,
            Mapping {
                end,
                backing,
                read: prot.read(),
                write: prot.write(),
            },
        );
    }

    /// `[start, end)` is unmapped (munmap, the old mappings under an mmap,
    /// the tail of a shrinking mremap, a MREMAP_FIXED destination).
    pub fn unmap(&mut self, mm: usize, start: u64, end: u64) {
        if let Some(s) = self.space_mut(mm) {
            s.unmap(start, end);
        }
    }

    /// madvise(DONTNEED), the OOM reaper, exit's teardown: the private
    /// pages of `[start, end)` are fresh again; shared pages keep their
    /// object's contents.
    pub fn zap(&mut self, mm: usize, start: u64, end: u64) {
        if let Some(s) = self.space_mut(mm) {
            s.forget_private(start, end);
        }
    }

    /// mprotect of `[start, end)`: contents stay.
    pub fn protect(&mut self, mm: usize, start: u64, end: u64, prot: Prot) {
        let Some(s) = self.space_mut(mm) else {
            return;
        };
        s.split(start);
        s.split(end);
        for (_, m) in s.maps.range_mut(start..end) {
            m.read = prot.read();
            m.write = prot.write();
        }
    }

    /// Whether anything is mapped in `[start, end)`.
    pub fn any_mapped(&self, mm: usize, start: u64, end: u64) -> bool {
        self.space(mm)
            .is_some_and(|s| s.at(start).is_some() || s.maps.range(start..end).next().is_some())
    }

    /// A moving mremap of `[src, src + old_len)` to `dst` with `new_len`
    /// (lengths in whole pages): the first `min(old_len, new_len)` bytes
    /// carry their contents along, the rest of the destination is fresh.
    /// The source range is unmapped, or with `dontunmap` stays mapped and
    /// empty. Err when the shadow has no mapping at `src`.
    pub fn move_range(
        &mut self,
        mm: usize,
        src: u64,
        old_len: u64,
        new_len: u64,
        dst: u64,
        dontunmap: bool,
    ) -> Result<(), String> {
        let Some(s) = self.space_mut(mm) else {
            return Ok(());
        };
        let Some((start, m)) = s.at(src).map(|(a, m)| (a, *m)) else {
            return Err(format!(
                "mremap moved {src:#x}, which the shadow has unmapped"
            ));
        };
        let moved = old_len.min(new_len);
        let carried: Vec<(u64, u64)> = s
            .private
            .range(src..src.saturating_add(moved))
            .map(|(&p, &v)| (p - src, v))
            .collect();
        if dontunmap {
            s.forget_private(src, src.saturating_add(old_len));
        } else {
            s.unmap(src, src.saturating_add(old_len));
        }
        let dst_end = dst.saturating_add(new_len);
        s.unmap(dst, dst_end);
        let backing = match m.backing {
            Backing::Private => Backing::Private,
            Backing::Shared { obj, pgoff } => Backing::Shared {
                obj,
                pgoff: pgoff + (src - start) / PAGE,
            },
        };
        s.maps.insert(
            dst,
            Mapping {
                end: dst_end,
                backing,
                ..m
            },
        );
        for (off, v) in carried {
            s.private.insert(dst + off, v);
        }
        Ok(())
    }

    /// mremap grew `[addr, addr + old_len)` in place to `new_len` (whole
    /// pages): the new tail continues the mapping at `addr`, fresh.
    pub fn grow(&mut self, mm: usize, addr: u64, old_len: u64, new_len: u64) -> Result<(), String> {
        let Some(s) = self.space_mut(mm) else {
            return Ok(());
        };
        let Some((start, m)) = s.at(addr).map(|(a, m)| (a, *m)) else {
            return Err(format!(
                "mremap grew {addr:#x}, which the shadow has unmapped"
            ));
        };
        let old_end = addr.saturating_add(old_len);
        let new_end = addr.saturating_add(new_len);
        if s.maps.range(old_end..new_end).next().is_some() || m.end > old_end {
            return Err(format!(
                "mremap grew {addr:#x} in place over {old_end:#x}..{new_end:#x}, which is mapped"
            ));
        }
        let backing = match m.backing {
            Backing::Private => Backing::Private,
            Backing::Shared { obj, pgoff } => Backing::Shared {
                obj,
                pgoff: pgoff + (old_end - start) / PAGE,
            },
        };
        s.maps.insert(
            old_end,
            Mapping {
                end: new_end,
                backing,
                ..m
            },
        );
        Ok(())
    }

    /// `parent` forked and `child` is its copy: private contents copied,
    /// shared mappings on the same objects.
    pub fn fork(&mut self, parent: usize, child: usize) {
        let Some(p) = self.space(parent).cloned() else {
            return;
        };
        if let Some(c) = self.spaces.get_mut(child) {
            *c = Some(p);
        }
    }

    /// `mm` has exited: nothing is known about it any more.
    pub fn exit(&mut self, mm: usize) {
        if let Some(Some(s)) = self.spaces.get_mut(mm) {
            *s = Space {
                exited: true,
                ..Space::default()
            };
        }
    }

    /// What a load of `addr` in `mm` must return; None when no readable
    /// mapping covers it (or the shadow does not know `mm`).
    pub fn value(&self, mm: usize, addr: u64) -> Option<u64> {
        let s = self.space(mm)?;
        let (start, m) = s.at(addr)?;
        if !m.read {
            return None;
        }
        let page = page_of(addr);
        Some(match m.backing {
            Backing::Private => s.private.get(&page).copied().unwrap_or(0),
            Backing::Shared { obj, pgoff } => {
                let pg = pgoff + (page - start) / PAGE;
                self.object_page(obj, pg)
            }
        })
    }

    fn object_page(&self, obj: Object, pg: u64) -> u64 {
        match self.objects.get(&(obj, pg)) {
            Some(&v) => v,
            None => match obj {
                Object::File(f) => file_page(f, pg),
                Object::Anon(_) => 0,
            },
        }
    }

    /// Whether a store to `addr` in `mm` is allowed.
    pub fn writable(&self, mm: usize, addr: u64) -> bool {
        self.space(mm)
            .and_then(|s| s.at(addr))
            .is_some_and(|(_, m)| m.read && m.write)
    }

    /// A load of `addr` in `mm` returned `got`: Err if the contract does
    /// not allow that value there. Nothing is checked for an address space
    /// the shadow does not know (exited).
    pub fn check_load(&self, mm: usize, addr: u64, got: u64) -> Result<(), Box<Mismatch>> {
        if !self.live(mm) {
            return Ok(());
        }
        let expected = self.value(mm, addr);
        if expected == Some(got) {
            return Ok(());
        }
        let why = match expected {
            None => "a load succeeded where nothing readable is mapped".into(),
            Some(e) => format!("the page holds {e:#x}"),
        };
        Err(Box::new(Mismatch {
            mm,
            addr,
            got: Some(got),
            expected,
            why,
        }))
    }

    /// A store of `v` to `addr` in `mm` succeeded: the page holds `v` from
    /// now on. Err (and nothing stored) if the mapping does not allow it.
    pub fn store(&mut self, mm: usize, addr: u64, v: u64) -> Result<(), Box<Mismatch>> {
        if !self.live(mm) {
            return Ok(());
        }
        if !self.writable(mm, addr) {
            return Err(Box::new(Mismatch {
                mm,
                addr,
                got: Some(v),
                expected: self.value(mm, addr),
                why: "a store succeeded where nothing writable is mapped".into(),
            }));
        }
        let page = page_of(addr);
        let Some(s) = self.space_mut(mm) else {
            return Ok(());
        };
        let (start, m) = s.at(addr).map(|(a, m)| (a, *m)).expect("writable");
        match m.backing {
            Backing::Private => {
                s.private.insert(page, v);
            }
            Backing::Shared { obj, pgoff } => {
                self.objects.insert((obj, pgoff + (page - start) / PAGE), v);
            }
        }
        Ok(())
    }

    /// The layout of `mm`, merged (empty for an exited or unknown one).
    pub fn layout(&self, mm: usize) -> Vec<Region> {
        let Some(s) = self.space(mm) else {
            return Vec::new();
        };
        coalesce(
            s.maps
                .iter()
                .map(|(&start, m)| Region {
                    start,
                    end: m.end,
                    kind: match m.backing {
                        Backing::Private => RegionKind::Private,
                        Backing::Shared {
                            obj: Object::Anon(_),
                            ..
                        } => RegionKind::AnonShared,
                        Backing::Shared {
                            obj: Object::File(file),
                            pgoff,
                        } => RegionKind::File { file, pgoff },
                    },
                    read: m.read,
                    write: m.write,
                })
                .collect(),
        )
    }

    /// The pages of `mm` whose contents something stored: its private
    /// pages that are not fresh, and the mapped pages of objects that were
    /// stored to. Every other mapped page holds what a fresh page holds.
    pub fn stored_pages(&self, mm: usize) -> Vec<u64> {
        let Some(s) = self.space(mm) else {
            return Vec::new();
        };
        let mut pages: Vec<u64> = s.private.keys().copied().collect();
        for (&start, m) in &s.maps {
            if let Backing::Shared { obj, pgoff } = m.backing {
                let last = pgoff + (m.end - start) / PAGE;
                for (&(_, pg), _) in self.objects.range((obj, pgoff)..(obj, last)) {
                    pages.push(start + (pg - pgoff) * PAGE);
                }
            }
        }
        pages.sort_unstable();
        pages.dedup();
        pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0x10_0000;

    fn rw(s: &mut Shadow, kind: MapKind, pages: u64) {
        s.map(0, A, pages * PAGE, kind, Prot::ReadWrite);
    }

    #[test]
    fn fresh_pages_read_zero_or_their_file_and_stores_stick() {
        let mut s = Shadow::new(2);
        s.create(0);
        assert_eq!(s.value(0, A), None, "nothing mapped yet");
        rw(&mut s, MapKind::AnonPrivate, 2);
        assert_eq!(s.value(0, A + 8), Some(0));
        s.store(0, A + 8, 7).unwrap();
        assert_eq!(s.value(0, A), Some(7), "one word per page");
        assert_eq!(s.value(0, A + PAGE), Some(0));
        assert!(s.check_load(0, A, 7).is_ok());
        assert!(s.check_load(0, A, 8).is_err());
        assert!(s.check_load(0, A + 2 * PAGE, 0).is_err(), "unmapped");
        s.map(0, A + PAGE, PAGE, MapKind::File(1), Prot::Read);
        assert_eq!(s.value(0, A + PAGE), Some(file_page(1, 0)));
        assert!(s.store(0, A + PAGE, 1).is_err(), "read-only");
        assert_eq!(s.value(0, A), Some(7), "mmap next door keeps contents");
    }

    #[test]
    fn file_contents_match_the_simulated_files() {
        let phys = mm::Phys::new();
        for f in 0..2 {
            for pg in [0, 1, 17] {
                assert_eq!(phys.cache_data(f, pg), file_page(f, pg));
            }
        }
    }

    #[test]
    fn fork_copies_private_and_shares_shared() {
        let mut s = Shadow::new(2);
        s.create(0);
        rw(&mut s, MapKind::AnonPrivate, 1);
        s.map(0, A + PAGE, PAGE, MapKind::AnonShared, Prot::ReadWrite);
        s.store(0, A, 1).unwrap();
        s.store(0, A + PAGE, 2).unwrap();
        s.fork(0, 1);
        s.store(0, A, 3).unwrap();
        s.store(1, A + PAGE, 4).unwrap();
        assert_eq!(s.value(1, A), Some(1), "the child keeps its copy");
        assert_eq!(s.value(0, A), Some(3));
        assert_eq!(s.value(0, A + PAGE), Some(4), "shared both ways");
        s.exit(1);
        assert!(!s.live(1));
        assert!(s.check_load(1, A, 99).is_ok(), "unknown after exit");
        assert_eq!(s.value(0, A + PAGE), Some(4), "the object outlives m1");
    }

    #[test]
    fn zap_and_unmap_forget_private_contents_only() {
        let mut s = Shadow::new(1);
        s.create(0);
        rw(&mut s, MapKind::AnonPrivate, 2);
        s.map(0, A + 2 * PAGE, PAGE, MapKind::File(0), Prot::ReadWrite);
        for i in 0..3 {
            s.store(0, A + i * PAGE, 10 + i).unwrap();
        }
        s.zap(0, A, A + 3 * PAGE);
        assert_eq!(s.value(0, A), Some(0));
        assert_eq!(s.value(0, A + 2 * PAGE), Some(12), "page cache keeps it");
        s.store(0, A + PAGE, 5).unwrap();
        s.unmap(0, A + PAGE, A + 2 * PAGE);
        assert_eq!(s.value(0, A + PAGE), None);
        s.map(0, A + PAGE, PAGE, MapKind::AnonPrivate, Prot::ReadWrite);
        assert_eq!(s.value(0, A + PAGE), Some(0), "a new mapping is fresh");
        assert_eq!(s.stored_pages(0), vec![A + 2 * PAGE]);
    }

    #[test]
    fn mprotect_keeps_contents_and_gates_access() {
        let mut s = Shadow::new(1);
        s.create(0);
        rw(&mut s, MapKind::AnonPrivate, 3);
        s.store(0, A + PAGE, 9).unwrap();
        s.protect(0, A + PAGE, A + 2 * PAGE, Prot::None);
        assert_eq!(s.value(0, A + PAGE), None);
        assert!(s.store(0, A + PAGE, 1).is_err());
        s.protect(0, A, A + 3 * PAGE, Prot::Read);
        assert_eq!(s.value(0, A + PAGE), Some(9));
        assert!(!s.writable(0, A));
        assert_eq!(s.layout(0).len(), 1, "merged again");
    }

    #[test]
    fn mremap_carries_contents() {
        let mut s = Shadow::new(1);
        s.create(0);
        rw(&mut s, MapKind::AnonPrivate, 3);
        for i in 0..3 {
            s.store(0, A + i * PAGE, 1 + i).unwrap();
        }
        let d = 0x40_0000;
        // Shrinking move: the third page is dropped.
        s.move_range(0, A, 3 * PAGE, 2 * PAGE, d, false).unwrap();
        assert_eq!(s.value(0, A), None);
        assert_eq!(s.value(0, d), Some(1));
        assert_eq!(s.value(0, d + PAGE), Some(2));
        assert_eq!(s.value(0, d + 2 * PAGE), None);
        s.grow(0, d, 2 * PAGE, 4 * PAGE).unwrap();
        assert_eq!(s.value(0, d + 3 * PAGE), Some(0), "grown tail is fresh");
        assert!(s.grow(0, A, PAGE, 2 * PAGE).is_err(), "nothing there");
        // DONTUNMAP: the source stays, empty.
        s.move_range(0, d, 4 * PAGE, 4 * PAGE, A, true).unwrap();
        assert_eq!(s.value(0, d), Some(0));
        assert_eq!(s.value(0, A + PAGE), Some(2));
        // A file mapping moves with its page offsets.
        s.map(0, 0x80_0000, 4 * PAGE, MapKind::File(1), Prot::ReadWrite);
        s.move_range(0, 0x80_0000 + 2 * PAGE, PAGE, PAGE, 0x90_0000, false)
            .unwrap();
        assert_eq!(s.value(0, 0x90_0000), Some(file_page(1, 2)));
        assert!(s.move_range(0, 0xa0_0000, PAGE, PAGE, 0, false).is_err());
    }

    #[test]
    fn layouts_merge_what_continues() {
        let r = |start, end, kind| Region {
            start,
            end,
            kind,
            read: true,
            write: true,
        };
        let f = |pgoff| RegionKind::File { file: 0, pgoff };
        let merged = coalesce(vec![
            r(2 * PAGE, 3 * PAGE, f(1)),
            r(0, PAGE, RegionKind::Private),
            r(PAGE, 2 * PAGE, f(0)),
            r(3 * PAGE, 4 * PAGE, f(5)),
        ]);
        assert_eq!(
            merged,
            vec![
                r(0, PAGE, RegionKind::Private),
                r(PAGE, 3 * PAGE, f(0)),
                r(3 * PAGE, 4 * PAGE, f(5)),
            ]
        );
    }
}

/// Why the shadow refused what an operation did at its finish.
#[derive(Debug)]
pub enum Refused {
    /// The shadow's mappings do not allow what the operation did.
    Inconsistent(String),
    /// A store the shadow's protections forbid.
    Store(Box<Mismatch>),
}

impl Shadow {
    /// After a step of `task` on `mm`: the range it just applied, if it
    /// did. An operation changes memory at its apply steps (between the
    /// start and the end of an invalidation), so the shadow follows it
    /// there, range by range, and loads in between are checked exactly.
    /// Err: the shadow's mappings do not allow what the step did.
    pub fn follow_step(&mut self, mm: usize, task: &Task) -> Result<(), String> {
        if !task.just_applied() {
            return Ok(());
        }
        let Some(r) = task.open_range() else {
            return Ok(());
        };
        self.follow_range(mm, task, r)
    }

    fn follow_range(&mut self, mm: usize, task: &Task, r: Range) -> Result<(), String> {
        match *task.op() {
            MmOp::Mmap { .. } | MmOp::Munmap { .. } => self.unmap(mm, r.start, r.end),
            MmOp::Mprotect { prot, .. } => self.protect(mm, r.start, r.end, prot),
            MmOp::Dontneed { .. } | MmOp::OomReap | MmOp::Exit => self.zap(mm, r.start, r.end),
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
                    if new_addr.is_none() && self.any_mapped(mm, dst, dst.saturating_add(new_len)) {
                        return Err(format!(
                            "mremap without MREMAP_FIXED moved {addr:#x} over a mapping at {dst:#x}"
                        ));
                    }
                    self.move_range(mm, addr, old_len, new_len, dst, dontunmap)?;
                }
                // The destination of MREMAP_FIXED, or a shrunk tail.
                _ => self.unmap(mm, r.start, r.end),
            },
            _ => {}
        }
        Ok(())
    }

    /// `op` on `mm` finished with `r`: what it did at its finish (mmap's
    /// new mapping, mremap's in-place growth or duplicate, fork's copy,
    /// exit, a store). Loads are the caller's to check
    /// ([`Shadow::check_load`]).
    pub fn follow_done(
        &mut self,
        mm: usize,
        op: MmOp,
        r: &Result<MmOutcome, MmError>,
    ) -> Result<(), Refused> {
        let Ok(out) = r else {
            return Ok(());
        };
        match (op, out) {
            (
                MmOp::Mmap {
                    len, kind, prot, ..
                },
                MmOutcome::Addr(a),
            ) => self.map(mm, *a, len, kind, prot),
            // Applied range by range already, unless it had no
            // invalidation to apply under; again is harmless (the write
            // lock held all along).
            (MmOp::Mprotect { addr, len, prot }, _) => {
                self.protect(mm, addr, addr.saturating_add(page_len(len)), prot)
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
                    self.move_range(mm, addr, 0, new_len, *a, true)
                        .map_err(Refused::Inconsistent)?;
                } else if *a == addr && new_len > old_len {
                    self.grow(mm, addr, old_len, new_len)
                        .map_err(Refused::Inconsistent)?;
                }
            }
            (MmOp::Fork, MmOutcome::Forked(_)) => self.fork(mm, 1),
            (MmOp::Exit, _) => self.exit(mm),
            (
                MmOp::Access {
                    addr,
                    write: Some(_),
                },
                MmOutcome::Value(v),
            ) => self.store(mm, addr, *v).map_err(Refused::Store)?,
            _ => {}
        }
        Ok(())
    }
}
