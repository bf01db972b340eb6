//! The connection state machine against scripted I/O: reads split at
//! every byte, pipelined heads, stalled writes, and a pool handler whose
//! answer comes back as a message. The handlers are plugins built in this
//! test with the SDK's own export machinery (the `.so` path is covered by
//! the integration tests).

use super::{Conn, Next};
use crate::config::Settings;
use crate::config::runtime::{Group, Route, Runtime, Site, Vhost};
use crate::net::cx::{ConnMsg, Cx, LoopHandle, Msg};
use crate::plugins::{Plugin, PluginInstance};
use crate::pool::Pool;
use crate::transport::{Io, Transport};
use abi_stable::std_types::{RResult, RStr, RString};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, OnceLock};
use tamada_sdk::abi::{CreateCtxV1, Instance, PluginV1, RoleV1};
use tamada_sdk::plugin::__private as sdk;
use tamada_sdk::prelude::*;
use tamada_sdk::{Interest, Woke};

/// Scripted I/O: reads come in the given pieces, then `Blocked` (or the
/// end of the stream); writes take at most `write_cap` bytes per call and
/// block after `write_budget` bytes until it is raised.
#[derive(Default)]
struct Script {
    reads: VecDeque<Vec<u8>>,
    eof: bool,
    out: Vec<u8>,
    writes: usize,
    write_cap: Option<usize>,
    write_budget: Option<usize>,
}

impl Transport for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Io> {
        match self.reads.pop_front() {
            Some(mut piece) => {
                let n = piece.len().min(buf.len());
                buf[..n].copy_from_slice(&piece[..n]);
                if n < piece.len() {
                    piece.drain(..n);
                    self.reads.push_front(piece);
                }
                Ok(Io::Ready(n))
            }
            None if self.eof => Ok(Io::Ready(0)),
            None => Ok(Io::Blocked),
        }
    }
    fn write(&mut self, data: &[u8], _more: bool) -> io::Result<Io> {
        let mut n = data.len().min(self.write_cap.unwrap_or(usize::MAX));
        if let Some(b) = self.write_budget.as_mut() {
            n = n.min(*b);
            *b -= n;
        }
        if n == 0 {
            return Ok(Io::Blocked);
        }
        self.out.extend_from_slice(&data[..n]);
        self.writes += 1;
        Ok(Io::Ready(n))
    }
    fn sendfile(&mut self, _: BorrowedFd<'_>, _: &mut u64, _: u64) -> io::Result<Io> {
        Err(io::Error::other("no files in these tests"))
    }
    fn shutdown_write(&mut self) {}
}

/// `GET /x` -> `hi /x`, or a 20,000-byte body under `/big`; inline or on
/// the pool as the options say.
struct Hi {
    inline: bool,
}

impl Handler for Hi {
    fn placement(&self) -> Placement {
        if self.inline {
            Placement::Inline
        } else {
            Placement::Pool
        }
    }
    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        use std::io::Read;
        if req.path().starts_with("/wait/") {
            return wait(req, res);
        }
        if req.path() == "/relay" {
            let (mine, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
            mine.set_nonblocking(true).expect("nonblocking");
            set_peer(req.path(), theirs);
            res.status(101).header("upgrade", "x").relay(
                mine,
                b"hello from relay".to_vec(),
                std::time::Duration::from_secs(5),
            );
            return Outcome::Done;
        }
        if req.path().starts_with("/pool/slow") {
            // Reads its body in small pieces, slowly: the pipe stays
            // nearly full and the loop's buffer fills up behind it.
            let mut r = req.body();
            let (mut total, mut buf) = (0usize, [0u8; 1000]);
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
                if total % 50_000 < 1000 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
            res.header("content-type", "text/plain")
                .body(format!("len {total}"));
            return Outcome::Done;
        }
        let mut body = String::new();
        let _ = req.body().read_to_string(&mut body);
        if req.path().starts_with("/big") {
            res.header("content-type", "application/octet-stream")
                .body(vec![b'z'; 20_000]);
        } else {
            res.header("content-type", "text/plain")
                .body(format!("hi {}{body}", req.path()));
        }
        Outcome::Done
    }
}

