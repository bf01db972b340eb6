//! Why an attempt failed, and what follows: the next upstream, a fresh
//! connection to the same one, or the answer (502, 504, 400) with one line
//! in the error log.

use super::{Call, Stage};
use crate::Proxy;
use crate::note;
use crate::source::ReqBody;
use tamada_gateway::conn::idempotent;
use tamada_gateway::exchange as ex;
use tamada_sdk::prelude::*;

/// Why one attempt failed.
pub(crate) enum Fail {
    /// A pooled connection the upstream had closed: a new one.
    Stale,
    /// The connect failed.
    Connect(String),
    /// `connect_timeout` passed.
    ConnectTimeout,
    /// Sending or reading failed before any response byte.
    Io(String),
    /// `read_timeout` or `send_timeout` passed.
    Timeout(String),
    /// The upstream sent something that is not a response.
    Bad(String),
    /// The body failed after the head.
    Body(String),
    /// The client's body could not be read (too slow, gone).
    Client(String),
}

impl Proxy {
    /// What a failure of the connect or send stage means.
    pub(crate) fn send_failed(&self, f: ex::Fail) -> Fail {
        match f {
            ex::Fail::Stale => Fail::Stale,
            ex::Fail::Connect(e) => Fail::Connect(e.to_string()),
            ex::Fail::ConnectTimeout => Fail::ConnectTimeout,
            ex::Fail::SendTimeout => Fail::Timeout(format!(
                "the upstream took no request for {:?} (send_timeout)",
                self.s.send_timeout
            )),
            ex::Fail::Io(e) => Fail::Io(format!("sending the request: {e}")),
            ex::Fail::Source(e) => Fail::Client(e.to_string()),
        }
    }

    /// An attempt failed: `None` to try again (the stage is then `None`),
    /// else the answer.
    pub(crate) fn failed<B: ReqBody>(
        &self,
        call: &mut Call<B>,
        req: &Request,
        res: &mut ResponseBuilder,
        f: Fail,
    ) -> Option<Outcome> {
        let i = call.i;
        let label = self.ups.list[i].label.clone();
        call.stage = Stage::None;
        call.uncount();
        let give_up = |call: &mut Call<B>, res: &mut ResponseBuilder, status: u16, why: String| {
            log::error!("{why}");
            call.labels.push(label.clone());
            note(req, &call.labels, status, call.t0.elapsed());
            Some(self.error(res, status, &why))
        };
        match f {
            Fail::Stale if !call.source.body.replayable() => give_up(
                call,
                res,
                502,
                format!(
                    "{label}: a pooled connection closed under a request whose body (over 64 KiB) cannot be sent again"
                ),
            ),
            Fail::Stale => {
                // Not the upstream's fault: a fresh connection to the same
                // one, the body sent again.
                log::debug!("{label}: a pooled connection was closed; a new one");
                call.fresh_for = Some(i);
                if !call.tried.contains(&i) {
                    call.tried.push(i);
                }
                None
            }
            Fail::Connect(e) => {
                let why = format!("connecting to {label}: {e}");
                log::error!("{why}");
                self.ups.failed(i, &why);
                call.labels.push(label);
                call.tried.push(i);
                call.last = (502, why);
                None
            }
            Fail::Io(e) => {
                let why = format!("{label}: {e}");
                log::error!("{why}");
                self.ups.failed(i, &why);
                call.labels.push(label);
                call.tried.push(i);
                call.last = (502, why);
                // Only a request that may run twice, with nothing of a
                // body read from the client yet, goes to the next one.
                if !idempotent(req.method()) || !call.source.body.replayable() {
                    note(req, &call.labels, 502, call.t0.elapsed());
                    return Some(self.error(res, 502, &call.last.1));
                }
                None
            }
            Fail::ConnectTimeout => {
                let why = format!(
                    "connecting to {label}: timed out after {:?} (connect_timeout)",
                    self.s.connect_timeout
                );
                log::error!("{why}");
                self.ups.failed(i, &why);
                call.labels.push(label);
                call.tried.push(i);
                call.last = (504, why);
                None
            }
            Fail::Timeout(why) => {
                let why = format!("{label}: {why}");
                self.ups.failed(i, &why);
                give_up(call, res, 504, why)
            }
            Fail::Bad(why) => {
                let why = format!("{label}: {why}");
                self.ups.failed(i, &why);
                give_up(call, res, 502, why)
            }
            Fail::Body(why) => give_up(call, res, 502, format!("{label}: {why}")),
            Fail::Client(why) => {
                log::info!("{} {}: the request body: {why}", req.method(), req.path());
                Some(self.error(res, 400, &why))
            }
        }
    }
}
