//! Routing: offers a request to the vhost's routes whose prefix matches,
//! longest first, and calls each handler where it may run.
//!
//! `dispatch` runs in two places. On the event loop (`Place::Loop`) it
//! calls the handlers that declared themselves inline, as long as the
//! request body is in memory; the first handler that must run on the pool
//! (a 1.0 plugin, one not declared inline, or one that answered `Defer`)
//! stops it with `Step::ToPool`, and the exchange moves to the pool, which
//! calls `dispatch` again from that same route (`Place::Pool`, where every
//! handler may run). A decline passes the request to the next route; an
//! internal redirect starts over with the new path as a GET without a
//! body; nothing left answers 404.

pub use crate::exchange::Exchange;
use crate::exchange::access;
use crate::exchange::body::{BodyPipe, MemBody, empty_reader, pipe_reader};
use crate::exchange::view;
use crate::http::request::Framing;
use crate::plugins::Handled;
use crate::plugins::host;
use tamada_sdk::abi::{HandleResultV1, ResponseV1};

/// Where `dispatch` runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Loop,
    Pool,
}

/// The request body as `dispatch` offers it.
pub enum BodyIn<'a> {
    /// In memory (on the loop, or a body that came whole with the head).
    Mem(&'a mut MemBody),
    /// Streamed by the loop through a pipe (on the pool).
    Pipe(&'a BodyPipe),
}

/// How far `dispatch` got.
pub enum Step {
    Respond(ResponseV1),
    /// No route answered: 404, or 500 when `error` is set.
    Unanswered,
    /// A route's `max_body` is below the body's length: 413.
    TooLarge,
    /// A route's `max_in_flight` is reached: 503 with `Retry-After`.
    Busy,
    /// (Loop only) the next handler runs on the pool.
    ToPool,
    /// A 101 and a relay to the plugin's socket.
    Relay(ResponseV1, crate::plugins::Relay),
    /// (Loop only) the handler of route `x.next` waits for a descriptor:
    /// call `dispatch` again with its state when it is ready.
    Wait(crate::plugins::Wait),
}

/// An access rule's delay: the exchange waits on a timer descriptor (the
/// same way a handler waits on its own), then the rule is called again.
fn delay(x: &mut Exchange, d: std::time::Duration) -> Step {
    match access::timer(d) {
        Ok(fd) => {
            use std::os::fd::AsRawFd;
            let raw = fd.as_raw_fd();
            x.timer = Some(fd);
            Step::Wait(crate::plugins::Wait {
                fd: raw,
                read: true,
                write: false,
                timeout: d + std::time::Duration::from_secs(1),
                state: crate::plugins::WaitState::none(),
            })
        }
        Err(e) => {
            let msg = format!("cannot make a timer for an access rule's delay: {e}");
            host::record_here(log::Level::Error, "tamada", &msg);
            x.error = Some(msg);
            Step::Unanswered
        }
    }
}

/// Offers the exchange to its routes from `x.next` on; `resume` goes to
/// the first handler called (the one that waited).
pub fn dispatch(
    x: &mut Exchange,
    body: &mut BodyIn<'_>,
    place: Place,
    mut resume: Option<crate::plugins::Resume>,
) -> Step {
    let vhost = x.vhost.clone();
    let _scope = crate::plugins::call::scope(&vhost, x.peer);
    loop {
        // The access rules first (again after a rewrite or an internal
        // redirect); on the loop they may send the rest to the pool, or
        // wait on a timer for a rule that asked for a delay.
        x.timer = None;
        if let Some(d) = x.pending_delay.take() {
            if place == Place::Loop {
                return delay(x, d);
            }
            std::thread::sleep(d);
        }
        if access::pending(x) {
            if x.access_woke {
                // The wake-up was the access rule's timer, not a handler's.
                resume = None;
            }
            match access::run(x, place == Place::Loop) {
                access::Verdict::Route => {}
                access::Verdict::Answer(r) => return Step::Respond(r),
                access::Verdict::ToPool => return Step::ToPool,
                access::Verdict::Failed => return Step::Unanswered,
                access::Verdict::Delay(d) => return delay(x, d),
            }
        }
        crate::exchange::filter::request_side(x);
        let Some(i) = (x.next..vhost.routes.len()).find(|&i| vhost.routes[i].matches(x.path()))
        else {
            return Step::Unanswered;
        };
        let route = &vhost.routes[i];
        x.route = Some(i);
        let inline = place == Place::Loop;
        if inline && !route.handler.inline {
            x.next = i;
            return Step::ToPool;
        }
        // Each route's own max_body applies to the body it is offered (a
        // route that declines must not let a larger body through to a
        // stricter one).
        if x.with_body() {
            let too_large = match (&*body, x.head.framing) {
                (_, Framing::Length(n)) => n > route.max_body,
                (BodyIn::Mem(m), _) => m.len() > route.max_body,
                (BodyIn::Pipe(p), _) => {
                    p.set_limit(route.max_body);
                    false
                }
            };
            if too_large {
                return Step::TooLarge;
            }
        }
        // A route with `max_in_flight` counts the requests its handler
        // serves (a request keeps its slot across waits and the pool).
        if let Some((max, count)) = &route.in_flight
            && !x
                .route_slot
                .as_ref()
                .is_some_and(|s| std::sync::Arc::ptr_eq(&s.0, count))
        {
            x.route_slot = None;
            if count.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= *max {
                count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                let msg = format!(
                    "route {}: {max} requests already in flight (max_in_flight): 503",
                    route.prefix
                );
                host::record_here(log::Level::Warn, "tamada", &msg);
                x.error = Some(msg);
                return Step::Busy;
            }
            x.route_slot = Some(crate::exchange::RouteSlot(count.clone()));
        }
        let reader = match (x.with_body(), &mut *body) {
            (false, _) => empty_reader(),
            (true, BodyIn::Mem(m)) => m.reader(),
            (true, BodyIn::Pipe(p)) => pipe_reader(p),
        };
        let headers = view::headers(&x.head);
        let req = view::request(x, &headers, &reader);
        let handler = &route.handler;
        let resumed = resume.take();
        let tls = view::tls(x);
        let (r, notes) = host::with_views(tls.as_ref(), x.user.as_ref(), view::version(x), || {
            crate::plugins::watchdog::in_route(&route.prefix, || {
                host::collect_notes(|| handler.handle(&req, inline, resumed))
            })
        });
        // A deferred call's notes go with its discarded answer.
        if !matches!(r, Handled::Defer) {
            x.notes.extend(notes);
        }
        let r = match r {
            Handled::Wait(w) if inline => {
                x.next = i;
                return Step::Wait(w);
            }
            Handled::Wait(w) => {
                drop(w);
                HandleResultV1::Error("answered Wait on the pool".into())
            }
            Handled::Defer if inline => {
                x.next = i;
                return Step::ToPool;
            }
            Handled::Defer => HandleResultV1::Error("answered Defer on the pool".into()),
            Handled::Relay(resp, Err(why)) => {
                crate::exchange::response::drop_response(resp);
                HandleResultV1::Error(why.into())
            }
            Handled::Relay(resp, Ok(relay)) => {
                if resp.status == 101
                    && x.head.framing == Framing::None
                    && x.head.version_minor == 1
                {
                    handler.watch(false);
                    return Step::Relay(resp, relay);
                }
                // The socket closes here, with the refused answer; the
                // body's descriptors and stream are given back too.
                drop(relay);
                crate::exchange::response::drop_response(resp);
                HandleResultV1::Error(
                    "a relay needs status 101 and an HTTP/1.1 request without a body".into(),
                )
            }
            Handled::V1(r) => r,
        };
        let plugin = handler.tag;
        if handler.watch(matches!(r, HandleResultV1::Decline)) {
            host::record_here(
                log::Level::Error,
                "tamada",
                &format!(
                    "route {}: plugin `{plugin}` declined all of the first {} requests it was given; if it only logs, name it under `loggers:` (a plugin built with SDK 1.1 can declare its roles)",
                    route.prefix,
                    crate::plugins::DECLINE_WATCH
                ),
            );
        }
        match r {
            HandleResultV1::Respond(resp) => return Step::Respond(resp),
            HandleResultV1::Decline => {
                x.route_slot = None;
                x.next = i + 1;
            }
            HandleResultV1::Error(msg) => {
                let what = format!(
                    "failed on {} {}: {}",
                    x.head.method,
                    x.head.target,
                    msg.as_str()
                );
                // The record is tagged with the plugin already; the access
                // log's `error` names it.
                host::record_here(log::Level::Error, plugin, &what);
                x.error = Some(format!("plugin `{plugin}` {what}"));
                return Step::Unanswered;
            }
            HandleResultV1::Redirect(to) => {
                if let Err(msg) = x.retarget(to.as_str(), plugin, true) {
                    host::record_here(log::Level::Error, plugin, &msg);
                    x.error = Some(msg);
                    return Step::Unanswered;
                }
            }
        }
    }
}
