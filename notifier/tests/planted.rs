//! The planted-bug registry: names are unique, round-trip, and say which
//! crate carries the bug, so a target picks exactly the bugs it can find.

use notifier::{Component, PlantedBug};

#[test]
fn names_round_trip_and_carry_their_component() {
    let mut seen = std::collections::BTreeSet::new();
    for b in PlantedBug::ALL {
        assert!(seen.insert(b.name()), "duplicate name {}", b.name());
        assert_eq!(PlantedBug::from_name(b.name()), Some(b));
        let prefix = match b.component() {
            Component::Notifier => "notifier-",
            Component::Mm => "mm-",
            Component::Mirror => "mirror-",
        };
        assert!(
            b.name().starts_with(prefix),
            "{} is not a {prefix} bug",
            b.name()
        );
    }
    assert_eq!(PlantedBug::from_name("no-such-bug"), None);
    for c in [Component::Notifier, Component::Mm, Component::Mirror] {
        assert!(PlantedBug::ALL.iter().any(|b| b.component() == c), "{c:?}");
    }
}
