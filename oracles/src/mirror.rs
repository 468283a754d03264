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
pub fn stale_pte(mm: &Mm, device: &[(u64, DevPte)]) -> Option<StalePte> {
    device.iter().find_map(|&(addr, d)| {
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
    fn a_device_pte_without_a_cpu_pte_is_stale() {
        let mm = Mm::new(MmId(0), MmConfig::default());
        let d = DevPte {
            frame: FrameId(3),
            write: false,
        };
        assert_eq!(
            stale_pte(&mm, &[(0x1000, d)]),
            Some(StalePte {
                addr: 0x1000,
                device: d,
                cpu: None
            })
        );
        assert_eq!(stale_pte(&mm, &[]), None);
        assert_eq!(reference_read(&mm, &Phys::new(), 0x1000), None);
    }
}
