//! Error messages name what went wrong and the values involved: they end
//! up in reproducers and CLI output, where an empty message hides the bug.

use notifier::{ClassicId, Culprit, Error, IntervalId, InvalidateError};

fn shows(e: &dyn std::fmt::Display, parts: &[&str]) {
    let s = e.to_string();
    for p in parts {
        assert!(s.contains(p), "{s:?} does not mention {p:?}");
    }
}

#[test]
fn every_error_says_what_and_where() {
    let iv = IntervalId(7);
    let cl = ClassicId(9);
    shows(&Error::ZeroLength, &["zero"]);
    shows(
        &Error::Overflow {
            start: 0x1000,
            length: 0x2000,
        },
        &["0x1000", "0x2000", "overflow"],
    );
    shows(
        &Error::BadRange {
            start: 0x3000,
            end: 0x2000,
        },
        &["0x3000", "0x2000"],
    );
    shows(
        &Error::NotRegistered(iv),
        &[&iv.to_string(), "not registered"],
    );
    shows(
        &Error::UnknownClassic(cl),
        &[&cl.to_string(), "not registered"],
    );
    shows(&Error::Released, &["released"]);
    shows(&Error::AlreadyReleased, &["twice"]);
    shows(&Error::InCallback, &["callback"]);
    shows(
        &Error::SetSeqOutsideCallback(iv),
        &[&iv.to_string(), "set_seq"],
    );
    shows(&Error::OddInitialSeq(0x3), &["0x3", "odd"]);
    shows(&Error::TaskSizeTooSmall(0x10), &["0x10"]);
}

#[test]
fn invalidation_errors_name_the_culprit() {
    let iv = IntervalId(7);
    let cl = ClassicId(9);
    assert!(!iv.to_string().is_empty() && !cl.to_string().is_empty());
    assert_ne!(
        Culprit::Interval(iv).to_string(),
        Culprit::Classic(cl).to_string()
    );
    shows(&Culprit::Interval(iv), &["interval", &iv.to_string()]);
    shows(&Culprit::Classic(cl), &["classic", &cl.to_string()]);
    shows(
        &InvalidateError::WouldBlock(Culprit::Interval(iv)),
        &["would block", &Culprit::Interval(iv).to_string()],
    );
    shows(
        &InvalidateError::ContractViolation(Culprit::Classic(cl)),
        &["refused", &Culprit::Classic(cl).to_string()],
    );
    shows(
        &InvalidateError::Bad(Error::ZeroLength),
        &[&Error::ZeroLength.to_string()],
    );
}
