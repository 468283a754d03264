//! The real side of the `linux` target: a child process that owns a
//! dedicated address window and runs mm operations on command, and the
//! parent's view of it through userfaultfd and `/proc/PID/pagemap`.
//!
//! Processes:
//! - a *zygote*, one per parent thread: this very binary re-executed with
//!   [`ZYGOTE_ENV`] set, before it starts any thread. It only forks: one
//!   *executor* per program, so that no fork ever happens in the
//!   (multi-threaded) fuzzing process.
//! - the executor (`m0`): disables THP for itself (`PR_SET_THP_DISABLE`:
//!   the simulation has no real THP), checks that the window
//!   `[WINDOW_BASE, WINDOW_BASE + task_size)` is free (`MAP_FIXED_NOREPLACE`,
//!   then released: the simulation's holes are real holes), maps one
//!   *anchor* page below it, creates the program's files (memfds with the
//!   simulation's initial page contents), creates a userfaultfd through
//!   `/dev/userfaultfd` and sends it to the parent with `SCM_RIGHTS`, then
//!   answers commands on a `SOCK_SEQPACKET` socket. Its `fork` makes `m1`,
//!   which answers on a second socket given to the executor at spawn.
//!
//! userfaultfd: the parent enables `EVENT_FORK | EVENT_REMAP |
//! EVENT_REMOVE | EVENT_UNMAP` and registers every VMA of the window in
//! *write-protect* mode, and never write-protects a page: no page fault
//! ever goes to the parent, the kernel handles faults as usual, and the
//! non-cooperative events still arrive (they belong to the context, not
//! to a mode). The anchor page is registered too, so that every fork
//! copies a context and the parent receives `m1`'s userfaultfd with the
//! `FORK` event, even when the window is empty. Side effect of a
//! `uffd-wp` VMA that matters here: fork copies its page table entries
//! even for shared mappings (`vma_needs_copy`), as the simulation does.
//! The ioctl structures and numbers come from the uapi header
//! `linux/userfaultfd.h` (declared below with nix's `ioctl_*` macros: the
//! `userfaultfd` crate's -sys part needs bindgen and libclang).
//!
//! CPU loads and stores run in the executor itself; a SIGSEGV handler
//! resumes after the faulting instruction and reports the signal's code.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

/// Where the window starts in the executor's address space: far below
/// where the kernel places mappings (top down from below the stack) and
/// far above the program and its heap.
pub const WINDOW_BASE: u64 = 0x2a00_0000_0000;
/// The anchor page: registered with userfaultfd, outside the window.
const ANCHOR: u64 = WINDOW_BASE - 0x10_0000;
/// The environment variable that makes this binary a zygote (its value is
/// the control socket's descriptor).
pub const ZYGOTE_ENV: &str = "MNFUZZ_LINUX_ZYGOTE";
const ZYGOTE_FD: RawFd = 3;
const PAGE: u64 = 4096;

// --- linux/userfaultfd.h ---------------------------------------------------

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

const UFFD_API: u64 = 0xaa;
const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFD_EVENT_FORK: u8 = 0x13;
const UFFD_EVENT_REMAP: u8 = 0x14;
const UFFD_EVENT_REMOVE: u8 = 0x15;
const UFFD_EVENT_UNMAP: u8 = 0x16;
/// `sizeof(struct uffd_msg)`.
const UFFD_MSG: usize = 32;

mod ioctls {
    #![allow(missing_docs)]
    use super::{UffdioApi, UffdioRange, UffdioRegister};
    // USERFAULTFD_IOC_NEW = _IO(0xAA, 0x00), its argument the new fd's flags.
    nix::ioctl_write_int_bad!(uffd_ioc_new, nix::request_code_none!(0xaa, 0x00));
    // UFFDIO_API = _IOWR(0xAA, 0x3F, struct uffdio_api).
    nix::ioctl_readwrite!(uffdio_api, 0xaa, 0x3f, UffdioApi);
    // UFFDIO_REGISTER = _IOWR(0xAA, 0x00, struct uffdio_register).
    nix::ioctl_readwrite!(uffdio_register, 0xaa, 0x00, UffdioRegister);
    // UFFDIO_UNREGISTER = _IOR(0xAA, 0x01, struct uffdio_range).
    nix::ioctl_read!(uffdio_unregister, 0xaa, 0x01, UffdioRange);
}
use ioctls::{uffd_ioc_new, uffdio_api, uffdio_register, uffdio_unregister};

// --- the command protocol ----------------------------------------------------

/// A command to an executor: `[code, a, b, c, d, e]`.
pub type Cmd = [u64; 6];

/// Command codes.
pub mod code {
    /// `[MMAP, addr, len, kind (0 anon, 1 shared, 2 + N file N), prot (0 none, 1 ro, 2 rw)]`
    pub const MMAP: u64 = 1;
    /// `[MUNMAP, addr, len]`
    pub const MUNMAP: u64 = 2;
    /// `[MPROTECT, addr, len, prot]`
    pub const MPROTECT: u64 = 3;
    /// `[MREMAP, addr, old_len, new_len, to, flags]`: flags bit 0
    /// dontunmap, bit 1 `to` is given.
    pub const MREMAP: u64 = 4;
    /// `[DONTNEED, addr, len]`
    pub const DONTNEED: u64 = 5;
    /// `[FORK]`: the reply's value is the child's pid.
    pub const FORK: u64 = 6;
    /// `[READ, addr]`
    pub const READ: u64 = 7;
    /// `[WRITE, addr, value]`
    pub const WRITE: u64 = 8;
    /// `[CLEAR_REFS]`: `4` to `/proc/self/clear_refs`.
    pub const CLEAR_REFS: u64 = 9;
    /// `[EXIT]`: reply, then exit.
    pub const EXIT: u64 = 10;
    /// `[KVM_OPEN, dev]`: open a KVM guest over the window as device
    /// `dev` (kvm target; [`super::kvm`]). Errno: which step failed is
    /// not said, only its errno.
    pub const KVM_OPEN: u64 = 11;
    /// `[KVM_READ, dev, addr]`: a guest load of the word at window
    /// offset `addr`.
    pub const KVM_READ: u64 = 12;
    /// `[KVM_WRITE, dev, addr, value]`: a guest store.
    pub const KVM_WRITE: u64 = 13;
    /// `[FILL, file, from, to]`: the initial contents of file `file`'s
    /// pages `from..to`. Writing all of both files at startup cost most
    /// of a kvm-target execution (16 MiB); the parent sends this before
    /// an op whose mappings reach pages not written yet (it keeps the
    /// mark: the executors of m0 and m1 share the files).
    pub const FILL: u64 = 16;
    /// `[KSM]`: `prctl(PR_SET_MEMORY_MERGE, 1)`, every compatible VMA of
    /// the process mergeable, now and later (so that no VMA is split or
    /// kept apart by the flag, as `MADV_MERGEABLE` on a part would).
    pub const KSM: u64 = 14;
    /// `[COLLAPSE, addr]`: THP allowed again for the process
    /// (`PR_SET_THP_DISABLE` 0), then `MADV_COLLAPSE` of the aligned 2 MiB
    /// around `addr`.
    pub const COLLAPSE: u64 = 15;
}

