//! One request exchange: from a parsed head to the log line, whatever
//! protocol carries it.

pub mod access;
pub mod body;
pub mod filter;
pub mod health;
pub mod https;
pub mod logphase;
pub mod realip;
pub mod response;
pub mod route;
pub mod run;
pub mod stream;
pub mod view;

use crate::config::runtime::Vhost;

/// Wakes whoever drives an exchange (its connection, on its loop): a pool
/// thread made room in a body pipe, filled a stream pipe, or wants
/// `100 Continue` sent. Made by the protocol; the exchange knows no loop.
pub type Wake = Arc<dyn Fn() + Send + Sync>;
use crate::exchange::response::Owned;
use crate::http::request::RequestHead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// One request on its way through the routes, and later through the log
/// phase. Owned, so that it can move to the pool and back.
pub struct Exchange {
    pub head: RequestHead,
    pub vhost: Arc<Vhost>,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub start: Instant,
    pub start_unix_us: i64,
    /// The path and query after internal redirects (`None`: the client's).
    pub redirected: Option<(String, Option<String>)>,
    pub redirects: u8,
    /// The next route to offer the request to.
    pub next: usize,
    /// The route being (or last) offered the request.
    pub route: Option<usize>,
    /// Why it failed, for the 500 and the log.
    pub error: Option<String>,
    /// Bytes received, head and body.
    pub bytes_received: u64,
    /// Notes the handlers attached (SDK 1.1), for the loggers.
    pub notes: Vec<(String, String)>,
    /// The request came over HTTPS: its connection's TLS, or a trusted
    /// TLS-terminating proxy's word (`https.rs`).
    pub https: bool,
    /// What its connection's TLS negotiated, on a TLS connection.
    pub tls: Option<Arc<crate::transport::tls::TlsInfo>>,
    /// An internal redirect made it a GET without the client's body (an
    /// access rule's rewrite keeps both).
    pub as_get: bool,
    /// The next access rule to run (`access.rs`); past the last, routing.
    pub access_next: usize,
    /// The user an access rule established.
    pub user: Option<crate::plugins::host::AuthUser>,
    /// The access rules that passed this exchange: told when it ends.
    pub access_passed: Vec<std::sync::Arc<crate::plugins::access::AccessInstance>>,
    /// The rule at `access_next` asked for a delay: its next call says so.
    pub access_woke: bool,
    /// A delay asked for before the body was read, still to wait.
    pub pending_delay: Option<std::time::Duration>,
    /// The timer an access rule's delay waits on.
    pub timer: Option<std::os::fd::OwnedFd>,
    /// The `max_in_flight` count of the route whose handler has it.
    pub route_slot: Option<RouteSlot>,
    /// The response filters chosen for the path (`filter.rs`), once
    /// their request side ran.
    pub filters: Option<crate::config::runtime::Filters>,
    /// The request's header fields as the client sent them, when a
    /// filter's request side changed them.
    pub client_headers: Option<Vec<(String, Vec<u8>)>>,
    /// The response side of the filters ran (it runs once).
    pub filtered: bool,
}

/// A request counted against a route's `max_in_flight`, until dropped.
pub struct RouteSlot(pub Arc<std::sync::atomic::AtomicUsize>);

impl Drop for RouteSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Drop for Exchange {
    /// The rules that passed this exchange release what they counted
    /// (requests in flight), however it ended.
    fn drop(&mut self) {
        if self.access_passed.is_empty() {
            return;
        }
        let rules = std::mem::take(&mut self.access_passed);
        let empty = body::empty_reader();
        let headers = view::headers(&self.head);
        let req = view::request(self, &headers, &empty);
        for r in &rules {
            r.finish(&req);
        }
    }
}

/// What an exchange learns from the connection that carries it.
pub struct Carrier<'a> {
    pub local: SocketAddr,
    /// The socket's peer (a trusted proxy's client may stand for it).
    pub peer: SocketAddr,
    pub tls: Option<Arc<crate::transport::tls::TlsInfo>>,
    /// A PROXY protocol v2 header said the client came over TLS.
    pub proxy_ssl: bool,
    pub trusted: &'a [crate::exchange::realip::Cidr],
}

