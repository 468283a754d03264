//! The `linux` target: the real Linux kernel as a second oracle for the
//! simulated mm (DESIGN.md §9). A program's `mN` ops run on the
//! simulation and on a real child process, and both are compared after
//! every op ([`exec`] says what is compared, [`real`] how the child is
//! run and observed).
//!
//! Needs Linux on x86-64, root (pagemap shows PFNs only to
//! CAP_SYS_ADMIN) and userfaultfd (`/dev/userfaultfd`). [`probe`] says
//! which is missing.

use crate::outcome::{Outcome, RunOptions};
use crate::program::{Program, LINUX_TASK_SIZE};

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod exec;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod ksm;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod real;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod shadow;

/// Runs a linux-target program.
pub fn run(program: &Program, opts: &RunOptions) -> Outcome {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        exec::run_linux(program, opts)
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = (program, opts);
        Outcome {
            divergence: Some(crate::outcome::Divergence {
                kind: crate::outcome::DivergenceKind::Linux,
                step: None,
                doing: "starting the real child process".into(),
                core: "(not run)".into(),
                model: "the linux target needs Linux on x86-64".into(),
                states: (String::new(), String::new()),
            }),
            ..Outcome::default()
        }
    }
}

/// Makes this process a zygote for the linux target's child processes
/// when it was started as one; returns otherwise. Call it first thing in
/// `main` (and in a libFuzzer target's `init`).
pub fn zygote_main_if_requested() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    real::zygote_main_if_requested();
}

/// Whether the real side works here: starts a child, maps and writes a
/// page, and checks that userfaultfd reports its unmap and that pagemap
/// shows its PFN. Err names what the kernel refused.
pub fn probe() -> Result<(), String> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        use real::{code, Real, Reply, UffdEvent};
        let mut r = Real::spawn(LINUX_TASK_SIZE).map_err(|e| e.0)?;
        let step = |r: &mut Real, cmd| r.call(0, cmd);
        if step(&mut r, [code::MMAP, 0, 4096, 0, 2, 0])? != Reply::Ok(0) {
            return Err("mmap in the child's window failed".into());
        }
        r.register_window(0)?;
        step(&mut r, [code::WRITE, 0, 1, 0, 0, 0])?;
        let pm = r.pagemap(0)?;
        let ent = pm.first().copied().unwrap_or(0);
        if ent >> 63 == 0 {
            return Err("pagemap does not show a page just written".into());
        }
        if ent & ((1 << 55) - 1) == 0 {
            return Err(
                "/proc/PID/pagemap hides page frame numbers (they need CAP_SYS_ADMIN: run as root)"
                    .into(),
            );
        }
        step(&mut r, [code::MUNMAP, 0, 4096, 0, 0, 0])?;
        let ev = r.take_events();
        if !ev.contains(&UffdEvent::Unmap {
            mm: 0,
            start: 0,
            end: 4096,
        }) {
            return Err(format!(
                "userfaultfd did not report the unmap of a registered page (got {ev:?})"
            ));
        }
        Ok(())
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = LINUX_TASK_SIZE;
        Err("the linux target needs Linux on x86-64".into())
    }
}

/// Whether the kvm target works here: root, `/dev/kvm` and userfaultfd
/// (the linux target's [`probe`]), and a guest that reads back what the
/// host wrote. Err names what is missing, `/dev/kvm` first.
pub fn probe_kvm() -> Result<(), String> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        use real::{code, Real, Reply};
        if !std::path::Path::new("/dev/kvm").exists() {
            return Err("/dev/kvm does not exist".into());
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("it needs root (pagemap's PFNs, /dev/userfaultfd)".into());
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(|e| format!("/dev/kvm cannot be opened: {e}"))?;
        probe().map_err(|e| format!("userfaultfd or pagemap: {e}"))?;
        let mut r = Real::spawn(LINUX_TASK_SIZE).map_err(|e| e.0)?;
        let mut step = |cmd| r.call(0, cmd);
        match step([code::KVM_OPEN, 0, 0, 0, 0, 0])? {
            Reply::Ok(_) => {}
            Reply::Errno(e) => {
                return Err(format!(
                    "/dev/kvm: creating a VM failed: {}",
                    nix::errno::Errno::from_raw(e)
                ))
            }
            other => return Err(format!("/dev/kvm: opening a guest answered {other:?}")),
        }
        step([code::MMAP, 0, 4096, 0, 2, 0])?;
        step([code::WRITE, 0, 0x5a5a, 0, 0, 0])?;
        match step([code::KVM_READ, 0, 0, 0, 0, 0])? {
            Reply::Ok(0x5a5a) => Ok(()),
            other => Err(format!(
                "/dev/kvm: the guest does not read what the host wrote ({other:?})"
            )),
        }
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        Err("the kvm target needs Linux on x86-64".into())
    }
}