/// What an executor answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Success with a value: what a load read or a store wrote, where a
    /// mapping is (a window offset), a pid; 0 otherwise.
    Ok(u64),
    /// The system call failed with this errno.
    Errno(i32),
    /// The access raised SIGSEGV with this `si_code` (1 MAPERR, 2 ACCERR),
    /// or SIGBUS (`0x100 | si_code`).
    Segv(i32),
    /// Not run: the range leaves the window.
    OutOfWindow,
    /// A guest access: `KVM_RUN` failed with `EFAULT` and reported
    /// `KVM_EXIT_MEMORY_FAULT` (a plain failure is [`Reply::Errno`]).
    MemoryFault,
    /// A guest access: the vCPU exited with this other `exit_reason`
    /// before reporting.
    KvmExit(u32),
}

fn encode_reply(r: Reply) -> [u64; 2] {
    match r {
        Reply::Ok(v) => [0, v],
        Reply::Errno(e) => [1, e as u64],
        Reply::Segv(c) => [2, c as u64],
        Reply::OutOfWindow => [3, 0],
        Reply::MemoryFault => [4, 0],
        Reply::KvmExit(r) => [5, u64::from(r)],
    }
}

fn decode_reply(w: [u64; 2]) -> Reply {
    match w[0] {
        0 => Reply::Ok(w[1]),
        1 => Reply::Errno(w[1] as i32),
        2 => Reply::Segv(w[1] as i32),
        4 => Reply::MemoryFault,
        5 => Reply::KvmExit(w[1] as u32),
        _ => Reply::OutOfWindow,
    }
}

/// One userfaultfd event, from the context of address space `mm`;
/// addresses are window offsets (wrapping for addresses below it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum UffdEvent {
    /// `UFFD_EVENT_UNMAP [start, end)`.
    Unmap {
        /// Address space.
        mm: u8,
        /// First byte.
        start: u64,
        /// Exclusive end.
        end: u64,
    },
    /// `UFFD_EVENT_REMOVE [start, end)` (madvise DONTNEED/REMOVE).
    Remove {
        /// Address space.
        mm: u8,
        /// First byte.
        start: u64,
        /// Exclusive end.
        end: u64,
    },
    /// `UFFD_EVENT_REMAP`: mremap moved `len` bytes from `from` to `to`.
    Remap {
        /// Address space.
        mm: u8,
        /// Old address.
        from: u64,
        /// New address.
        to: u64,
        /// Length.
        len: u64,
    },
    /// `UFFD_EVENT_FORK`: the address space forked.
    Fork {
        /// Address space.
        mm: u8,
    },
}

