//! A simulated address space that emits the kernel's mmu notifier
//! invalidations.
//!
//! [`Phys`] is physical memory: frames with one word of content each, map
//! and pin counts, swap slots, and a page cache for shared and file
//! mappings. [`Mm`] is one address space: VMAs, the CPU page table, a model
//! of the mmap lock, and its notifier core. Operations are [`Task`]s. Each
//! is a state machine whose steps a scheduler interleaves with other
//! logical threads: lock, then for every range `invalidate_range_start`,
//! apply, `invalidate_range_end`, then finish and unlock. CPU PTEs change
//! only between a start and its end, as in the kernel.

#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use notifier::{PlantedBug, Subscriptions};

mod task;

pub use task::{Blocked, Env, MapKind, MmError, MmOp, Outcome, Prot, Task, TaskStep};

/// Page size.
pub const PAGE: u64 = notifier::PAGE_SIZE;
/// The span of a huge page (THP collapse and split work on aligned 2 MiB).
pub const HUGE: u64 = 2 << 20;

/// A physical frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameId(pub u32);

/// One frame: a word of content and its counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The page's content.
    pub data: u64,
    /// CPU PTEs that map it.
    pub mapcount: u32,
    /// Pins (get_user_pages FOLL_PIN): a pinned frame is never freed.
    pub pincount: u32,
    /// Held by the page cache (shared and file mappings).
    pub cached: bool,
    /// Not free.
    pub live: bool,
    /// Device-private memory of this owner; None for system memory.
    pub device: Option<u64>,
}

/// Physical memory shared by every address space (parents and children).
#[derive(Clone, Debug)]
pub struct Phys {
    frames: Vec<Frame>,
    swap: BTreeMap<u32, (u64, u32)>,
    next_slot: u32,
    cache: BTreeMap<(u32, u64), FrameId>,
    next_obj: u32,
    // Pages of each anonymous shared object (its mmap length): a page
    // past the end is SIGBUS, as for Linux's shmem file behind it.
    obj_pages: BTreeMap<u32, u64>,
}

impl Default for Phys {
    fn default() -> Phys {
        Phys::new()
    }
}

/// Anonymous shared objects are numbered from here; lower ids are files.
const FIRST_ANON_OBJECT: u32 = 1 << 16;

/// A new page-cache page's content: zero for anonymous memory, distinct
/// per file page, so that reading the wrong page shows.
fn initial_content(obj: u32, pgoff: u64) -> u64 {
    if obj >= FIRST_ANON_OBJECT {
        0
    } else {
        0xf11e_0000_0000_0000 | (u64::from(obj) << 32) | pgoff
    }
}

impl Phys {
    /// Memory with only the shared zero page.
    pub fn new() -> Phys {
        Phys {
            frames: vec![Frame {
                data: 0,
                mapcount: 0,
                pincount: 0,
                cached: false,
                live: true,
                device: None,
            }],
            swap: BTreeMap::new(),
            next_slot: 0,
            cache: BTreeMap::new(),
            next_obj: FIRST_ANON_OBJECT,
            obj_pages: BTreeMap::new(),
        }
    }

    /// The shared zero page.
    pub fn zero(&self) -> FrameId {
        FrameId(0)
    }

    /// A new frame holding `data`, with no mappings.
    pub fn alloc(&mut self, data: u64) -> FrameId {
        let f = Frame {
            data,
            mapcount: 0,
            pincount: 0,
            cached: false,
            live: true,
            device: None,
        };
        // Frame ids are never reused: a device PTE left on a freed frame
        // must not come back to life when the id is handed out again.
        self.frames.push(f);
        FrameId(self.frames.len() as u32 - 1)
    }

    /// A new frame of device-private memory of `owner`, holding `data`.
    pub fn alloc_device(&mut self, data: u64, owner: u64) -> FrameId {
        let f = self.alloc(data);
        self.frames[f.0 as usize].device = Some(owner);
        f
    }

