//! The divergence report: what happened, step by step, what each side
//! said, a unified diff of both sides' state, and the program as `.ops`,
//! ready to commit as a regression.

use std::fmt::Write as _;

use similar::TextDiff;

use crate::exec::{run, Divergence, RunOptions};
use crate::program::Program;
use crate::text;

/// Header comment lines that make an `.ops` file self-describing: the
/// divergence it reproduced and the planted bug it was found under.
pub fn regression_header(d: &Divergence, opts: &RunOptions) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# divergence: {} — {}", d.kind.name(), d.doing);
    let _ = writeln!(s, "#   core:  {}", one_line(&d.core));
    let _ = writeln!(s, "#   model: {}", one_line(&d.model));
    if let Some(b) = opts.planted {
        let _ = writeln!(s, "# planted: {}", b.name());
    }
    s
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// Renders the full report for `program`, re-running it with a trace.
pub fn render(program: &Program, opts: &RunOptions) -> Option<String> {
    let traced = RunOptions {
        trace: true,
        ..*opts
    };
    let out = run(program, &traced);
    let d = out.divergence?;
    let mut s = String::new();
    let _ = writeln!(s, "==== mnfuzz: divergence ({}) ====", d.kind.name());
    let _ = writeln!(
        s,
        "target: {}   planted: {}",
        program.config.target.name(),
        opts.planted.map_or("none", |b| b.name())
    );
    match d.step {
        Some(i) => {
            let _ = writeln!(s, "at line {i}: {}", d.doing);
        }
        None => {
            let _ = writeln!(s, "after the last line: {}", d.doing);
        }
    }
    let _ = writeln!(s, "  core said:  {}", d.core);
    let _ = writeln!(s, "  model said: {}", d.model);
    let _ = writeln!(s, "\n---- trace ----");
    for line in &out.trace {
        let _ = writeln!(s, "{line}");
    }
    match d.step {
        Some(i) => writeln!(s, "{i:>4}: {}    <- diverges here", d.doing),
        None => writeln!(s, "      {}    <- diverges here", d.doing),
    }
    .ok();
    let _ = writeln!(s, "\n---- state: core (-) vs model (+) ----");
    let diff = TextDiff::from_lines(&d.states.0, &d.states.1);
    let udiff = diff
        .unified_diff()
        .context_radius(8)
        .header("core", "model")
        .to_string();
    if udiff.trim().is_empty() {
        let _ = writeln!(s, "(no difference in rendered state)\n{}", d.states.0);
    } else {
        s.push_str(&udiff);
    }
    let _ = writeln!(s, "\n---- reproducer (.ops) ----");
    s.push_str(&regression_header(&d, opts));
    s.push_str(&text::print(program));
    Some(s)
}

/// The regression file contents for `program`: header comments plus the program.
pub fn regression_file(program: &Program, d: &Divergence, opts: &RunOptions) -> String {
    let mut s = regression_header(d, opts);
    s.push_str(&text::print(program));
    s
}