fn bytes_of(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn words_of(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn send_words(fd: BorrowedFd<'_>, w: &[u64], fds: &[RawFd]) -> nix::Result<()> {
    let b = bytes_of(w);
    let iov = [IoSlice::new(&b)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// Receives one message of words and the descriptors it carries; `None`
/// at end of file.
fn recv_words(fd: BorrowedFd<'_>) -> nix::Result<Option<(Vec<u64>, Vec<OwnedFd>)>> {
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(r) = c {
                // SAFETY: SCM_RIGHTS just installed these descriptors for us.
                fds.extend(r.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Ok(None);
    }
    Ok(Some((words_of(&buf[..n]), fds)))
}

// --- the zygote ----------------------------------------------------------------

/// Runs the zygote instead of the program when [`ZYGOTE_ENV`] is set; call
/// it first thing in `main` (and in a libFuzzer target's `init`), before
/// any thread starts. Returns when this process is not a zygote.
pub fn zygote_main_if_requested() {
    if std::env::var_os(ZYGOTE_ENV).is_none() {
        return;
    }
    // Children are reaped by the kernel.
    // SAFETY: no other thread exists; SIG_IGN installs no handler.
    unsafe {
        let ign = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::SigIgn,
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        let _ = nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGCHLD, &ign);
    }
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // SAFETY: the parent put the control socket at ZYGOTE_FD before exec.
    let ctl = unsafe { OwnedFd::from_raw_fd(ZYGOTE_FD) };
    // The handshake: this binary knows it is a zygote.
    if send_words(ctl.as_fd(), &[ZYGOTE_HELLO], &[]).is_err() {
        std::process::exit(0);
    }
    loop {
        let (words, mut fds) = match recv_words(ctl.as_fd()) {
            Ok(Some(m)) => m,
            _ => std::process::exit(0),
        };
        if fds.len() != 2 || words.len() != 1 {
            continue;
        }
        let task_size = words[0];
        let ch1 = fds.pop().expect("two");
        let ch0 = fds.pop().expect("two");
        // SAFETY: the zygote is single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(ctl);
                let _ = nix::sys::prctl::set_pdeathsig(None);
                executor(ch0, ch1, task_size);
            }
            Ok(nix::unistd::ForkResult::Parent { .. }) | Err(_) => {}
        }
    }
}

struct Zygote {
    child: Child,
    ctl: OwnedFd,
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The zygote's first message.
const ZYGOTE_HELLO: u64 = 0x6d6e_6675_7a7a_7967;

fn spawn_zygote() -> Result<Zygote, String> {
    // A binary without the hook runs its own main as the "zygote": that
    // one must not start zygotes in turn.
    if std::env::var_os(ZYGOTE_ENV).is_some() {
        return Err(NO_HOOK.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let (ctl, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    let raw = theirs.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.env(ZYGOTE_ENV, ZYGOTE_FD.to_string());
    // SAFETY: dup2 is async-signal-safe; it clears CLOEXEC on the copy.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, ZYGOTE_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(std::process::Stdio::null());
    let child = cmd
        .spawn()
        .map_err(|e| format!("spawning the zygote: {e}"))?;
    drop(theirs);
    let z = Zygote { child, ctl };
    let mut fds = [PollFd::new(z.ctl.as_fd(), PollFlags::POLLIN)];
    let said = poll(&mut fds, PollTimeout::from(2000u16)).unwrap_or(0) > 0
        && matches!(recv_words(z.ctl.as_fd()), Ok(Some((w, _))) if w == [ZYGOTE_HELLO]);
    if !said {
        // Dropping it kills it.
        return Err(NO_HOOK.into());
    }
    Ok(z)
}

const NO_HOOK: &str = "this program does not start the linux target's zygote: call \
    harness::linux::zygote_main_if_requested() first thing in main";

thread_local! {
    static ZYGOTE: std::cell::RefCell<Option<Zygote>> = const { std::cell::RefCell::new(None) };
}

// --- the executor (runs in the forked child) --------------------------------------

static RECOVER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static SEGV_CODE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    use std::sync::atomic::Ordering::SeqCst;
    let rec = RECOVER.load(SeqCst);
    // SAFETY: the kernel passes a valid siginfo and ucontext to an
    // SA_SIGINFO handler.
    unsafe {
        if rec == 0 {
            // Not one of ours: die of it.
            libc::signal(sig, libc::SIG_DFL);
            return;
        }
        let bus = if sig == libc::SIGBUS { 0x100 } else { 0 };
        SEGV_CODE.store(bus | (*info).si_code, SeqCst);
        let uc = ctx as *mut libc::ucontext_t;
        (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] = rec as i64;
    }
}

/// A CPU load (`store` None) or store of one word at `addr`; Err is the
/// SIGSEGV's `si_code`.
fn cpu_access(addr: u64, store: Option<u64>) -> Result<u64, i32> {
    use std::sync::atomic::Ordering::SeqCst;
    SEGV_CODE.store(0, SeqCst);
    let mut v = store.unwrap_or(0);
    // SAFETY: the address is in the window; a fault there is caught by
    // on_segv, which resumes at the label after the access.
    unsafe {
        match store {
            None => std::arch::asm!(
                "lea {t}, [rip + 2f]",
                "mov qword ptr [{rec}], {t}",
                "mov {v}, qword ptr [{a}]",
                "2:",
                "mov qword ptr [{rec}], 0",
                t = out(reg) _,
                rec = in(reg) RECOVER.as_ptr(),
                a = in(reg) addr,
                v = inout(reg) v,
            ),
            Some(_) => std::arch::asm!(
                "lea {t}, [rip + 2f]",
                "mov qword ptr [{rec}], {t}",
                "mov qword ptr [{a}], {v}",
                "2:",
                "mov qword ptr [{rec}], 0",
                t = out(reg) _,
                rec = in(reg) RECOVER.as_ptr(),
                a = in(reg) addr,
                v = in(reg) v,
            ),
        }
    }
    match SEGV_CODE.load(SeqCst) {
        0 => Ok(v),
        c => Err(c),
    }
}

/// The simulation's initial content of page `pgoff` of file `file`
/// (mm's `initial_content`).
pub fn file_word(file: u32, pgoff: u64) -> u64 {
    0xf11e_0000_0000_0000 | (u64::from(file) << 32) | pgoff
}

/// Files the executor creates (the op language's `file:0`, `file:1`).
const FILES: u32 = 2;
/// Their size, in windows: the simulation's files do not end, and
/// mremap can carry a file page's offset past the window's size.
const FILE_WINDOWS: u64 = 4;

struct Executor {
    task_size: u64,
    files: Vec<OwnedFd>,
    /// The kvm target's guests, by device.
    guests: [Option<super::kvm::Guest>; 2],
}

fn startup_failure(ch: &OwnedFd, step: u64, e: Errno) -> ! {
    let _ = send_words(ch.as_fd(), &[1, step, e as u64], &[]);
    std::process::exit(1)
}

/// Startup steps, as the failure message names them.
pub const STARTUP_STEPS: [&str; 6] = [
    "prctl(PR_SET_THP_DISABLE)",
    "mmap(MAP_FIXED_NOREPLACE) of the window",
    "mmap of the anchor page",
    "memfd_create/ftruncate/pwrite of the files",
    "open(/dev/userfaultfd)",
    "ioctl(USERFAULTFD_IOC_NEW)",
];

fn executor(ch0: OwnedFd, ch1: OwnedFd, task_size: u64) -> ! {
    use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
    use std::num::NonZeroUsize;
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        startup_failure(&ch0, 0, e);
    }
    let len = NonZeroUsize::new(task_size as usize).expect("nonzero task size");
    let base = NonZeroUsize::new(WINDOW_BASE as usize).expect("nonzero");
    // SAFETY: a fresh mapping where nothing may be (NOREPLACE).
    match unsafe {
        mmap_anonymous(
            Some(base),
            len,
            ProtFlags::PROT_NONE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
        )
    } {
        // SAFETY: we just mapped it.
        Ok(p) => unsafe {
            let _ = munmap(p, task_size as usize);
        },
        Err(e) => startup_failure(&ch0, 1, e),
    }
    // SAFETY: as above.
    match unsafe {
        mmap_anonymous(
            NonZeroUsize::new(ANCHOR as usize),
            NonZeroUsize::new(PAGE as usize).expect("nonzero"),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
        )
    } {
        // SAFETY: a page we own.
        Ok(p) => unsafe { (p.as_ptr() as *mut u64).write_volatile(1) },
        Err(e) => startup_failure(&ch0, 2, e),
    }
    let mut files = Vec::new();
    for f in 0..FILES {
        let made = nix::sys::memfd::memfd_create(
            c"mnfuzz-conform",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .and_then(|fd| {
            // Contents come with `FILL`, as far as mappings reach.
            let _ = f;
            nix::unistd::ftruncate(&fd, (FILE_WINDOWS * task_size) as i64)?;
            Ok(fd)
        });
        match made {
            Ok(fd) => files.push(fd),
            Err(e) => startup_failure(&ch0, 3, e),
        }
    }
    let dev = match nix::fcntl::open(
        "/dev/userfaultfd",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => startup_failure(&ch0, 4, e),
    };
    // SAFETY: USERFAULTFD_IOC_NEW takes the new descriptor's flags.
    let uffd = match unsafe { uffd_ioc_new(dev.as_raw_fd(), libc::O_CLOEXEC | libc::O_NONBLOCK) } {
        // SAFETY: the ioctl returns a new descriptor.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => startup_failure(&ch0, 5, e),
    };
    drop(dev);
    // SAFETY: installing a handler that only touches atomics and the
    // interrupted context.
    unsafe {
        let act = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::SigAction(on_segv),
            nix::sys::signal::SaFlags::SA_SIGINFO | nix::sys::signal::SaFlags::SA_NODEFER,
            nix::sys::signal::SigSet::empty(),
        );
        let _ = nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGSEGV, &act);
        let _ = nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGBUS, &act);
    }
    let pid = nix::unistd::getpid().as_raw() as u64;
    if send_words(ch0.as_fd(), &[0, pid], &[uffd.as_raw_fd()]).is_err() {
        std::process::exit(1);
    }
    drop(uffd);
    let mut ex = Executor {
        task_size,
        files,
        guests: [None, None],
    };
    let mut ch = ch0;
    let mut spare = Some(ch1);
    loop {
        let cmd = match recv_words(ch.as_fd()) {
            Ok(Some((w, _))) if w.len() == 6 => w,
            _ => std::process::exit(0),
        };
        let cmd: Cmd = cmd.try_into().expect("six words");
        if cmd[0] == code::FORK {
            let Some(c1) = spare.take() else {
                let _ = send_words(ch.as_fd(), &encode_reply(Reply::Errno(libc::EINVAL)), &[]);
                continue;
            };
            // With guests: m0 answers once m1 has closed its copies of
            // them (below), so that they never keep m0's VMs alive.
            let sync = if ex.guests.iter().any(Option::is_some) {
                nix::unistd::pipe().ok()
            } else {
                None
            };
            // SAFETY: the executor is single-threaded.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Child) => {
                    // m1: answers on the second socket from now on. The
                    // guests belong to m0's address space (KVM refuses
                    // them to any other): m1 closes its copies, which
                    // would otherwise keep m0's VMs, and with them m0's
                    // address space, alive after m0 exits.
                    ch = c1;
                    ex.guests = [None, None];
                    if let Some((r, w)) = sync {
                        drop(r);
                        let _ = nix::unistd::write(&w, &[1]);
                    }
                }
                Ok(nix::unistd::ForkResult::Parent { child }) => {
                    drop(c1);
                    if let Some((r, w)) = sync {
                        drop(w);
                        let _ = nix::unistd::read(&r, &mut [0u8; 1]);
                    }
                    let r = Reply::Ok(child.as_raw() as u64);
                    let _ = send_words(ch.as_fd(), &encode_reply(r), &[]);
                }
                Err(e) => {
                    let _ = send_words(ch.as_fd(), &encode_reply(Reply::Errno(e as i32)), &[]);
                }
            }
            continue;
        }
        if cmd[0] == code::EXIT {
            // A VM's worker thread (KVM's NX huge page recovery task)
            // shares this address space: the kernel tears the address
            // space down only once that thread is gone. Destroying the VMs
            // first waits for it, so that the exit is complete when the
            // socket closes, as without guests.
            ex.guests = [None, None];
        }
        let r = ex.run(&cmd);
        let _ = send_words(ch.as_fd(), &encode_reply(r), &[]);
        if cmd[0] == code::EXIT {
            std::process::exit(0);
        }
    }
}

