//! Names used in `.ops` files, reports and on command lines: unique, and
//! they round-trip. A planted bug's name also says which crate carries it,
//! so a target picks exactly the bugs it can find.

use notifier::{Component, Event, PlantedBug};

#[test]
fn event_names_round_trip() {
    let mut seen = std::collections::BTreeSet::new();
    for e in Event::ALL {
        assert!(!e.name().is_empty());
        assert!(seen.insert(e.name()), "duplicate name {}", e.name());
        assert_eq!(Event::from_name(e.name()), Some(e));
        assert_eq!(e.to_string(), e.name());
    }
    assert_eq!(Event::from_name("unmap"), Some(Event::Unmap));
    assert_eq!(Event::from_name("no-such-event"), None);
}

#[test]
fn names_round_trip_and_carry_their_component() {
    let mut seen = std::collections::BTreeSet::new();
    for b in PlantedBug::ALL.into_iter().chain(PlantedBug::CONCURRENT) {
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
    for b in PlantedBug::CONCURRENT {
        assert!(!PlantedBug::ALL.contains(&b), "{} in both lists", b.name());
        assert_ne!(b.component(), Component::Mm, "{}", b.name());
    }
    for c in [Component::Notifier, Component::Mm, Component::Mirror] {
        assert!(PlantedBug::ALL.iter().any(|b| b.component() == c), "{c:?}");
    }
}
