//! The mirror oracles of DESIGN §5, on the data they check: the CPU page
//! table of an address space and a device's page table.

use mirror::DevPte;
use mm::{Mm, Phys, Pte};

/// A device PTE that the CPU no longer backs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StalePte {
    /// The page.
    pub addr: u64,
    /// What the device maps.
    pub device: DevPte,
    /// What the CPU maps there now.
    pub cpu: Option<Pte>,
}

/// No stale PTE: every device PTE maps a page that the CPU maps to the
/// same frame, and grants write only where the CPU PTE is writable.
pub fn stale_pte(mm: &Mm, device: impl IntoIterator<Item = (u64, DevPte)>) -> Option<StalePte> {
    device.into_iter().find_map(|(addr, d)| {
        let cpu = mm.pte(addr);
        let ok = matches!(cpu, Some(Pte::Present { frame, writable })
            if frame == d.frame && (writable || !d.write));
        (!ok).then_some(StalePte {
            addr,
            device: d,
            cpu,
        })
    })
}

/// A CPU PTE that lost its mapping or a permission outside any open
/// invalidation: devices were never told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unnotified {
    /// The page.
    pub addr: u64,
    /// The PTE before the step.
    pub before: Option<Pte>,
    /// The PTE after it.
    pub after: Option<Pte>,
}

// Changes that take nothing away from a device: filling an empty or
// swapped-out page, or adding write to the same frame.
fn harmless(before: Option<Pte>, after: Option<Pte>) -> bool {
    match (before, after) {
        (None, _) | (Some(Pte::Swap { .. }), Some(Pte::Present { .. })) => true,
        (
            Some(Pte::Present {
                frame: a,
                writable: w,
            }),
            Some(Pte::Present { frame: b, writable }),
        ) => a == b && (writable || !w),
        (b, a) => b == a,
    }
}

/// CPU PTEs change only between the start and the end of an invalidation
/// that covers them (DESIGN §3). `before` and `after` are one address
/// space's PTEs around one step, ascending; `open` is the range the step's
/// operation had open while applying.
pub fn unnotified(
    before: &[(u64, Pte)],
    after: &[(u64, Pte)],
    open: Option<&notifier::Range>,
) -> Option<Unnotified> {
    let covered = |a: u64| open.is_some_and(|r| r.start <= a && a < r.end);
    let (mut i, mut j) = (0, 0);
    while i < before.len() || j < after.len() {
        let (addr, b, a) = match (before.get(i), after.get(j)) {
            (Some(&(x, p)), Some(&(y, q))) if x == y => {
                i += 1;
                j += 1;
                (x, Some(p), Some(q))
            }
            (Some(&(x, p)), Some(&(y, _))) if x < y => {
                i += 1;
                (x, Some(p), None)
            }
            (Some(&(x, p)), None) => {
                i += 1;
                (x, Some(p), None)
            }
            (_, Some(&(y, q))) => {
                j += 1;
                (y, None, Some(q))
            }
            (None, None) => break,
        };
        if !harmless(b, a) && !covered(addr) {
            return Some(Unnotified {
                addr,
                before: b,
                after: a,
            });
        }
    }
    None
}

/// The reference mirror: no caching, every access walks the CPU page
/// table. What a device access at `addr` must see (None: no mapping).
pub fn reference_read(mm: &Mm, phys: &Phys, addr: u64) -> Option<u64> {
    mm.cpu_view(phys, addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm::{FrameId, MmConfig, MmId};

    #[test]
    fn only_covered_or_harmless_pte_changes_pass() {
        let p = |f: u32, w: bool| Pte::Present {
            frame: FrameId(f),
            writable: w,
        };
        let r = notifier::Range::new(0x1000, 0x2000, notifier::Event::Clear);
        // Write-protect without an invalidation: caught.
        let lost = unnotified(&[(0x1000, p(1, true))], &[(0x1000, p(1, false))], None);
        assert_eq!(lost.map(|u| u.addr), Some(0x1000));
        // The same inside the open range: fine.
        assert!(unnotified(&[(0x1000, p(1, true))], &[(0x1000, p(1, false))], Some(&r)).is_none());
        // Populate, upgrade in place and swap-in need no invalidation.
        assert!(unnotified(&[], &[(0x5000, p(2, false))], None).is_none());
        assert!(unnotified(&[(0x5000, p(2, false))], &[(0x5000, p(2, true))], None).is_none());
        let swap = Pte::Swap { slot: 0 };
        assert!(unnotified(&[(0x5000, swap)], &[(0x5000, p(3, true))], None).is_none());
        // An unmap or a new frame outside the range: caught.
        assert!(unnotified(&[(0x5000, p(2, true))], &[], Some(&r)).is_some());
        assert!(unnotified(&[(0x5000, p(2, true))], &[(0x5000, p(4, true))], None).is_some());
    }

    #[test]
    fn a_device_pte_without_a_cpu_pte_is_stale() {
        let mm = Mm::new(MmId(0), MmConfig::default());
        let d = DevPte {
            frame: FrameId(3),
            write: false,
        };
        assert_eq!(
            stale_pte(&mm, [(0x1000, d)]),
            Some(StalePte {
                addr: 0x1000,
                device: d,
                cpu: None
            })
        );
        assert_eq!(stale_pte(&mm, []), None);
        assert_eq!(reference_read(&mm, &Phys::new(), 0x1000), None);
    }
}
