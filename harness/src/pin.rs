//! Pinning the device strategies of mirror programs: `mnfuzz soak` runs
//! each strategy (and each pair) as its own cell, whatever strategies the
//! input bytes ask for.
//!
//! The pin is applied after decoding, so the engine's byte inputs and
//! mutations are those of an unpinned run; a finding is re-encoded from the
//! pinned program, so its bytes replay without the pin, and its `.ops`
//! config line names the pinned strategies.

use crate::program::{DevStep, Op, Program, Target, DEVICES};
use mirror::StrategySpec;

/// The strategies every device of a mirror program gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevicePin {
    /// `d0`'s strategy.
    pub d0: StrategySpec,
    /// `d1`'s strategy. `None`: `d1` uses `d0`'s, and is opened before the
    /// first step only if the decoded config opens it.
    pub d1: Option<StrategySpec>,
}

impl DevicePin {
    /// One strategy for every device.
    pub fn single(s: StrategySpec) -> DevicePin {
        DevicePin { d0: s, d1: None }
    }

    /// `d0` with `a`, `d1` with `b`, both opened before the first step.
    pub fn pair(a: StrategySpec, b: StrategySpec) -> DevicePin {
        DevicePin { d0: a, d1: Some(b) }
    }

    /// Every single strategy, then every unordered pair of two different
    /// ones, in registry order (a sized kind at its default size).
    pub fn all(pairs: bool) -> Vec<DevicePin> {
        let all: Vec<StrategySpec> = (0..mirror::strategy::kinds().len())
            .filter_map(|i| StrategySpec::default_of(u8::try_from(i).ok()?))
            .collect();
        let mut v: Vec<DevicePin> = all.iter().map(|&s| DevicePin::single(s)).collect();
        // Each strategy once more with two-pass TLB flushes: config
        // devices have no codec bit for it, so only a pin puts them there.
        v.extend(
            all.iter()
                .map(|&s| DevicePin::single(s.with_tlb(mirror::Tlb::TwoPass))),
        );
        if pairs {
            for (i, &a) in all.iter().enumerate() {
                for &b in &all[i + 1..] {
                    v.push(DevicePin::pair(a, b));
                }
            }
        }
        v
    }

    /// `fullva`, `fullva@twopass`, or `fullva+vma` for a pair.
    pub fn name(&self) -> String {
        match self.d1 {
            None => kind_name(self.d0),
            Some(b) => format!("{}+{}", kind_name(self.d0), kind_name(b)),
        }
    }

    /// The strategy device `dev` gets.
    fn of(&self, dev: usize) -> StrategySpec {
        match (dev, self.d1) {
            (1, Some(b)) => b,
            _ => self.d0,
        }
    }

    /// Rewrites the config's devices and every `open` step of a mirror
    /// program; a notifier program is left alone. An ODP device keeps the
    /// chunk size the input chose, if it chose ODP for that device.
    pub fn apply(&self, p: &mut Program) {
        if p.config.target != Target::Mirror {
            return;
        }
        let decoded = p.config.devices;
        for (d, slot) in p.config.devices.iter_mut().enumerate() {
            let opened = d == 0 || self.d1.is_some() || decoded[d].is_some();
            *slot = opened.then(|| keep_shift(self.of(d), decoded[d]));
        }
        for s in &mut p.steps {
            if let Op::Dev {
                dev,
                op: DevStep::Open { strategy, .. },
            } = &mut s.op
            {
                let d = usize::from(*dev).min(DEVICES as usize - 1);
                *strategy = keep_shift(self.of(d), Some(*strategy));
            }
        }
    }
}

/// The strategy's name without an ODP chunk size: a pin's ODP rows cover
/// every chunk size the inputs choose.
fn kind_name(s: StrategySpec) -> String {
    let base = mirror::strategy::kind(s.kind).map_or_else(|| s.name(), |k| k.name.to_string());
    match s.tlb {
        mirror::Tlb::Sync => base,
        t => format!("{base}@{}", t.name()),
    }
}

