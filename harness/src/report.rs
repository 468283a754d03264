//! The divergence report: what happened, step by step, what each side
//! said, a unified diff of both sides' state, and the program as `.ops`,
//! ready to commit as a regression.

use std::fmt::Write as _;

use similar::TextDiff;

use crate::exec::{run, Divergence, RunOptions};
use crate::program::{Op, Program};
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
    s.push_str(&annotated(program, opts));
    Some(s)
}

/// The regression file contents for `program`: header comments plus the
/// program, each line with what its turn did beside it (see [`annotated`]).
pub fn regression_file(program: &Program, d: &Divergence, opts: &RunOptions) -> String {
    let mut s = regression_header(d, opts);
    s.push_str(&annotated(program, opts));
    s
}

/// Most drain turns written out as comments after the last line.
const MAX_DRAIN_NOTES: usize = 48;

/// `program` as `.ops` with each line's effect as a trailing comment:
/// `# N: EFFECT`, N being the line's step number as in the trace. A mirror
/// line queues its op and gives its thread one turn, so the comment also
/// says when an op does not run on its own line (`queued`) and which
/// earlier line's op a turn starts (`starts 3`). The drain's turns follow
/// as comments. Comments are ignored by the parser: the text parses back
/// to `program`.
pub fn annotated(program: &Program, opts: &RunOptions) -> String {
    let traced = RunOptions {
        trace: true,
        ..*opts
    };
    let out = run(program, &traced);
    let n = program.steps.len();
    let mut effects: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut drain = Vec::new();
    let mut last: Option<usize> = None;
    for entry in &out.trace {
        match line_effect(program, entry) {
            Some((i, effect)) if drain.is_empty() => {
                effects[i].push(effect);
                last = Some(i);
            }
            // A wake-up that follows a line belongs to it.
            _ => match last {
                Some(i) if drain.is_empty() && !entry.starts_with("drain") => {
                    effects[i].push(entry.trim().to_string())
                }
                _ => drain.push(entry.trim().to_string()),
            },
        }
    }
    let diverged = out.divergence.as_ref();
    let at = diverged.and_then(|d| d.step);
    let notes: Vec<String> = (0..n)
        .map(|i| {
            let mut parts = Vec::new();
            if let Some(t) = out.turns.get(i) {
                if program.steps[i].op != Op::Yield && t.started != Some(i) {
                    parts.push("queued".to_string());
                }
                if let Some(j) = t.started.filter(|&j| j != i) {
                    parts.push(format!("starts {j}"));
                }
            }
            if !effects[i].is_empty() {
                parts.push(effects[i].join("; "));
            } else if at.is_some_and(|a| i > a) {
                parts.push("not reached".into());
            }
            let mut note = format!("{i}: {}", parts.join("; "));
            if at == Some(i) {
                note.push_str("  <- diverges here");
            }
            note
        })
        .collect();
    let mut s = String::from(
        "# beside each line, N: what the turn of step N did\n\
         #   (queued: its op waits behind the thread's earlier ones; starts J: the turn starts step J's op)\n",
    );
    s.push_str(&text::print_with_notes(program, &notes));
    if !drain.is_empty() {
        let _ = writeln!(s, "# drain: the threads take turns until all are done");
        for (k, e) in drain.iter().take(MAX_DRAIN_NOTES).enumerate() {
            let e = e.strip_prefix("drain: ").unwrap_or(e);
            // Mirror drain turns follow the schedule's, one entry each.
            let starts = match out.turns.get(n + k).and_then(|t| t.started) {
                Some(j) => format!(" starts {j}"),
                None => String::new(),
            };
            let e = match e.split_once("    -> ") {
                Some((who, what)) => format!("{who}{starts} -> {what}"),
                None => e.to_string(),
            };
            let _ = writeln!(s, "#   {e}");
        }
        if drain.len() > MAX_DRAIN_NOTES {
            let _ = writeln!(s, "#   ... {} more", drain.len() - MAX_DRAIN_NOTES);
        }
    }
    if let Some(d) = diverged.filter(|d| d.step.is_none()) {
        let _ = writeln!(s, "# diverges here: {}", d.doing);
    }
    s
}

/// `(i, effect)` for a trace entry that reports program line `i`:
/// `"   3: t0 m0 mmap 0x0 +0x1000 anon    -> m0 mmap: step"`.
fn line_effect(program: &Program, entry: &str) -> Option<(usize, String)> {
    let (num, rest) = entry.trim_start().split_once(": ")?;
    let i: usize = num.parse().ok()?;
    let rest = rest.strip_prefix(&text::format_step(program.steps.get(i)?))?;
    let rest = rest.trim_start();
    let effect = rest.strip_prefix("->").unwrap_or(rest).trim();
    Some((i, effect.replace('\n', " ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::Target;
    use crate::targets::decode_for;
    use crate::text::parse;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The effect comments are comments: the reproducer parses back to
        /// the program.
        #[test]
        fn annotated_programs_parse_back(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            mirror in any::<bool>(),
        ) {
            let target = if mirror { Target::Mirror } else { Target::Notifier };
            let p = decode_for(target, &bytes);
            let text = annotated(&p, &RunOptions::default());
            prop_assert_eq!(parse(&text), Ok(p), "{}", text);
        }
    }

    #[test]
    fn each_line_says_what_its_turn_did() {
        let p = parse(
            "config target=mirror threads=2 devices=fullva\n\
             t0 m0 mmap 0x0 +0x1000 anon\n\
             t0 m0 write 0x0 7\n\
             t1 d0 read 0x0\n\
             t0 step\nt0 step\n",
        )
        .unwrap();
        let text = annotated(&p, &RunOptions::default());
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with('t'))
            .map(|l| l.split_once('#').expect("a comment on every line").1.trim())
            .collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("0: m0 mmap"), "{text}");
        // The write waits behind the mmap, which its own turn goes on with.
        assert!(lines[1].starts_with("1: queued; m0 mmap"), "{text}");
        assert!(lines[2].starts_with("2: d0 fault 0x0"), "{text}");
        assert!(lines[4].starts_with("4: starts 1; m0 write"), "{text}");
        assert_eq!(parse(&text), Ok(p));
    }

    #[test]
    fn the_line_that_diverges_says_so_and_later_lines_were_not_reached() {
        // A failed expectation diverges at its own line.
        let p = parse(
            "config target=mirror threads=1\n\
             t0 m0 read 0x0\nt0 expect 5\nt0 m0 mmap 0x0 +0x1000 anon\n",
        )
        .unwrap();
        let opts = RunOptions {
            expect: true,
            ..RunOptions::default()
        };
        let d = run(&p, &opts).divergence.expect("the expectation fails");
        let text = regression_file(&p, &d, &opts);
        let line = |k: &str| text.lines().find(|l| l.starts_with(k)).unwrap().to_string();
        assert!(line("t0 expect").ends_with("<- diverges here"), "{text}");
        assert!(line("t0 m0 mmap").ends_with("not reached"), "{text}");
        assert_eq!(parse(&text), Ok(p));
    }
}
