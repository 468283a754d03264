//! Tracing must not change what an execution does. The executor renders
//! its text (the trace, what each op answered, what was being done) only
//! when it is asked to, so the untraced run that the engines use has to
//! report exactly the same features, counters and divergences.

use harness::engine::Rng;
use harness::exec::{run, RunOptions};
use harness::program::Target;
use harness::targets::decode_for;

#[test]
fn tracing_changes_no_feature_counter_or_verdict() {
    let mut rng = Rng::new(11);
    let traced = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    let mut features = 0;
    for _ in 0..1_000 {
        let n = 8 + rng.below(300);
        let p = decode_for(Target::Notifier, &rng.bytes(n));
        let plain = run(&p, &RunOptions::default());
        let with_trace = run(&p, &traced);
        assert_eq!(plain.features, with_trace.features, "{p:?}");
        assert_eq!(plain.stats, with_trace.stats, "{p:?}");
        assert_eq!(plain.divergence, with_trace.divergence, "{p:?}");
        assert!(plain.trace.is_empty());
        features += plain.features.len();
    }
    assert!(features > 10_000, "only {features} features");
}
