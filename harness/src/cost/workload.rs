//! Workloads: named, seeded generators of realistic traces of mm and device
//! activity (not fuzz inputs). Each takes a size; the same name, seed and
//! size always give the same trace.

use std::fmt;

use crate::engine::Rng;
use mm::{HUGE, PAGE};

/// One step of a trace. Addresses are absolute; every step is run to its
/// end before the next (the driver then runs the device's deferred work).
/// Fields are what they are called: addresses and lengths in bytes.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WOp {
    /// mmap(MAP_FIXED) of anonymous private memory, read-write.
    Mmap { addr: u64, len: u64 },
    /// munmap.
    Munmap { addr: u64, len: u64 },
    /// madvise(MADV_DONTNEED).
    Dontneed { addr: u64, len: u64 },
    /// mprotect read-only (`ro`) or read-write.
    Mprotect { addr: u64, len: u64, ro: bool },
    /// The runtime declares `[addr, addr + len)` a device buffer (KFD's
    /// set-attributes; the other strategies have nothing to do).
    DevAlloc { addr: u64, len: u64 },
    /// A CPU load or store in the parent.
    Cpu { addr: u64, write: bool },
    /// A device load or store.
    Dev { addr: u64, write: bool },
    /// The device migrates the range to its memory.
    DevMigrate { addr: u64, len: u64 },
    /// The device evicts its pages in the range back to system memory.
    DevEvict { addr: u64, len: u64 },
    /// Reclaim (swap out) one page.
    Reclaim { addr: u64 },
    /// NUMA or compaction migration of one page.
    Migrate { addr: u64 },
    /// KSM merges page `b` into page `a`.
    Ksm { a: u64, b: u64 },
    /// THP collapse of the aligned 2 MiB at `addr`.
    Collapse { addr: u64 },
    /// THP split of the aligned 2 MiB at `addr`.
    Split { addr: u64 },
    /// fork: the child is the second address space.
    Fork,
    /// A CPU store in the child.
    ChildWrite { addr: u64 },
    /// The child exits.
    ChildExit,
}

