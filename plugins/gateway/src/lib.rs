//! What tamada's gateway plugins share, written once:
//! - [`cgi_env`] and [`cgi_headers`]: the CGI/1.1 meta-variables of a
//!   request (RFC 3875 section 4.1) and the script's response header block
//!   (section 6), for `cgi` and `fastcgi`;
//! - [`addr`] and [`conn`]: upstream addresses (`host:port`,
//!   `unix:/path`, CIDRs) and connections with a read buffer, a liveness
//!   check for idle ones and a write that watches for an early answer, for
//!   `proxy` and `fastcgi`;
//! - [`exchange`]: one exchange with an upstream as a non-blocking
//!   machine (connect, send, watch), run on the event loop or the pool;
//! - [`tls`]: HTTPS upstreams (a rustls client under the same machine);
//! - [`chunked`]: an upstream's chunked body, decoded with no I/O;
//! - [`upload`]: a request body streamed upstream, replayable while small;
//! - [`spool`]: a chunked request body collected (memory, then an
//!   anonymous file) so that CONTENT_LENGTH can be set.
//!
//! It is a plain library (no plugin of its own): each plugin links it in.

pub mod addr;
pub mod cgi_env;
pub mod cgi_headers;
pub mod chunked;
pub mod conn;
pub mod exchange;
pub mod spool;
pub mod tls;
pub mod upload;

/// Response bodies up to this size are read by the gateway plugins and
/// answered from memory; longer ones become a stream the core pulls.
pub const SMALL_BODY: usize = 64 * 1024;
