//! One integration-test binary for the server: each feature file is a
//! module sharing the harness (one link step, shared helpers).

mod harness;

mod access;
mod acme;
mod balancer;
mod cgi;
mod core_http;
mod fastcgi;
mod filters;
mod http2;
mod lifecycle;
mod logging;
mod metrics;
mod placement;
mod proxy;
mod security;
mod service;
mod static_files;
mod template;
mod tls;
mod vhosts;
