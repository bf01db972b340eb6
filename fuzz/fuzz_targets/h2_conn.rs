//! An HTTP/2 connection fed a client's bytes (after the preface): the
//! `h2` server as tamada drives it over its in-memory wire, and every
//! request it accepts turned into a checked request head
//! (`proto/h2/head.rs`), then answered. Nothing may panic, and the bytes
//! queued for the client stay within the wire's cap.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use tamada::http::Limits;
use tamada::proto::h2::head;
use tamada::proto::h1::sock::Sock;
use tamada::proto::h2::wire::{Flag, OUT_CAP, Wire, waker};
use tamada::transport::{Io, Transport};

/// A socket that takes nothing: every byte stays in the wire.
struct Null;
impl Transport for Null {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<Io> {
        Ok(Io::Blocked)
    }
    fn write(&mut self, _: &[u8], _: bool) -> std::io::Result<Io> {
        Ok(Io::Blocked)
    }
    fn sendfile(
        &mut self,
        _: std::os::fd::BorrowedFd<'_>,
        _: &mut u64,
        _: u64,
    ) -> std::io::Result<Io> {
        Ok(Io::Blocked)
    }
    fn shutdown_write(&mut self) {}
}

fuzz_target!(|data: &[u8]| {
    let wire = Wire::new(Sock::new(Null));
    {
        let mut b = wire.lock();
        b.push_in(tamada::http::H2_PREFACE);
        b.push_in(data);
        b.eof = true;
    }
    let flag = Arc::new(Flag::default());
    let wk = waker(&flag);
    let mut cx = Context::from_waker(&wk);
    let mut b = h2::server::Builder::new();
    b.max_header_list_size(16 * 1024).max_concurrent_streams(16);
    let mut hs = Box::pin(b.handshake::<Wire<Null>, bytes::Bytes>(wire.clone()));
    let limits = Limits {
        max_request_line: 8192,
        max_header_size: 16 * 1024,
        max_headers: 100,
    };
    let mut conn = None;
    for _ in 0..64 {
        if conn.is_none() {
            match hs.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(c)) => conn = Some(c),
                Poll::Ready(Err(_)) => return,
                Poll::Pending => {}
            }
        }
        if let Some(c) = conn.as_mut() {
            match c.poll_accept(&mut cx) {
                Poll::Ready(Some(Ok((req, mut respond)))) => {
                    let end = req.body().is_end_stream();
                    if let Ok(h) = head::request(&req, end, &limits) {
                        assert!(h.path.starts_with('/') || h.path == "*");
                        assert!(h.http2);
                    }
                    let r = http::Response::builder().status(200).body(()).unwrap();
                    let _ = respond.send_response(r, true);
                }
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => return,
                Poll::Pending => {}
            }
        }
        // The client reads everything at once.
        let mut w = wire.lock();
        assert!(w.unsent().len() <= OUT_CAP);
        let n = w.unsent().len();
        w.sent(n);
    }
});
