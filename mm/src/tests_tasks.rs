//! Task-level rules the other tests pass over: argument checks, the
//! mmap lock against a reader already in, device fault-in, and what a task
//! reports about its open invalidation while it runs.

use crate::task::DEVICE_OP_PAGES;
use crate::tests::{mmap, run, setup, W};
use crate::*;

struct Always;
impl Env for Always {
    fn callbacks_can_run(&self, _: MmId, _: &notifier::Range) -> bool {
        true
    }
}

fn map(mm: &mut Mm, phys: &mut Phys, addr: u64, len: u64) -> Result<Outcome, MmError> {
    let op = MmOp::Mmap {
        addr,
        len,
        kind: MapKind::AnonPrivate,
        prot: Prot::ReadWrite,
    };
    run(mm, phys, op)
}

#[test]
fn mmap_checks_alignment_length_and_the_top() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    let top = mm.config.task_size;
    assert_eq!(
        map(&mut mm, &mut phys, W + 8, PAGE).err(),
        Some(MmError::Inval)
    );
    assert_eq!(map(&mut mm, &mut phys, W, 0).err(), Some(MmError::Inval));
    assert_eq!(
        map(&mut mm, &mut phys, top, PAGE).err(),
        Some(MmError::Inval)
    );
    assert_eq!(
        map(&mut mm, &mut phys, top - PAGE, 2 * PAGE).err(),
        Some(MmError::Inval)
    );
    assert_eq!(
        map(&mut mm, &mut phys, W, u64::MAX).err(),
        Some(MmError::Inval)
    );
    // The last page of the address space is fine, and a length rounds up.
    assert!(map(&mut mm, &mut phys, top - PAGE, PAGE).is_ok());
    assert!(map(&mut mm, &mut phys, W, PAGE + 1).is_ok());
    assert_eq!(mm.vma_at(W).map(|v| v.end), Some(W + 2 * PAGE));
}

#[test]
fn a_writer_waits_for_a_reader_already_in() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    let mut fault = Task::new(
        MmOp::Access {
            addr: W,
            write: Some(1),
        },
        2,
    );
    assert!(matches!(
        fault.step(&mut mm, &mut phys, &Always),
        TaskStep::Progress
    ));
    assert!(mm.lock.writer.is_none() && !mm.lock.readers.is_empty());
    let mut unmap = Task::new(MmOp::Munmap { addr: W, len: PAGE }, 1);
    assert!(matches!(
        unmap.step(&mut mm, &mut phys, &Always),
        TaskStep::Blocked(Blocked::MmapLock)
    ));
    crate::tests::finish_task(&mut fault, &mut mm, &mut phys).unwrap();
    crate::tests::finish_task(&mut unmap, &mut mm, &mut phys).unwrap();
    assert_eq!(mm.lock, MmapLock::default());
}

#[test]
fn fault_in_for_write_maps_the_page_writable() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    run(
        &mut mm,
        &mut phys,
        MmOp::FaultIn {
            addr: W + PAGE,
            write: true,
        },
    )
    .unwrap();
    assert!(
        matches!(mm.pte(W + PAGE), Some(Pte::Present { writable: true, .. })),
        "{:?}",
        mm.pte(W + PAGE)
    );
    assert_eq!(mm.pte(W), None, "only the page asked for");
}

