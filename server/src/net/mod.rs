//! Listening sockets, event loops, signals, binary upgrades and the
//! privilege drop: where connections come from and which thread owns them.

pub mod control;
pub mod cx;
pub mod evloop;
pub mod listen;
pub mod privileges;
pub mod upgrade;
pub mod watch;
