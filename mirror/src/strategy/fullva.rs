//! `fullva`: one interval over the whole address space, inserted at open
//! (the HMM self-test driver; full-VA ODP).

use mm::Mm;
use notifier::Interval;

use super::{in_tree, Cover, FaultReq, Notify, Planted, Strategy, StrategyKind};
use crate::MirrorError;

/// Its registry entry.
pub const KIND: StrategyKind = StrategyKind {
    name: "fullva",
    param: None,
    build,
};

fn build(_param: u8, _planted: Planted) -> Box<dyn Strategy> {
    Box::new(FullVa { iv: None })
}

#[derive(Debug)]
struct FullVa {
    iv: Option<Interval>,
}

impl Strategy for FullVa {
    fn open(&mut self, mm: &Mm, n: &Notify<'_>) -> Result<(), MirrorError> {
        self.iv = Some(n.insert(mm, 0, mm.config.task_size)?);
        Ok(())
    }

    fn interval(&mut self, _f: FaultReq, _mm: &Mm, _n: &Notify<'_>) -> Result<Cover, MirrorError> {
        // One pointer, no lock.
        notifier::cost::one(notifier::cost::Metric::FaultLookups);
        Ok(Cover {
            iv: self.iv.clone().expect("opened with an interval"),
            hold: None,
        })
    }

    fn covers(&self, _page: u64) -> bool {
        self.iv.as_ref().is_some_and(in_tree)
    }

    fn clear(&mut self) {
        self.iv = None;
    }

    fn state_bytes(&self) -> usize {
        self.iv.as_ref().map_or(0, |_| super::INTERVAL_BYTES)
    }
}