#[test]
fn a_task_reports_its_open_invalidation_while_it_runs() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, W, 9);
    let mut t = Task::new(
        MmOp::Munmap {
            addr: W,
            len: 2 * PAGE,
        },
        1,
    );
    assert!(!t.in_invalidation() && t.open_range().is_none() && !t.just_applied());
    let (mut held, mut applied) = (0, 0);
    for _ in 0..64 {
        let before = mm.pte(W);
        match t.step(&mut mm, &mut phys, &Always) {
            TaskStep::Done(r) => {
                r.unwrap();
                break;
            }
            TaskStep::Blocked(b) => panic!("blocked on {b:?}"),
            TaskStep::Progress => {}
        }
        assert_eq!(t.in_invalidation(), t.open_range().is_some());
        if let Some(r) = t.open_range() {
            held += 1;
            assert_eq!(
                (r.start, r.end, r.event),
                (W, W + 2 * PAGE, notifier::Event::Unmap)
            );
        }
        if t.just_applied() {
            // The PTEs changed in this step, inside the open invalidation.
            applied += 1;
            assert!(t.in_invalidation());
            assert!(before.is_some() && mm.pte(W).is_none());
        } else if !t.in_invalidation() {
            assert_eq!(
                mm.pte(W).is_some(),
                before.is_some(),
                "PTEs changed outside"
            );
        }
    }
    assert!(held >= 1, "never held an invalidation");
    assert_eq!(applied, 1);
    assert!(!t.in_invalidation() && t.open_range().is_none() && !t.just_applied());
}

#[test]
fn device_operations_check_their_range_and_clamp_its_length() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    let none = MmOp::Mmap {
        addr: W + 4 * PAGE,
        len: PAGE,
        kind: MapKind::AnonPrivate,
        prot: Prot::None,
    };
    run(&mut mm, &mut phys, none).unwrap();
    let migrate = |addr, len| MmOp::DeviceMigrate {
        addr,
        len,
        owner: 1,
    };
    // A hole (W + 2 pages) alone, and an unreadable VMA alone, are EINVAL.
    assert_eq!(
        run(&mut mm, &mut phys, migrate(W, 3 * PAGE)).err(),
        Some(MmError::Inval)
    );
    assert_eq!(
        run(&mut mm, &mut phys, migrate(W + 4 * PAGE, PAGE)).err(),
        Some(MmError::Inval)
    );
    assert!(matches!(
        run(&mut mm, &mut phys, migrate(W, 2 * PAGE)),
        Ok(Outcome::Pages(2))
    ));

    // One call handles at most DEVICE_OP_PAGES pages.
    let big = 0x4000_0000;
    mmap(
        &mut mm,
        &mut phys,
        big,
        DEVICE_OP_PAGES + 8,
        MapKind::AnonPrivate,
    );
    let excl = MmOp::MakeExclusive {
        addr: big,
        len: (DEVICE_OP_PAGES + 8) * PAGE,
        owner: 1,
    };
    assert!(matches!(
        run(&mut mm, &mut phys, excl),
        Ok(Outcome::Pages(n)) if n == DEVICE_OP_PAGES
    ));
}

#[test]
fn only_a_private_write_fault_copies_on_write() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    mmap(&mut mm, &mut phys, W + PAGE, 1, MapKind::AnonShared);
    crate::tests::take(&seen);
    // A read of a read-only private page (the zero page) breaks nothing.
    assert_eq!(crate::tests::read(&mut mm, &mut phys, W), 0);
    assert_eq!(crate::tests::read(&mut mm, &mut phys, W), 0);
    assert!(crate::tests::take(&seen).is_empty());
    // Shared pages are written in place, without a COW invalidation.
    crate::tests::read(&mut mm, &mut phys, W + PAGE);
    crate::tests::write(&mut mm, &mut phys, W + PAGE, 4);
    assert!(crate::tests::take(&seen).is_empty());
    assert_eq!(crate::tests::read(&mut mm, &mut phys, W + PAGE), 4);
}

#[test]
fn thp_split_of_small_pages_and_collapse_over_a_pin_are_skipped() {
    let (mut mm, mut phys, seen, _iv) = setup();
    let base = 2 * HUGE;
    mmap(&mut mm, &mut phys, base, HUGE / PAGE, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, base, 1);
    crate::tests::take(&seen);
    assert!(matches!(
        run(&mut mm, &mut phys, MmOp::ThpSplit { addr: base }),
        Ok(Outcome::Skipped)
    ));
    // A pinned page cannot be copied into a huge page: no collapse.
    let Some(Pte::Present { frame, .. }) = mm.pte(base) else {
        panic!("not mapped: {:?}", mm.pte(base));
    };
    phys.pin(frame);
    assert!(matches!(
        run(&mut mm, &mut phys, MmOp::ThpCollapse { addr: base }),
        Ok(Outcome::Skipped)
    ));
    assert!(
        crate::tests::take(&seen).is_empty(),
        "a skip invalidates nothing"
    );
    // Shared memory is never collapsed.
    let shared = 4 * HUGE;
    mmap(&mut mm, &mut phys, shared, HUGE / PAGE, MapKind::AnonShared);
    assert_eq!(
        run(&mut mm, &mut phys, MmOp::ThpCollapse { addr: shared }).err(),
        Some(MmError::Inval)
    );
}