fn prot_flags(p: u64) -> nix::sys::mman::ProtFlags {
    use nix::sys::mman::ProtFlags;
    match p {
        0 => ProtFlags::PROT_NONE,
        1 => ProtFlags::PROT_READ,
        _ => ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
    }
}

fn errno_reply<T>(r: nix::Result<T>, ok: impl FnOnce(T) -> u64) -> Reply {
    match r {
        Ok(v) => Reply::Ok(ok(v)),
        Err(e) => Reply::Errno(e as i32),
    }
}

impl Executor {
    /// `[addr, addr + len)` (length rounded up to pages) inside the window.
    fn inside(&self, addr: u64, len: u64) -> bool {
        let Some(l) = len.checked_add(PAGE - 1) else {
            return false;
        };
        addr.checked_add(l / PAGE * PAGE)
            .is_some_and(|e| e <= self.task_size)
    }

    fn ptr(addr: u64) -> std::ptr::NonNull<libc::c_void> {
        std::ptr::NonNull::new((WINDOW_BASE + addr) as *mut libc::c_void).expect("nonzero")
    }

    /// The lowest free range of `len` bytes in the window, by
    /// `/proc/self/maps` (the simulation's placement policy for a moving
    /// mremap, which the kernel would place anywhere).
    ///
    /// The old range `busy` counts as taken even when nothing maps it, so
    /// that a move from an unmapped range fails on that (EFAULT) and not
    /// on an overlap of our choosing.
    fn free_range(&self, len: u64, busy: (u64, u64)) -> Option<u64> {
        let mut maps = window_maps(std::process::id(), self.task_size).ok()?;
        maps.push(busy);
        maps.sort_unstable();
        let mut at = 0u64;
        for (s, e) in maps {
            if e <= at {
                continue;
            }
            if at + len > s {
                at = e;
            } else {
                break;
            }
        }
        (at + len <= self.task_size).then_some(at)
    }

