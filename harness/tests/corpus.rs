//! Replays every file under `corpus/` as its own test: seed inputs (bytes
//! or `.ops`) and regressions. A regression that names the planted bug it
//! was found under (`# planted: NAME`) must also still diverge with that
//! bug, when the bugs are compiled in: it proves the detection stays. One
//! that documents kernel behaviour (`# expect-divergence: KIND`, with
//! `kernel_compat=1`) must diverge with that kind, and pass without the flag.
//! A kvm-target file where the kvm target cannot run (no /dev/kvm, not
//! root) prints `skipped: /dev/kvm not available (WHY): FILE` and passes.

use std::path::{Path, PathBuf};

use harness::exec::{run, RunOptions};
use harness::files::{load_program, program_files};
use harness::program::Target;
use libtest_mimic::{Arguments, Failed, Trial};

fn planted_header(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .find_map(|l| l.strip_prefix("# planted:").map(|n| n.trim().to_string()))
}

/// Seeds and regressions are written by people: their `expect` lines hold.
const CHECKED: RunOptions = RunOptions {
    trace: false,
    planted: None,
    expect: true,
};

/// Why the kvm target cannot run here, probed once.
fn kvm_missing() -> Option<&'static str> {
    static WHY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    WHY.get_or_init(|| harness::linux::probe_kvm().err())
        .as_deref()
}

fn replay(path: &Path, target: Target) -> Result<(), Failed> {
    let p = load_program(path, target)?;
    if p.config.target == Target::Kvm {
        if let Some(why) = kvm_missing() {
            // Visible, never a silent pass: .ci/run fails on this line
            // when /dev/kvm exists.
            println!(
                "skipped: /dev/kvm not available ({why}): {}",
                path.display()
            );
            return Ok(());
        }
    }
    harness::files::replay_verdict(path, &p, &CHECKED)?;
    if let Some(name) = planted_header(path) {
        if cfg!(feature = "planted-bugs") {
            let bug = harness::targets::resolve_planted(&name)?;
            let with = RunOptions {
                planted: Some(bug),
                ..CHECKED
            };
            if run(&p, &with).divergence.is_none() {
                return Err(format!("no longer detects planted bug {name}").into());
            }
        }
    }
    Ok(())
}

/// The KSM and THP tour does what it says on this kernel: MADV_COLLAPSE
/// made the window one huge page, and once ksmd finished its scans the
/// two equal pages were merged (a replay alone passes even when neither
/// took effect, since nothing compared depends on them).
fn ksm_and_thp_take_effect(root: &Path) -> Result<(), Failed> {
    let path = root.join("kvm/ksm_thp_tour.ops");
    if let Some(why) = kvm_missing() {
        println!("skipped: /dev/kvm not available ({why}): ksm_and_thp_take_effect");
        return Ok(());
    }
    let p = load_program(&path, Target::Kvm)?;
    let out = run(
        &p,
        &RunOptions {
            trace: true,
            ..CHECKED
        },
    );
    if let Some(d) = out.divergence {
        return Err(format!("diverged: {} / {}", d.core, d.model).into());
    }
    let line = |op: &str| {
        out.trace
            .iter()
            .find(|l| l.contains(op))
            .cloned()
            .ok_or_else(|| format!("no {op} line in the trace"))
    };
    let collapse = line("m0 collapse")?;
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !thp.contains('[') || thp.contains("[never]") {
        println!(
            "skipped: THP is off here ({}): the collapse half",
            thp.trim()
        );
    } else if !collapse.contains("; 512 THP pages in m0") {
        return Err(format!("MADV_COLLAPSE made no huge page: {collapse}").into());
    }
    let ksm = line("m0 ksm")?;
    if ksm.contains("full scans") && ksm.contains("; 0 KSM pages") {
        return Err(format!("ksmd finished its scans and merged nothing: {ksm}").into());
    }
    println!("{ksm}\n{collapse}");
    Ok(())
}

fn main() {
    // The linux target's child processes start as this binary.
    harness::linux::zygote_main_if_requested();
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let mut trials = Vec::new();
    for target in Target::ALL {
        for dir in [
            root.join(target.name()),
            root.join("regressions").join(target.name()),
        ] {
            if !dir.exists() {
                continue;
            }
            let files: Vec<PathBuf> = program_files(&dir).expect("corpus directory is readable");
            for f in files {
                let name = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
                trials.push(Trial::test(name, move || replay(&f, target)));
            }
        }
    }
    let r = root.clone();
    trials.push(Trial::test("kvm_ksm_and_thp_take_effect", move || {
        ksm_and_thp_take_effect(&r)
    }));
    libtest_mimic::run(&args, trials).exit();
}
