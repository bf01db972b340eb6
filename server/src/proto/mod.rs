//! The protocols a connection speaks, one connection state machine each.

pub mod h1;