/// The far ends of the sockets the test handlers wait on or relay to, by
/// request path (tests run side by side).
static PEERS: std::sync::Mutex<Option<HashMap<String, std::os::unix::net::UnixStream>>> =
    std::sync::Mutex::new(None);

fn set_peer(path: &str, s: std::os::unix::net::UnixStream) {
    let mut g = PEERS.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new)
        .insert(path.to_owned(), s);
}

fn take_peer(path: &str) -> std::os::unix::net::UnixStream {
    let mut g = PEERS.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new)
        .remove(path)
        .expect("the handler's far end")
}

/// `/wait/...`: waits on a socket (`/wait/short` for 50 ms), then answers
/// with what it read there, or that its time ran out.
fn wait(req: &Request, res: &mut ResponseBuilder) -> Outcome {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mine = match req.resume::<std::os::unix::net::UnixStream>() {
        None => {
            let (mine, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
            mine.set_nonblocking(true).expect("nonblocking");
            set_peer(req.path(), theirs);
            mine
        }
        Some(mine) => mine,
    };
    match req.woke() {
        Woke::TimedOut => {
            res.body("timed out");
            Outcome::Done
        }
        Woke::Ready => {
            let mut b = [0u8; 16];
            let n = (&mine).read(&mut b).unwrap_or(0);
            res.body(format!("woke {}", String::from_utf8_lossy(&b[..n])));
            Outcome::Done
        }
        Woke::First => {
            let t = if req.path().ends_with("/short") {
                50
            } else {
                5000
            };
            let fd = mine.as_raw_fd();
            req.wait(
                fd,
                Interest::Read,
                std::time::Duration::from_millis(t),
                mine,
            )
        }
    }
}

fn construct(o: &Options) -> Result<Box<dyn Handler>, String> {
    Ok(Box::new(Hi {
        inline: o.yaml().contains("inline"),
    }))
}

extern "C" fn create(options: RStr<'_>, ctx: &CreateCtxV1<'_>) -> RResult<Instance, RString> {
    sdk::create(options, ctx, construct)
}

extern "C" fn create_ext(
    options: RStr<'_>,
    ctx: &CreateCtxV1<'_>,
) -> RResult<Instance, tamada_sdk::abi::OptionErrorV1> {
    sdk::create_ext(options, ctx, construct)
}

static TABLE: PluginV1 = sdk::table("hi", "0", create);
static EXT: tamada_sdk::abi::ExtV1 = sdk::ext_table(create_ext, 0);

fn plugin() -> Arc<Plugin> {
    static P: OnceLock<Arc<Plugin>> = OnceLock::new();
    P.get_or_init(|| {
        // As loading does: the host's SDK 1.1 services (waits, relays).
        (EXT.init)(&crate::plugins::host::HOST_EXT_V1);
        Arc::new(Plugin {
            name: "hi".into(),
            version: "0".into(),
            sdk: (1, 0),
            file: "test".into(),
            table: &TABLE,
            lifecycle: None,
            ext: Some(&EXT),
            tls_init: None,
            user_init: None,
            proto_init: None,
            access: None,
            filter: None,
        })
    })
    .clone()
}

fn bind() -> SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}

