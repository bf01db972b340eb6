//! Building a response: status, headers and one of the body forms. See
//! [`guide::responses`](crate::guide::responses) for examples.
//!
//! | form | use it for | how the core sends it |
//! |---|---|---|
//! | [`Body::Bytes`] | small generated pages | one write with the head |
//! | [`Body::File`] | a file or a range of it | `sendfile`, zero-copy; the core closes the file |
//! | [`Body::Segments`] | bytes and file ranges mixed (`multipart/byteranges`) | writes and `sendfile`s in order |
//! | [`Body::Stream`] | output of unknown length (a child process) | pulled as the socket drains; chunked on HTTP/1.1 |

use crate::abi::{BodyV1, OwnedHeaderV1, ResponseV1, SegmentV1, SegmentsV1, StreamV1};
use abi_stable::std_types::{RResult, RSliceMut, RString, RVec};
use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::fd::IntoRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A body the core pulls from, for output whose length is not known up
/// front. `read` may block on what the plugin owns (a pipe, a child).
///
/// The core calls `read` after `handle` has returned, on a thread of the
/// blocking pool, into a bounded buffer that the connection's event loop
/// writes out as the client reads; a full buffer pauses the pulls, so a
/// slow client holds memory, not a thread (one read at a time: `Send`,
/// not `Sync`). Without a
/// `Content-Length` header the body is sent chunked on HTTP/1.1 and
/// delimited by closing the connection on HTTP/1.0; with one, the core
/// trusts it, reads at most that many bytes and closes the connection if
/// the stream ends short. Records logged from `read` go to the request's
/// vhost.
pub trait BodyStream: Send + 'static {
    /// Fills `buf`; `Ok(0)` ends the body. An error (or a panic) ends the
    /// response early: the core closes the connection, since the head is
    /// already sent.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Called exactly once, last, when the core is done with the stream;
    /// `client_gone` is true when the client left, or the core gave up
    /// (a send timeout, a failed `read`, a HEAD request or a status without
    /// a body), before the end: stop the work behind the stream then. The
    /// stream is dropped right after.
    fn close(&mut self, client_gone: bool) {
        let _ = client_gone;
    }
    #[doc(hidden)]
    /// The SDK's own shared bytes ([`Body::shared`]); `None` for every
    /// other stream.
    fn shared(&mut self) -> Option<SharedBytes> {
        None
    }
}

/// SDK 1.2: bytes a plugin shares with other responses (a cache's
/// entry), as a body: [`Body::shared`]. A 1.2 server sends them where
/// they are, with no copy (a `Vec` body is copied once into the
/// response); an older one reads them as a stream.
#[derive(Clone)]
pub struct SharedBytes {
    bytes: std::sync::Arc<[u8]>,
    start: usize,
    end: usize,
}

impl SharedBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }
}

