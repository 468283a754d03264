//! Each operation emits the kernel's events over the right ranges, and
//! changes CPU PTEs only inside them.

use std::sync::{Arc, Mutex};

use notifier::{Event, Interval, Range};

use crate::*;

pub(crate) const W: u64 = 0x10_0000; // a window base, away from 0

struct Always;
impl Env for Always {
    fn callbacks_can_run(&self, _: MmId, _: &Range) -> bool {
        true
    }
}

pub(crate) type Seen = Arc<Mutex<Vec<(Event, u64, u64, bool)>>>;

pub(crate) fn setup() -> (Mm, Phys, Seen, Interval) {
    let mm = Mm::new(MmId(0), MmConfig::default());
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let iv = mm
        .notifier
        .insert(
            0,
            mm.config.task_size,
            Arc::new(move |iv: &Interval, r: &Range, seq: u64| {
                iv.set_seq(seq).unwrap();
                s2.lock()
                    .unwrap()
                    .push((r.event, r.start, r.end, r.blockable));
                true
            }),
        )
        .unwrap();
    (mm, Phys::new(), seen, iv)
}

pub(crate) fn run(mm: &mut Mm, phys: &mut Phys, op: MmOp) -> Result<Outcome, MmError> {
    let mut t = Task::new(op, 0);
    for _ in 0..64 {
        match t.step(mm, phys, &Always) {
            TaskStep::Progress => {}
            TaskStep::Blocked(b) => panic!("blocked on {b:?} with nothing else running"),
            TaskStep::Done(r) => return r,
        }
    }
    panic!("task did not finish");
}

/// Steps an already started task to its end; a wrong mm that never
/// finishes or blocks fails here instead of looping for ever.
pub(crate) fn finish_task(t: &mut Task, mm: &mut Mm, phys: &mut Phys) -> Result<Outcome, MmError> {
    for _ in 0..64 {
        match t.step(mm, phys, &Always) {
            TaskStep::Done(r) => return r,
            TaskStep::Progress => {}
            TaskStep::Blocked(b) => panic!("blocked on {b:?}"),
        }
    }
    panic!("task did not finish in 64 steps");
}

pub(crate) fn take(seen: &Seen) -> Vec<(Event, u64, u64, bool)> {
    std::mem::take(&mut seen.lock().unwrap())
}

pub(crate) fn mmap(mm: &mut Mm, phys: &mut Phys, addr: u64, pages: u64, kind: MapKind) {
    run(
        mm,
        phys,
        MmOp::Mmap {
            addr,
            len: pages * PAGE,
            kind,
            prot: Prot::ReadWrite,
        },
    )
    .unwrap();
}

pub(crate) fn write(mm: &mut Mm, phys: &mut Phys, addr: u64, v: u64) {
    match run(
        mm,
        phys,
        MmOp::Access {
            addr,
            write: Some(v),
        },
    ) {
        Ok(Outcome::Value(x)) => assert_eq!(x, v),
        other => panic!("write failed: {other:?}"),
    }
}

pub(crate) fn read(mm: &mut Mm, phys: &mut Phys, addr: u64) -> u64 {
    match run(mm, phys, MmOp::Access { addr, write: None }) {
        Ok(Outcome::Value(x)) => x,
        other => panic!("read failed: {other:?}"),
    }
}

#[test]
fn fresh_mmap_emits_nothing_and_mmap_over_a_mapping_unmaps_it() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 4, MapKind::AnonPrivate);
    assert!(take(&seen).is_empty());
    write(&mut mm, &mut phys, W + PAGE, 7);
    mmap(&mut mm, &mut phys, W + PAGE, 2, MapKind::AnonShared);
    assert_eq!(
        take(&seen),
        vec![(Event::Unmap, W + PAGE, W + 3 * PAGE, true)]
    );
    assert_eq!(mm.vmas().count(), 3, "split into private, shared, private");
    assert_eq!(mm.cpu_view(&phys, W + PAGE), Some(0));
}

#[test]
fn partial_munmap_splits_the_vma() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 8, MapKind::AnonPrivate);
    for p in 0..8 {
        write(&mut mm, &mut phys, W + p * PAGE, p + 1);
    }
    take(&seen);
    run(
        &mut mm,
        &mut phys,
        MmOp::Munmap {
            addr: W + 2 * PAGE,
            len: 3 * PAGE,
        },
    )
    .unwrap();
    assert_eq!(
        take(&seen),
        vec![(Event::Unmap, W + 2 * PAGE, W + 5 * PAGE, true)]
    );
    let v: Vec<(u64, u64)> = mm.vmas().map(|v| (v.start, v.end)).collect();
    assert_eq!(v, vec![(W, W + 2 * PAGE), (W + 5 * PAGE, W + 8 * PAGE)]);
    assert_eq!(mm.cpu_view(&phys, W + 5 * PAGE), Some(6));
    assert_eq!(mm.cpu_view(&phys, W + 3 * PAGE), None);
}

