//! The log phase: after a response is complete (or has failed), every
//! logger of the vhost gets the exchange. Loggers that declared
//! themselves inline (the logging and metrics plugins: they only buffer)
//! run on the loop that wrote the response; the others (every 1.0 plugin)
//! get the exchange on the pool, so a logger that blocks never stalls a
//! loop.

use crate::exchange::Exchange;
use crate::exchange::body::empty_reader;
use crate::exchange::view;
use crate::plugins::host;
use abi_stable::std_types::RStr;
use tamada_sdk::abi::LogEntryV1;

/// What the log phase reports about the response.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub status: u16,
    pub body_sent: u64,
    pub total_sent: u64,
    pub completed: bool,
    pub error: Option<String>,
}

/// Runs the loggers of the exchange's vhost. On a loop, those that may
/// not run inline go to the pool.
pub fn run(x: Box<Exchange>, o: Outcome) {
    if x.vhost.loggers.is_empty() {
        return;
    }
    let on_loop = crate::plugins::call::on_loop();
    call(&x, &o, |inline| inline || !on_loop);
    if on_loop && x.vhost.pool_loggers {
        let pool = crate::pool::global();
        pool.submit(Box::new(move || call(&x, &o, |inline| !inline)));
    }
}

/// Calls the loggers for which `which(inline)` holds.
fn call(x: &Exchange, o: &Outcome, which: impl Fn(bool) -> bool) {
    let err = o.error.as_deref().or(x.error.as_deref()).unwrap_or("");
    let empty = empty_reader();
    // The client's own fields: a log says what the client sent.
    let headers = view::client_headers(x);
    let req = view::request(x, &headers, &empty);
    let entry = LogEntryV1 {
        request: &req,
        status: o.status,
        body_bytes_sent: o.body_sent,
        bytes_sent: o.total_sent,
        bytes_received: x.bytes_received,
        duration_us: x.start.elapsed().as_micros() as u64,
        start_unix_us: x.start_unix_us,
        error: RStr::from_str(err),
        completed: o.completed,
    };
    let _scope = crate::plugins::call::scope(&x.vhost, x.peer);
    let tls = view::tls(x);
    host::with_views(tls.as_ref(), x.user.as_ref(), view::version(x), || {
        host::with_notes(&x.notes, || {
            for l in x.vhost.loggers.iter().filter(|l| which(l.inline)) {
                l.log(&entry);
            }
        })
    });
}