    /// A frame's state.
    pub fn frame(&self, f: FrameId) -> &Frame {
        &self.frames[f.0 as usize]
    }

    /// A frame's content.
    pub fn data(&self, f: FrameId) -> u64 {
        self.frames[f.0 as usize].data
    }

    /// Writes a frame's content.
    pub fn set_data(&mut self, f: FrameId, v: u64) {
        self.frames[f.0 as usize].data = v;
    }

    /// One more CPU mapping.
    pub fn map(&mut self, f: FrameId) {
        self.frames[f.0 as usize].mapcount += 1;
    }

    /// One CPU mapping fewer; frees the frame when nothing holds it.
    pub fn unmap(&mut self, f: FrameId) {
        let fr = &mut self.frames[f.0 as usize];
        fr.mapcount = fr.mapcount.saturating_sub(1);
        self.maybe_free(f);
    }

    fn maybe_free(&mut self, f: FrameId) {
        if f == self.zero() {
            return;
        }
        let fr = &mut self.frames[f.0 as usize];
        if fr.live && fr.mapcount == 0 && fr.pincount == 0 && !fr.cached {
            fr.live = false;
        }
    }

    /// Pins a frame.
    pub fn pin(&mut self, f: FrameId) {
        self.frames[f.0 as usize].pincount += 1;
    }

    /// Unpins a frame; frees it when nothing holds it.
    pub fn unpin(&mut self, f: FrameId) {
        let fr = &mut self.frames[f.0 as usize];
        fr.pincount = fr.pincount.saturating_sub(1);
        self.maybe_free(f);
    }

    /// Puts `data` in a new swap slot with one reference.
    pub fn swap_out(&mut self, data: u64) -> u32 {
        let slot = self.next_slot;
        self.next_slot += 1;
        self.swap.insert(slot, (data, 1));
        slot
    }

    /// The content of a swap slot.
    pub fn swap_data(&self, slot: u32) -> u64 {
        self.swap.get(&slot).map_or(0, |s| s.0)
    }

    /// One more reference to a swap slot (fork copies swap entries).
    pub fn swap_dup(&mut self, slot: u32) {
        if let Some(s) = self.swap.get_mut(&slot) {
            s.1 += 1;
        }
    }

    /// Drops a reference to a swap slot.
    pub fn swap_free(&mut self, slot: u32) {
        if let Some(s) = self.swap.get_mut(&slot) {
            s.1 -= 1;
            if s.1 == 0 {
                self.swap.remove(&slot);
            }
        }
    }

    /// The page-cache frame for page `pgoff` of object `obj`, created on first use.
    pub fn cache_page(&mut self, obj: u32, pgoff: u64) -> FrameId {
        if let Some(&f) = self.cache.get(&(obj, pgoff)) {
            return f;
        }
        let f = self.alloc(initial_content(obj, pgoff));
        self.frames[f.0 as usize].cached = true;
        self.cache.insert((obj, pgoff), f);
        f
    }

    /// What a page-cache page holds without creating it.
    pub fn cache_data(&self, obj: u32, pgoff: u64) -> u64 {
        match self.cache.get(&(obj, pgoff)) {
            Some(&f) => self.data(f),
            None => initial_content(obj, pgoff),
        }
    }

    /// A new object id for an anonymous shared mapping.
    pub fn new_object(&mut self) -> u32 {
        self.next_obj += 1;
        self.next_obj
    }

    /// A new anonymous shared object of `pages` pages.
    pub fn new_object_of(&mut self, pages: u64) -> u32 {
        let obj = self.new_object();
        self.obj_pages.insert(obj, pages);
        obj
    }

    /// Whether page `pgoff` of object `obj` exists (anonymous shared
    /// objects end where their first mapping ended; files do not end).
    pub fn object_has(&self, obj: u32, pgoff: u64) -> bool {
        self.obj_pages.get(&obj).is_none_or(|&n| pgoff < n)
    }

