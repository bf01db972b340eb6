//! The content phase of one exchange, as a protocol drives it. The
//! exchange knows no socket and no loop: it offers the request to the
//! routes (`route.rs`) on the loop when its body is in memory, parks it
//! while an inline handler waits for a descriptor, or runs it on the pool,
//! and says what it needs next as a [`Need`]: an answer to send, a
//! descriptor to watch, a relay. The protocol (`proto/h1/answer.rs` for
//! HTTP/1.1) frames answers for its wire, registers waits with its loop
//! and delivers the pool's [`Handled`] back with [`handled`].
//!
//! ```text
//!   run (loop) --inline answer--> Need::Respond / Relay
//!      |  \--handler waits--> Need::Wait --ready/timeout--> resume (loop) --> ...
//!      \--pool handler or Defer--> to_pool --> Need::Pool ... Handled --> handled --> Need
//! ```

use crate::config::Settings;
use crate::exchange::body::{BodyPipe, MemBody};
use crate::exchange::response::{self, Owned, Shape};
use crate::exchange::route::{self, BodyIn, Place, Step};
use crate::exchange::stream::StreamPipe;
use crate::exchange::{Done, Exchange, Handled, Wake};
use crate::plugins::host;
use crate::plugins::{Relay, Resume, Wait};
use crate::pool::Pool;
use std::sync::Arc;
use std::time::Instant;

/// What the protocol that drives an exchange must do next.
pub enum Need {
    /// Send this answer; the exchange goes with it to the log phase.
    Respond(Box<Exchange>, Answer),
    /// An inline handler waits on a descriptor: watch it, then call
    /// [`resume`] when it is ready or its time is up.
    Wait(Box<Parked>),
    /// It runs on the pool; its [`Handled`] comes back through the
    /// [`Link`]'s `back`, for [`handled`].
    Pool,
    /// Send the 101 of this response, then relay bytes both ways.
    Relay(Box<Exchange>, Owned, Relay),
}

/// An answer, before the protocol frames it for its wire.
pub enum Answer {
    /// A plugin's response.
    Plugin(Owned),
    /// The core's own page for this status: 404 (no route answered), 500
    /// (a handler failed), 413 (a route's `max_body`, the body left
    /// unread: the protocol ends the connection or the stream).
    Status(u16),
    /// 503 with `Retry-After: 1`: the pool's queue is full.
    Busy,
}

/// A request whose inline handler waits for a descriptor.
pub struct Parked {
    /// First: its state is freed before the exchange (whose vhost keeps
    /// the plugin loaded) when the connection goes while it waits.
    pub wait: Wait,
    pub x: Box<Exchange>,
    pub mem: MemBody,
    /// When the wait's time is up.
    pub until: Instant,
}

/// Sends a pool job's result back to the connection (and wakes it).
pub type Back = Box<dyn FnOnce(Handled) + Send>;

/// What an exchange may use of the connection and loop driving it.
pub struct Link<'a> {
    pub pool: &'a Arc<Pool>,
    pub settings: &'a Settings,
    /// How the protocol sends a body (a stream started on the pool is
    /// framed for it there).
    pub shape: Shape,
    /// The connection driving the exchange.
    pub owner: &'a dyn Owner,
}

/// The connection an exchange belongs to, as a pool job or a pipe reaches
/// it from another thread.
pub trait Owner {
    /// The way a pool job's result comes back to it (and wakes it).
    fn back(&self) -> Back;
    /// Its wake-up, for a pipe.
    fn wake(&self) -> Wake;
}

/// The request body a pool handler reads.
pub enum PoolBody {
    /// Whole, in memory or spooled to a file.
    Mem(MemBody),
    /// Streamed by the protocol as it arrives.
    Pipe(Arc<BodyPipe>),
}

/// Offers the request to its routes on the loop, with its body whole.
pub fn run(mut x: Box<Exchange>, mut mem: MemBody, link: &Link<'_>) -> Need {
    let step = route::dispatch(&mut x, &mut BodyIn::Mem(&mut mem), Place::Loop, None);
    after_inline(x, mem, step, link)
}

/// Calls a waiting handler again: its descriptor is ready (`ready`), or
/// its time ran out.
pub fn resume(p: Parked, ready: bool, link: &Link<'_>) -> Need {
    let Parked {
        wait,
        mut x,
        mut mem,
        ..
    } = p;
    let resume = Resume {
        state: wait.state,
        timed_out: !ready,
    };
    let step = route::dispatch(
        &mut x,
        &mut BodyIn::Mem(&mut mem),
        Place::Loop,
        Some(resume),
    );
    after_inline(x, mem, step, link)
}

/// What an inline dispatch led to.
fn after_inline(x: Box<Exchange>, mut mem: MemBody, step: Step, link: &Link<'_>) -> Need {
    match step {
        Step::ToPool => {
            // A deferring handler may have read some: the pool's call
            // reads the whole body again.
            mem.pos = 0;
            to_pool(x, PoolBody::Mem(mem), link)
        }
        Step::Wait(w) => {
            let until = crate::clock::now() + w.timeout;
            Need::Wait(Box::new(Parked {
                wait: w,
                x,
                mem,
                until,
            }))
        }
        step => done(x, finish(step)),
    }
}

/// An answer of the routes as it leaves them.
fn finish(step: Step) -> Done {
    match step {
        Step::Respond(r) => Done::Respond(response::own(r)),
        Step::Relay(r, relay) => Done::Relay(response::own(r), relay),
        Step::TooLarge => Done::TooLarge,
        Step::Busy => Done::Busy,
        Step::Unanswered | Step::ToPool | Step::Wait(_) => Done::Unanswered,
    }
}