/// One vhost: `/pool/` on the pool, everything else inline.
fn runtime() -> Runtime {
    let mut v = Vhost {
        name: "a".into(),
        file: "a.yaml".into(),
        document_root: "/nonexistent".into(),
        cgi_bin: String::new(),
        log_dir: String::new(),
        config_file: "a.yaml".into(),
        max_body: 1 << 20,
        tls_port: None,
        https_redirect: false,
        hsts: None,
        routes: Vec::new(),
        loggers: Vec::new(),
        pool_loggers: false,
        access: Vec::new(),
        filters: Arc::new([]),
    };
    for (prefix, yaml) in [("/pool/", "pool"), ("/", "inline")] {
        let inst = PluginInstance::create(&plugin(), yaml, RoleV1::Handler, v.raw(), prefix)
            .expect("instance");
        v.routes.push(Route {
            prefix: prefix.into(),
            max_body: 1 << 20,
            buffering: true,
            handler: Arc::new(inst),
            in_flight: None,
            filters: None,
            pool: None,
        });
    }
    let mut group = Group {
        vhosts: vec![Arc::new(v)],
        names: HashMap::new(),
        default: 0,
        explicit_default: false,
    };
    group.names.insert("a".into(), 0);
    let mut site = Site::default();
    site.groups.insert(bind().ip(), group);
    Runtime {
        settings: Settings::default(),
        sites: BTreeMap::from([(bind(), site)]),
        registry: Arc::default(),
    }
}

struct Harness {
    rt: Runtime,
    pool: Arc<Pool>,
    handle: LoopHandle,
    rx: std::sync::mpsc::Receiver<Msg>,
    /// A real epoll set and the loop's registry of waited descriptors, so
    /// waits and relays register as on a loop.
    poll: std::cell::RefCell<mio::Poll>,
    watched: std::cell::RefCell<crate::net::watch::Watched>,
}

impl Harness {
    fn new() -> Self {
        let (handle, rx, poll) = LoopHandle::for_test();
        Harness {
            rt: runtime(),
            pool: Pool::start(2),
            handle,
            rx,
            poll: std::cell::RefCell::new(poll),
            watched: Default::default(),
        }
    }

    fn conn(&self, s: Script) -> Conn<Script> {
        Conn::new(
            s,
            1,
            bind(),
            bind(),
            "127.0.0.1:5000".parse().unwrap(),
            false,
        )
    }

    /// Drives until the connection waits with nothing pending, answering
    /// the pool's messages as the loop would.
    fn run(&self, c: &mut Conn<Script>) -> Next {
        loop {
            // Bytes still scripted are a readable edge to come.
            if !c.sock.io.reads.is_empty() || c.sock.io.eof {
                c.sock.readable = true;
            }
            let poll = self.poll.borrow();
            let mut cx = Cx::for_test(&self.rt, &self.pool, &self.handle)
                .with_registry(poll.registry(), &self.watched);
            let n = c.drive(&mut cx);
            drop(poll);
            if n == Next::Close {
                return n;
            }
            if n == Next::Wait && c.parked_fd().is_some() {
                // A handler waits: an event for its descriptor wakes it
                // (as the loop's poll would), else the turn ends.
                let mut events = mio::Events::with_capacity(8);
                let _ = self
                    .poll
                    .borrow_mut()
                    .poll(&mut events, Some(std::time::Duration::from_millis(50)));
                if events.iter().next().is_none() {
                    return n;
                }
                c.wait_ready();
                continue;
            }
            if n == Next::Wait && c.is_relay() {
                return n;
            }
            let poll = self.poll.borrow();
            let mut cx = Cx::for_test(&self.rt, &self.pool, &self.handle)
                .with_registry(poll.registry(), &self.watched);
            if !c.waits_for_pool() && n == Next::Wait {
                // A body being collected waits for the scripted bytes.
                if c.collects_body() && (!c.sock.io.reads.is_empty() || c.sock.io.eof) {
                    continue;
                }
                return n;
            }
            if n == Next::Again {
                continue;
            }
            // A pool handler runs: wait for its message (briefly while
            // scripted bytes are still to be fed to it).
            let wait = if c.sock.io.reads.is_empty() {
                10_000
            } else {
                10
            };
            match self.rx.recv_timeout(std::time::Duration::from_millis(wait)) {
                Ok(Msg::Conn {
                    ev: ConnMsg::Handled(h),
                    ..
                }) => {
                    let n = c.on_handled(*h, &mut cx);
                    if n == Next::Close {
                        return n;
                    }
                }
                Ok(_) => {}
                Err(_) if !c.sock.io.reads.is_empty() => {}
                Err(_) => panic!("no answer from the pool"),
            }
        }
    }
}