/// `forced`, with the size `decoded` chose if it is of the same kind, and
/// the TLB mode `decoded` chose unless `forced` asks for two-pass flushes.
fn keep_shift(forced: StrategySpec, decoded: Option<StrategySpec>) -> StrategySpec {
    let s = match decoded {
        Some(d) if d.kind == forced.kind => d,
        _ => forced,
    };
    match forced.tlb {
        mirror::Tlb::Sync => s.with_tlb(decoded.map_or(forced.tlb, |d| d.tlb)),
        t => s.with_tlb(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::engine::Rng;
    use crate::targets::decode_for;

    #[test]
    fn eight_singles_eight_two_pass_singles_and_twenty_eight_pairs() {
        let all = DevicePin::all(true);
        assert_eq!(all.len(), 8 + 8 + 28);
        let names: std::collections::BTreeSet<String> = all.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), 44);
        assert!(names.contains("fullva@twopass") && names.contains("kfd-noxnack@twopass"));
        assert!(names.contains("fullva") && names.contains("vma+regcache"));
        assert!(names.contains("gpusvm") && names.contains("regcache+gpusvm"));
        assert!(names.contains("kfd-noxnack") && names.contains("kfd+kfd-noxnack"));
        assert_eq!(DevicePin::all(false).len(), 16);
    }

    /// Every pinned program uses only the pinned strategies, and its
    /// encoding decodes to it unpinned: the reproducer's bytes carry the pin.
    #[test]
    fn pinned_programs_use_only_the_pin_and_round_trip() {
        let mut rng = Rng::new(11);
        let mut opens = 0;
        // A `d0` kind that no devices byte names (KIND8 is full) cannot be
        // carried by the bytes: today only `kfd-noxnack`, which only an
        // `open` step gives `d0`.
        let openable: std::collections::HashSet<StrategySpec> = (0..=u8::MAX)
            .map(crate::mirror::codec::strategy_code)
            .collect();
        let config_d0: std::collections::HashSet<u8> = (0..=u8::MAX)
            .filter_map(|b| crate::mirror::codec::devices_code(b)[0])
            .map(|s| s.kind)
            .collect();
        for pin in DevicePin::all(true) {
            // Config devices have no TLB bit: a two-pass pin's config
            // devices are not carried by the bytes either.
            let carried = openable.contains(&pin.d0)
                && config_d0.contains(&pin.d0.kind)
                && pin.d1.is_none_or(|b| openable.contains(&b))
                && pin.d0.tlb == mirror::Tlb::Sync;
            if !carried {
                assert!(
                    pin.name().contains("kfd-noxnack") || pin.name().contains("@twopass"),
                    "{pin:?}"
                );
            }
            for _ in 0..300 {
                let n = 8 + rng.below(300);
                let bytes = rng.bytes(n);
                let mut p = decode_for(Target::Mirror, &bytes);
                pin.apply(&mut p);
                // The kind is the pin's; so is the TLB mode if the pin
                // asks for two-pass flushes (else the input's stays).
                let is_pinned = |d: usize, s: StrategySpec| {
                    let want = pin.of(d);
                    s.kind == want.kind && (want.tlb == mirror::Tlb::Sync || s.tlb == want.tlb)
                };
                assert!(p.config.devices[0].is_some_and(|s| is_pinned(0, s)));
                if pin.d1.is_some() {
                    assert!(p.config.devices[1].is_some_and(|s| is_pinned(1, s)));
                }
                for (d, s) in p.config.devices.iter().enumerate() {
                    assert!(s.is_none_or(|s| is_pinned(d, s)), "{pin:?} {s:?}");
                }
                for s in &p.steps {
                    if let Op::Dev {
                        dev,
                        op: DevStep::Open { strategy, .. },
                    } = s.op
                    {
                        opens += 1;
                        assert!(is_pinned(dev as usize, strategy), "{pin:?} {strategy:?}");
                    }
                }
                if carried {
                    assert_eq!(decode_for(Target::Mirror, &codec::encode(&p)), p);
                }
            }
        }
        assert!(opens > 100, "only {opens} open steps were pinned");
    }

    #[test]
    fn notifier_programs_are_left_alone() {
        let mut rng = Rng::new(3);
        let bytes = rng.bytes(200);
        let p = decode_for(Target::Notifier, &bytes);
        let mut q = p.clone();
        let name = |n| StrategySpec::from_name(n).expect("registered");
        DevicePin::pair(name("fullva"), name("vma")).apply(&mut q);
        assert_eq!(p, q);
    }
}
