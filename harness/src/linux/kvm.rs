//! The guest of the `kvm` target: a KVM VM that lives in the real
//! child process (an executor of [`super::real`]) and whose
//! guest-physical memory is that process's window.
//!
//! Memory: memslot 0 maps guest-physical `[WINDOW_GPA, WINDOW_GPA +
//! task_size)` onto the window (`userspace_addr = WINDOW_BASE`), so
//! guest-physical address `WINDOW_GPA + A` is window offset `A`, whatever
//! the host maps there at that moment (the slot covers holes as well: KVM
//! resolves host addresses at fault time, through its mmu notifier).
//! [`WINDOW_GPA`] is 2 MiB aligned like the window itself, so that KVM
//! may map a host transparent huge page with one huge entry. Memslot 1
//! is one page of the process's private memory outside the window, at
//! guest-physical [`CODE_GPA`], holding the guest's code.
//!
//! The guest: one vCPU in real mode with a flat data segment (base 0,
//! limit 4 GiB: "unreal mode"), so that 32-bit addressing reaches the
//! whole window. Each access sets the registers and runs the vCPU from
//! one of two entry points:
//!
//! ```text
//! read  (CODE_GPA + 0x00)   mov eax, [ebx]; mov edx, [ebx + 4]; out 0x10, al; hlt
//! write (CODE_GPA + 0x10)   mov [ebx], eax; mov [ebx + 4], edx; out 0x11, al; hlt
//! ```
//!
//! The `out` is the report: KVM exits to us with `KVM_EXIT_IO`, and the
//! value is in `edx:eax`. One more run completes the port write and
//! stops at `hlt` (`KVM_EXIT_HLT`: there is no in-kernel irqchip), so
//! that the vCPU is at rest before the next access sets its registers.
//!
//! When the host has nothing the guest may use at the address (no
//! mapping, `PROT_NONE`, or a read-only mapping written), KVM cannot
//! resolve the guest page. What it does then is the kernel's choice,
//! reported as it is: `KVM_RUN` fails (`EFAULT`, with
//! `KVM_EXIT_MEMORY_FAULT` in the run structure on kernels that report
//! it: [`GuestReply::Fault`]), or the vCPU exits, e.g. with
//! `KVM_EXIT_MMIO` (KVM treats a guest page whose host address has no
//! VMA as emulated MMIO): [`GuestReply::Exit`]. After an exit, a run
//! with `immediate_exit` set lets KVM finish what the exit left pending
//! before the next access sets the registers.

use kvm_bindings::{kvm_regs, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

/// Where the guest's code page is, in guest-physical memory: below the
/// window and below 1 MiB (real mode's code segment reaches it).
pub const CODE_GPA: u64 = 0xf_0000;
/// Where the window starts in guest-physical memory: 2 MiB, congruent
/// with the window's host address modulo a huge page.
pub const WINDOW_GPA: u64 = 0x20_0000;
/// The port a read reports on.
pub const PORT_READ: u16 = 0x10;
/// The port a write reports on.
pub const PORT_WRITE: u16 = 0x11;

/// The code page's first bytes: the read routine at 0, the write routine
/// at 0x10 (16-bit code; `0x67` 32-bit address, `0x66` 32-bit operand).
const CODE: [u8; 0x20] = [
    // read: mov eax, [ebx]
    0x67, 0x66, 0x8b, 0x03, //
    // mov edx, [ebx + 4]
    0x67, 0x66, 0x8b, 0x53, 0x04, //
    // out 0x10, al ; hlt
    0xe6, 0x10, 0xf4, //
    0x90, 0x90, 0x90, 0x90, //
    // write: mov [ebx], eax
    0x67, 0x66, 0x89, 0x03, //
    // mov [ebx + 4], edx
    0x67, 0x66, 0x89, 0x53, 0x04, //
    // out 0x11, al ; hlt
    0xe6, 0x11, 0xf4, //
    0x90, 0x90, 0x90, 0x90,
];

/// What one guest access did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestReply {
    /// It reported this value (a read's, or the value a write stored).
    Value(u64),
    /// `KVM_RUN` failed with this errno (`EFAULT`: the host page could
    /// not be used), with `KVM_EXIT_MEMORY_FAULT` reported (`true`) or not.
    Fault(i32, bool),
    /// The vCPU exited with this other `exit_reason` before reporting.
    Exit(u32),
}

/// A VM with one vCPU over the window.
pub struct Guest {
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    code: std::ptr::NonNull<libc::c_void>,
}