    /// The error of a moving mremap that finds no room in the window:
    /// Linux's checks before it places the new range (alignment,
    /// dontunmap's equal lengths, a VMA at the start that holds the old range, dontunmap's
    /// private anonymous memory), else ENOMEM.
    fn unplaceable(&self, a: u64, old: u64, new: u64, dontunmap: bool) -> i32 {
        if !a.is_multiple_of(PAGE) || dontunmap && old != new {
            return libc::EINVAL;
        }
        let Ok(text) = std::fs::read_to_string("/proc/self/maps") else {
            return libc::ENOMEM;
        };
        let at = WINDOW_BASE + a;
        for line in text.lines() {
            let mut f = line.split(' ');
            let (Some(range), Some(perms)) = (f.next(), f.next()) else {
                continue;
            };
            let Some((s, e)) = range.split_once('-') else {
                continue;
            };
            let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) else {
                continue;
            };
            if s <= at && at < e {
                if at + old > e {
                    return libc::EFAULT;
                }
                // Duplicating (old length 0) a private mapping.
                if old == 0 && perms.ends_with('p') {
                    return libc::EINVAL;
                }
                return libc::ENOMEM;
            }
        }
        libc::EFAULT
    }

    fn run(&mut self, cmd: &Cmd) -> Reply {
        use nix::sys::mman::{madvise, mmap, mmap_anonymous, mprotect, mremap, munmap};
        use nix::sys::mman::{MRemapFlags, MapFlags, MmapAdvise};
        let [op, a, b, c, d, e] = *cmd;
        let win = |addr: u64, len: u64| self.inside(addr, len);
        // SAFETY (all calls below): every address is inside the window,
        // which holds nothing of this process but the program's mappings.
        unsafe {
            match op {
                code::MMAP => {
                    if !win(a, b) || b == 0 {
                        return Reply::OutOfWindow;
                    }
                    let len = std::num::NonZeroUsize::new(b as usize).expect("nonzero");
                    let at = std::num::NonZeroUsize::new((WINDOW_BASE + a) as usize);
                    let prot = prot_flags(d);
                    let r = match c {
                        0 => mmap_anonymous(
                            at,
                            len,
                            prot,
                            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED,
                        ),
                        1 => mmap_anonymous(
                            at,
                            len,
                            prot,
                            MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                        ),
                        f => match self.files.get((f - 2) as usize) {
                            Some(fd) => mmap(
                                at,
                                len,
                                prot,
                                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                                fd,
                                0,
                            ),
                            None => return Reply::Errno(libc::EBADF),
                        },
                    };
                    errno_reply(r, |p| p.as_ptr() as u64 - WINDOW_BASE)
                }
                code::MUNMAP => {
                    if !win(a, b) {
                        return Reply::OutOfWindow;
                    }
                    errno_reply(munmap(Self::ptr(a), b as usize), |_| 0)
                }
                code::MPROTECT => {
                    if !win(a, b) {
                        return Reply::OutOfWindow;
                    }
                    errno_reply(mprotect(Self::ptr(a), b as usize, prot_flags(c)), |_| 0)
                }
                code::DONTNEED => {
                    if !win(a, b) {
                        return Reply::OutOfWindow;
                    }
                    errno_reply(
                        madvise(Self::ptr(a), b as usize, MmapAdvise::MADV_DONTNEED),
                        |_| 0,
                    )
                }
                code::MREMAP => {
                    let (old, new, dontunmap) = (b, c, e & 1 != 0);
                    let to = (e & 2 != 0).then_some(d);
                    // A new length the window cannot hold is the
                    // simulation's task_size limit, which the real
                    // process does not have.
                    // And the start, for an old length of 0 (a duplicate):
                    // the window's end is the first address outside it.
                    if !win(a, old) || a >= self.task_size || !win(0, new) {
                        return Reply::OutOfWindow;
                    }
                    if to.is_some_and(|t| !win(t, new)) {
                        return Reply::OutOfWindow;
                    }
                    let off = |p: std::ptr::NonNull<libc::c_void>| p.as_ptr() as u64 - WINDOW_BASE;
                    let fixed = |dst: u64, extra: MRemapFlags| {
                        mremap(
                            Self::ptr(a),
                            old as usize,
                            new as usize,
                            MRemapFlags::MREMAP_MAYMOVE | MRemapFlags::MREMAP_FIXED | extra,
                            Some(Self::ptr(dst)),
                        )
                    };
                    let extra = if dontunmap {
                        MRemapFlags::MREMAP_DONTUNMAP
                    } else {
                        MRemapFlags::empty()
                    };
                    if let Some(to) = to {
                        return errno_reply(fixed(to, extra), off);
                    }
                    if !dontunmap && win(a, new) {
                        match mremap(
                            Self::ptr(a),
                            old as usize,
                            new as usize,
                            MRemapFlags::empty(),
                            None,
                        ) {
                            Ok(p) => return Reply::Ok(off(p)),
                            Err(Errno::ENOMEM) if new > old => {}
                            Err(e) => return Reply::Errno(e as i32),
                        }
                    }
                    let Some(new_r) = new.checked_add(PAGE - 1).map(|n| n / PAGE * PAGE) else {
                        return Reply::OutOfWindow;
                    };
                    if new_r == 0 {
                        return Reply::Errno(libc::EINVAL);
                    }
                    let old_r = old.div_ceil(PAGE) * PAGE;
                    match self.free_range(new_r, (a, a + old_r)) {
                        Some(dst) => errno_reply(fixed(dst, extra), off),
                        // No room in the window: the kernel would have
                        // placed it elsewhere. What it checks before
                        // placing decides the error; then ENOMEM, the
                        // simulation's answer for a full address space.
                        None => Reply::Errno(self.unplaceable(a, old_r, new_r, dontunmap)),
                    }
                }
                code::READ | code::WRITE => {
                    if a >= self.task_size {
                        return Reply::OutOfWindow;
                    }
                    let store = (op == code::WRITE).then_some(b);
                    // The simulation has one word per page: an access
                    // anywhere in a page is of its first word.
                    match cpu_access(WINDOW_BASE + a / PAGE * PAGE, store) {
                        Ok(v) => Reply::Ok(v),
                        Err(c) => Reply::Segv(c),
                    }
                }
                code::FILL => {
                    let Some(fd) = self.files.get(a as usize) else {
                        return Reply::Errno(libc::EBADF);
                    };
                    for pg in b..c.min(FILE_WINDOWS * self.task_size / PAGE) {
                        let w = file_word(a as u32, pg).to_le_bytes();
                        if let Err(e) = nix::sys::uio::pwrite(fd, &w, (pg * PAGE) as i64) {
                            return Reply::Errno(e as i32);
                        }
                    }
                    Reply::Ok(0)
                }
                code::KSM => {
                    match libc::prctl(libc::PR_SET_MEMORY_MERGE, 1 as libc::c_ulong, 0, 0, 0) {
                        0 => Reply::Ok(0),
                        _ => Reply::Errno(Errno::last_raw()),
                    }
                }
                code::COLLAPSE => {
                    use mm::HUGE;
                    let base = a / HUGE * HUGE;
                    if !win(base, HUGE) {
                        return Reply::OutOfWindow;
                    }
                    if nix::sys::prctl::set_thp_disable(false).is_err() {
                        return Reply::Errno(Errno::last_raw());
                    }
                    match libc::madvise(
                        (WINDOW_BASE + base) as *mut libc::c_void,
                        HUGE as usize,
                        libc::MADV_COLLAPSE,
                    ) {
                        0 => Reply::Ok(0),
                        _ => Reply::Errno(Errno::last_raw()),
                    }
                }
                code::CLEAR_REFS => match std::fs::write("/proc/self/clear_refs", "4") {
                    Ok(()) => Reply::Ok(0),
                    Err(e) => Reply::Errno(e.raw_os_error().unwrap_or(libc::EIO)),
                },
                code::EXIT => Reply::Ok(0),
                code::KVM_OPEN => {
                    let Some(slot) = self.guests.get_mut(a as usize) else {
                        return Reply::Errno(libc::EINVAL);
                    };
                    if slot.is_some() {
                        return Reply::Errno(libc::EBUSY);
                    }
                    match super::kvm::Guest::open(WINDOW_BASE, self.task_size) {
                        Ok(g) => {
                            *slot = Some(g);
                            Reply::Ok(0)
                        }
                        Err(e) => Reply::Errno(e.errno),
                    }
                }
                code::KVM_READ | code::KVM_WRITE => {
                    let Some(g) = self.guests.get_mut(a as usize).and_then(Option::as_mut) else {
                        return Reply::Errno(libc::ENODEV);
                    };
                    if b >= self.task_size {
                        return Reply::OutOfWindow;
                    }
                    let store = (op == code::KVM_WRITE).then_some(c);
                    // One word per page, as for the CPU.
                    match g.access(b / PAGE * PAGE, store) {
                        super::kvm::GuestReply::Value(v) => Reply::Ok(v),
                        super::kvm::GuestReply::Fault(_, true) => Reply::MemoryFault,
                        super::kvm::GuestReply::Fault(e, false) => Reply::Errno(e),
                        super::kvm::GuestReply::Exit(r) => Reply::KvmExit(r),
                    }
                }
                _ => Reply::Errno(libc::ENOSYS),
            }
        }
    }
}