#[test]
fn mremap_dontunmap_takes_any_mapping_of_an_unchanged_length() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonShared);
    mmap(&mut mm, &mut phys, W + 8 * PAGE, 2, MapKind::AnonPrivate);
    let remap = |addr, new_len| MmOp::Mremap {
        addr,
        old_len: 2 * PAGE,
        new_len,
        new_addr: Some(W + 32 * PAGE),
        dontunmap: true,
    };
    // Shared memory too, since Linux 5.13.
    assert!(
        run(&mut mm, &mut phys, remap(W, 2 * PAGE)).is_ok(),
        "shared"
    );
    run(
        &mut mm,
        &mut phys,
        MmOp::Munmap {
            addr: W + 32 * PAGE,
            len: 2 * PAGE,
        },
    )
    .unwrap();
    assert_eq!(
        run(&mut mm, &mut phys, remap(W + 8 * PAGE, 3 * PAGE)).err(),
        Some(MmError::Inval),
        "length changed"
    );
    assert!(run(&mut mm, &mut phys, remap(W + 8 * PAGE, 2 * PAGE)).is_ok());
}

#[test]
fn mremap_fixed_may_touch_but_not_overlap_its_source() {
    let (mut mm, mut phys, seen, _iv) = setup();
    let src = W + 8 * PAGE;
    mmap(&mut mm, &mut phys, src, 2, MapKind::AnonPrivate);
    let to = |dst, new_len| MmOp::Mremap {
        addr: src,
        old_len: 2 * PAGE,
        new_len,
        new_addr: Some(dst),
        dontunmap: false,
    };
    for dst in [src - PAGE, src, src + PAGE] {
        assert_eq!(
            run(&mut mm, &mut phys, to(dst, 2 * PAGE)).err(),
            Some(MmError::Inval),
            "{dst:#x} overlaps"
        );
    }
    crate::tests::take(&seen);
    // The same length in place changes nothing and invalidates nothing.
    let same = MmOp::Mremap {
        addr: src,
        old_len: 2 * PAGE,
        new_len: 2 * PAGE,
        new_addr: None,
        dontunmap: false,
    };
    assert!(run(&mut mm, &mut phys, same).is_ok());
    assert!(crate::tests::take(&seen).is_empty());
    // Ending right where the source starts is fine.
    assert!(run(&mut mm, &mut phys, to(src - 2 * PAGE, 2 * PAGE)).is_ok());
    mmap(&mut mm, &mut phys, src, 2, MapKind::AnonPrivate);
    // Starting right where the source ends is fine.
    assert!(run(&mut mm, &mut phys, to(src + 2 * PAGE, 2 * PAGE)).is_ok());
}

