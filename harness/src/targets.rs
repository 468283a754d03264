//! Fuzz target entry points: one `&[u8]` function per target, shared by
//! libFuzzer, AFL++, honggfuzz and the built-in engine, so that a corpus
//! moves between them unchanged.

use std::sync::OnceLock;

use notifier::PlantedBug;

use crate::codec;
use crate::outcome::{Divergence, DivergenceKind, Outcome, RunOptions};
use crate::pin::DevicePin;
use crate::program::{Program, Target};
use crate::report;

/// The planted bug named by `MNFUZZ_PLANTED_BUG`, read once. An unknown
/// name, or a name in a build without the `planted-bugs` feature, ends the
/// process with a clear message instead of fuzzing the wrong thing.
pub fn planted_from_env() -> Option<PlantedBug> {
    static PLANTED: OnceLock<Option<PlantedBug>> = OnceLock::new();
    *PLANTED.get_or_init(|| {
        let name = std::env::var("MNFUZZ_PLANTED_BUG").ok()?;
        if name.is_empty() {
            return None;
        }
        match resolve_planted(&name) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("mnfuzz: MNFUZZ_PLANTED_BUG: {e}");
                std::process::exit(2);
            }
        }
    })
}

/// Looks up a planted bug by name, checking that this build can plant it.
pub fn resolve_planted(name: &str) -> Result<PlantedBug, String> {
    let bug = PlantedBug::from_name(name).ok_or_else(|| {
        let all: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
        format!("unknown planted bug '{name}' (known: {})", all.join(", "))
    })?;
    if cfg!(feature = "planted-bugs") {
        Ok(bug)
    } else {
        Err(format!(
            "'{name}' needs a build with the planted-bugs feature (cargo ... --features planted-bugs)"
        ))
    }
}

/// Runs `program` with its target's executor. Never panics on a core
/// panic: that is reported as a [`DivergenceKind::Panic`] divergence.
pub fn run(program: &Program, opts: &RunOptions) -> Outcome {
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_inner(program, opts)));
    match result {
        Ok(out) => out,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Outcome {
                divergence: Some(Divergence {
                    kind: DivergenceKind::Panic,
                    step: None,
                    doing: "running the program".into(),
                    core: format!("panicked: {msg}"),
                    model: "no panic".into(),
                    states: (String::new(), String::new()),
                }),
                ..Outcome::default()
            }
        }
    }
}

fn run_inner(program: &Program, opts: &RunOptions) -> Outcome {
    if let Err(e) = program.validate() {
        return Outcome {
            divergence: None,
            trace: vec![format!("invalid program: {e}")],
            ..Outcome::default()
        };
    }
    match program.config.target {
        Target::Notifier => crate::notifier::exec::run_notifier(program, opts),
        Target::Mirror => crate::mirror::exec::run_mirror(program, opts),
        Target::Threads => crate::threads::exec::run_threads(program, opts),
        Target::Linux | Target::Kvm => crate::linux::run(program, opts),
    }
}

/// Decodes `data` as a program for `target`, whatever its target byte says.
pub fn decode_for(target: Target, data: &[u8]) -> Program {
    codec::decode_as(target, data)
}

/// [`decode_for`], with the choices `opts` makes.
pub fn decode_for_with(target: Target, data: &[u8], opts: codec::DecodeOptions) -> Program {
    codec::decode_as_with(target, data, opts)
}

/// Runs `data` as a `target` program; panics with the full report on a
/// divergence, and only then.
pub fn run_bytes(target: Target, data: &[u8]) {
    check(&decode_for(target, data));
}

/// Runs `p` as an engine does; panics with the full report on a
/// divergence, and only then.
fn check(p: &Program) {
    // Engines mutate seeds: their `expect` lines no longer hold, and are
    // not what a fuzz target checks.
    let opts = RunOptions {
        trace: false,
        planted: planted_from_env(),
        expect: false,
    };
    if run(p, &opts).divergence.is_some() {
        let report = report::render(p, &opts).unwrap_or_default();
        panic!("{report}");
    }
}

/// The `mirror` target with the devices' strategies pinned, whatever the
/// bytes ask for: the fuzz target of a crate that registers a strategy of
/// its own ([`mirror::strategy::register`]).
///
/// ```no_run
/// use harness::pin::DevicePin;
/// let lru = mirror::StrategySpec::from_arg("lru").expect("registered first");
/// harness::targets::mirror_pinned(b"some input", &DevicePin::single(lru));
/// ```
pub fn mirror_pinned(data: &[u8], pin: &DevicePin) {
    let mut p = decode_for(Target::Mirror, data);
    pin.apply(&mut p);
    check(&p);
}

/// The `notifier` target: the core against `ReferenceNotifier`.
pub fn notifier(data: &[u8]) {
    run_bytes(Target::Notifier, data);
}

/// The `threads` target: the core's blocking API on threads whose
/// interleaving the input chooses (shuttle).
pub fn threads(data: &[u8]) {
    run_bytes(Target::Threads, data);
}

/// The `mirror` target: device mirrors on the simulated address space,
/// against the stale-PTE, coherence and liveness oracles.
pub fn mirror(data: &[u8]) {
    run_bytes(Target::Mirror, data);
}

/// Checks once that the real side of the `linux` target works here, and
/// ends the process with exit code 2 and the reason when it does not.
pub fn linux_available() {
    static PROBED: OnceLock<()> = OnceLock::new();
    PROBED.get_or_init(|| {
        if let Err(e) = crate::linux::probe() {
            eprintln!("mnfuzz: the linux target cannot run here: {e}");
            std::process::exit(2);
        }
    });
}

/// The `linux` target: the mm ops of a program on the simulated mm and on
/// a real child process, compared after every op. Call
/// [`crate::linux::zygote_main_if_requested`] first thing in `main` (or a
/// libFuzzer `init`).
pub fn linux(data: &[u8]) {
    linux_available();
    run_bytes(Target::Linux, data);
}

/// Checks once that the kvm target can run here (root, /dev/kvm,
/// userfaultfd), and ends the process with exit code 2 and the reason
/// when it cannot.
pub fn kvm_available() {
    static PROBED: OnceLock<()> = OnceLock::new();
    PROBED.get_or_init(|| {
        if let Err(e) = crate::linux::probe_kvm() {
            eprintln!("mnfuzz: the kvm target cannot run here: {e}");
            std::process::exit(2);
        }
    });
}

/// The `kvm` target: the linux target with KVM guests as devices, whose
/// reads and writes are compared with the host CPU and the simulation.
/// Call [`crate::linux::zygote_main_if_requested`] first thing in `main`
/// (or a libFuzzer `init`).
pub fn kvm(data: &[u8]) {
    kvm_available();
    run_bytes(Target::Kvm, data);
}
