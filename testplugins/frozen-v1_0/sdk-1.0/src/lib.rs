//! Frozen copy of `tamada-sdk` 1.0's ABI tables. Never edit `abi.rs`.
#![allow(missing_docs, clippy::all)]
pub mod abi;