impl Drop for Guest {
    fn drop(&mut self) {
        // SAFETY: the code page was mapped by Guest::open and nothing
        // else refers to it once the VM is gone (fields drop after this).
        unsafe {
            let _ = nix::sys::mman::munmap(self.code, 4096);
        }
    }
}

/// The step of [`Guest::open`] that failed, and its errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenError {
    /// Which step ([`OPEN_STEPS`]).
    pub step: u8,
    /// Its errno.
    pub errno: i32,
}

/// The steps of opening a guest, as failures name them.
pub const OPEN_STEPS: [&str; 7] = [
    "open(/dev/kvm)",
    "ioctl(KVM_CREATE_VM)",
    "ioctl(KVM_SET_TSS_ADDR)",
    "mmap of the guest's code page",
    "ioctl(KVM_SET_USER_MEMORY_REGION)",
    "ioctl(KVM_CREATE_VCPU)",
    "ioctl(KVM_GET/SET_SREGS)",
];

impl Guest {
    /// A VM whose memory is the window `[base, base + size)`.
    pub fn open(base: u64, size: u64) -> Result<Guest, OpenError> {
        let fail = |step: u8| {
            move |e: kvm_ioctls::Error| OpenError {
                step,
                errno: e.errno(),
            }
        };
        let kvm = Kvm::new().map_err(fail(0))?;
        let vm = kvm.create_vm().map_err(fail(1))?;
        // Needed on Intel (real mode through vm86 without unrestricted
        // guest); harmless elsewhere. Far above the guest's memory.
        vm.set_tss_address(0xfffb_d000).map_err(fail(2))?;
        // SAFETY: a fresh private page, ours alone.
        let code = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                std::num::NonZeroUsize::new(4096).expect("nonzero"),
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(|e| OpenError {
            step: 3,
            errno: e as i32,
        })?;
        // SAFETY: the page is 4096 bytes and writable.
        unsafe {
            std::ptr::copy_nonoverlapping(CODE.as_ptr(), code.as_ptr() as *mut u8, CODE.len())
        };
        let guest_fail = |step: u8, e: kvm_ioctls::Error| {
            // SAFETY: mapped just above, not yet owned by a Guest.
            unsafe {
                let _ = nix::sys::mman::munmap(code, 4096);
            }
            OpenError {
                step,
                errno: e.errno(),
            }
        };
        let slots = [
            kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: WINDOW_GPA,
                memory_size: size,
                userspace_addr: base,
            },
            kvm_userspace_memory_region {
                slot: 1,
                flags: 0,
                guest_phys_addr: CODE_GPA,
                memory_size: 4096,
                userspace_addr: code.as_ptr() as u64,
            },
        ];
        for r in slots {
            // SAFETY: both ranges stay reserved for the VM's lifetime: the
            // window is the executor's (what it maps there is what the
            // guest sees, on purpose), the code page is freed after the VM.
            if let Err(e) = unsafe { vm.set_user_memory_region(r) } {
                return Err(guest_fail(4, e));
            }
        }
        let vcpu = match vm.create_vcpu(0) {
            Ok(v) => v,
            Err(e) => return Err(guest_fail(5, e)),
        };
        let mut sregs = match vcpu.get_sregs() {
            Ok(s) => s,
            Err(e) => return Err(guest_fail(6, e)),
        };
        sregs.cs.base = CODE_GPA;
        sregs.cs.selector = (CODE_GPA >> 4) as u16;
        // A flat data segment in real mode.
        sregs.ds.base = 0;
        sregs.ds.selector = 0;
        sregs.ds.limit = 0xffff_ffff;
        sregs.ds.g = 1;
        if let Err(e) = vcpu.set_sregs(&sregs) {
            return Err(guest_fail(6, e));
        }
        Ok(Guest {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            code,
        })
    }

    /// A guest load (`store` None) or store of the word at window offset
    /// `offset` (guest-physical `WINDOW_GPA + offset`).
    pub fn access(&mut self, offset: u64, store: Option<u64>) -> GuestReply {
        let v = store.unwrap_or(0);
        let regs = kvm_regs {
            rip: if store.is_some() { 0x10 } else { 0 },
            rbx: WINDOW_GPA + offset,
            rax: v & 0xffff_ffff,
            rdx: v >> 32,
            rflags: 2,
            ..Default::default()
        };
        if let Err(e) = self.vcpu.set_regs(&regs) {
            return GuestReply::Fault(e.errno(), false);
        }
        let want = if store.is_some() {
            PORT_WRITE
        } else {
            PORT_READ
        };
        match self.run() {
            Ran::Io(port) if port == want => {}
            other => return self.failed(other),
        }
        let value = match self.vcpu.get_regs() {
            Ok(r) => (r.rax & 0xffff_ffff) | (r.rdx & 0xffff_ffff) << 32,
            Err(e) => return GuestReply::Fault(e.errno(), false),
        };
        // Complete the port write and come to rest at `hlt`.
        match self.run() {
            Ran::Hlt => GuestReply::Value(value),
            other => self.failed(other),
        }
    }

    fn run(&mut self) -> Ran {
        match self.vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) => Ran::Io(port),
            Ok(VcpuExit::Hlt) => Ran::Hlt,
            Ok(VcpuExit::MemoryFault { .. }) => Ran::MemoryFault,
            Ok(_) => Ran::Other,
            Err(e) => Ran::Err(e.errno()),
        }
    }

    fn failed(&mut self, r: Ran) -> GuestReply {
        match r {
            Ran::MemoryFault => GuestReply::Fault(libc::EFAULT, true),
            Ran::Err(e) => GuestReply::Fault(e, false),
            Ran::Io(_) | Ran::Hlt | Ran::Other => {
                let reason = self.vcpu.get_kvm_run().exit_reason;
                // An exit may leave work for the next KVM_RUN (an MMIO
                // read waits for its data and would then finish the old
                // instruction over the registers we set next): let KVM
                // complete it now, without entering the guest.
                self.vcpu.set_kvm_immediate_exit(1);
                let _ = self.vcpu.run();
                self.vcpu.set_kvm_immediate_exit(0);
                GuestReply::Exit(reason)
            }
        }
    }
}

