//! `Range::overlaps` is what the reference model uses to decide which
//! intervals an invalidation hits, and `Display` is how ranges appear in
//! reproducers: both at their edges.

use notifier::{Event, Owner, Range};

#[test]
fn overlaps_compares_an_exclusive_end_with_an_inclusive_last() {
    let r = Range::new(0x1000, 0x3000, Event::Unmap);
    // [start, last] inclusive against [0x1000, 0x3000).
    assert!(r.overlaps(0x0, 0x1000), "last byte on start");
    assert!(!r.overlaps(0x0, 0xfff), "ends just before");
    assert!(r.overlaps(0x2fff, 0x5000), "starts on the last byte");
    assert!(!r.overlaps(0x3000, 0x5000), "starts at the exclusive end");
    assert!(r.overlaps(0x1800, 0x1900), "inside");
    assert!(r.overlaps(0x0, u64::MAX), "around");
    let empty = Range::new(0x2000, 0x2000, Event::Unmap);
    assert!(
        !empty.overlaps(0x0, u64::MAX),
        "an empty range hits nothing"
    );
}

#[test]
fn display_shows_event_bounds_blocking_and_owner() {
    let r = Range::new(0x1000, 0x3000, Event::Migrate);
    assert_eq!(r.to_string(), "migrate 0x1000..0x3000");
    assert_eq!(
        r.non_blockable().with_owner(Owner(3)).to_string(),
        "migrate 0x1000..0x3000 nonblock owner=3"
    );
}

/// A classic subscriber that keeps every default accepts every invalidation.
#[test]
fn a_classic_subscriber_with_the_defaults_accepts() {
    use notifier::{ClassicOps, Config, Subscriptions};
    struct Quiet;
    impl ClassicOps for Quiet {}
    let s = Subscriptions::new(Config::default()).unwrap();
    s.register(std::sync::Arc::new(Quiet)).unwrap();
    for r in [
        Range::new(0x1000, 0x2000, Event::Unmap),
        Range::new(0x1000, 0x2000, Event::Clear).non_blockable(),
    ] {
        let inv = s.invalidate_range_start(&r).expect("refused");
        s.invalidate_range_end(inv);
    }
    s.release().unwrap();
    assert!(s.is_quiescent());
}