#[test]
fn mprotect_emits_protection_vma_and_write_protects() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 1);
    take(&seen);
    run(
        &mut mm,
        &mut phys,
        MmOp::Mprotect {
            addr: W,
            len: PAGE,
            prot: Prot::Read,
        },
    )
    .unwrap();
    assert_eq!(take(&seen), vec![(Event::ProtectionVma, W, W + PAGE, true)]);
    assert!(matches!(
        mm.pte(W),
        Some(Pte::Present {
            writable: false,
            ..
        })
    ));
    assert_eq!(
        run(
            &mut mm,
            &mut phys,
            MmOp::Access {
                addr: W,
                write: Some(2)
            }
        )
        .unwrap_err(),
        MmError::Perm
    );
    assert_eq!(
        run(
            &mut mm,
            &mut phys,
            MmOp::Mprotect {
                addr: W,
                len: 4 * PAGE,
                prot: Prot::ReadWrite
            }
        )
        .unwrap_err(),
        MmError::Fault,
        "a hole in the range is ENOMEM"
    );
}

#[test]
fn fork_write_protects_parent_and_cow_breaks_with_clear() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    mmap(&mut mm, &mut phys, W + 4 * PAGE, 1, MapKind::AnonShared);
    write(&mut mm, &mut phys, W, 11);
    write(&mut mm, &mut phys, W + 4 * PAGE, 22);
    take(&seen);
    let Ok(Outcome::Forked(mut child)) = run(&mut mm, &mut phys, MmOp::Fork) else {
        panic!("fork");
    };
    // Only the private writable VMA is write-protected.
    assert_eq!(
        take(&seen),
        vec![(Event::ProtectionPage, W, W + 2 * PAGE, true)]
    );
    assert!(matches!(
        mm.pte(W),
        Some(Pte::Present {
            writable: false,
            ..
        })
    ));
    assert!(matches!(
        mm.pte(W + 4 * PAGE),
        Some(Pte::Present { writable: true, .. })
    ));
    // The parent's store breaks COW: one page, Clear.
    write(&mut mm, &mut phys, W, 12);
    assert_eq!(take(&seen), vec![(Event::Clear, W, W + PAGE, true)]);
    assert_eq!(read(&mut child, &mut phys, W), 11);
    // Shared memory stays shared.
    write(&mut child, &mut phys, W + 4 * PAGE, 23);
    assert_eq!(read(&mut mm, &mut phys, W + 4 * PAGE), 23);
}

#[test]
fn read_fault_maps_the_zero_page_and_write_fault_allocates() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    assert_eq!(read(&mut mm, &mut phys, W), 0);
    assert!(
        matches!(mm.pte(W), Some(Pte::Present { frame, writable: false }) if frame == phys.zero())
    );
    write(&mut mm, &mut phys, W, 5);
    assert_eq!(
        take(&seen),
        vec![(Event::Clear, W, W + PAGE, true)],
        "COW from the zero page"
    );
    assert_eq!(read(&mut mm, &mut phys, W), 5);
}

#[test]
fn reclaim_swaps_out_and_a_fault_swaps_back_in() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 99);
    take(&seen);
    run(&mut mm, &mut phys, MmOp::Reclaim { addr: W }).unwrap();
    assert_eq!(take(&seen), vec![(Event::Clear, W, W + PAGE, true)]);
    assert!(matches!(mm.pte(W), Some(Pte::Swap { .. })));
    assert_eq!(mm.cpu_view(&phys, W), Some(99));
    assert_eq!(read(&mut mm, &mut phys, W), 99);
    assert!(
        take(&seen).is_empty(),
        "swap-in maps a page that was not mapped"
    );
}

#[test]
fn pinned_frames_are_not_reclaimed_or_migrated() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 3);
    let Some(Pte::Present { frame, .. }) = mm.pte(W) else {
        panic!()
    };
    phys.pin(frame);
    take(&seen);
    assert!(matches!(
        run(&mut mm, &mut phys, MmOp::Reclaim { addr: W }),
        Ok(Outcome::Skipped)
    ));
    assert!(matches!(
        run(&mut mm, &mut phys, MmOp::Migrate { addr: W }),
        Ok(Outcome::Skipped)
    ));
    assert!(take(&seen).is_empty());
    assert!(matches!(mm.pte(W), Some(Pte::Present { frame: f, .. }) if f == frame));
}