/// Splits a byte string of responses into their bodies.
fn bodies(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out).into_owned();
    let mut rest = text.as_str();
    let mut v = Vec::new();
    while let Some(i) = rest.find("\r\n\r\n") {
        let head = &rest[..i];
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        v.push(rest[i + 4..i + 4 + len].to_owned());
        rest = &rest[i + 4 + len..];
    }
    v
}

const REQ: &[u8] = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn a_request_split_at_every_byte_gets_the_same_answer() {
    let h = Harness::new();
    for split in 1..REQ.len() {
        let mut c = h.conn(Script {
            reads: VecDeque::from([REQ[..split].to_vec(), REQ[split..].to_vec()]),
            ..Script::default()
        });
        // The first piece alone is an incomplete head: nothing is sent.
        c.sock.io.reads.truncate(1);
        assert_eq!(h.run(&mut c), Next::Wait);
        assert!(
            c.sock.io.out.is_empty(),
            "answered a partial head at {split}"
        );
        c.sock.io.reads.push_back(REQ[split..].to_vec());
        c.sock.readable = true;
        assert_eq!(h.run(&mut c), Next::Wait);
        assert_eq!(bodies(&c.sock.io.out), ["hi /one"], "split at {split}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_in_one_write() {
    let h = Harness::new();
    let mut all = Vec::new();
    for p in ["/a", "/b", "/c", "/d"] {
        all.extend_from_slice(format!("GET {p} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    }
    let mut c = h.conn(Script {
        reads: VecDeque::from([all]),
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Wait);
    assert_eq!(bodies(&c.sock.io.out), ["hi /a", "hi /b", "hi /c", "hi /d"]);
    assert_eq!(c.sock.io.writes, 1, "the four responses were not gathered");
}

#[test]
fn pipelined_requests_move_to_the_pool_and_back_in_order() {
    let h = Harness::new();
    let mut all = Vec::new();
    for p in ["/a", "/pool/b", "/c", "/pool/d", "/e"] {
        all.extend_from_slice(format!("GET {p} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    }
    let mut c = h.conn(Script {
        reads: VecDeque::from([all]),
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Wait);
    assert_eq!(
        bodies(&c.sock.io.out),
        ["hi /a", "hi /pool/b", "hi /c", "hi /pool/d", "hi /e"]
    );
}

#[test]
fn a_stalled_writer_resumes_where_it_stopped() {
    let h = Harness::new();
    let mut c = h.conn(Script {
        reads: VecDeque::from([
            b"GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ]),
        write_cap: Some(777),
        write_budget: Some(5000),
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Wait);
    assert!(c.sock.io.out.len() <= 5000);
    assert!(c.is_busy(), "the response is not finished");
    assert!(!c.sock.writable);
    // The socket drains in steps: each writable edge moves it on.
    for _ in 0..10 {
        c.sock.io.write_budget = Some(3000);
        c.sock.writable = true;
        h.run(&mut c);
    }
    let b = bodies(&c.sock.io.out);
    assert_eq!(b.len(), 2);
    assert_eq!(b[0], "z".repeat(20_000));
    assert_eq!(b[1], "hi /after");
}

#[test]
fn a_small_body_split_across_reads_is_collected_then_reaches_a_pool_handler() {
    let h = Harness::new();
    let mut c = h.conn(Script {
        reads: VecDeque::from([
            b"POST /pool/p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhel".to_vec(),
            b"lo ".to_vec(),
            b"world".to_vec(),
        ]),
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Wait);
    assert_eq!(bodies(&c.sock.io.out), ["hi /pool/phello world"]);
}

#[test]
fn a_large_body_split_across_reads_streams_to_a_pool_handler() {
    // Over COLLECT_MAX: spooled to a file, then read on the pool.
    let body: Vec<u8> = (0..70_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let h = Harness::new();
    let mut reads = VecDeque::from([format!(
        "POST /pool/p HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes()]);
    for piece in body.chunks(9_000) {
        reads.push_back(piece.to_vec());
    }
    let mut c = h.conn(Script {
        reads,
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Wait);
    let want = format!("hi /pool/p{}", String::from_utf8_lossy(&body));
    assert_eq!(bodies(&c.sock.io.out), [want]);
}

#[test]
fn a_client_that_closes_mid_body_still_gets_the_answers_before() {
    // A pipelined GET, then a POST whose body never ends: the GET's answer
    // goes out, then the connection closes.
    let h = Harness::new();
    let mut c = h.conn(Script {
        reads: VecDeque::from([b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhalf".to_vec()]),
        eof: true,
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Close);
    assert_eq!(bodies(&c.sock.io.out), ["hi /a"]);
}

#[test]
fn oversized_heads_are_431_and_close() {
    let h = Harness::new();
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..200 {
        big.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(200)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let mut c = h.conn(Script {
        reads: VecDeque::from([big]),
        eof: true,
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Close);
    let text = String::from_utf8_lossy(&c.sock.io.out);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
}

#[test]
fn connection_close_is_the_last_answer() {
    let h = Harness::new();
    let mut c = h.conn(Script {
        reads: VecDeque::from([
            b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"
                .to_vec(),
        ]),
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Close);
    assert_eq!(bodies(&c.sock.io.out), ["hi /a"]);
}

/// Regression (review of the loop core): a request pipelined behind a
/// large response waited for a readiness edge that never came.
#[test]
fn a_request_behind_a_large_response_is_answered_in_the_same_turn() {
    let h = Harness::new();
    let mut c = h.conn(Script {
        reads: VecDeque::from([
            b"GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ]),
        ..Script::default()
    });
    // One drive, as one readable edge: nothing else will wake it.
    let mut cx = Cx::for_test(&h.rt, &h.pool, &h.handle);
    assert_eq!(c.drive(&mut cx), Next::Wait);
    let b = bodies(&c.sock.io.out);
    assert_eq!(b.len(), 2, "the second request was not answered");
    assert_eq!(b[1], "hi /after");
}

/// Regression: a FIN that came with the request was lost (a short read
/// cleared the readable edge), so the connection sat out its idle timeout.
#[test]
fn a_peer_that_closed_after_its_request_is_closed_after_the_answer() {
    let h = Harness::new();
    let mut c = h.conn(Script {
        reads: VecDeque::from([REQ.to_vec()]),
        eof: true,
        ..Script::default()
    });
    c.sock.peer_closed = true;
    let mut cx = Cx::for_test(&h.rt, &h.pool, &h.handle);
    assert_eq!(c.drive(&mut cx), Next::Close);
    assert_eq!(bodies(&c.sock.io.out), ["hi /one"]);
}

#[test]
fn a_large_body_reaches_a_slow_pool_reader_whole() {
    // A slow reader keeps the body pipe nearly full while the loop's
    // buffer fills behind it. (The stall this guards against, bytes left
    // in the buffer after a push with the socket drained, was caught by a
    // stress run of the proxy and fastcgi upload tests; this scripted
    // version does not reach that state on its own.)
    let h = Harness::new();
    let body = vec![b'b'; 1000 * 1000];
    let mut head = format!(
        "POST /pool/slow HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(&body);
    let mut c = h.conn(Script {
        reads: VecDeque::from([head]),
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Wait);
    assert_eq!(bodies(&c.sock.io.out), [format!("len {}", body.len())]);
}

#[test]
fn a_waiting_handler_is_parked_and_called_again_when_its_descriptor_is_ready() {
    let h = Harness::new();
    let mut c = h.conn(Script {
        reads: VecDeque::from([b"GET /wait/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()]),
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Wait);
    assert!(
        c.parked_fd().is_some() && c.is_busy(),
        "{}",
        String::from_utf8_lossy(&c.sock.io.out)
    );
    assert!(c.sock.io.out.is_empty());
    // The far end writes: the loop's poll reports it, the handler resumes.
    use std::io::Write;
    let mut far = take_peer("/wait/x");
    far.write_all(b"!").expect("write");
    assert_eq!(h.run(&mut c), Next::Wait);
    assert_eq!(bodies(&c.sock.io.out), ["woke !"]);
    assert!(c.parked_fd().is_none() && !c.is_busy());
}

#[test]
fn a_waiting_handler_whose_time_runs_out_hears_of_it() {
    let h = Harness::new();
    let mut c = h.conn(Script {
        reads: VecDeque::from([b"GET /wait/short HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()]),
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Wait);
    assert!(c.parked_fd().is_some());
    std::thread::sleep(std::time::Duration::from_millis(80));
    let poll = h.poll.borrow();
    let mut cx = Cx::for_test(&h.rt, &h.pool, &h.handle).with_registry(poll.registry(), &h.watched);
    assert_eq!(c.timed_out(&mut cx), Next::Wait);
    assert_eq!(bodies(&c.sock.io.out), ["timed out"]);
}

#[test]
fn a_client_that_leaves_while_its_handler_waits_frees_the_wait() {
    let h = Harness::new();
    let mut c = h.conn(Script {
        reads: VecDeque::from([b"GET /wait/leave HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()]),
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Wait);
    assert!(c.parked_fd().is_some());
    c.sock.io.eof = true;
    c.sock.peer_closed = true;
    assert_eq!(h.run(&mut c), Next::Close);
    assert!(c.parked_fd().is_none());
    // The handler's state (its socket) was dropped: the far end sees EOF.
    use std::io::Read;
    let mut far = take_peer("/wait/leave");
    far.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok();
    assert_eq!(far.read(&mut [0u8; 4]).expect("eof"), 0);
}

#[test]
fn after_a_101_bytes_are_relayed_both_ways() {
    use std::io::{Read, Write};
    let h = Harness::new();
    let mut c = h.conn(Script {
        reads: VecDeque::from([b"GET /relay HTTP/1.1\r\nHost: a\r\n\r\nearly".to_vec()]),
        ..Script::default()
    });
    assert_eq!(h.run(&mut c), Next::Wait);
    assert!(c.is_relay());
    let out = String::from_utf8_lossy(&c.sock.io.out).into_owned();
    assert!(out.starts_with("HTTP/1.1 101 "), "{out}");
    assert!(
        out.contains("\r\nUpgrade: x\r\n") && out.ends_with("\r\n\r\nhello from relay"),
        "{out}"
    );
    let mut far = take_peer("/relay");
    far.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok();
    let mut b = [0u8; 64];
    let n = far.read(&mut b).expect("early bytes");
    assert_eq!(&b[..n], b"early");
    // Client -> relay.
    c.sock.io.reads.push_back(b"ping".to_vec());
    assert_eq!(h.run(&mut c), Next::Wait);
    let n = far.read(&mut b).expect("ping");
    assert_eq!(&b[..n], b"ping");
    // Relay -> client.
    far.write_all(b"pong").expect("pong");
    c.relay_ready(true, false);
    assert_eq!(h.run(&mut c), Next::Wait);
    assert!(c.sock.io.out.ends_with(b"pong"));
    // The far end closes, the client too: the relay ends.
    drop(far);
    c.relay_ready(true, false);
    c.sock.io.eof = true;
    assert_eq!(h.run(&mut c), Next::Close);
}
