//! A mirror error's message says what went wrong, and each kind its own.

use mirror::MirrorError;

#[test]
fn every_error_has_its_own_message() {
    let all = [
        MirrorError::Notifier(notifier::Error::Released),
        MirrorError::Segv(mm::MmError::Fault),
        MirrorError::WrongMm,
        MirrorError::NoEnt,
        MirrorError::Inval,
        MirrorError::Again,
    ];
    let texts: Vec<String> = all.iter().map(ToString::to_string).collect();
    let want = [
        "notifier:",
        "fault:",
        "another address space",
        "no such entry",
        "invalid",
        "try again",
    ];
    for (t, w) in texts.iter().zip(want) {
        assert!(t.contains(w), "{t:?} should contain {w:?}");
    }
    let unique: std::collections::BTreeSet<&String> = texts.iter().collect();
    assert_eq!(unique.len(), all.len(), "{texts:?}");
}
