//! What the task tests leave implicit: two mappings of one file share its
//! pages at the right offsets, and the page-table views report the
//! addresses they cover.

use crate::tests::{mmap, read, run, setup, write, W};
use crate::*;

#[test]
fn two_mappings_of_a_file_share_each_page_at_its_offset() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    let (a, b) = (W, W + 16 * PAGE);
    mmap(&mut mm, &mut phys, a, 4, MapKind::File(5));
    mmap(&mut mm, &mut phys, b, 4, MapKind::File(5));
    // Unmapping a's first page leaves a VMA at a + PAGE with file offset 1.
    run(&mut mm, &mut phys, MmOp::Munmap { addr: a, len: PAGE }).unwrap();
    assert_eq!(mm.vma_at(a + PAGE).unwrap().pgoff, 1);
    for i in 1..4 {
        assert_eq!(
            read(&mut mm, &mut phys, a + i * PAGE),
            read(&mut mm, &mut phys, b + i * PAGE),
            "file page {i} differs between the two mappings"
        );
    }
    assert_ne!(
        read(&mut mm, &mut phys, b + PAGE),
        read(&mut mm, &mut phys, b + 2 * PAGE),
        "two file pages read the same"
    );
    write(&mut mm, &mut phys, a + 2 * PAGE, 0x77);
    assert_eq!(read(&mut mm, &mut phys, b + 2 * PAGE), 0x77);
    // The page cache keeps the store after the PTEs are zapped. (The
    // range runs past the mapping: ENOMEM, after zapping what is mapped.)
    let r = run(
        &mut mm,
        &mut phys,
        MmOp::Dontneed {
            addr: a,
            len: 32 * PAGE,
        },
    );
    assert_eq!(r.err(), Some(MmError::Fault));
    assert!(mm.ptes_in(a, a + 32 * PAGE).next().is_none(), "zapped");
    assert_eq!(mm.cpu_view(&phys, b + 2 * PAGE), Some(0x77));
    assert_eq!(read(&mut mm, &mut phys, a + 2 * PAGE), 0x77);
}

#[test]
fn pte_views_report_page_addresses_in_range() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 4, MapKind::AnonPrivate);
    write(&mut mm, &mut phys, W, 1);
    write(&mut mm, &mut phys, W + 2 * PAGE, 2);
    let all: Vec<u64> = mm.ptes().map(|(a, _)| a).collect();
    assert_eq!(all, vec![W, W + 2 * PAGE]);
    let mid: Vec<u64> = mm.ptes_in(W + PAGE, W + 3 * PAGE).map(|(a, _)| a).collect();
    assert_eq!(mid, vec![W + 2 * PAGE]);
    // Unaligned bounds cover the pages they touch.
    let touched: Vec<u64> = mm
        .ptes_in(W + 2 * PAGE + 8, W + 2 * PAGE + 16)
        .map(|(a, _)| a)
        .collect();
    assert_eq!(touched, vec![W + 2 * PAGE]);
    assert!(mm.ptes_in(W + PAGE, W + 2 * PAGE).next().is_none());
    // Its Debug form (used in reports) shows the state, not nothing.
    let dbg = format!("{mm:?}");
    assert!(dbg.contains("vmas") && dbg.contains("ptes"), "{dbg}");
}

#[test]
fn vma_queries_respect_half_open_bounds_and_file_offsets() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 4, MapKind::File(5));
    mmap(&mut mm, &mut phys, W + 8 * PAGE, 4, MapKind::AnonPrivate);
    assert!(!mm.any_vma(W - 2 * PAGE, W), "ends where the VMA starts");
    assert!(!mm.any_vma(W + 4 * PAGE, W + 8 * PAGE), "the gap");
    assert!(mm.any_vma(W + 3 * PAGE, W + 4 * PAGE));
    assert!(mm.any_vma(W + 7 * PAGE, W + 9 * PAGE));

    let clipped = mm.vmas_in(W + PAGE, W + 3 * PAGE);
    assert_eq!(clipped.len(), 1);
    let v = clipped[0];
    assert_eq!((v.start, v.end, v.pgoff), (W + PAGE, W + 3 * PAGE, 1));
    assert!(mm.vmas_in(W + 4 * PAGE, W + 8 * PAGE).is_empty());
    assert!(mm.vmas_in(W - PAGE, W).is_empty());
    let both = mm.vmas_in(W + 2 * PAGE, W + 9 * PAGE);
    let spans: Vec<(u64, u64, u64)> = both.iter().map(|v| (v.start, v.end, v.pgoff)).collect();
    assert_eq!(
        spans,
        vec![
            (W + 2 * PAGE, W + 4 * PAGE, 2),
            // Anonymous memory's offset is its address, as in Linux.
            (W + 8 * PAGE, W + 9 * PAGE, (W + 8 * PAGE) / PAGE)
        ]
    );
}

#[test]
fn free_range_finds_the_lowest_gap_that_fits() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    mmap(&mut mm, &mut phys, W, 4, MapKind::AnonPrivate);
    mmap(&mut mm, &mut phys, W + 8 * PAGE, 4, MapKind::AnonPrivate);
    assert_eq!(mm.free_range(0, PAGE), Some(0));
    assert_eq!(mm.free_range(W, 4 * PAGE), Some(W + 4 * PAGE), "exact fit");
    assert_eq!(mm.free_range(W + PAGE, 5 * PAGE), Some(W + 12 * PAGE));
    assert_eq!(mm.free_range(W + 9 * PAGE, PAGE), Some(W + 12 * PAGE));
    let top = mm.config.task_size;
    assert_eq!(mm.free_range(top - PAGE, PAGE), Some(top - PAGE));
    assert_eq!(mm.free_range(top - PAGE, 2 * PAGE), None);
}

