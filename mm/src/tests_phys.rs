//! Physical memory's accounting on its own: when a frame is freed, what a
//! swap slot and a page-cache page hold. The task tests reach these only
//! through whole operations; a wrong count here shows as a leak or a
//! use-after-free much later.

use crate::*;

fn live(p: &Phys, f: FrameId) -> bool {
    p.frame(f).live
}

#[test]
fn a_frame_lives_while_mapped_pinned_or_cached() {
    let mut p = Phys::new();
    assert_eq!(p.live_frames(), 1, "only the zero page");

    // Two mappings: the first unmap leaves it live.
    let a = p.alloc(7);
    p.map(a);
    p.map(a);
    p.unmap(a);
    assert!(live(&p, a));
    p.unmap(a);
    assert!(!live(&p, a));

    // Mapped and pinned: neither the unpin nor the unmap alone frees it.
    let b = p.alloc(8);
    p.map(b);
    p.pin(b);
    p.unpin(b);
    assert!(live(&p, b), "unpin freed a mapped frame");
    p.pin(b);
    p.unmap(b);
    assert!(live(&p, b), "unmap freed a pinned frame");
    p.unpin(b);
    assert!(!live(&p, b), "the last unpin must free it");

    // The page cache holds its pages with no mapping at all.
    let c = p.cache_page(3, 0);
    p.map(c);
    p.unmap(c);
    assert!(live(&p, c), "unmap freed a page-cache page");
    p.pin(c);
    p.unpin(c);
    assert!(live(&p, c), "unpin freed a page-cache page");

    // The zero page is never freed.
    let z = p.zero();
    p.map(z);
    p.unmap(z);
    assert!(live(&p, z));

    assert_eq!(p.live_frames(), 2, "the zero page and the cached page");
    let _d = p.alloc(9);
    assert_eq!(p.live_frames(), 3);
}

#[test]
fn swap_slots_are_distinct_and_counted() {
    let mut p = Phys::new();
    let s1 = p.swap_out(0x11);
    let s2 = p.swap_out(0x22);
    assert_ne!(s1, s2);
    assert_eq!((p.swap_data(s1), p.swap_data(s2)), (0x11, 0x22));

    // Fork duplicates a swap entry: the slot outlives one of its owners.
    p.swap_dup(s1);
    p.swap_free(s1);
    assert_eq!(p.swap_data(s1), 0x11, "a shared slot freed by one owner");
    p.swap_free(s1);
    assert_eq!(p.swap_data(s1), 0, "the last reference must free the slot");
    assert_eq!(p.swap_data(s2), 0x22);
    p.swap_free(s2);
    assert_eq!(p.swap_data(s2), 0);
    // Freeing a slot that is gone is a no-op, not an underflow.
    p.swap_free(s2);
    p.swap_dup(s2);
    assert_eq!(p.swap_data(s2), 0);
}

#[test]
fn page_cache_content_is_distinct_per_file_page_and_zero_for_anon() {
    let mut p = Phys::new();
    let (f3p0, f3p1, f4p0) = (p.cache_data(3, 0), p.cache_data(3, 1), p.cache_data(4, 0));
    assert_ne!(f3p0, 0);
    assert_ne!(f3p0, f3p1);
    assert_ne!(f3p0, f4p0);
    assert_ne!(f3p1, f4p0);
    // Creating the page keeps its initial content; writes show through.
    let f = p.cache_page(3, 1);
    assert_eq!(p.data(f), f3p1);
    assert_eq!(p.cache_page(3, 1), f, "one frame per file page");
    p.set_data(f, 0x5a);
    assert_eq!(p.cache_data(3, 1), 0x5a);
    assert_eq!(p.cache_data(3, 0), f3p0);

    // Anonymous shared objects start zeroed and get fresh ids.
    let (o1, o2) = (p.new_object(), p.new_object());
    assert_ne!(o1, o2);
    assert_eq!(p.cache_data(o1, 0), 0);
    assert_eq!(p.cache_data(o2, 5), 0);
}