#[test]
fn mremap_fixed_onto_a_mapping_unmaps_it_first() {
    let (mut mm, mut phys, seen, _iv) = setup();
    let (src, dst) = (W, W + 16 * PAGE);
    mmap(&mut mm, &mut phys, src, 2, MapKind::AnonPrivate);
    mmap(&mut mm, &mut phys, dst, 4, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, src + PAGE, 5);
    crate::tests::write(&mut mm, &mut phys, dst, 6);
    crate::tests::write(&mut mm, &mut phys, dst + 3 * PAGE, 7);
    crate::tests::take(&seen);
    let op = MmOp::Mremap {
        addr: src,
        old_len: 2 * PAGE,
        new_len: 2 * PAGE,
        new_addr: Some(dst),
        dontunmap: false,
    };
    run(&mut mm, &mut phys, op).unwrap();
    assert_eq!(
        crate::tests::take(&seen),
        vec![
            (notifier::Event::Unmap, dst, dst + 2 * PAGE, true),
            (notifier::Event::Unmap, src, src + 2 * PAGE, true)
        ]
    );
    assert_eq!(mm.cpu_view(&phys, dst), Some(0), "the old page is gone");
    assert_eq!(mm.cpu_view(&phys, dst + PAGE), Some(5));
    assert_eq!(mm.cpu_view(&phys, dst + 3 * PAGE), Some(7), "outside stays");
    assert_eq!(mm.cpu_view(&phys, src), None);
}

/// Steps `t` until it holds its invalidation, i.e. just before it applies.
fn step_to_apply(t: &mut Task, mm: &mut Mm, phys: &mut Phys) {
    for _ in 0..16 {
        if t.in_invalidation() {
            return;
        }
        assert!(matches!(t.step(mm, phys, &Always), TaskStep::Progress));
    }
    panic!("never opened an invalidation");
}

fn finish(t: &mut Task, mm: &mut Mm, phys: &mut Phys) -> Result<Outcome, MmError> {
    for _ in 0..16 {
        if let TaskStep::Done(r) = t.step(mm, phys, &Always) {
            return r;
        }
    }
    panic!("did not finish");
}

#[test]
fn a_pin_taken_after_the_plan_still_stops_reclaim_and_migration() {
    for op in [MmOp::Reclaim { addr: W }, MmOp::Migrate { addr: W }] {
        let (mut mm, mut phys, _seen, _iv) = setup();
        mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
        crate::tests::write(&mut mm, &mut phys, W, 3);
        let Some(Pte::Present { frame, .. }) = mm.pte(W) else {
            panic!("not mapped");
        };
        let mut t = Task::new(op, 1);
        step_to_apply(&mut t, &mut mm, &mut phys);
        // get_user_pages takes no mmap lock in the model: it can land here.
        phys.pin(frame);
        finish(&mut t, &mut mm, &mut phys).unwrap();
        assert!(
            matches!(mm.pte(W), Some(Pte::Present { frame: f, .. }) if f == frame),
            "{op:?} moved a pinned page: {:?}",
            mm.pte(W)
        );
    }
}

#[test]
fn a_write_to_one_zero_page_mapping_leaves_the_others_zero() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    assert_eq!(crate::tests::read(&mut mm, &mut phys, W), 0);
    assert_eq!(crate::tests::read(&mut mm, &mut phys, W + PAGE), 0);
    crate::tests::write(&mut mm, &mut phys, W, 8);
    assert_eq!(crate::tests::read(&mut mm, &mut phys, W + PAGE), 0);
    assert_eq!(phys.data(phys.zero()), 0);
}

#[test]
fn thp_collapse_keeps_the_content_of_swapped_pages() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    let base = 2 * HUGE;
    mmap(&mut mm, &mut phys, base, HUGE / PAGE, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, base + 3 * PAGE, 0x33);
    run(
        &mut mm,
        &mut phys,
        MmOp::Reclaim {
            addr: base + 3 * PAGE,
        },
    )
    .unwrap();
    assert!(matches!(mm.pte(base + 3 * PAGE), Some(Pte::Swap { .. })));
    run(&mut mm, &mut phys, MmOp::ThpCollapse { addr: base }).unwrap();
    assert!(mm.is_huge(base));
    assert_eq!(mm.cpu_view(&phys, base + 3 * PAGE), Some(0x33));
}

fn device_migrate(mm: &mut Mm, phys: &mut Phys, addr: u64, pages: u64) -> u64 {
    let op = MmOp::DeviceMigrate {
        addr,
        len: pages * PAGE,
        owner: 1,
    };
    match run(mm, phys, op) {
        Ok(Outcome::Pages(n)) => n,
        other => panic!("device migrate: {other:?}"),
    }
}

