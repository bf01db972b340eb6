//! Test plugin `place`: says where it ran, so tests can check placement
//! (SDK 1.1): the thread's name (`loop-N` or `pool-N`), whether the call
//! was inline, and the body it read.
//!
//! Options: `placement` (`inline` or `pool`, default pool), `defer`
//! (answer `defer` when inline), `sleep_ms` (sleep before answering; only
//! ever on the pool), `block_ms` (sleep wherever it runs: a handler that
//! wrongly blocks its loop), `decline`, `tag`.

use serde::Deserialize;
use std::io::Read;
use tamada_sdk::prelude::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Place {
    #[serde(default)]
    placement: Option<String>,
    #[serde(default)]
    defer: bool,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    decline: bool,
    /// Attach a note `placed: <thread>` (SDK 1.1 notes).
    #[serde(default)]
    note: bool,
    /// Sleep this long wherever it runs, inline too (a handler that
    /// wrongly blocks its event loop).
    #[serde(default)]
    block_ms: u64,
    /// Sleep this long in work handed to `Request::offload` (SDK 1.2).
    #[serde(default)]
    offload_ms: u64,
    /// Answer this many KiB of shared bytes (SDK 1.2 `Body::shared`):
    /// `0123456789abcdef` repeated.
    #[serde(default)]
    shared_kib: usize,
    #[serde(skip)]
    shared: std::sync::OnceLock<std::sync::Arc<[u8]>>,
}

/// The OS thread's name (a cdylib's own `std` does not know the server's
/// thread names).
fn thread_name() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

impl Handler for Place {
    fn placement(&self) -> Placement {
        match self.placement.as_deref() {
            Some("inline") => Placement::Inline,
            _ => Placement::Pool,
        }
    }

    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        if self.decline {
            return Outcome::Decline;
        }
        if self.defer && req.is_inline() {
            return req.defer();
        }
        if self.shared_kib > 0 {
            let n = self.shared_kib;
            let bytes = self
                .shared
                .get_or_init(|| b"0123456789abcdef".repeat(64 * n).into())
                .clone();
            res.status(200)
                .header("content-type", "text/plain")
                .body(bytes);
            return Outcome::Done;
        }
        if self.offload_ms > 0 {
            match req.offloaded::<String>() {
                Some(Ok(t)) => {
                    res.status(200)
                        .body(format!("offloaded to {t}, answered on {}\n", thread_name()));
                    return Outcome::Done;
                }
                Some(Err(_)) => {
                    res.status(504);
                    return Outcome::Done;
                }
                None => {
                    let ms = self.offload_ms;
                    return req.offload(std::time::Duration::from_secs(10), move || {
                        std::thread::sleep(std::time::Duration::from_millis(ms));
                        thread_name()
                    });
                }
            }
        }
        if self.block_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.block_ms));
        }
        if self.sleep_ms > 0 && !req.is_inline() {
            std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
        }
        let mut body = Vec::new();
        let read = req.body().read_to_end(&mut body);
        let noted = self.note && req.note("placed", &thread_name());
        let host = format!(
            "server={} sdk={:?} notes={} draining={} noted={noted}",
            tamada_sdk::host::server().unwrap_or("-"),
            tamada_sdk::host::sdk_version(),
            tamada_sdk::host::has(tamada_sdk::host::Ability::Notes),
            tamada_sdk::host::draining(),
        );
        res.status(200)
            .header("content-type", "text/plain")
            .body(format!(
                "tag={} thread={} inline={} body={} path={}{} {host}\n",
                self.tag,
                thread_name(),
                req.is_inline(),
                String::from_utf8_lossy(&body),
                req.path(),
                match read {
                    Ok(_) => String::new(),
                    Err(e) => format!(" error={e}"),
                }
            ));
        Outcome::Done
    }
}

/// The filter side of `place` (SDK 1.2), for the filter phase's tests:
/// `mark` adds `x-mark: <mark>` (and says what body it saw:
/// `x-body: kind len`), `upper` upper-cases the body in 7-byte steps,
/// `panic: head` panics on the response side, `panic: body` in the
/// transform after `after` bytes, `request_header` sets `x-filtered: 1`
/// on the request before the handler.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Mark {
    #[serde(default)]
    mark: String,
    #[serde(default)]
    upper: bool,
    #[serde(default)]
    panic: String,
    #[serde(default)]
    after: usize,
    #[serde(default)]
    request_header: bool,
    /// Remove this request header field before the handler.
    #[serde(default)]
    drop_request_header: String,
}

struct Upper {
    seen: usize,
    panic_after: Option<usize>,
}

impl tamada_sdk::filter::BodyFilter for Upper {
    fn data(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        self.seen += input.len();
        if let Some(n) = self.panic_after
            && self.seen > n
        {
            panic!("the body filter fell over after {n} bytes");
        }
        for piece in input.chunks(7) {
            out.extend(piece.iter().map(u8::to_ascii_uppercase));
        }
        Ok(())
    }
}

impl tamada_sdk::filter::Filter for Mark {
    fn request(&self, _req: &Request, edit: &mut tamada_sdk::filter::RequestEdit) {
        if self.request_header {
            edit.set_header("x-filtered", "1");
        }
        if !self.drop_request_header.is_empty() {
            edit.remove_header(&self.drop_request_header);
        }
    }

    fn response(
        &self,
        _req: &Request,
        head: &mut tamada_sdk::filter::ResponseHead,
    ) -> tamada_sdk::filter::Action {
        if self.panic == "head" {
            panic!("the filter fell over");
        }
        if !self.mark.is_empty() {
            let kind = format!("{:?} {:?}", head.body_kind(), head.body_len());
            head.append_header("x-mark", &self.mark);
            head.set_header("x-body", kind);
        }
        if self.upper || self.panic == "body" {
            return tamada_sdk::filter::Action::Transform(Box::new(Upper {
                seen: 0,
                panic_after: (self.panic == "body").then_some(self.after),
            }));
        }
        tamada_sdk::filter::Action::Keep
    }
}

tamada_sdk::export_plugin!(
    name: "place",
    new: |o: &Options| o.parse::<Place>(),
    filter: |o: &Options| o.parse::<Mark>(),
);