impl BodyStream for SharedBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.end - self.start).min(buf.len());
        buf[..n].copy_from_slice(&self.bytes[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
    fn shared(&mut self) -> Option<SharedBytes> {
        Some(self.clone())
    }
}

impl Body {
    /// SDK 1.2: a body of bytes shared with other responses (a cache's),
    /// sent without copying them: `Body::shared(entry.clone())`, or
    /// `res.body(entry.clone())` for an `Arc<[u8]>`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tamada_sdk::prelude::*;
    ///
    /// struct Store(Arc<[u8]>);
    /// impl Handler for Store {
    ///     fn handle(&self, _: &Request, res: &mut ResponseBuilder) -> Outcome {
    ///         res.header("content-type", "application/json").body(self.0.clone());
    ///         Outcome::Done
    ///     }
    /// }
    /// # #[cfg(feature = "testing")]
    /// # {
    /// let out = tamada_sdk::testing::TestRequest::get("/")
    ///     .run(&Store(Arc::from(&b"{\"a\":1}"[..])));
    /// assert_eq!(out.body_bytes(), b"{\"a\":1}");
    /// # }
    /// ```
    pub fn shared(bytes: std::sync::Arc<[u8]>) -> Body {
        let end = bytes.len();
        Body::shared_range(bytes, 0..end)
    }

    /// SDK 1.2: [`shared`](Self::shared) for a range of the bytes (a
    /// `Range` request). Panics when the range is out of bounds.
    pub fn shared_range(bytes: std::sync::Arc<[u8]>, range: std::ops::Range<usize>) -> Body {
        assert!(
            range.start <= range.end && range.end <= bytes.len(),
            "Body::shared_range: {range:?} is outside the {} bytes",
            bytes.len()
        );
        Body::Stream(Box::new(SharedBytes {
            bytes,
            start: range.start,
            end: range.end,
        }))
    }
}

impl From<std::sync::Arc<[u8]>> for Body {
    fn from(b: std::sync::Arc<[u8]>) -> Body {
        Body::shared(b)
    }
}

impl<R: io::Read + Send + 'static> BodyStream for ReadStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Adapts any `Read + Send` as a [`BodyStream`] (a child's stdout, a
/// socket, a decoder): `Body::Stream(Box::new(ReadStream(reader)))`.
pub struct ReadStream<R>(pub R);

/// One piece of a [`Body::Segments`] body.
pub enum Segment {
    /// Bytes.
    Bytes(Vec<u8>),
    /// A range of a file given to [`Segments::file`].
    File {
        /// What [`Segments::file`] returned.
        file: FileId,
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
    },
}

/// Names a file inside a [`Segments`] body.
#[derive(Clone, Copy, Debug)]
pub struct FileId(usize);

/// A body made of bytes and file ranges, sent in order (zero-copy for the
/// file ranges), e.g. `multipart/byteranges`. The core owns and closes
/// every file handed to it, and sends the total length as
/// `Content-Length`.
#[derive(Default)]
pub struct Segments {
    files: Vec<File>,
    parts: Vec<Segment>,
}

impl Segments {
    /// An empty body.
    pub fn new() -> Self {
        Self::default()
    }
    /// Hands a file to the body (its ownership passes to the core with the
    /// response); ranges of it may then be added any number of times.
    pub fn file(&mut self, f: File) -> FileId {
        self.files.push(f);
        FileId(self.files.len() - 1)
    }
    /// Appends bytes.
    pub fn bytes(&mut self, b: impl Into<Vec<u8>>) -> &mut Self {
        self.parts.push(Segment::Bytes(b.into()));
        self
    }
    /// Appends a file range.
    pub fn range(&mut self, file: FileId, offset: u64, len: u64) -> &mut Self {
        self.parts.push(Segment::File { file, offset, len });
        self
    }
    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                Segment::Bytes(b) => b.len() as u64,
                Segment::File { len, .. } => *len,
            })
            .sum()
    }
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every byte of the body, in order (for tests).
    #[cfg(any(feature = "testing", doc))]
    pub(crate) fn read_all(mut self) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut out = Vec::new();
        for p in self.parts {
            match p {
                Segment::Bytes(b) => out.extend_from_slice(&b),
                Segment::File { file, offset, len } => {
                    let f = self.files.get_mut(file.0).ok_or_else(|| {
                        io::Error::other("a segment names a file the body does not hold")
                    })?;
                    f.seek(SeekFrom::Start(offset))?;
                    f.take(len).read_to_end(&mut out)?;
                }
            }
        }
        Ok(out)
    }
}

/// The body forms.
#[derive(Default)]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// `len` bytes of a file from `offset`; the file's ownership passes to
    /// the core, which sends it zero-copy with `sendfile` and closes it.
    /// `len` is sent as `Content-Length`: if the file is shorter the
    /// connection is closed.
    File {
        /// The open file.
        file: File,
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// Bytes and file ranges.
    Segments(Segments),
    /// Pulled by the core as the client drains it; see [`BodyStream`].
    Stream(Box<dyn BodyStream>),
}

/// Collects a response in a handler: status, headers and body. The core
/// adds `Date`, `Server` and the framing headers.
pub struct ResponseBuilder {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
    relay: Option<Relay>,
}

/// The socket of a relay ([`ResponseBuilder::relay`]).
pub struct Relay {
    pub(crate) fd: std::os::fd::OwnedFd,
    pub(crate) pre: Vec<u8>,
    pub(crate) idle: std::time::Duration,
}

