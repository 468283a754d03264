//! `perfault`: a temporary interval per fault, inserted before read_begin
//! and removed after commit; teardown of installed PTEs goes through a
//! classic subscriber (nouveau).

use mm::{Mm, PAGE};
use notifier::{ClassicId, Interval};

use super::{Cover, FaultEnd, FaultReq, Notify, Planted, Strategy, StrategyKind};
use crate::{Dev, MirrorError};

/// Its registry entry.
pub const KIND: StrategyKind = StrategyKind {
    name: "perfault",
    param: None,
    build,
};

fn build(_param: u8, _planted: Planted) -> Box<dyn Strategy> {
    Box::new(PerFault { classic: None })
}

#[derive(Debug)]
struct PerFault {
    classic: Option<ClassicId>,
}

impl Strategy for PerFault {
    fn open(&mut self, mm: &Mm, n: &Notify<'_>) -> Result<(), MirrorError> {
        self.classic = Some(n.register(mm)?);
        Ok(())
    }

    fn interval(&mut self, f: FaultReq, mm: &Mm, n: &Notify<'_>) -> Result<Cover, MirrorError> {
        Ok(Cover {
            iv: n.insert(mm, f.addr, PAGE)?,
            hold: None,
        })
    }

    // The interval was the fault's own: it goes (removal may have to wait).
    fn fault_end(&mut self, _dev: &mut Dev, end: FaultEnd) -> Option<Interval> {
        end.iv
    }

    // The classic subscriber hears of every change.
    fn covers(&self, _page: u64) -> bool {
        true
    }

    fn clear(&mut self) {}

    // The classic subscriber (struct mmu_notifier: ops, list, mm, users).
    fn state_bytes(&self) -> usize {
        self.classic.map_or(0, |_| 48)
    }
}
