//! Device mirrors (in progress).
