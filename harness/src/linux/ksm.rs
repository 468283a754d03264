//! ksmd for the kvm target's `ksm` op. KSM merges asynchronously: the
//! op marks the process mergeable and then waits until ksmd has scanned
//! everything a few times, so that identical pages are merged (or found
//! volatile) before the program goes on. Whether a given pair merged is
//! up to ksmd; nothing compared depends on it (the executor compares
//! values, not frames, once KSM is on).
//!
//! ksmd runs only while `/sys/kernel/mm/ksm/run` is 1 and sleeps
//! `sleep_millisecs` between batches (20 ms by default: three scans
//! would take 60 ms) and scans `pages_to_scan` pages a batch (100). The
//! first `ksm` op of a process sets `run` 1, `sleep_millisecs` 1 and
//! `pages_to_scan` [`PAGES_TO_SCAN`], and puts the old values back when
//! the process exits normally (`atexit`); a killed process leaves ksmd running,
//! which scans only mergeable memory and sleeps when there is none.

use std::sync::OnceLock;

const DIR: &str = "/sys/kernel/mm/ksm";
/// Full scans to wait for: a page enters the unstable tree on the scan
/// after the one that first checksummed it, and merges on the scan that
/// finds its twin there; the scan in progress when the op ran counts
/// for nothing.
pub const SCANS: u64 = 3;
/// Polls of `full_scans`, 1 ms apart, before giving up on ksmd.
const POLLS: u32 = 3_000;
/// Pages ksmd scans per batch: the whole process (`PR_SET_MEMORY_MERGE`
/// makes all its private memory mergeable, the program's heap included,
/// thousands of pages) in one batch, not 100 a batch.
const PAGES_TO_SCAN: u32 = 20_000;

struct Saved {
    run: String,
    sleep: String,
    pages: String,
}

static SAVED: OnceLock<Result<Saved, String>> = OnceLock::new();

fn read(name: &str) -> Result<String, String> {
    std::fs::read_to_string(format!("{DIR}/{name}"))
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("{DIR}/{name}: {e}"))
}

fn write(name: &str, v: &str) -> Result<(), String> {
    std::fs::write(format!("{DIR}/{name}"), v).map_err(|e| format!("{DIR}/{name}: {e}"))
}

fn restore_from(s: &Saved) {
    let _ = write("sleep_millisecs", &s.sleep);
    let _ = write("pages_to_scan", &s.pages);
    let _ = write("run", &s.run);
}

extern "C" fn restore() {
    if let Some(Ok(s)) = SAVED.get() {
        restore_from(s);
    }
}

/// Makes ksmd run and scan every millisecond, once per process. Err says
/// why it cannot (no KSM in the kernel, not root).
pub fn start() -> Result<(), String> {
    SAVED
        .get_or_init(|| {
            let saved = Saved {
                run: read("run")?,
                sleep: read("sleep_millisecs")?,
                pages: read("pages_to_scan")?,
            };
            let set = || {
                write("sleep_millisecs", "1")?;
                write("pages_to_scan", &PAGES_TO_SCAN.to_string())?;
                write("run", "1")
            };
            if let Err(e) = set() {
                restore_from(&saved);
                return Err(e);
            }
            // SAFETY: registers a plain function with no captured state.
            unsafe { libc::atexit(restore) };
            Ok(saved)
        })
        .as_ref()
        .map(drop)
        .map_err(Clone::clone)
}

/// Waits until ksmd has finished [`SCANS`] more full scans. Ok(false):
/// it did not within [`POLLS`] polls (merging is then simply less likely;
/// nothing is wrong).
pub fn settle() -> Result<bool, String> {
    let scans = || -> Result<u64, String> {
        read("full_scans")?
            .parse::<u64>()
            .map_err(|e| format!("{DIR}/full_scans: {e}"))
    };
    let goal = scans()? + SCANS;
    for _ in 0..POLLS {
        if scans()? >= goal {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(false)
}