    /// Frames currently live (for reports and oracles).
    pub fn live_frames(&self) -> usize {
        self.frames.iter().filter(|f| f.live).count()
    }
}

/// What backs a VMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backing {
    /// Anonymous private memory: copy on write after fork.
    AnonPrivate,
    /// Anonymous shared memory, object `obj` in the page cache.
    AnonShared {
        /// The shared object.
        obj: u32,
    },
    /// A shared mapping of file `file`.
    File {
        /// The file.
        file: u32,
    },
}

impl Backing {
    /// Private (copy on write) mapping.
    pub fn is_private(self) -> bool {
        self == Backing::AnonPrivate
    }

    fn object(self) -> Option<u32> {
        match self {
            Backing::AnonPrivate => None,
            Backing::AnonShared { obj } => Some(obj),
            Backing::File { file } => Some(file),
        }
    }
}

/// A mapping `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First byte (page aligned).
    pub start: u64,
    /// One past the last byte (page aligned).
    pub end: u64,
    /// What backs it.
    pub backing: Backing,
    /// Page offset of `start` in the backing object.
    pub pgoff: u64,
    /// Readable (false for PROT_NONE).
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Its anon_vma, once a private page was allocated in it (a write
    /// fault or a COW break); an id within its address space. Linux merges
    /// VMAs only with compatible anon_vmas, and gives a never-faulted
    /// anonymous VMA that mremap moves the page offset of its new address.
    pub anon_vma: Option<u32>,
}

impl Vma {
    /// The backing object's page for `addr` (shared mappings).
    pub fn object_page(&self, addr: u64) -> Option<(u32, u64)> {
        self.backing
            .object()
            .map(|o| (o, self.pgoff + (addr - self.start) / PAGE))
    }
}

/// A CPU page table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pte {
    /// Mapped.
    Present {
        /// The frame.
        frame: FrameId,
        /// Writable.
        writable: bool,
    },
    /// Swapped out to `slot`.
    Swap {
        /// The swap slot.
        slot: u32,
    },
    /// The page lives in device-private memory; a CPU access migrates it
    /// back first.
    Device {
        /// The device frame.
        frame: FrameId,
        /// The device that owns it.
        owner: u64,
        /// Writable once back in system memory.
        writable: bool,
    },
    /// Device-exclusive: a device has atomic access and the CPU has no
    /// mapping; a CPU access revokes it first.
    Exclusive {
        /// The frame.
        frame: FrameId,
        /// The device holding it.
        owner: u64,
        /// Writable once restored.
        writable: bool,
    },
}

impl Pte {
    /// The frame it holds a reference to, if any.
    pub fn frame(self) -> Option<FrameId> {
        match self {
            Pte::Present { frame, .. }
            | Pte::Device { frame, .. }
            | Pte::Exclusive { frame, .. } => Some(frame),
            Pte::Swap { .. } => None,
        }
    }
}

/// Identifies an address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MmId(pub u8);

/// The model of the mmap lock: readers or one writer, by logical thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MmapLock {
    /// Threads holding it for read.
    pub readers: Vec<u8>,
    /// The thread holding it for write.
    pub writer: Option<u8>,
}

/// Settings of an address space.
#[derive(Clone, Copy, Debug)]
pub struct MmConfig {
    /// Exclusive top of the address space.
    pub task_size: u64,
    /// Initial notifier seq.
    pub initial_seq: u64,
    /// The planted bug to enable (mm's own and the core's).
    pub planted: Option<PlantedBug>,
}

impl Default for MmConfig {
    fn default() -> MmConfig {
        MmConfig {
            task_size: 1 << 47,
            initial_seq: 2,
            planted: None,
        }
    }
}