#[test]
fn device_migration_takes_only_private_unshared_unpinned_pages() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    // Shared memory never moves to a device.
    mmap(&mut mm, &mut phys, W + 16 * PAGE, 2, MapKind::AnonShared);
    crate::tests::write(&mut mm, &mut phys, W + 16 * PAGE, 1);
    assert_eq!(device_migrate(&mut mm, &mut phys, W + 16 * PAGE, 2), 0);

    // Zero-page mappings move, writable as their VMA allows.
    mmap(&mut mm, &mut phys, W, 4, MapKind::AnonPrivate);
    crate::tests::read(&mut mm, &mut phys, W);
    // A pinned page and a page shared with a fork child stay.
    crate::tests::write(&mut mm, &mut phys, W + PAGE, 2);
    crate::tests::write(&mut mm, &mut phys, W + 2 * PAGE, 3);
    let Some(Pte::Present { frame: pinned, .. }) = mm.pte(W + PAGE) else {
        panic!("not mapped");
    };
    phys.pin(pinned);
    let Ok(Outcome::Forked(_child)) = run(&mut mm, &mut phys, MmOp::Fork) else {
        panic!("fork");
    };
    // W + 3 pages is empty: it moves too.
    assert_eq!(device_migrate(&mut mm, &mut phys, W, 4), 2);
    assert!(matches!(
        mm.pte(W),
        Some(Pte::Device { writable: true, .. })
    ));
    assert!(matches!(mm.pte(W + PAGE), Some(Pte::Present { .. })));
    assert!(matches!(mm.pte(W + 2 * PAGE), Some(Pte::Present { .. })));
    assert!(matches!(mm.pte(W + 3 * PAGE), Some(Pte::Device { .. })));
}

#[test]
fn fork_write_protects_device_pages_too() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, W, 4);
    assert_eq!(device_migrate(&mut mm, &mut phys, W, 1), 1);
    assert!(matches!(
        mm.pte(W),
        Some(Pte::Device { writable: true, .. })
    ));
    let Ok(Outcome::Forked(child)) = run(&mut mm, &mut phys, MmOp::Fork) else {
        panic!("fork");
    };
    for (who, m) in [("parent", &mm), ("child", &*child)] {
        assert!(
            matches!(
                m.pte(W),
                Some(Pte::Device {
                    writable: false,
                    ..
                })
            ),
            "{who}: {:?}",
            m.pte(W)
        );
    }
}

#[test]
fn collapse_looks_only_at_its_own_2mib() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    let base = 2 * HUGE;
    // The VMA reaches one page past the huge page, and that page is pinned.
    mmap(
        &mut mm,
        &mut phys,
        base,
        HUGE / PAGE + 1,
        MapKind::AnonPrivate,
    );
    crate::tests::write(&mut mm, &mut phys, base + HUGE, 9);
    let Some(Pte::Present { frame, .. }) = mm.pte(base + HUGE) else {
        panic!("not mapped");
    };
    phys.pin(frame);
    crate::tests::write(&mut mm, &mut phys, base + 7 * PAGE, 7);
    // And a pinned page just below it, in a VMA of its own.
    mmap(&mut mm, &mut phys, base - PAGE, 1, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, base - PAGE, 8);
    let Some(Pte::Present { frame, .. }) = mm.pte(base - PAGE) else {
        panic!("not mapped");
    };
    phys.pin(frame);
    run(&mut mm, &mut phys, MmOp::ThpCollapse { addr: base }).unwrap();
    assert!(mm.is_huge(base), "a pin outside the 2 MiB blocked it");
    // A pin inside the 2 MiB, not on its first page, blocks a new collapse.
    run(&mut mm, &mut phys, MmOp::ThpSplit { addr: base }).unwrap();
    let Some(Pte::Present { frame, .. }) = mm.pte(base + 7 * PAGE) else {
        panic!("not mapped");
    };
    phys.pin(frame);
    assert!(matches!(
        run(&mut mm, &mut phys, MmOp::ThpCollapse { addr: base }),
        Ok(Outcome::Skipped)
    ));
}