#[test]
fn fork_copies_shared_ptes_with_their_permission() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    let (ro, rw) = (W, W + 4 * PAGE);
    run(
        &mut mm,
        &mut phys,
        MmOp::Mmap {
            addr: ro,
            len: PAGE,
            kind: MapKind::File(5),
            prot: Prot::Read,
        },
    )
    .unwrap();
    mmap(&mut mm, &mut phys, rw, 1, MapKind::AnonShared);
    read(&mut mm, &mut phys, ro);
    write(&mut mm, &mut phys, rw, 3);
    let Ok(Outcome::Forked(child)) = run(&mut mm, &mut phys, MmOp::Fork) else {
        panic!("fork");
    };
    for (addr, writable) in [(ro, false), (rw, true)] {
        assert_eq!(child.pte(addr), mm.pte(addr));
        assert!(
            matches!(child.pte(addr), Some(Pte::Present { writable: w, .. }) if w == writable),
            "{addr:#x}: {:?}",
            child.pte(addr)
        );
    }
}

#[test]
fn protections_round_trip_through_their_names() {
    for p in Prot::ALL {
        assert!(!p.name().is_empty());
        assert_eq!(Prot::from_name(p.name()), Some(p));
    }
    assert_eq!(Prot::from_name("xyzzy"), None);
    assert_eq!(Prot::from_name("rw"), Some(Prot::ReadWrite));
}

/// What the linux target found the simulation doing differently from
/// Linux 6.18 (each also has a reproducer in corpus/regressions/linux/,
/// which needs root to replay; these hold without it).
#[test]
fn mm_calls_behave_as_in_linux() {
    let (mut mm, mut phys, _seen, _iv) = setup();
    let vmas = |mm: &Mm| -> Vec<(u64, u64)> { mm.vmas().map(|v| (v.start, v.end)).collect() };
    // An anonymous mapping over the middle of another merges with it.
    mmap(&mut mm, &mut phys, W, 8, MapKind::AnonPrivate);
    mmap(&mut mm, &mut phys, W + 3 * PAGE, 4, MapKind::AnonPrivate);
    assert_eq!(vmas(&mm), vec![(W, W + 8 * PAGE)]);
    write(&mut mm, &mut phys, W, 1);
    // madvise over a hole zaps what is mapped, then ENOMEM.
    let r = run(
        &mut mm,
        &mut phys,
        MmOp::Dontneed {
            addr: W,
            len: 16 * PAGE,
        },
    );
    assert_eq!(r.err(), Some(MmError::Fault));
    assert!(mm.pte(W).is_none());
    // Zero bytes: nothing to do, no error.
    for op in [
        MmOp::Dontneed { addr: W, len: 0 },
        MmOp::Mprotect {
            addr: W,
            len: 0,
            prot: Prot::Read,
        },
    ] {
        assert!(run(&mut mm, &mut phys, op).is_ok(), "{op:?}");
    }
    // mprotect changes the VMAs up to the first hole, then ENOMEM.
    let r = run(
        &mut mm,
        &mut phys,
        MmOp::Mprotect {
            addr: W + 4 * PAGE,
            len: 8 * PAGE,
            prot: Prot::Read,
        },
    );
    assert_eq!(r.err(), Some(MmError::Fault));
    assert!(!mm.vma_at(W + 7 * PAGE).unwrap().write);
    assert!(mm.vma_at(W).unwrap().write);
    // A shrinking mremap needs a VMA at the start only.
    let shrink = MmOp::Mremap {
        addr: W + 6 * PAGE,
        old_len: 4 * PAGE,
        new_len: PAGE,
        new_addr: None,
        dontunmap: false,
    };
    assert!(run(&mut mm, &mut phys, shrink).is_ok());
    assert_eq!(vmas(&mm).last(), Some(&(W + 4 * PAGE, W + 7 * PAGE)));
    // ... and is EFAULT without one, even at the same length.
    let same = MmOp::Mremap {
        addr: W + 20 * PAGE,
        old_len: PAGE,
        new_len: PAGE,
        new_addr: None,
        dontunmap: false,
    };
    assert_eq!(run(&mut mm, &mut phys, same).err(), Some(MmError::Fault));
    // A shared anonymous mapping ends where it ended: SIGBUS past it.
    let s = W + 32 * PAGE;
    mmap(&mut mm, &mut phys, s, 1, MapKind::AnonShared);
    let grow = MmOp::Mremap {
        addr: s,
        old_len: PAGE,
        new_len: 2 * PAGE,
        new_addr: None,
        dontunmap: false,
    };
    assert!(run(&mut mm, &mut phys, grow).is_ok());
    let past = MmOp::Access {
        addr: s + PAGE,
        write: None,
    };
    assert_eq!(run(&mut mm, &mut phys, past).err(), Some(MmError::Fault));
    assert_eq!(mm.cpu_view(&phys, s + PAGE), None);
}
