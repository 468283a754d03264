#![no_main]

use libfuzzer_sys::fuzz_target;

// The linux target with KVM guests as devices (needs root, /dev/kvm and
// userfaultfd); the child processes start as this binary, hence the init
// hook.
fuzz_target!(
    init: harness::linux::zygote_main_if_requested(),
    |data: &[u8]| harness::targets::kvm(data)
);