#[test]
fn make_exclusive_converts_owned_pages_in_place_and_copies_the_rest() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    let excl = |addr, pages| MmOp::MakeExclusive {
        addr,
        len: pages * PAGE,
        owner: 1,
    };
    // Only private writable memory takes exclusive entries.
    mmap(&mut mm, &mut phys, W + 16 * PAGE, 1, MapKind::AnonShared);
    assert!(matches!(
        run(&mut mm, &mut phys, excl(W + 16 * PAGE, 1)),
        Ok(Outcome::Pages(0))
    ));
    let ro = MmOp::Mmap {
        addr: W + 20 * PAGE,
        len: PAGE,
        kind: MapKind::AnonPrivate,
        prot: Prot::Read,
    };
    run(&mut mm, &mut phys, ro).unwrap();
    let r = run(&mut mm, &mut phys, excl(W + 20 * PAGE, 1));
    assert!(!matches!(r, Ok(Outcome::Pages(n)) if n > 0), "{r:?}");
    assert!(!matches!(
        mm.pte(W + 20 * PAGE),
        Some(Pte::Exclusive { .. })
    ));

    mmap(&mut mm, &mut phys, W, 3, MapKind::AnonPrivate);
    crate::tests::read(&mut mm, &mut phys, W); // the zero page
    crate::tests::write(&mut mm, &mut phys, W + PAGE, 5); // shared with the child below
    let Ok(Outcome::Forked(child)) = run(&mut mm, &mut phys, MmOp::Fork) else {
        panic!("fork");
    };
    crate::tests::write(&mut mm, &mut phys, W + 2 * PAGE, 6); // owned
    let frame = |m: &Mm, a| m.pte(a).and_then(|p| p.frame()).expect("mapped");
    let (shared, owned) = (frame(&mm, W + PAGE), frame(&mm, W + 2 * PAGE));
    assert!(matches!(
        run(&mut mm, &mut phys, excl(W, 3)),
        Ok(Outcome::Pages(3))
    ));
    assert_eq!(
        frame(&mm, W + 2 * PAGE),
        owned,
        "an owned page converts in place"
    );
    assert_ne!(frame(&mm, W + PAGE), shared, "a shared page is copied");
    assert_ne!(frame(&mm, W), phys.zero(), "the zero page is copied");
    assert_eq!(frame(&child, W + PAGE), shared);
    assert_eq!(mm.cpu_view(&phys, W + PAGE), Some(5));
    for a in [W, W + PAGE, W + 2 * PAGE] {
        assert!(matches!(mm.pte(a), Some(Pte::Exclusive { owner: 1, .. })));
    }
}

#[test]
fn make_exclusive_leaves_pinned_pages_alone() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, W, 5);
    let Some(Pte::Present { frame, .. }) = mm.pte(W) else {
        panic!("not mapped");
    };
    phys.pin(frame);
    let op = MmOp::MakeExclusive {
        addr: W,
        len: PAGE,
        owner: 1,
    };
    assert!(matches!(run(&mut mm, &mut phys, op), Ok(Outcome::Pages(0))));
    assert!(matches!(mm.pte(W), Some(Pte::Present { frame: f, .. }) if f == frame));
}