/// How one `KVM_RUN` ended.
enum Ran {
    Io(u16),
    Hlt,
    MemoryFault,
    Other,
    Err(i32),
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};
    use std::num::NonZeroUsize;

    /// The guest over four pages of this process: it sees host stores,
    /// its stores reach the host, and it is refused (never served stale
    /// data) once the host unmaps or write-protects a page. Skipped,
    /// visibly, without a usable /dev/kvm.
    #[test]
    fn the_guest_follows_the_host_mappings() {
        if std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_err()
        {
            println!("skipped: /dev/kvm not available");
            return;
        }
        let len = 4 * 4096;
        // SAFETY: a fresh private mapping, ours alone.
        let p = unsafe {
            mmap_anonymous(
                None,
                NonZeroUsize::new(len).expect("nonzero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .expect("mmap");
        let base = p.as_ptr() as u64;
        let word = |i: u64| (base + i * 4096) as *mut u64;
        let mut g = Guest::open(base, len as u64).expect("a VM over the pages");
        // SAFETY: inside the mapping.
        unsafe { word(1).write_volatile(0x1234_5678_9abc_def0) };
        assert_eq!(
            g.access(4096, None),
            GuestReply::Value(0x1234_5678_9abc_def0)
        );
        assert_eq!(g.access(2 * 4096, Some(7)), GuestReply::Value(7));
        // SAFETY: inside the mapping.
        assert_eq!(unsafe { word(2).read_volatile() }, 7);
        assert_eq!(g.access(0, None), GuestReply::Value(0));
        // Unmapped: the guest must not read the old page.
        // SAFETY: the page is ours; nothing else uses it.
        unsafe {
            munmap(
                std::ptr::NonNull::new(word(1).cast()).expect("nonzero"),
                4096,
            )
        }
        .expect("munmap");
        assert!(!matches!(g.access(4096, None), GuestReply::Value(_)));
        // Write-protected: a guest store must not land; loads still work.
        // SAFETY: as above.
        unsafe {
            mprotect(
                std::ptr::NonNull::new(word(2).cast()).expect("nonzero"),
                4096,
                ProtFlags::PROT_READ,
            )
        }
        .expect("mprotect");
        assert!(!matches!(g.access(2 * 4096, Some(9)), GuestReply::Value(_)));
        assert_eq!(g.access(2 * 4096, None), GuestReply::Value(7));
        // SAFETY: inside the mapping, still readable.
        assert_eq!(unsafe { word(2).read_volatile() }, 7);
        drop(g);
        // SAFETY: the rest of the mapping is ours.
        unsafe {
            let _ = munmap(p, len);
        }
    }
}