#[test]
fn migration_moves_content_to_a_new_frame() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 42);
    let Some(Pte::Present { frame: before, .. }) = mm.pte(W) else {
        panic!()
    };
    take(&seen);
    run(&mut mm, &mut phys, MmOp::Migrate { addr: W }).unwrap();
    assert_eq!(take(&seen), vec![(Event::Clear, W, W + PAGE, true)]);
    let Some(Pte::Present {
        frame: after,
        writable,
    }) = mm.pte(W)
    else {
        panic!()
    };
    assert!(after != before && writable);
    assert_eq!(phys.data(after), 42);
}

#[test]
fn ksm_merges_equal_pages_read_only() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 8);
    write(&mut mm, &mut phys, W + PAGE, 8);
    take(&seen);
    run(&mut mm, &mut phys, MmOp::Ksm { a: W, b: W + PAGE }).unwrap();
    assert_eq!(
        take(&seen),
        vec![
            (Event::Clear, W, W + PAGE, true),
            (Event::Clear, W + PAGE, W + 2 * PAGE, true)
        ]
    );
    assert_eq!(mm.pte(W), mm.pte(W + PAGE));
    write(&mut mm, &mut phys, W + PAGE, 9);
    assert_eq!(read(&mut mm, &mut phys, W), 8);
}

#[test]
fn thp_collapse_and_split_clear_the_aligned_2mib() {
    let (mut mm, mut phys, seen, _iv) = setup();
    let base = 2 * HUGE;
    mmap(&mut mm, &mut phys, base, HUGE / PAGE, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, base + 5 * PAGE, 1);
    take(&seen);
    run(
        &mut mm,
        &mut phys,
        MmOp::ThpCollapse {
            addr: base + 9 * PAGE,
        },
    )
    .unwrap();
    run(&mut mm, &mut phys, MmOp::ThpSplit { addr: base }).unwrap();
    assert_eq!(
        take(&seen),
        vec![
            (Event::Clear, base, base + HUGE, true),
            (Event::Clear, base, base + HUGE, true)
        ]
    );
    assert_eq!(read(&mut mm, &mut phys, base + 5 * PAGE), 1);
    assert_eq!(
        run(&mut mm, &mut phys, MmOp::ThpSplit { addr: W }).unwrap_err(),
        MmError::Inval
    );
}

#[test]
fn mremap_shrink_grow_move_and_dontunmap() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 4, MapKind::AnonPrivate);
    for p in 0..4 {
        write(&mut mm, &mut phys, W + p * PAGE, 10 + p);
    }
    take(&seen);
    let remap = |addr, old, new, to: Option<u64>, dontunmap| MmOp::Mremap {
        addr,
        old_len: old * PAGE,
        new_len: new * PAGE,
        new_addr: to,
        dontunmap,
    };
    run(&mut mm, &mut phys, remap(W, 4, 3, None, false)).unwrap();
    assert_eq!(
        take(&seen),
        vec![(Event::Unmap, W + 3 * PAGE, W + 4 * PAGE, true)]
    );
    run(&mut mm, &mut phys, remap(W, 3, 5, None, false)).unwrap();
    assert!(
        take(&seen).is_empty(),
        "growing in place invalidates nothing"
    );
    let dst = W + 16 * PAGE;
    run(&mut mm, &mut phys, remap(W, 5, 5, Some(dst), false)).unwrap();
    assert_eq!(take(&seen), vec![(Event::Unmap, W, W + 5 * PAGE, true)]);
    assert_eq!(mm.cpu_view(&phys, dst + 2 * PAGE), Some(12));
    assert_eq!(mm.cpu_view(&phys, W), None);
    let Ok(Outcome::Addr(moved)) = run(&mut mm, &mut phys, remap(dst, 5, 5, None, true)) else {
        panic!("dontunmap");
    };
    assert_eq!(take(&seen), vec![(Event::Unmap, dst, dst + 5 * PAGE, true)]);
    assert_eq!(mm.cpu_view(&phys, moved + PAGE), Some(11));
    assert_eq!(
        mm.cpu_view(&phys, dst + PAGE),
        Some(0),
        "the old range stays, empty"
    );
}