#[test]
fn ksm_merges_only_equal_private_unshared_unpinned_pages() {
    // Each case: pages a and b prepared by `setup`, then a KSM merge that
    // must leave b's frame where it was.
    type Prep = fn(&mut Mm, &mut Phys) -> (u64, u64);
    let cases: [(&str, Prep); 7] = [
        ("different data", |mm, p| {
            crate::tests::write(mm, p, W, 1);
            crate::tests::write(mm, p, W + PAGE, 2);
            (W, W + PAGE)
        }),
        ("same page", |mm, p| {
            crate::tests::write(mm, p, W, 1);
            (W, W + 8)
        }),
        ("b pinned", |mm, p| {
            crate::tests::write(mm, p, W, 1);
            crate::tests::write(mm, p, W + PAGE, 1);
            let f = mm.pte(W + PAGE).and_then(|x| x.frame()).unwrap();
            p.pin(f);
            (W, W + PAGE)
        }),
        ("a shared", |mm, p| {
            mmap(mm, p, W + 8 * PAGE, 1, MapKind::AnonShared);
            crate::tests::write(mm, p, W + 8 * PAGE, 1);
            crate::tests::write(mm, p, W + PAGE, 1);
            (W + 8 * PAGE, W + PAGE)
        }),
        ("b shared", |mm, p| {
            mmap(mm, p, W + 8 * PAGE, 1, MapKind::AnonShared);
            crate::tests::write(mm, p, W + 8 * PAGE, 1);
            crate::tests::write(mm, p, W, 1);
            (W, W + 8 * PAGE)
        }),
        ("zero page", |mm, p| {
            crate::tests::read(mm, p, W);
            crate::tests::read(mm, p, W + PAGE);
            (W, W + PAGE)
        }),
        ("into the zero page", |mm, p| {
            crate::tests::read(mm, p, W);
            crate::tests::write(mm, p, W + PAGE, 0);
            (W, W + PAGE)
        }),
    ];
    for (what, prep) in cases {
        let (mut mm, mut phys, _seen, _iv) = setup();
        mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
        let (a, b) = prep(&mut mm, &mut phys);
        let before = mm.pte(b);
        let _ = run(&mut mm, &mut phys, MmOp::Ksm { a, b });
        let fb = mm.pte(b).and_then(|x| x.frame());
        assert_eq!(fb, before.and_then(|x| x.frame()), "{what}: b was merged");
    }

    // b mapped twice (a fork child shares it) is not merged either.
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, W + PAGE, 1);
    let Ok(Outcome::Forked(_child)) = run(&mut mm, &mut phys, MmOp::Fork) else {
        panic!("fork");
    };
    crate::tests::write(&mut mm, &mut phys, W, 1);
    let fb = mm.pte(W + PAGE).and_then(|x| x.frame());
    let _ = run(&mut mm, &mut phys, MmOp::Ksm { a: W, b: W + PAGE });
    assert_eq!(mm.pte(W + PAGE).and_then(|x| x.frame()), fb);
}

#[test]
fn mremap_moves_only_its_pages_and_keeps_the_file_offset() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 4, MapKind::File(6));
    for p in 0..4 {
        crate::tests::write(&mut mm, &mut phys, W + p * PAGE, 0x70 + p);
    }
    let dst = W + 32 * PAGE;
    let op = MmOp::Mremap {
        addr: W + PAGE,
        old_len: PAGE,
        new_len: PAGE,
        new_addr: Some(dst),
        dontunmap: false,
    };
    run(&mut mm, &mut phys, op).unwrap();
    assert_eq!(mm.vma_at(dst).map(|v| v.pgoff), Some(1));
    assert_eq!(mm.cpu_view(&phys, dst), Some(0x71));
    assert_eq!(mm.pte(dst + PAGE), None, "only one page moved");
    assert_eq!(
        mm.cpu_view(&phys, W + 2 * PAGE),
        Some(0x72),
        "the rest stays"
    );
    assert!(mm.pte(W + 2 * PAGE).is_some());
    // Re-faulted after a zap, the moved page comes from file page 1.
    run(
        &mut mm,
        &mut phys,
        MmOp::Dontneed {
            addr: dst,
            len: PAGE,
        },
    )
    .unwrap();
    assert_eq!(crate::tests::read(&mut mm, &mut phys, dst), 0x71);
}

#[test]
fn a_read_fault_in_never_makes_a_page_writable() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    crate::tests::read(&mut mm, &mut phys, W);
    let op = MmOp::FaultIn {
        addr: W,
        write: false,
    };
    run(&mut mm, &mut phys, op).unwrap();
    assert!(
        matches!(mm.pte(W), Some(Pte::Present { frame, writable: false }) if frame == phys.zero()),
        "{:?}",
        mm.pte(W)
    );
    crate::tests::write(&mut mm, &mut phys, W, 3);
    assert_eq!(phys.data(phys.zero()), 0);
}