/// The exchange's answer, and the log line a refusal needs.
fn done(mut x: Box<Exchange>, d: Done) -> Need {
    match d {
        Done::Respond(o) => Need::Respond(x, Answer::Plugin(o)),
        Done::Relay(o, relay) => Need::Relay(x, o, relay),
        Done::Busy => Need::Respond(x, Answer::Busy),
        Done::TooLarge => {
            let limit = x.vhost.max_body_for(x.path());
            let n = match x.head.framing {
                crate::http::request::Framing::Length(n) => n,
                _ => 0,
            };
            too_large(&mut x, n, limit);
            Need::Respond(x, Answer::Status(413))
        }
        Done::Unanswered => {
            let status = if x.error.is_some() { 500 } else { 404 };
            Need::Respond(x, Answer::Status(status))
        }
    }
}

/// Runs the access rules before any of the body is read (a refused upload
/// is refused at once; a rule that must block runs later, from the
/// routing, with the body whole; a delay is waited for when the request
/// runs). `Some`: the answer instead of the request, for any protocol.
pub fn access_before_body(x: &mut Exchange) -> Option<Answer> {
    use crate::exchange::access::{self, Verdict};
    if !access::pending(x) {
        return None;
    }
    match access::run(x, true) {
        Verdict::Route | Verdict::ToPool => None,
        Verdict::Delay(d) => {
            x.pending_delay = Some(d);
            None
        }
        Verdict::Answer(r) => Some(Answer::Plugin(response::own(r))),
        Verdict::Failed => Some(Answer::Status(500)),
    }
}

/// Logs a body over a route's `max_body` (the caller answers 413).
pub fn too_large(x: &mut Exchange, n: u64, limit: u64) {
    host::record(
        &x.vhost,
        Some(x.peer),
        log::Level::Error,
        "tamada",
        &format!("request body of {n} bytes is over the limit of {limit} bytes"),
    );
}

/// The pool's answer, back on the connection.
pub fn handled(h: Handled) -> Need {
    done(h.exchange, h.step)
}

/// Hands the exchange to the pool, unless `pool_queue` requests already
/// wait for a thread there (then a quick 503 beats a wait without bound).
pub fn to_pool(mut x: Box<Exchange>, body: PoolBody, link: &Link<'_>) -> Need {
    let queue = link.settings.pool_queue;
    // The route's own threads (`pool: N`), else the shared pool: the
    // route the request is at, or the first its path matches.
    let route_pool = match x.route.and_then(|i| x.vhost.routes.get(i)) {
        Some(r) if r.matches(x.path()) => r.pool.as_ref().map(|p| p.0.clone()),
        _ => x.vhost.pool_for(x.path()).cloned(),
    };
    let pool = route_pool.as_ref().unwrap_or(link.pool);
    if pool.requests_waiting() >= queue {
        let msg = format!("{queue} requests already wait for a pool thread (pool_queue): 503");
        host::record(&x.vhost, Some(x.peer), log::Level::Error, "tamada", &msg);
        x.error = Some(msg);
        return Need::Respond(x, Answer::Busy);
    }
    let (back, wake) = (link.owner.back(), link.owner.wake());
    let submit_to = pool.clone();
    let pool = pool.clone();
    let shape = link.shape;
    submit_to.submit_request(Box::new(move || {
        pool.request_started();
        let mut x = x;
        let mut body = body;
        let step = match &mut body {
            PoolBody::Mem(m) => route::dispatch(&mut x, &mut BodyIn::Mem(m), Place::Pool, None),
            PoolBody::Pipe(p) => route::dispatch(&mut x, &mut BodyIn::Pipe(p), Place::Pool, None),
        };
        drop(body);
        let mut pulled = None;
        let step = match finish(step) {
            Done::Respond(o) if crate::exchange::filter::any(&x) => {
                let _scope = crate::plugins::call::scope(&x.vhost, x.peer);
                match crate::exchange::filter::response_side(&mut x, o, shape.head_only) {
                    Ok(o) => Done::Respond(o),
                    Err(why) => {
                        host::record_here(log::Level::Error, "tamada", &why);
                        x.error = Some(why);
                        Done::Unanswered
                    }
                }
            }
            d => d,
        };
        let step = match step {
            Done::Respond(mut o) => {
                response::start_stream(
                    &mut o,
                    shape,
                    |p| {
                        let s = StreamPipe::new(wake, pool.clone(), x.vhost.clone(), x.peer);
                        pulled = Some((p, s.clone()));
                        s
                    },
                    |s| {
                        let _scope = crate::plugins::call::scope(&x.vhost, x.peer);
                        response::close_stream(s)
                    },
                );
                Done::Respond(o)
            }
            d => d,
        };
        back(Handled { exchange: x, step });
        // Pull the stream on this thread at once: no second hand-off.
        if let Some((p, s)) = pulled {
            s.pull(p);
        }
    }));
    Need::Pool
}

/// Starts pulling the stream of a response answered on the loop, on the
/// pool (a stream's `read` may block), or closes it when it will not be
/// sent.
pub fn start_stream(o: &mut Owned, x: &Exchange, link: &Link<'_>) {
    let pool = link.pool.clone();
    response::start_stream(
        o,
        link.shape,
        |p| {
            let s = StreamPipe::new(link.owner.wake(), pool.clone(), x.vhost.clone(), x.peer);
            s.start(p);
            s
        },
        |s| response::close_on_pool(s, &pool, &x.vhost, x.peer),
    );
}
