//! The counters and the workloads are deterministic, a counted metric
//! answers a change it should, and the command's JSON reads back.

use super::*;

fn spec(s: &str) -> StrategySpec {
    StrategySpec::from_arg(s).expect("a registered strategy")
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    for w in Workload::ALL {
        let a = w.trace(7, 32);
        assert!(!a.is_empty(), "{w}: empty trace");
        assert_eq!(
            a,
            w.trace(7, 32),
            "{w}: the trace depends on more than the seed"
        );
        assert!(a != w.trace(8, 32), "{w}: the seed changes nothing");
    }
}

#[test]
fn size_grows_the_trace() {
    for w in Workload::ALL {
        assert!(
            w.trace(1, 256).len() > w.trace(1, 64).len(),
            "{w}: a larger size gives no longer trace"
        );
    }
}

#[test]
fn counts_are_deterministic() {
    for w in Workload::ALL {
        for s in mirror::strategy::BUILTIN.iter().map(|k| k.name) {
            let a = count(w, 16, 3, spec(s));
            let b = count(w, 16, 3, spec(s));
            assert_eq!(a, b, "{w} {s}: two runs of one seed counted differently");
            assert!(a.get(Metric::NotifierLock) > 0, "{w} {s}: nothing counted");
        }
    }
}

#[test]
fn smaller_odp_chunks_insert_more_intervals() {
    let small = count(Workload::Stream, 256, 1, spec("odp:16k"));
    let large = count(Workload::Stream, 256, 1, spec("odp:2m"));
    assert!(
        small.get(Metric::Inserted) > large.get(Metric::Inserted),
        "odp:16k inserted {} intervals, odp:2m {}",
        small.get(Metric::Inserted),
        large.get(Metric::Inserted)
    );
    assert!(small.get(Metric::PeakIntervals) > large.get(Metric::PeakIntervals));
}

#[test]
fn perfault_inserts_and_removes_one_interval_per_fault() {
    let r = count(Workload::Stream, 64, 1, spec("perfault"));
    let faults = r.get(Metric::Faults);
    assert!(faults > 0);
    // Each attempt, a retry included, inserts its own interval.
    let attempts = faults + r.get(Metric::Retries);
    assert_eq!(r.get(Metric::Inserted), attempts);
    assert_eq!(r.get(Metric::Removed), attempts);
}

#[test]
fn fullva_inserts_once_and_every_invalidation_calls_it() {
    let r = count(Workload::Stream, 64, 1, spec("fullva"));
    assert_eq!(r.get(Metric::Inserted), 1);
    assert_eq!(r.get(Metric::Callbacks), r.get(Metric::Invalidations));
}

#[test]
fn every_workload_runs_without_failures_on_fullva() {
    for w in Workload::ALL {
        let r = count(w, 64, 1, spec("fullva"));
        assert_eq!(r.failed, 0, "{w}: {} steps failed", r.failed);
        assert!(
            r.get(Metric::Faults) > 0 || w == Workload::DevMig,
            "{w}: no faults"
        );
    }
}

#[test]
fn the_json_reads_back() {
    let dir = std::env::temp_dir().join(format!("mnfuzz-cost-test-{}", std::process::id()));
    let args = CostArgs {
        workload: vec!["stream,churn".into()],
        strategy: vec!["odp:64k".into(), "vma".into()],
        size: vec![16, 32],
        seed: 5,
        out: dir.clone(),
        no_write: false,
        no_progress: true,
        timed: false,
        timed_ms: 1,
    };
    cli(&args).expect("cost runs");
    let rep = read_report(&dir.join(json_name(&args))).expect("the JSON parses");
    assert_eq!(rep.seed, 5);
    assert_eq!(rep.rows.len(), 2 * 2 * 2);
    assert!(rep.sweep.is_empty());
    let again = count(Workload::Stream, 32, 5, spec("vma"));
    assert!(
        rep.rows.contains(&again),
        "the JSON holds other counts than a rerun"
    );
    // Plots of a report are well-formed SVG, one per workload and metric.
    let plots = plots(&rep);
    assert_eq!(plots.len(), 2 * PLOTTED.len());
    assert!(plots
        .iter()
        .all(|(_, s)| s.starts_with("<svg") && s.ends_with("</svg>\n")));
    let _ = std::fs::remove_dir_all(&dir);
}