/// The VMAs of process `pid` inside the window, as window offsets, clipped.
pub fn window_maps(pid: u32, task_size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut v = Vec::new();
    for line in text.lines() {
        let Some(range) = line.split(' ').next() else {
            continue;
        };
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) else {
            continue;
        };
        let (ws, we) = (WINDOW_BASE, WINDOW_BASE + task_size);
        if e <= ws || s >= we {
            continue;
        }
        v.push((s.max(ws) - ws, e.min(we) - ws));
    }
    Ok(v)
}

// --- the parent's handle ----------------------------------------------------------

/// Why the real side cannot run: the kernel (or the machine) refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// One address space of the real side.
struct Side {
    ch: OwnedFd,
    pid: u32,
    pagemap: Option<File>,
    uffd: Option<OwnedFd>,
    live: bool,
}

/// A running executor (`m0`) and, once it forked, `m1`.
pub struct Real {
    task_size: u64,
    sides: [Option<Side>; 2],
    spare: Option<OwnedFd>,
    /// Events read but not yet taken.
    events: Vec<UffdEvent>,
    /// m1's userfaultfd, from the fork event read before m0's reply.
    pending_child_uffd: Option<OwnedFd>,
}

fn timeout() -> PollTimeout {
    PollTimeout::try_from(Duration::from_secs(5)).expect("fits")
}