impl Exchange {
    /// The exchange of a request that arrived on `c`, whatever the
    /// protocol: the client's address and scheme as a trusted proxy
    /// reports them, the connection's TLS view.
    pub fn arriving(
        head: RequestHead,
        vhost: Arc<Vhost>,
        c: Carrier<'_>,
        started: Instant,
    ) -> Box<Exchange> {
        let peer = realip::client(c.trusted, c.peer, &head);
        let mut x = Box::new(Exchange::new(head, vhost, c.local, peer, started));
        x.https =
            c.tls.is_some() || c.proxy_ssl || realip::forwarded_https(c.trusted, c.peer, &x.head);
        x.tls = c.tls;
        x
    }

    pub fn new(
        head: RequestHead,
        vhost: Arc<Vhost>,
        local: SocketAddr,
        peer: SocketAddr,
        start: Instant,
    ) -> Self {
        let bytes_received = head.head_len as u64;
        Exchange {
            start_unix_us: crate::clock::unix_us_at(crate::clock::wall())
                - crate::clock::now()
                    .saturating_duration_since(start)
                    .as_micros() as i64,
            head,
            vhost,
            local,
            peer,
            start,
            redirected: None,
            redirects: 0,
            next: 0,
            route: None,
            error: None,
            bytes_received,
            notes: Vec::new(),
            https: false,
            tls: None,
            as_get: false,
            access_next: 0,
            user: None,
            access_passed: Vec::new(),
            access_woke: false,
            pending_delay: None,
            timer: None,
            route_slot: None,
            filters: None,
            client_headers: None,
            filtered: false,
        }
    }
    /// Serves `to` (a local path with an optional `?query`) instead, by
    /// `by`'s word: an internal redirect (`as_get`: the GET without the
    /// body that RFC 3875 asks for) or an access rule's rewrite (method and
    /// body stay). Both count against [`access::MAX_REDIRECTS`], and the
    /// new path goes through the access rules and routing from the start.
    /// `Err` says why not (a loop, a bad path), for the error log.
    pub fn retarget(&mut self, to: &str, by: &str, as_get: bool) -> Result<(), String> {
        use access::MAX_REDIRECTS;
        self.redirects += 1;
        if self.redirects > MAX_REDIRECTS {
            return Err(format!(
                "more than {MAX_REDIRECTS} rewrites and internal redirects (a loop?), last by `{by}` to {to}"
            ));
        }
        let (p, q) = match to.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (to, None),
        };
        let p = crate::http::path::normalise(p)
            .map_err(|_| format!("`{by}` sent the request to an invalid path `{to}`"))?;
        self.redirected = Some((p, q));
        self.as_get |= as_get;
        self.route_slot = None;
        self.filters = None;
        self.access_next = 0;
        self.next = 0;
        Ok(())
    }
    pub fn path(&self) -> &str {
        match &self.redirected {
            Some((p, _)) => p,
            None => &self.head.path,
        }
    }
    pub fn query(&self) -> Option<&str> {
        match &self.redirected {
            Some((_, q)) => q.as_deref(),
            None => self.head.query.as_deref(),
        }
    }
    /// After an internal redirect the request is a GET (RFC 3875 6.2.2).
    pub fn method(&self) -> &str {
        if self.as_get {
            "GET"
        } else {
            &self.head.method
        }
    }
    /// Whether the request still has the client's body.
    fn with_body(&self) -> bool {
        !self.as_get
    }
}

/// What the pool sends back.
pub struct Handled {
    pub exchange: Box<Exchange>,
    pub step: Done,
}

pub enum Done {
    Respond(Owned),
    Unanswered,
    TooLarge,
    /// A route's `max_in_flight` is reached: 503 with `Retry-After`.
    Busy,
    /// A 101, then a relay.
    Relay(Owned, crate::plugins::Relay),
}

/// The answer for a connection that is gone: its resources are freed and
/// the exchange logged as incomplete.
pub fn drop_handled(h: Handled) {
    let status = match &h.step {
        Done::Respond(o) => o.status,
        Done::TooLarge => 413,
        Done::Busy => 503,
        Done::Unanswered => 404,
        Done::Relay(..) => 101,
    };
    match h.step {
        Done::Respond(o) | Done::Relay(o, _) => response::drop_owned(o),
        _ => {}
    }
    logphase::run(
        h.exchange,
        logphase::Outcome {
            status,
            completed: false,
            error: Some("the client left before the response".into()),
            ..Default::default()
        },
    );
}
