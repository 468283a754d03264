//! The truth that mnfuzz compares implementations with: reference models
//! that are naive on purpose, so that they are easy to believe.

#![deny(missing_docs)]

pub mod mirror;
pub mod reference;
pub mod shadow;

pub use reference::{
    CallbackModel, Expected, Mark, Membership, ModelInvalidation, ModelRead, ModelRemove,
    ModelStart, ModelWait, ReferenceNotifier, Refuse, SetSeq, State,
};

#[cfg(test)]
mod tests;
