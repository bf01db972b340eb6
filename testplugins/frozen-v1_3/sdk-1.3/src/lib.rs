//! Frozen copy of `tamada-sdk` 1.3's ABI tables. Never edit `abi.rs`.
#![allow(missing_docs, clippy::all, rustdoc::all)]
pub mod abi;