/// One address space.
pub struct Mm {
    /// Its id.
    pub id: MmId,
    /// Its settings.
    pub config: MmConfig,
    /// Its notifier core.
    pub notifier: Arc<Subscriptions>,
    vmas: BTreeMap<u64, Vma>,
    ptes: BTreeMap<u64, Pte>,
    // Bases of 2 MiB ranges mapped huge: 512 present PTEs on contiguous frames.
    huge: BTreeSet<u64>,
    /// The mmap lock.
    pub lock: MmapLock,
    /// Whether it has exited.
    pub exited: bool,
    next_anon_vma: u32,
}

impl std::fmt::Debug for Mm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mm")
            .field("id", &self.id)
            .field("vmas", &self.vmas)
            .field("ptes", &self.ptes)
            .field("lock", &self.lock)
            .finish()
    }
}

impl Mm {
    /// An empty address space.
    pub fn new(id: MmId, config: MmConfig) -> Mm {
        let core = notifier::Config {
            initial_seq: config.initial_seq,
            task_size: config.task_size,
            planted: config.planted,
            ..notifier::Config::default()
        };
        Mm {
            id,
            config,
            notifier: Arc::new(Subscriptions::new(core).expect("even initial seq")),
            vmas: BTreeMap::new(),
            ptes: BTreeMap::new(),
            huge: BTreeSet::new(),
            lock: MmapLock::default(),
            exited: false,
            next_anon_vma: 0,
        }
    }

    /// Gives the private VMA at `addr` an anon_vma if it has none (a
    /// private page is being allocated in it).
    pub(crate) fn prepare_anon_vma(&mut self, addr: u64) {
        let Some(start) = self.vma_at(addr).map(|v| v.start) else {
            return;
        };
        let next = self.next_anon_vma;
        if let Some(v) = self.vmas.get_mut(&start) {
            if v.backing.is_private() && v.anon_vma.is_none() {
                v.anon_vma = Some(next);
                self.next_anon_vma += 1;
            }
        }
    }

    #[cfg(feature = "planted-bugs")]
    pub(crate) fn planted(&self, bug: PlantedBug) -> bool {
        self.config.planted == Some(bug)
    }

    #[cfg(not(feature = "planted-bugs"))]
    pub(crate) fn planted(&self, _bug: PlantedBug) -> bool {
        false
    }