impl Default for ResponseBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseBuilder {
    /// 200 with no headers and no body.
    pub fn new() -> Self {
        ResponseBuilder {
            status: 200,
            // PERF: room for a typical response's headers in one allocation.
            headers: Vec::with_capacity(8),
            body: Body::Empty,
            relay: None,
        }
    }
    /// Sets the status code.
    pub fn status(&mut self, code: u16) -> &mut Self {
        self.status = code;
        self
    }
    /// Adds a header (repeats are kept). `Content-Length`,
    /// `Transfer-Encoding` and `Connection` belong to the core and are
    /// dropped, except `Content-Length` with a [`Body::Stream`], which the
    /// core trusts and enforces.
    pub fn header(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }
    /// SDK 1.1: adds a header whose name and value are already owned
    /// (moved in, not copied: a proxy passing on an upstream's headers).
    pub fn header_owned(&mut self, name: String, value: Vec<u8>) -> &mut Self {
        self.headers.push((name, value));
        self
    }
    /// Sets the body.
    pub fn body(&mut self, body: impl Into<Body>) -> &mut Self {
        self.body = body.into();
        self
    }
    /// SDK 1.1 (when [`host::has`](crate::host::has)`(Ability::Relay)`):
    /// answer `101 Switching Protocols` and hand the core a connected
    /// socket (a `TcpStream`, a `UnixStream`...). Once the head is sent,
    /// the core relays bytes both ways between the client and `socket` on
    /// its event loop (no thread per relay), `already_read` (bytes read
    /// from the socket past its own 101) first; an end of stream on one
    /// side is passed on as a half-close to the other; after `idle` with
    /// no byte either way it closes both. The access log records the
    /// relay when it closes (bytes both ways, duration). Set status 101
    /// and the `Upgrade` header (and any other, such as
    /// `Sec-WebSocket-Accept`); `Connection: upgrade` is the core's. The
    /// body is ignored. A server without the ability, or a request that
    /// had a body, gets a 500 and the socket is closed.
    pub fn relay(
        &mut self,
        socket: impl Into<std::os::fd::OwnedFd>,
        already_read: Vec<u8>,
        idle: std::time::Duration,
    ) -> &mut Self {
        self.relay = Some(Relay {
            fd: socket.into(),
            pre: already_read,
            idle,
        });
        self
    }
    /// Whether [`relay`](Self::relay) was called.
    pub fn is_relay(&self) -> bool {
        self.relay.is_some()
    }
    #[doc(hidden)]
    pub fn take_relay(&mut self) -> Option<Relay> {
        self.relay.take()
    }
    /// The status set so far.
    pub fn get_status(&self) -> u16 {
        self.status
    }
    /// The headers set so far.
    pub fn get_headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }
    /// The first header of that name set so far.
    pub fn get_header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
    /// The first header of that name set so far, as text (`None` when
    /// absent or not UTF-8): for comparisons in tests.
    pub fn get_header_str(&self, name: &str) -> Option<&str> {
        self.get_header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
    /// The body set so far.
    pub fn get_body(&self) -> &Body {
        &self.body
    }
    /// Takes the body out (leaving `Empty`).
    pub fn take_body(&mut self) -> Body {
        std::mem::take(&mut self.body)
    }

    #[doc(hidden)]
    pub fn into_raw(self) -> ResponseV1 {
        ResponseV1 {
            status: self.status,
            headers: self
                .headers
                .into_iter()
                .map(|(n, v)| OwnedHeaderV1 {
                    name: RString::from(n),
                    value: RVec::from(v),
                })
                .collect(),
            body: body_into_raw(self.body),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::Bytes(v)
    }
}
impl From<String> for Body {
    fn from(v: String) -> Self {
        Body::Bytes(v.into_bytes())
    }
}
impl From<&str> for Body {
    fn from(v: &str) -> Self {
        Body::Bytes(v.as_bytes().to_vec())
    }
}
impl From<&[u8]> for Body {
    fn from(v: &[u8]) -> Self {
        Body::Bytes(v.to_vec())
    }
}
impl From<Segments> for Body {
    fn from(v: Segments) -> Self {
        Body::Segments(v)
    }
}

/// A body in the FFI form (its descriptors handed over).
#[doc(hidden)]
pub fn body_into_raw(b: Body) -> BodyV1 {
    match b {
        Body::Empty => BodyV1::Empty,
        Body::Bytes(v) => BodyV1::Bytes(RVec::from(v)),
        Body::File { file, offset, len } => BodyV1::File {
            fd: file.into_raw_fd(),
            offset,
            len,
        },
        Body::Segments(s) => BodyV1::Segments(SegmentsV1 {
            files: s.files.into_iter().map(|f| f.into_raw_fd()).collect(),
            segments: s
                .parts
                .into_iter()
                .map(|p| match p {
                    Segment::Bytes(b) => SegmentV1 {
                        bytes: RVec::from(b),
                        file: -1,
                        offset: 0,
                        len: 0,
                    },
                    Segment::File { file, offset, len } => SegmentV1 {
                        bytes: RVec::new(),
                        file: file.0 as i32,
                        offset,
                        len,
                    },
                })
                .collect(),
        }),
        Body::Stream(s) => BodyV1::Stream(stream_into_raw(s)),
    }
}

/// Turns a boxed stream into the FFI form.
#[doc(hidden)]
pub fn stream_into_raw(mut s: Box<dyn BodyStream>) -> StreamV1 {
    if let Some(shared) = s.shared() {
        return shared_into_raw(shared);
    }
    let ctx = Box::into_raw(Box::new(s)) as *mut c_void;
    StreamV1 {
        ctx,
        read: stream_read,
        close: stream_close,
    }
}

extern "C" fn stream_read(ctx: *mut c_void, mut buf: RSliceMut<'_, u8>) -> RResult<usize, RString> {
    // SAFETY: ctx was made by `stream_into_raw` from a `Box<Box<dyn
    // BodyStream>>` and the core calls read/close from one thread at a time,
    // never after close.
    let s = unsafe { &mut *(ctx as *mut Box<dyn BodyStream>) };
    match catch_unwind(AssertUnwindSafe(|| s.read(buf.as_mut_slice()))) {
        Ok(Ok(n)) => RResult::ROk(n),
        Ok(Err(e)) => RResult::RErr(RString::from(e.to_string())),
        Err(p) => RResult::RErr(RString::from(format!(
            "panic in body stream: {}",
            crate::outcome::panic_message(&p)
        ))),
    }
}

extern "C" fn stream_close(ctx: *mut c_void, client_gone: bool) {
    // SAFETY: as in `stream_read`; close is the last call and takes the box back.
    let mut s = unsafe { Box::from_raw(ctx as *mut Box<dyn BodyStream>) };
    let _ = catch_unwind(AssertUnwindSafe(|| s.close(client_gone)));
    let _ = catch_unwind(AssertUnwindSafe(move || drop(s)));
}

fn shared_into_raw(b: SharedBytes) -> StreamV1 {
    StreamV1 {
        ctx: Box::into_raw(Box::new(b)) as *mut c_void,
        read: shared_read,
        close: shared_close,
    }
}

extern "C" fn shared_read(ctx: *mut c_void, mut buf: RSliceMut<'_, u8>) -> RResult<usize, RString> {
    // SAFETY: ctx was made by `shared_into_raw` from a `Box<SharedBytes>`;
    // the core calls read/close from one thread at a time, never after
    // close.
    let s = unsafe { &mut *(ctx as *mut SharedBytes) };
    match s.read(buf.as_mut_slice()) {
        Ok(n) => RResult::ROk(n),
        Err(e) => RResult::RErr(RString::from(e.to_string())),
    }
}

extern "C" fn shared_bytes(ctx: *mut c_void) -> abi_stable::std_types::RSlice<'static, u8> {
    // SAFETY: as in `shared_read`. The slice borrows the `Arc` the box
    // holds, which lives until `close` (the ABI's contract: the host uses
    // the slice only before it closes the stream), hence `'static` here.
    let s = unsafe { &*(ctx as *const SharedBytes) };
    let slice: &'static [u8] =
        // SAFETY: see above; the bytes are immutable behind the `Arc`.
        unsafe { std::slice::from_raw_parts(s.as_slice().as_ptr(), s.end - s.start) };
    abi_stable::std_types::RSlice::from_slice(slice)
}

extern "C" fn shared_close(ctx: *mut c_void, _client_gone: bool) {
    // SAFETY: as in `shared_read`; close is the last call and takes the box back.
    let b = unsafe { Box::from_raw(ctx as *mut SharedBytes) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
}

/// The shared-bytes table (SDK 1.2) every plugin exports.
#[doc(hidden)]
pub static SHARED_V1: crate::abi::SharedV1 = crate::abi::SharedV1 {
    read: shared_read,
    bytes: shared_bytes,
};