#[test]
fn dontneed_clears_and_reads_back_zero() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 4);
    take(&seen);
    run(
        &mut mm,
        &mut phys,
        MmOp::Dontneed {
            addr: W,
            len: 2 * PAGE,
        },
    )
    .unwrap();
    assert_eq!(take(&seen), vec![(Event::Clear, W, W + 2 * PAGE, true)]);
    assert_eq!(read(&mut mm, &mut phys, W), 0);
}

#[test]
fn oom_reap_is_non_blockable_and_skips_refused_ranges() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    mmap(&mut mm, &mut phys, W + 4 * PAGE, 1, MapKind::File(3));
    write(&mut mm, &mut phys, W, 4);
    take(&seen);
    let refuse = mm
        .notifier
        .insert(
            W,
            PAGE,
            Arc::new(|_: &Interval, r: &Range, _: u64| r.blockable),
        )
        .unwrap();
    run(&mut mm, &mut phys, MmOp::OomReap).unwrap();
    assert_eq!(take(&seen), vec![(Event::Unmap, W, W + PAGE, false)]);
    assert_eq!(mm.cpu_view(&phys, W), Some(4), "refused: nothing reaped");
    mm.notifier.remove(&refuse).unwrap();
    run(&mut mm, &mut phys, MmOp::OomReap).unwrap();
    assert_eq!(mm.cpu_view(&phys, W), Some(0));
    assert!(mm.notifier.is_quiescent());
}

#[test]
fn exit_releases_then_unmaps_everything() {
    let (mut mm, mut phys, seen, iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 1);
    take(&seen);
    run(&mut mm, &mut phys, MmOp::Exit).unwrap();
    let top = mm.config.task_size;
    assert_eq!(
        take(&seen),
        vec![
            (Event::Release, 0, top, true),
            (Event::Unmap, W, W + PAGE, true)
        ]
    );
    assert!(mm.exited && mm.vmas().count() == 0);
    assert_eq!(
        run(&mut mm, &mut phys, MmOp::Fork).unwrap_err(),
        MmError::Exited
    );
    mm.notifier.remove(&iv).unwrap();
}

#[test]
fn writers_exclude_readers_in_the_mmap_lock_model() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    let mut unmap = Task::new(MmOp::Munmap { addr: W, len: PAGE }, 1);
    assert!(matches!(
        unmap.step(&mut mm, &mut phys, &Always),
        TaskStep::Progress
    ));
    assert_eq!(mm.lock.writer, Some(1));
    let mut fault = Task::new(
        MmOp::Access {
            addr: W,
            write: Some(1),
        },
        2,
    );
    assert!(matches!(
        fault.step(&mut mm, &mut phys, &Always),
        TaskStep::Blocked(Blocked::MmapLock)
    ));
    finish_task(&mut unmap, &mut mm, &mut phys).unwrap();
    assert_eq!(mm.lock, MmapLock::default());
    assert!(matches!(
        fault.step(&mut mm, &mut phys, &Always),
        TaskStep::Done(Err(MmError::Fault))
    ));
}

#[test]
fn cpu_ptes_change_only_between_start_and_end() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 1);
    let before = mm.pte(W);
    let mut t = Task::new(MmOp::Migrate { addr: W }, 0);
    let mut steps = Vec::new();
    for n in 0.. {
        assert!(n < 64, "task did not finish");
        let invalidating = mm.notifier.snapshot().active > 0;
        let r = t.step(&mut mm, &mut phys, &Always);
        steps.push((invalidating, mm.pte(W) != before));
        if matches!(r, TaskStep::Done(_)) {
            break;
        }
    }
    // The PTE changed in exactly one step, and that step ran inside an invalidation.
    let changed: Vec<_> = steps.iter().filter(|s| s.1).collect();
    assert!(!changed.is_empty());
    let first = steps.iter().position(|s| s.1).unwrap();
    assert!(steps[first].0, "{steps:?}");
}

#[test]
fn mremap_grow_that_must_move_keeps_the_moved_vma() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, 0x9000, 8, MapKind::AnonShared);
    let r = run(
        &mut mm,
        &mut phys,
        MmOp::Mremap {
            addr: 0xa000,
            old_len: 0x3000,
            new_len: 0x6001,
            new_addr: None,
            dontunmap: false,
        },
    );
    let v: Vec<(u64, u64)> = mm.vmas().map(|v| (v.start, v.end)).collect();
    assert!(matches!(r, Ok(Outcome::Addr(0))), "{r:?} {v:x?}");
    assert_eq!(mm.cpu_view(&phys, 0x6800), Some(0), "{v:x?}");
}