    /// The VMA containing `addr`.
    pub fn vma_at(&self, addr: u64) -> Option<&Vma> {
        self.vmas
            .range(..=addr)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| addr < v.end)
    }

    /// Every VMA, ascending.
    pub fn vmas(&self) -> impl Iterator<Item = &Vma> {
        self.vmas.values()
    }

    /// The PTE for the page containing `addr`.
    pub fn pte(&self, addr: u64) -> Option<Pte> {
        self.ptes.get(&(addr / PAGE)).copied()
    }

    /// The PTEs of `[start, end)` as `(page address, pte)`, ascending.
    pub fn ptes_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, Pte)> + '_ {
        self.ptes
            .range(start / PAGE..end.div_ceil(PAGE))
            .map(|(&v, &p)| (v * PAGE, p))
    }

    /// Every PTE as `(page address, pte)`, ascending.
    pub fn ptes(&self) -> impl Iterator<Item = (u64, Pte)> + '_ {
        self.ptes.iter().map(|(&v, &p)| (v * PAGE, p))
    }

    /// Whether the page containing `addr` is part of a huge mapping.
    pub fn is_huge(&self, addr: u64) -> bool {
        self.huge.contains(&(addr / HUGE * HUGE))
    }

    /// What a CPU read of `addr` returns now, without changing anything;
    /// None if no readable VMA maps it (the read would fault with SIGSEGV)
    /// or it is past the end of its shared object (SIGBUS).
    pub fn cpu_view(&self, phys: &Phys, addr: u64) -> Option<u64> {
        let vma = self.vma_at(addr).filter(|v| v.read)?;
        Some(match self.pte(addr) {
            Some(Pte::Present { frame, .. })
            | Some(Pte::Device { frame, .. })
            | Some(Pte::Exclusive { frame, .. }) => phys.data(frame),
            Some(Pte::Swap { slot }) => phys.swap_data(slot),
            None => match vma.object_page(addr) {
                Some((obj, pg)) if !phys.object_has(obj, pg) => return None,
                Some((obj, pg)) => phys.cache_data(obj, pg),
                None => 0,
            },
        })
    }

    pub(crate) fn set_pte(&mut self, phys: &mut Phys, addr: u64, pte: Pte) {
        self.split_huge(addr);
        if let Some(f) = pte.frame() {
            phys.map(f);
        }
        if let Some(old) = self.ptes.insert(addr / PAGE, pte) {
            drop_pte(phys, old);
        }
    }

    pub(crate) fn clear_pte(&mut self, phys: &mut Phys, addr: u64) {
        self.split_huge(addr);
        if let Some(old) = self.ptes.remove(&(addr / PAGE)) {
            drop_pte(phys, old);
        }
    }

    /// A PMD split: the 2 MiB around `addr` is mapped by small PTEs from now on.
    pub(crate) fn split_huge(&mut self, addr: u64) {
        if !self.huge.is_empty() {
            self.huge.remove(&(addr / HUGE * HUGE));
        }
    }

    pub(crate) fn mark_huge(&mut self, base: u64) {
        self.huge.insert(base);
    }

    /// Replaces a PTE in place, keeping frame references (a permission or
    /// entry-type change on the same frame). One page's entry changing on
    /// its own means the 2 MiB around it is PTE-mapped from now on, as the
    /// kernel splits the PMD before make_device_exclusive.
    pub(crate) fn swap_pte_in_place(&mut self, addr: u64, pte: Pte) {
        self.split_huge(addr);
        self.ptes.insert(addr / PAGE, pte);
    }

    /// Removes every PTE in `[start, end)`.
    pub(crate) fn zap(&mut self, phys: &mut Phys, start: u64, end: u64) {
        let pages: Vec<u64> = self
            .ptes
            .range(start / PAGE..end.div_ceil(PAGE))
            .map(|(&v, _)| v)
            .collect();
        for v in pages {
            self.clear_pte(phys, v * PAGE);
        }
    }

    /// Page addresses with a PTE in `[start, end)`.
    pub(crate) fn mapped_pages(&self, start: u64, end: u64) -> Vec<u64> {
        self.ptes
            .range(start / PAGE..end.div_ceil(PAGE))
            .map(|(&v, _)| v * PAGE)
            .collect()
    }

    /// Cuts VMAs at `addr` so that no VMA straddles it.
    pub(crate) fn split_at(&mut self, addr: u64) {
        let Some(v) = self.vma_at(addr).copied() else {
            return;
        };
        if v.start == addr {
            return;
        }
        let left = Vma { end: addr, ..v };
        let right = Vma {
            start: addr,
            pgoff: v.pgoff + (addr - v.start) / PAGE,
            ..v
        };
        self.vmas.insert(left.start, left);
        self.vmas.insert(right.start, right);
    }

    /// Removes VMAs (and their PTEs) in `[start, end)`, splitting at the edges.
    pub(crate) fn remove_vmas(&mut self, phys: &mut Phys, start: u64, end: u64) {
        self.zap(phys, start, end);
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.vmas.range(start..end).map(|(&k, _)| k).collect();
        for k in keys {
            self.vmas.remove(&k);
        }
    }

    /// Merges adjacent VMAs that Linux would have merged: same backing,
    /// same protection, contiguous page offsets, compatible anon_vmas
    /// (one has none, or both the same).
    pub(crate) fn merge_vmas(&mut self) {
        let mut out: Vec<Vma> = Vec::with_capacity(self.vmas.len());
        for v in self.vmas.values() {
            if let Some(last) = out.last_mut() {
                let anon_ok =
                    last.anon_vma.is_none() || v.anon_vma.is_none() || last.anon_vma == v.anon_vma;
                let mergeable = last.end == v.start
                    && anon_ok
                    && last.backing == v.backing
                    && last.read == v.read
                    && last.write == v.write
                    && v.pgoff == last.pgoff + (last.end - last.start) / PAGE;
                if mergeable {
                    last.end = v.end;
                    last.anon_vma = last.anon_vma.or(v.anon_vma);
                    continue;
                }
            }
            out.push(*v);
        }
        if out.len() != self.vmas.len() {
            self.vmas = out.into_iter().map(|v| (v.start, v)).collect();
        }
    }

    pub(crate) fn insert_vma(&mut self, v: Vma) {
        self.vmas.insert(v.start, v);
    }

    /// Whether any VMA overlaps `[start, end)`.
    pub fn any_vma(&self, start: u64, end: u64) -> bool {
        self.vmas.values().any(|v| v.start < end && start < v.end)
    }

    /// VMAs overlapping `[start, end)`, clipped to it.
    pub(crate) fn vmas_in(&self, start: u64, end: u64) -> Vec<Vma> {
        self.vmas
            .values()
            .filter(|v| v.start < end && start < v.end)
            .map(|v| Vma {
                start: v.start.max(start),
                end: v.end.min(end),
                pgoff: v.pgoff + (v.start.max(start) - v.start) / PAGE,
                ..*v
            })
            .collect()
    }

    /// Copies this address space for fork: VMAs and PTEs; private pages are
    /// shared read-only (the parent's were write-protected before).
    pub(crate) fn fork_into(&self, phys: &mut Phys, id: MmId) -> Mm {
        let mut child = Mm::new(id, self.config);
        for v in self.vmas.values() {
            // anon_vma_fork: a new anon_vma for each VMA that has one.
            let anon_vma = v.anon_vma.map(|_| {
                child.next_anon_vma += 1;
                child.next_anon_vma - 1
            });
            child.insert_vma(Vma { anon_vma, ..*v });
        }
        for (&vpn, &pte) in &self.ptes {
            let private = self
                .vma_at(vpn * PAGE)
                .is_some_and(|v| v.backing.is_private());
            let pte = match pte {
                Pte::Present { frame, writable } => Pte::Present {
                    frame,
                    writable: writable && !private,
                },
                Pte::Swap { slot } => {
                    phys.swap_dup(slot);
                    Pte::Swap { slot }
                }
                // Device-private pages are shared copy on write, as system
                // pages are: a write on either side migrates back first.
                Pte::Device {
                    frame,
                    owner,
                    writable,
                } => Pte::Device {
                    frame,
                    owner,
                    writable: writable && !private,
                },
                // The parent's exclusive entries were restored before the copy.
                Pte::Exclusive {
                    frame, writable, ..
                } => Pte::Present {
                    frame,
                    writable: writable && !private,
                },
            };
            if let Some(f) = pte.frame() {
                phys.map(f);
            }
            child.ptes.insert(vpn, pte);
        }
        child
    }

    /// The lowest free, page-aligned range of `len` bytes at or above `hint`.
    pub(crate) fn free_range(&self, hint: u64, len: u64) -> Option<u64> {
        let mut at = hint;
        for v in self.vmas.values() {
            if v.end <= at {
                continue;
            }
            match at.checked_add(len) {
                Some(e) if e > v.start => at = v.end,
                // Fits before this VMA, or cannot fit at all.
                _ => break,
            }
        }
        (at.checked_add(len)? <= self.config.task_size).then_some(at)
    }
}

fn drop_pte(phys: &mut Phys, pte: Pte) {
    match pte {
        Pte::Present { frame, .. } | Pte::Device { frame, .. } | Pte::Exclusive { frame, .. } => {
            phys.unmap(frame)
        }
        Pte::Swap { slot } => phys.swap_free(slot),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_maps;
#[cfg(test)]
mod tests_phys;
#[cfg(test)]
mod tests_tasks;