impl Real {
    /// Starts an executor with a window of `task_size` bytes.
    pub fn spawn(task_size: u64) -> Result<Real, Refused> {
        let (p0, c0) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Refused(format!("socketpair: {e}")))?;
        let (p1, c1) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Refused(format!("socketpair: {e}")))?;
        let fds = [c0.as_raw_fd(), c1.as_raw_fd()];
        ZYGOTE.with(|z| {
            let mut z = z.borrow_mut();
            for attempt in 0..2 {
                if z.is_none() {
                    *z = Some(spawn_zygote().map_err(Refused)?);
                }
                let ctl = z.as_ref().expect("just made").ctl.as_fd();
                match send_words(ctl, &[task_size], &fds) {
                    Ok(()) => return Ok(()),
                    Err(e) if attempt == 1 => {
                        return Err(Refused(format!("talking to the zygote: {e}")))
                    }
                    // It died: start another.
                    Err(_) => *z = None,
                }
            }
            Ok(())
        })?;
        drop((c0, c1));
        let mut fds = PollFd::new(p0.as_fd(), PollFlags::POLLIN);
        let ready = poll(std::slice::from_mut(&mut fds), timeout())
            .map_err(|e| Refused(format!("waiting for the executor: {e}")))?;
        if ready == 0 {
            return Err(Refused("the executor did not start within 5 s".into()));
        }
        let (words, mut got) = recv_words(p0.as_fd())
            .map_err(|e| Refused(format!("executor: {e}")))?
            .ok_or_else(|| Refused("the executor exited during startup".into()))?;
        if words.first() != Some(&0) || got.len() != 1 {
            let step = words.get(1).copied().unwrap_or(0) as usize;
            let errno = Errno::from_raw(words.get(2).copied().unwrap_or(0) as i32);
            let what = STARTUP_STEPS.get(step).copied().unwrap_or("startup");
            return Err(Refused(format!("{what} failed: {errno}")));
        }
        let pid = words[1] as u32;
        let uffd = got.pop().expect("one");
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_EVENT_FORK
                | UFFD_FEATURE_EVENT_REMAP
                | UFFD_FEATURE_EVENT_REMOVE
                | UFFD_FEATURE_EVENT_UNMAP
                | UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API on a userfaultfd with its struct.
        unsafe { uffdio_api(uffd.as_raw_fd(), &mut api) }.map_err(|e| {
            Refused(format!(
                "ioctl(UFFDIO_API) with the fork, remap, remove and unmap events: {e}"
            ))
        })?;
        let pagemap = File::open(format!("/proc/{pid}/pagemap"))
            .map_err(|e| Refused(format!("open(/proc/{pid}/pagemap): {e}")))?;
        let real = Real {
            task_size,
            sides: [
                Some(Side {
                    ch: p0,
                    pid,
                    pagemap: Some(pagemap),
                    uffd: Some(uffd),
                    live: true,
                }),
                None,
            ],
            spare: Some(p1),
            events: Vec::new(),
            pending_child_uffd: None,
        };
        real.register(0, ANCHOR.wrapping_sub(WINDOW_BASE), PAGE)
            .map_err(|e| Refused(format!("ioctl(UFFDIO_REGISTER) in write-protect mode: {e}")))?;
        Ok(real)
    }

    /// Whether address space `mm` exists and has not exited.
    pub fn live(&self, mm: usize) -> bool {
        self.sides[mm].as_ref().is_some_and(|s| s.live)
    }

    /// Registers `[start, start + len)` (window offsets) with `mm`'s
    /// userfaultfd, write-protect mode.
    fn register(&self, mm: usize, start: u64, len: u64) -> nix::Result<()> {
        let Some(uffd) = self.sides[mm].as_ref().and_then(|s| s.uffd.as_ref()) else {
            return Ok(());
        };
        let mut r = UffdioRegister {
            start: WINDOW_BASE.wrapping_add(start),
            len,
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER with its struct.
        unsafe { uffdio_register(uffd.as_raw_fd(), &mut r) }.map(drop)
    }

    /// Unregisters every VMA of `mm`'s window: `MADV_COLLAPSE` refuses a
    /// range with empty PTEs in a VMA that userfaultfd watches (they
    /// would be its faults to handle). [`Real::register_window`] undoes it.
    pub fn unregister_window(&self, mm: usize) -> Result<(), String> {
        let Some(uffd) = self.sides[mm].as_ref().and_then(|s| s.uffd.as_ref()) else {
            return Ok(());
        };
        for (s, e) in self.maps(mm)? {
            let mut r = UffdioRange {
                start: WINDOW_BASE.wrapping_add(s),
                len: e - s,
            };
            // SAFETY: UFFDIO_UNREGISTER with its struct.
            unsafe { uffdio_unregister(uffd.as_raw_fd(), &mut r) }
                .map_err(|err| format!("UFFDIO_UNREGISTER {s:#x}..{e:#x} in m{mm}: {err}"))?;
        }
        Ok(())
    }

    /// Registers every VMA of `mm`'s window (new mappings are not
    /// registered by themselves).
    pub fn register_window(&self, mm: usize) -> Result<(), String> {
        for (s, e) in self.maps(mm)? {
            self.register(mm, s, e - s)
                .map_err(|err| format!("UFFDIO_REGISTER {s:#x}..{e:#x} in m{mm}: {err}"))?;
        }
        Ok(())
    }

    /// `mm`'s VMAs in the window.
    pub fn maps(&self, mm: usize) -> Result<Vec<(u64, u64)>, String> {
        let Some(s) = self.sides[mm].as_ref().filter(|s| s.live) else {
            return Ok(Vec::new());
        };
        window_maps(s.pid, self.task_size).map_err(|e| format!("/proc/{}/maps: {e}", s.pid))
    }

    /// How many of `mm`'s present window pages are on a frame with page
    /// flag `bit` in `/proc/kpageflags` (21 KSM, 22 THP).
    pub fn pages_flagged(&self, mm: usize, bit: u32) -> Result<usize, String> {
        let f = File::open("/proc/kpageflags").map_err(|e| format!("/proc/kpageflags: {e}"))?;
        let mut n = 0;
        for ent in self.pagemap(mm)? {
            let pfn = ent & ((1 << 55) - 1);
            if ent >> 63 == 0 || pfn == 0 {
                continue;
            }
            let mut w = [0u8; 8];
            f.read_exact_at(&mut w, pfn * 8)
                .map_err(|e| format!("/proc/kpageflags: {e}"))?;
            n += usize::from(u64::from_le_bytes(w) >> bit & 1 == 1);
        }
        Ok(n)
    }

    /// The pagemap entries of `mm`'s window, one per page.
    pub fn pagemap(&self, mm: usize) -> Result<Vec<u64>, String> {
        let Some(f) = self.sides[mm]
            .as_ref()
            .filter(|s| s.live)
            .and_then(|s| s.pagemap.as_ref())
        else {
            return Ok(Vec::new());
        };
        let n = (self.task_size / PAGE) as usize;
        let mut buf = vec![0u8; n * 8];
        f.read_exact_at(&mut buf, WINDOW_BASE / PAGE * 8)
            .map_err(|e| format!("reading pagemap: {e}"))?;
        Ok(words_of(&buf))
    }

    /// The events read so far, in order; clears them.
    pub fn take_events(&mut self) -> Vec<UffdEvent> {
        std::mem::take(&mut self.events)
    }

    fn read_uffd(&mut self, mm: usize) -> Result<(), String> {
        let Some(fd) = self.sides[mm].as_ref().and_then(|s| s.uffd.as_ref()) else {
            return Ok(());
        };
        let raw = fd.as_raw_fd();
        let mut buf = [0u8; UFFD_MSG * 16];
        loop {
            // SAFETY: the descriptor stays open: only a fork event adds
            // one, and nothing closes one here.
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            let n = match nix::unistd::read(fd, &mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(format!("reading m{mm}'s userfaultfd ({raw}): {e}")),
            };
            for m in buf[..n].chunks_exact(UFFD_MSG) {
                let w =
                    |i: usize| u64::from_le_bytes(m[8 + 8 * i..16 + 8 * i].try_into().expect("8"));
                let off = |a: u64| a.wrapping_sub(WINDOW_BASE);
                let mm8 = mm as u8;
                match m[0] {
                    UFFD_EVENT_UNMAP => self.events.push(UffdEvent::Unmap {
                        mm: mm8,
                        start: off(w(0)),
                        end: off(w(1)),
                    }),
                    UFFD_EVENT_REMOVE => self.events.push(UffdEvent::Remove {
                        mm: mm8,
                        start: off(w(0)),
                        end: off(w(1)),
                    }),
                    UFFD_EVENT_REMAP => self.events.push(UffdEvent::Remap {
                        mm: mm8,
                        from: off(w(0)),
                        to: off(w(1)),
                        len: w(2),
                    }),
                    UFFD_EVENT_FORK => {
                        let ufd = u32::from_le_bytes(m[8..12].try_into().expect("4")) as RawFd;
                        // SAFETY: the kernel installed this descriptor in
                        // our table when we read the event.
                        let new = unsafe { OwnedFd::from_raw_fd(ufd) };
                        self.events.push(UffdEvent::Fork { mm: mm8 });
                        match self.sides[1].as_mut() {
                            Some(s) if s.uffd.is_none() => s.uffd = Some(new),
                            _ => self.pending_child_uffd = Some(new),
                        }
                    }
                    other => return Err(format!("unexpected userfaultfd message {other:#x}")),
                }
            }
        }
    }

    /// Sends `cmd` to `mm`, reading userfaultfd events while it runs, and
    /// returns its reply. Err: the real side broke (not a divergence).
    pub fn call(&mut self, mm: usize, cmd: Cmd) -> Result<Reply, String> {
        let ch = match self.sides[mm].as_ref().filter(|s| s.live) {
            Some(s) => s.ch.try_clone().map_err(|e| format!("dup: {e}"))?,
            None => return Err(format!("m{mm} is not running")),
        };
        send_words(ch.as_fd(), &cmd, &[]).map_err(|e| format!("sending to m{mm}: {e}"))?;
        loop {
            let reply = {
                let mut fds = vec![PollFd::new(ch.as_fd(), PollFlags::POLLIN)];
                let uffds: Vec<usize> = (0..2)
                    .filter(|&i| self.sides[i].as_ref().is_some_and(|s| s.uffd.is_some()))
                    .collect();
                for &i in &uffds {
                    let fd = self.sides[i]
                        .as_ref()
                        .and_then(|s| s.uffd.as_ref())
                        .expect("has");
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
                let n = poll(&mut fds, timeout()).map_err(|e| format!("poll: {e}"))?;
                if n == 0 {
                    return Err(format!("m{mm} did not answer {cmd:?} within 5 s"));
                }
                let readable = |f: &PollFd| {
                    f.revents().is_some_and(|r| {
                        r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                    })
                };
                let ready_uffds: Vec<usize> = uffds
                    .iter()
                    .zip(&fds[1..])
                    .filter(|(_, f)| readable(f))
                    .map(|(&i, _)| i)
                    .collect();
                let reply_ready = readable(&fds[0]);
                drop(fds);
                for i in ready_uffds {
                    self.read_uffd(i)?;
                }
                reply_ready
            };
            if !reply {
                continue;
            }
            let (w, _) = recv_words(ch.as_fd())
                .map_err(|e| format!("reading m{mm}'s reply: {e}"))?
                .ok_or_else(|| format!("m{mm} died running {cmd:?}"))?;
            if w.len() != 2 {
                return Err(format!("m{mm}: bad reply {w:?}"));
            }
            for i in 0..2 {
                self.read_uffd(i)?;
            }
            let r = decode_reply([w[0], w[1]]);
            if cmd[0] == code::FORK {
                if let Reply::Ok(pid) = r {
                    self.adopt(pid as u32)?;
                }
            }
            if cmd[0] == code::EXIT && r == Reply::Ok(0) {
                // Its socket closes after its address space is torn down
                // (exit_files after exit_mm): wait for that, so that the
                // other process's pagemap no longer counts its mappings.
                let mut fds = [PollFd::new(ch.as_fd(), PollFlags::POLLIN)];
                if poll(&mut fds, timeout()).map_err(|e| format!("poll: {e}"))? == 0 {
                    return Err(format!("m{mm} did not exit within 5 s"));
                }
                if let Ok(Some(_)) = recv_words(ch.as_fd()) {
                    return Err(format!("m{mm} answered after exit"));
                }
                if let Some(s) = self.sides[mm].as_mut() {
                    s.live = false;
                    s.pagemap = None;
                    s.uffd = None;
                }
            }
            return Ok(r);
        }
    }

    fn adopt(&mut self, pid: u32) -> Result<(), String> {
        let ch = self.spare.take().ok_or("m0 forked twice")?;
        let pagemap = File::open(format!("/proc/{pid}/pagemap"))
            .map_err(|e| format!("open(/proc/{pid}/pagemap): {e}"))?;
        self.sides[1] = Some(Side {
            ch,
            pid,
            pagemap: Some(pagemap),
            uffd: self.pending_child_uffd.take(),
            live: true,
        });
        Ok(())
    }
}