#[test]
fn a_write_fault_racing_ksm_never_writes_through_the_merged_frame() {
    // KSM takes no lock, so it can merge while the store is between plan
    // and apply (2 steps in) or between its COW and its finish (5 steps in).
    for steps_before_merge in [2, 5] {
        let (mut mm, mut phys, _seen, _iv) = setup();
        mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
        write(&mut mm, &mut phys, W, 5);
        write(&mut mm, &mut phys, W + PAGE, 5);
        run(&mut mm, &mut phys, MmOp::ClearRefs).unwrap();
        let mut store = Task::new(
            MmOp::Access {
                addr: W + PAGE,
                write: Some(7),
            },
            1,
        );
        for _ in 0..steps_before_merge {
            assert!(matches!(
                store.step(&mut mm, &mut phys, &Always),
                TaskStep::Progress
            ));
        }
        run(&mut mm, &mut phys, MmOp::Ksm { a: W, b: W + PAGE }).unwrap();
        assert_eq!(mm.pte(W), mm.pte(W + PAGE), "merged ({steps_before_merge})");
        let out = finish_task(&mut store, &mut mm, &mut phys);
        assert!(matches!(out, Ok(Outcome::Value(7))));
        assert_eq!(
            read(&mut mm, &mut phys, W),
            5,
            "store leaked into a ({steps_before_merge})"
        );
        assert_eq!(read(&mut mm, &mut phys, W + PAGE), 7);
    }
}

#[test]
fn ksm_never_merges_into_a_page_that_a_write_fault_reused_meanwhile() {
    // KSM write-protects the page it keeps (range 0), then merges the other
    // into it (range 1). A store to the kept page in between reuses it in
    // place (mapped once) and makes it writable again: merging into it then
    // would share every later store with the merged page.
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 5);
    write(&mut mm, &mut phys, W + PAGE, 5);
    let mut ksm = Task::new(MmOp::Ksm { a: W, b: W + PAGE }, 1);
    while !ksm.just_applied() {
        assert!(matches!(
            ksm.step(&mut mm, &mut phys, &Always),
            TaskStep::Progress
        ));
    }
    write(&mut mm, &mut phys, W, 5);
    assert!(matches!(
        mm.pte(W),
        Some(Pte::Present { writable: true, .. })
    ));
    let _ = finish_task(&mut ksm, &mut mm, &mut phys);
    assert_ne!(mm.pte(W), mm.pte(W + PAGE), "merged into a writable page");
    write(&mut mm, &mut phys, W, 6);
    assert_eq!(
        read(&mut mm, &mut phys, W + PAGE),
        5,
        "a's store leaked into b"
    );
}

#[test]
fn a_read_that_finds_its_device_page_evicted_meanwhile_maps_it_read_only() {
    // A load plans to bring a device page back (a Migrate range); the
    // device evicts it first. The load's apply then finds a read-only
    // system page: a read never breaks COW, least of all in a read-only VMA.
    let (mut mm, mut phys, _seen, _iv) = setup();
    let op = MmOp::Mmap {
        addr: W,
        len: PAGE,
        kind: MapKind::AnonPrivate,
        prot: Prot::Read,
    };
    run(&mut mm, &mut phys, op).unwrap();
    let (addr, len, owner) = (W, PAGE, 1);
    run(&mut mm, &mut phys, MmOp::DeviceMigrate { addr, len, owner }).unwrap();
    let mut load = Task::new(MmOp::Access { addr, write: None }, 1);
    for _ in 0..2 {
        assert!(matches!(
            load.step(&mut mm, &mut phys, &Always),
            TaskStep::Progress
        ));
    }
    run(&mut mm, &mut phys, MmOp::Evict { addr, len, owner }).unwrap();
    assert!(matches!(
        finish_task(&mut load, &mut mm, &mut phys),
        Ok(Outcome::Value(0))
    ));
    assert!(
        matches!(
            mm.pte(W),
            Some(Pte::Present {
                writable: false,
                ..
            })
        ),
        "{:?}",
        mm.pte(W)
    );
}