#[test]
fn a_write_after_the_fork_child_exits_reuses_the_page() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, W, 3);
    let frame = mm.pte(W).and_then(|p| p.frame()).unwrap();
    let Ok(Outcome::Forked(mut child)) = run(&mut mm, &mut phys, MmOp::Fork) else {
        panic!("fork");
    };
    run(&mut child, &mut phys, MmOp::Exit).unwrap();
    assert_eq!(phys.frame(frame).mapcount, 1);
    let op = MmOp::FaultIn {
        addr: W + 8,
        write: true,
    };
    run(&mut mm, &mut phys, op).unwrap();
    assert_eq!(
        mm.pte(W),
        Some(Pte::Present {
            frame,
            writable: true
        }),
        "the only mapping is made writable in place"
    );
}

#[test]
fn write_protecting_one_page_of_a_huge_mapping_splits_it() {
    for offset in [0, PAGE] {
        let (mut mm, mut phys, _seen, _iv) = setup();
        let base = 2 * HUGE;
        mmap(&mut mm, &mut phys, base, HUGE / PAGE, MapKind::AnonPrivate);
        mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
        crate::tests::write(&mut mm, &mut phys, base + offset, 5);
        crate::tests::write(&mut mm, &mut phys, W, 5);
        run(&mut mm, &mut phys, MmOp::ThpCollapse { addr: base }).unwrap();
        assert!(mm.is_huge(base));
        // KSM write-protects the page it keeps, inside the huge mapping.
        let ksm = MmOp::Ksm {
            a: base + offset,
            b: W,
        };
        run(&mut mm, &mut phys, ksm).unwrap();
        assert!(!mm.is_huge(base), "offset {offset:#x}: still huge");
        assert_eq!(mm.pte(W), mm.pte(base + offset), "merged");
    }
}

#[test]
fn write_protecting_a_huge_page_leaves_its_neighbour_huge() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    let (lo, hi) = (2 * HUGE, 3 * HUGE);
    for base in [lo, hi] {
        mmap(&mut mm, &mut phys, base, HUGE / PAGE, MapKind::AnonPrivate);
        crate::tests::write(&mut mm, &mut phys, base, 5);
        run(&mut mm, &mut phys, MmOp::ThpCollapse { addr: base }).unwrap();
    }
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, W, 5);
    run(&mut mm, &mut phys, MmOp::Ksm { a: hi, b: W }).unwrap();
    assert!(!mm.is_huge(hi));
    assert!(mm.is_huge(lo), "the huge page below was split too");
}

#[test]
fn clear_refs_over_a_whole_huge_mapping_keeps_it_huge() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    let base = 2 * HUGE;
    mmap(&mut mm, &mut phys, base, HUGE / PAGE, MapKind::AnonPrivate);
    crate::tests::write(&mut mm, &mut phys, base + PAGE, 5);
    run(&mut mm, &mut phys, MmOp::ThpCollapse { addr: base }).unwrap();
    run(&mut mm, &mut phys, MmOp::ClearRefs).unwrap();
    assert!(mm.is_huge(base), "protected whole, it stays huge");
    assert!(matches!(
        mm.pte(base + PAGE),
        Some(Pte::Present {
            writable: false,
            ..
        })
    ));
}

#[test]
fn fork_looks_up_each_pte_in_its_own_vma() {
    // Private memory at the bottom of the address space, where a lookup
    // with a wrong page number for the shared page above would land.
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, 0, 2, MapKind::AnonPrivate);
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonShared);
    crate::tests::write(&mut mm, &mut phys, W, 3);
    let Ok(Outcome::Forked(child)) = run(&mut mm, &mut phys, MmOp::Fork) else {
        panic!("fork");
    };
    assert!(
        matches!(child.pte(W), Some(Pte::Present { writable: true, .. })),
        "{:?}",
        child.pte(W)
    );
}