/// The named workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// Allocator churn: many small mmaps and munmaps (some partial), the
    /// device touching a subset of each allocation.
    Churn,
    /// A sparse device working set over a huge reservation.
    Sparse,
    /// Streaming over one big buffer: the CPU fills a window, the device
    /// reads it, madvise(DONTNEED) drops it.
    Stream,
    /// Fork-heavy: fork, COW writes in parent and child, child exit, the
    /// device reading the parent's buffer throughout.
    Fork,
    /// Memory pressure: reclaim, NUMA migration, KSM, THP collapse and split
    /// under a device working set.
    Pressure,
    /// Device-memory migration back and forth: migrate to the device, CPU
    /// touches bring pages back, evictions.
    DevMig,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 6] = [
        Workload::Churn,
        Workload::Sparse,
        Workload::Stream,
        Workload::Fork,
        Workload::Pressure,
        Workload::DevMig,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Churn => "churn",
            Workload::Sparse => "sparse",
            Workload::Stream => "stream",
            Workload::Fork => "fork",
            Workload::Pressure => "pressure",
            Workload::DevMig => "devmig",
        }
    }

    /// What its size counts.
    pub fn size_unit(self) -> &'static str {
        match self {
            Workload::Churn => "allocations",
            Workload::Sparse => "device accesses",
            Workload::Stream => "pages streamed",
            Workload::Fork => "forks",
            Workload::Pressure => "pressure events",
            Workload::DevMig => "migration rounds",
        }
    }

    /// Looks a workload up by name.
    pub fn from_name(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// The trace for `seed` and `size`.
    pub fn trace(self, seed: u64, size: u64) -> Vec<WOp> {
        let mut g = Gen {
            rng: Rng::from_state(seed ^ (self as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            out: Vec::new(),
        };
        match self {
            Workload::Churn => g.churn(size),
            Workload::Sparse => g.sparse(size),
            Workload::Stream => g.stream(size),
            Workload::Fork => g.fork(size),
            Workload::Pressure => g.pressure(size),
            Workload::DevMig => g.devmig(size),
        }
        g.out
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The draws the generators make, on the engine's SplitMix64.
trait Draw {
    /// Uniform in `0..n` (`0` when `n` is 0).
    fn below64(&mut self, n: u64) -> u64;
    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool;
}

impl Draw for Rng {
    fn below64(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn pct(&mut self, pct: u64) -> bool {
        self.below64(100) < pct
    }
}

/// Where the workloads put things: far from zero, 1 GiB aligned.
pub const ARENA: u64 = 1 << 36;

/// The top of the simulated address space (47-bit x86_64 user space).
pub const TASK_SIZE: u64 = 1 << 47;

struct Gen {
    rng: Rng,
    out: Vec<WOp>,
}

impl Gen {
    /// `size` allocations of 1..=32 pages, each in a free 128 KiB slot
    /// (glibc's mmap threshold) of a 256 MiB heap, picked at random; the
    /// device touches a few pages of half of them, the other half are the
    /// CPU's alone; a quarter of the frees are partial (the tail first,
    /// like a realloc shrink).
    fn churn(&mut self, size: u64) {
        const SLOT: u64 = 32 * PAGE;
        const SLOTS: u64 = 2048;
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut free: Vec<u64> = (0..SLOTS).rev().collect();
        for _ in 0..size {
            // Keep about 64 allocations alive.
            if live.len() >= 64 || (!live.is_empty() && self.rng.pct(30)) {
                let i = self.rng.below64(live.len() as u64) as usize;
                let (addr, len) = live.swap_remove(i);
                if len > PAGE && self.rng.pct(25) {
                    let keep = (len / PAGE / 2).max(1) * PAGE;
                    self.out.push(WOp::Munmap {
                        addr: addr + keep,
                        len: len - keep,
                    });
                    self.out.push(WOp::Munmap { addr, len: keep });
                } else {
                    self.out.push(WOp::Munmap { addr, len });
                }
                free.push((addr - ARENA) / SLOT);
            }
            if free.is_empty() {
                continue;
            }
            let slot = free.swap_remove(self.rng.below64(free.len() as u64) as usize);
            let addr = ARENA + slot * SLOT;
            let len = (1 + self.rng.below64(32)) * PAGE;
            let pages = len / PAGE;
            // Half the allocations are the CPU's alone; only the device's
            // get attributes.
            let touched = if self.rng.pct(50) {
                1 + self.rng.below64(pages.min(4))
            } else {
                0
            };
            self.out.push(WOp::Mmap { addr, len });
            if touched > 0 {
                self.out.push(WOp::DevAlloc { addr, len });
            }
            self.out.push(WOp::Cpu { addr, write: true });
            for _ in 0..touched {
                let a = addr + self.rng.below64(pages) * PAGE;
                self.out.push(WOp::Dev {
                    addr: a,
                    write: self.rng.pct(50),
                });
            }
            live.push((addr, len));
        }
        for (addr, len) in live {
            self.out.push(WOp::Munmap { addr, len });
        }
    }

    /// A 64 GiB reservation, mapped once; `size` device accesses, 80% to a
    /// hot set of 32 pages scattered over it, the rest anywhere; every 64
    /// accesses the application drops one hot page's 2 MiB with
    /// madvise(DONTNEED).
    fn sparse(&mut self, size: u64) {
        const RES: u64 = 64 << 30;
        let base = ARENA;
        self.out.push(WOp::Mmap {
            addr: base,
            len: RES,
        });
        self.out.push(WOp::DevAlloc {
            addr: base,
            len: RES,
        });
        let hot: Vec<u64> = (0..32)
            .map(|_| base + self.rng.below64(RES / PAGE) * PAGE)
            .collect();
        for i in 0..size {
            let addr = if self.rng.pct(80) {
                hot[self.rng.below64(hot.len() as u64) as usize]
            } else {
                base + self.rng.below64(RES / PAGE) * PAGE
            };
            self.out.push(WOp::Dev {
                addr,
                write: self.rng.pct(30),
            });
            if i % 64 == 63 {
                let h = hot[self.rng.below64(hot.len() as u64) as usize] / HUGE * HUGE;
                self.out.push(WOp::Dontneed { addr: h, len: HUGE });
            }
        }
        self.out.push(WOp::Munmap {
            addr: base,
            len: RES,
        });
    }

    /// One buffer of `size` pages (at least 64), 2 MiB aligned, mapped
    /// once; windows of 64 pages: the CPU writes each page, the device
    /// reads each page (and writes about one in eight), the window is dropped with madvise(DONTNEED).
    fn stream(&mut self, size: u64) {
        const WIN: u64 = 64;
        let pages = size.max(WIN).div_ceil(WIN) * WIN;
        let base = ARENA;
        self.out.push(WOp::Mmap {
            addr: base,
            len: pages * PAGE,
        });
        self.out.push(WOp::DevAlloc {
            addr: base,
            len: pages * PAGE,
        });
        for w in 0..pages / WIN {
            let a = base + w * WIN * PAGE;
            for p in 0..WIN {
                self.out.push(WOp::Cpu {
                    addr: a + p * PAGE,
                    write: true,
                });
            }
            for p in 0..WIN {
                // The device writes its results over one page in eight.
                self.out.push(WOp::Dev {
                    addr: a + p * PAGE,
                    write: self.rng.pct(12),
                });
            }
            self.out.push(WOp::Dontneed {
                addr: a,
                len: WIN * PAGE,
            });
        }
        self.out.push(WOp::Munmap {
            addr: base,
            len: pages * PAGE,
        });
    }

    /// A 256-page buffer the device keeps reading; `size` rounds of fork,
    /// a few COW writes in the child and in the parent, device reads of
    /// the pages the parent rewrote, child exit.
    fn fork(&mut self, size: u64) {
        const PAGES: u64 = 256;
        let base = ARENA;
        self.out.push(WOp::Mmap {
            addr: base,
            len: PAGES * PAGE,
        });
        self.out.push(WOp::DevAlloc {
            addr: base,
            len: PAGES * PAGE,
        });
        for p in (0..PAGES).step_by(8) {
            self.out.push(WOp::Cpu {
                addr: base + p * PAGE,
                write: true,
            });
            self.out.push(WOp::Dev {
                addr: base + p * PAGE,
                write: false,
            });
        }
        for _ in 0..size {
            self.out.push(WOp::Fork);
            for _ in 0..4 {
                let a = base + self.rng.below64(PAGES) * PAGE;
                self.out.push(WOp::ChildWrite { addr: a });
            }
            for _ in 0..4 {
                let a = base + self.rng.below64(PAGES) * PAGE;
                self.out.push(WOp::Cpu {
                    addr: a,
                    write: true,
                });
                self.out.push(WOp::Dev {
                    addr: a,
                    write: false,
                });
            }
            self.out.push(WOp::ChildExit);
        }
        self.out.push(WOp::Munmap {
            addr: base,
            len: PAGES * PAGE,
        });
    }

    /// An 8 MiB buffer (four 2 MiB-aligned huge candidates) populated and
    /// read by the device; `size` pressure events (reclaim, NUMA migration,
    /// KSM merge, THP collapse, THP split), each followed by device reads
    /// near the page it hit.
    fn pressure(&mut self, size: u64) {
        const PAGES: u64 = 2048;
        let base = ARENA;
        self.out.push(WOp::Mmap {
            addr: base,
            len: PAGES * PAGE,
        });
        self.out.push(WOp::DevAlloc {
            addr: base,
            len: PAGES * PAGE,
        });
        for p in (0..PAGES).step_by(4) {
            self.out.push(WOp::Cpu {
                addr: base + p * PAGE,
                write: true,
            });
        }
        for p in (0..PAGES).step_by(16) {
            self.out.push(WOp::Dev {
                addr: base + p * PAGE,
                write: false,
            });
        }
        for _ in 0..size {
            let a = base + self.rng.below64(PAGES) * PAGE;
            let op = match self.rng.below64(10) {
                0..=3 => WOp::Reclaim { addr: a },
                4..=5 => WOp::Migrate { addr: a },
                6 => WOp::Ksm {
                    a,
                    b: base + self.rng.below64(PAGES) * PAGE,
                },
                7..=8 => WOp::Collapse { addr: a },
                _ => WOp::Split { addr: a },
            };
            self.out.push(op);
            for _ in 0..2 {
                let near = (a / PAGE + self.rng.below64(8)).min(base / PAGE + PAGES - 1) * PAGE;
                self.out.push(WOp::Dev {
                    addr: near,
                    write: self.rng.pct(20),
                });
            }
        }
        self.out.push(WOp::Munmap {
            addr: base,
            len: PAGES * PAGE,
        });
    }

    /// A 4 MiB buffer, populated; `size` rounds: the device migrates a
    /// 64-page range to its memory and reads it, the CPU touches a few of
    /// its pages (migrating them back), the device evicts the rest.
    fn devmig(&mut self, size: u64) {
        const PAGES: u64 = 1024;
        const RANGE: u64 = 64;
        let base = ARENA;
        self.out.push(WOp::Mmap {
            addr: base,
            len: PAGES * PAGE,
        });
        self.out.push(WOp::DevAlloc {
            addr: base,
            len: PAGES * PAGE,
        });
        for p in 0..PAGES {
            self.out.push(WOp::Cpu {
                addr: base + p * PAGE,
                write: true,
            });
        }
        for _ in 0..size {
            let r = base + self.rng.below64(PAGES / RANGE) * RANGE * PAGE;
            self.out.push(WOp::DevMigrate {
                addr: r,
                len: RANGE * PAGE,
            });
            for _ in 0..4 {
                let a = r + self.rng.below64(RANGE) * PAGE;
                self.out.push(WOp::Dev {
                    addr: a,
                    write: self.rng.pct(50),
                });
            }
            for _ in 0..4 {
                let a = r + self.rng.below64(RANGE) * PAGE;
                self.out.push(WOp::Cpu {
                    addr: a,
                    write: self.rng.pct(50),
                });
            }
            self.out.push(WOp::DevEvict {
                addr: r,
                len: RANGE * PAGE,
            });
        }
        self.out.push(WOp::Munmap {
            addr: base,
            len: PAGES * PAGE,
        });
    }
}
