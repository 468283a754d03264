//! Reading inputs and writing findings. Writes are atomic: a temporary file
//! in the same directory, synced, then renamed over the target.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::exec::{Divergence, RunOptions};
use crate::program::{Program, Target};
use crate::report::regression_file;
use crate::targets::decode_for;
use crate::text;

/// Every input file under `path` (itself if a file), sorted, skipping
/// hidden and temporary files.
pub fn program_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", d.display()))?;
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.ends_with(".tmp") || name == "README.md" {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The byte inputs of a seed corpus directory, in path order (every file
/// but `.ops` text); none if the directory does not exist. The order is
/// part of a run's determinism: engines mutate seeds in this order.
pub fn seed_inputs(dir: &Path) -> Result<Vec<Vec<u8>>, String> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    program_files(dir)?
        .into_iter()
        .filter(|f| f.extension().is_none_or(|e| e != "ops"))
        .map(|f| fs::read(&f).map_err(|e| format!("{}: {e}", f.display())))
        .collect()
}

/// The divergence kind a file's header says it shows on purpose
/// (`# expect-divergence: KIND`, among the leading comment lines): a
/// documented finding that correct code diverges on, such as Linux's
/// behaviour under `kernel_compat=1`.
pub fn expected_divergence(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .find_map(|l| {
            l.strip_prefix("# expect-divergence:")
                .map(|k| k.trim().to_string())
        })
}

/// Replays `p`, loaded from `path`, and says whether it behaved as its
/// file promises: no divergence, or, with an `expect-divergence` header,
/// exactly that kind, and none once `kernel_compat` is off (the header is
/// for documented kernel behaviour, not for a bug of ours). `Ok` carries
/// what to print; `Err` the reason it failed.
pub fn replay_verdict(path: &Path, p: &Program, opts: &RunOptions) -> Result<String, String> {
    let out = crate::exec::run(p, opts);
    let Some(want) = expected_divergence(path) else {
        return match out.divergence {
            None => Ok(String::new()),
            Some(_) => Err(crate::report::render(p, opts).unwrap_or_default()),
        };
    };
    let got = out.divergence.map(|d| d.kind.name());
    if got != Some(want.as_str()) {
        return Err(format!(
            "its header expects a {want} divergence, but it {}",
            got.map_or("ran clean".into(), |k| format!("diverged with {k}"))
        ));
    }
    if !p.config.kernel_compat {
        return Err(format!(
            "`expect-divergence` documents kernel behaviour: the config needs kernel_compat=1              (it diverged with {want})"
        ));
    }
    let mut fixed = p.clone();
    fixed.config.kernel_compat = false;
    if crate::exec::run(&fixed, opts).divergence.is_some() {
        return Err("it still diverges with kernel_compat=0".into());
    }
    Ok(format!(
        "diverges with {want} as its header expects, clean with kernel_compat=0"
    ))
}

/// The target a byte input belongs to: the nearest directory named after a
/// target (`corpus/mirror/x.bin`), else `default`.
pub fn target_for_path(path: &Path, default: Target) -> Target {
    path.ancestors()
        .skip(1)
        .filter_map(|d| d.file_name()?.to_str())
        .find_map(Target::from_name)
        .unwrap_or(default)
}

/// Whether `path` is an `.ops` text program (else a byte input).
pub fn is_text(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "ops")
}

/// Loads an input: `.ops` text (errors carry `path:line:column`; the
/// config names the target), anything else as bytes for the target its
/// directory names, or `target`.
pub fn load_program(path: &Path, target: Target) -> Result<Program, String> {
    let target = target_for_path(path, target);
    if is_text(path) {
        let s = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        text::parse(&s)
            .map_err(|e| format!("{}:{}:{}: {}", path.display(), e.line, e.column, e.message))
    } else {
        let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(decode_for(target, &bytes))
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    // A device or pipe (`-o /dev/null`, `-o /dev/stdout`) is written in
    // place: renaming over it would replace the device node with a file.
    if fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(err);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// FNV-1a, 64 bits: a stable name for a finding.
pub fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Writes a finding as `<dir>/<hash>.ops`, atomically; returns the path.
pub fn write_regression(
    dir: &Path,
    p: &Program,
    d: &Divergence,
    opts: &RunOptions,
) -> Result<PathBuf, String> {
    let body = regression_file(p, d, opts);
    let path = dir.join(format!("{:016x}.ops", fnv64(text::print(p).as_bytes())));
    write_atomic(&path, body.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn writing_to_a_device_leaves_the_device_in_place() {
        let null = std::path::Path::new("/dev/null");
        if !null.exists() {
            return;
        }
        super::write_atomic(null, b"x").unwrap();
        let m = std::fs::metadata(null).unwrap();
        assert!(!m.is_file(), "/dev/null became a regular file");
    }
}