#[test]
fn device_migration_and_cpu_fault_back() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 4, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 5);
    take(&seen);
    let op = MmOp::DeviceMigrate {
        addr: W,
        len: 4 * PAGE,
        owner: 1,
    };
    // Empty pages move too: a device page of zeros.
    assert!(matches!(run(&mut mm, &mut phys, op), Ok(Outcome::Pages(4))));
    assert_eq!(take(&seen), vec![(Event::Migrate, W, W + 4 * PAGE, true)]);
    let Some(Pte::Device {
        frame, owner: 1, ..
    }) = mm.pte(W)
    else {
        panic!("not on the device: {:?}", mm.pte(W));
    };
    assert_eq!(phys.frame(frame).device, Some(1));
    assert_eq!(mm.cpu_view(&phys, W), Some(5));
    // A CPU read migrates it back, announcing the owner's migration.
    assert_eq!(read(&mut mm, &mut phys, W), 5);
    assert_eq!(take(&seen), vec![(Event::Migrate, W, W + PAGE, true)]);
    assert!(matches!(mm.pte(W), Some(Pte::Present { .. })));
    assert!(!phys.frame(frame).live, "the device page is freed");
    let evict = MmOp::Evict {
        addr: W,
        len: 4 * PAGE,
        owner: 1,
    };
    assert!(matches!(
        run(&mut mm, &mut phys, evict),
        Ok(Outcome::Pages(3))
    ));
    assert!(mm.ptes().all(|(_, p)| matches!(p, Pte::Present { .. })));
}

#[test]
fn exclusive_entries_are_revoked_by_cpu_access_and_fork() {
    let (mut mm, mut phys, seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 2, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 9);
    take(&seen);
    let op = MmOp::MakeExclusive {
        addr: W,
        len: 2 * PAGE,
        owner: 2,
    };
    assert!(matches!(run(&mut mm, &mut phys, op), Ok(Outcome::Pages(2))));
    assert_eq!(take(&seen), vec![(Event::Exclusive, W, W + 2 * PAGE, true)]);
    assert!(matches!(mm.pte(W), Some(Pte::Exclusive { owner: 2, .. })));
    assert_eq!(read(&mut mm, &mut phys, W), 9);
    assert_eq!(take(&seen), vec![(Event::Clear, W, W + PAGE, true)]);
    assert!(matches!(
        mm.pte(W),
        Some(Pte::Present { writable: true, .. })
    ));
    assert!(matches!(
        run(&mut mm, &mut phys, MmOp::Fork),
        Ok(Outcome::Forked(_))
    ));
    assert!(matches!(
        mm.pte(W + PAGE),
        Some(Pte::Present {
            writable: false,
            ..
        })
    ));
    // Read-only mappings cannot be made exclusive.
    run(
        &mut mm,
        &mut phys,
        MmOp::Mprotect {
            addr: W,
            len: 2 * PAGE,
            prot: Prot::Read,
        },
    )
    .unwrap();
    let again = MmOp::MakeExclusive {
        addr: W,
        len: PAGE,
        owner: 2,
    };
    assert_eq!(run(&mut mm, &mut phys, again).unwrap_err(), MmError::Perm);
}

#[test]
fn collapse_maps_huge_until_one_page_changes() {
    let (mut mm, mut phys, seen, _iv) = setup();
    let base = 4 * HUGE;
    mmap(&mut mm, &mut phys, base, HUGE / PAGE, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, base + 3 * PAGE, 3);
    take(&seen);
    run(&mut mm, &mut phys, MmOp::ThpCollapse { addr: base }).unwrap();
    assert_eq!(take(&seen), vec![(Event::Clear, base, base + HUGE, true)]);
    assert!(mm.is_huge(base + HUGE - 1));
    let f0 = mm.pte(base).and_then(Pte::frame).unwrap();
    let f9 = mm.pte(base + 9 * PAGE).and_then(Pte::frame).unwrap();
    assert_eq!(f9.0, f0.0 + 9, "a compound page's frames are contiguous");
    assert_eq!(read(&mut mm, &mut phys, base + 3 * PAGE), 3);
    run(
        &mut mm,
        &mut phys,
        MmOp::Dontneed {
            addr: base + PAGE,
            len: PAGE,
        },
    )
    .unwrap();
    assert!(!mm.is_huge(base), "zapping one page splits the PMD");
}

#[test]
fn prot_none_faults_every_access() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 1, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 1);
    run(
        &mut mm,
        &mut phys,
        MmOp::Mprotect {
            addr: W,
            len: PAGE,
            prot: Prot::None,
        },
    )
    .unwrap();
    let r = run(
        &mut mm,
        &mut phys,
        MmOp::Access {
            addr: W,
            write: None,
        },
    );
    assert_eq!(r.unwrap_err(), MmError::Fault);
    assert_eq!(mm.cpu_view(&phys, W), None);
}
