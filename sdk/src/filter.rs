//! SDK 1.2 (frozen: the `frozen-v1_2` fixture guards it): response filters, the
//! phase that runs after a handler.
//!
//! A vhost, or a route, lists filters; each is a plugin and its options:
//!
//! ```yaml
//! filters:
//!   - handler: compress
//!   - handler: headers
//!     options: { set: { X-Content-Type-Options: nosniff } }
//! ```
//!
//! They apply, in order, to the answer of whichever handler served the
//! request (static files, CGI, the proxy, a third party's plugin) and to
//! the server's own error pages. A route's list replaces the vhost's.
//!
//! A filter has two sides:
//! - [`request`](Filter::request), before the handler runs: it may set or
//!   remove request header fields (a compressing filter turns the
//!   compressed representation's `ETag` in `If-None-Match` back into the
//!   file's, so that the static handler answers 304);
//! - [`response`](Filter::response), once the handler has answered: it
//!   sees the status and header fields ([`ResponseHead`], which it may
//!   edit) and the form of the body, and decides what becomes of the
//!   body ([`Action`]): left as it is (a file stays a `sendfile` body,
//!   at no cost), transformed as a stream ([`BodyFilter`]: chunks in,
//!   chunks out, a final flush, with memory of its own bounded), or
//!   replaced.
//!
//! ```
//! use tamada_sdk::prelude::*;
//! use tamada_sdk::filter::{Action, BodyFilter, Filter, ResponseHead};
//!
//! /// Upper-cases `text/plain` answers and says so in a header.
//! struct Shout;
//!
//! struct Upper;
//! impl BodyFilter for Upper {
//!     fn data(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
//!         out.extend(input.iter().map(u8::to_ascii_uppercase));
//!         Ok(())
//!     }
//! }
//!
//! impl Filter for Shout {
//!     fn response(&self, _req: &Request, head: &mut ResponseHead) -> Action {
//!         if head.status() != 200 || head.header_str("content-type") != Some("text/plain") {
//!             return Action::Keep;
//!         }
//!         head.set_header("x-shouted", "yes");
//!         Action::Transform(Box::new(Upper))
//!     }
//! }
//!
//! tamada_sdk::export_plugin!(name: "shout", filter: |_: &Options| Ok(Shout));
//! # fn main() {
//! # #[cfg(feature = "testing")]
//! # {
//! # use tamada_sdk::testing::TestRequest;
//! # let mut res = ResponseBuilder::new();
//! # res.header("content-type", "text/plain").body("hello");
//! # let out = TestRequest::get("/").filter(&Shout, res);
//! # assert_eq!(out.body, b"HELLO");
//! # assert_eq!(out.head.header_str("x-shouted"), Some("yes"));
//! # }
//! # }
//! ```
//!
//! Both sides must not block: they run on the event loop, or on the pool
//! for a handler that ran there. A transform of a large body runs on the
//! pool (the server decides by size). A filter that panics turns its
//! response into a 500 when nothing of it was sent, or ends the
//! connection when its head has left; either is logged.
//!
//! Where a handler and a filter both set a header field, the filter wins:
//! it runs after the handler. The server's framing fields
//! (`Content-Length`, `Transfer-Encoding`, `Connection`, `Date`,
//! `Server`) are its own: a transform drops `Content-Length` (the body is
//! then chunked on HTTP/1.1).

use crate::abi::{FilterBodyV1, OwnedHeaderV1};
use crate::request::Request;
use crate::response::Body;
use abi_stable::std_types::{RString, RVec};
use std::os::fd::BorrowedFd;

/// A filter's plugin: one instance per entry of a `filters:` list.
pub trait Filter: Send + Sync + 'static {
    /// Before the handler: set or remove request header fields in `edit`.
    /// The default changes nothing.
    fn request(&self, _req: &Request, _edit: &mut RequestEdit) {}

    /// After the handler: edit `head`, and say what becomes of the body.
    /// `req` is the request as the client sent it (before any
    /// [`request`](Self::request) edit).
    fn response(&self, req: &Request, head: &mut ResponseHead) -> Action;
}

/// What becomes of a response's body.
pub enum Action {
    /// Sent as it is (a file stays a `sendfile` body).
    Keep,
    /// Passed through this transform on its way out.
    Transform(Box<dyn BodyFilter>),
    /// This body is sent instead (a cached copy); the handler's is closed
    /// unsent, and so are the transforms earlier filters asked for (the
    /// replacement is what this filter passes on). Its length is the new
    /// `Content-Length`. The head as this filter leaves it must describe
    /// the replacement: fields an earlier filter set for its own
    /// transform (a `Content-Encoding`) are this filter's to keep or
    /// remove.
    Replace(Body),
}

/// A body transform. Called from one thread at a time (the event loop
/// for a small body, the pool for a large one or a stream); must not
/// block on anything but its own work.
pub trait BodyFilter: Send + 'static {
    /// Transforms a piece of the body, appending what comes out to `out`
    /// (it may hold bytes back, as a compressor does).
    fn data(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String>;

    /// The handler flushed its stream here (a chunk of a live stream):
    /// what was given so far should come out now. The default does
    /// nothing.
    fn flush(&mut self, _out: &mut Vec<u8>) -> Result<(), String> {
        Ok(())
    }

    /// The body ended: the last bytes. The default adds none.
    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

/// Request header fields a filter's request side sets or removes.
#[derive(Debug, Default)]
pub struct RequestEdit {
    pub(crate) edits: Vec<(String, Option<Vec<u8>>)>,
}

impl RequestEdit {
    /// Replaces every field `name` with one of this value.
    pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        self.edits
            .push((name.to_owned(), Some(value.as_ref().to_vec())));
        self
    }
    /// Removes every field `name`.
    pub fn remove_header(&mut self, name: &str) -> &mut Self {
        self.edits.push((name.to_owned(), None));
        self
    }
    /// The edits so far, in order (`None`: removed).
    pub fn edits(&self) -> &[(String, Option<Vec<u8>>)] {
        &self.edits
    }
}

/// What the body of a response is, as a filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes,
    /// A range of a file (sent with `sendfile`).
    File,
    /// Bytes and file ranges.
    Segments,
    /// A stream the server pulls.
    Stream,
}

/// A response's status and header fields, before its body; a filter may
/// change them.
pub struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) headers: RVec<OwnedHeaderV1>,
    pub(crate) body: FilterBodyV1,
    pub(crate) head_only: bool,
}

impl ResponseHead {
    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// Changes the status (a CORS preflight's 204).
    pub fn set_status(&mut self, status: u16) -> &mut Self {
        self.status = status;
        self
    }
    /// The first field `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }
    /// [`header`](Self::header) as text, when it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
    /// Every field, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice()))
    }
    /// Replaces every field `name` with one of this value.
    pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        self.remove_header(name);
        self.append_header(name, value)
    }
    /// Adds a field, keeping those of the same name.
    pub fn append_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        self.headers.push(OwnedHeaderV1 {
            name: RString::from(name),
            value: RVec::from(value.as_ref()),
        });
        self
    }
    /// Removes every field `name`.
    pub fn remove_header(&mut self, name: &str) -> &mut Self {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
        self
    }
    /// The body's form.
    pub fn body_kind(&self) -> BodyKind {
        match self.body.kind {
            1 => BodyKind::Bytes,
            2 => BodyKind::File,
            3 => BodyKind::Segments,
            4 => BodyKind::Stream,
            _ => BodyKind::Empty,
        }
    }
    /// The body's length, when it is known.
    pub fn body_len(&self) -> Option<u64> {
        u64::try_from(self.body.len).ok()
    }
    /// The file of a file body: to recognise it (its metadata) or read it.
    pub fn body_file(&self) -> Option<FileBody<'_>> {
        if self.body.kind != 2 || self.body.fd < 0 {
            return None;
        }
        Some(FileBody {
            // SAFETY: the host lends the descriptor of the response's
            // file for the call, and the borrow does not outlive `self`,
            // which lives for the call.
            fd: unsafe { BorrowedFd::borrow_raw(self.body.fd) },
            offset: self.body.offset,
            len: self.body.len.max(0) as u64,
        })
    }
    /// The body will not be sent (a HEAD request): the header fields must
    /// still be those of a GET, and a transform is not run.
    pub fn head_only(&self) -> bool {
        self.head_only
    }
}

/// The file of a file body, lent for the call.
pub struct FileBody<'a> {
    fd: BorrowedFd<'a>,
    offset: u64,
    len: u64,
}

impl FileBody<'_> {
    /// The file's metadata (device, inode, size, modification time).
    pub fn metadata(&self) -> std::io::Result<std::fs::Metadata> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // PERF: fstat on the lent descriptor itself (no duplicate to make
        // and close: two system calls per cached answer).
        // SAFETY: a second owner of the lent descriptor for the call only;
        // ManuallyDrop keeps it from closing what the host owns.
        let f =
            std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(self.fd.as_raw_fd()) });
        f.metadata()
    }
    /// Where the range starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// The range's length.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A file of its own on the same open file (a duplicate descriptor).
    pub fn try_clone(&self) -> std::io::Result<std::fs::File> {
        Ok(std::fs::File::from(self.fd.try_clone_to_owned()?))
    }
}

/// Whether the server runs filters (a 1.1 server does not: a filter
/// plugin loads there, and is refused where `filters:` names it).
pub fn available() -> bool {
    crate::host::HOST_EXT
        .get()
        .is_some_and(|h| h.abilities & crate::abi::ABILITY_FILTER != 0)
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    /// A head over the host's fields, for the shim (and the testing
    /// module).
    pub fn head(
        status: u16,
        headers: RVec<OwnedHeaderV1>,
        body: FilterBodyV1,
        head_only: bool,
    ) -> ResponseHead {
        ResponseHead {
            status,
            headers,
            body,
            head_only,
        }
    }

    /// Takes a head's parts back.
    pub fn parts(h: ResponseHead) -> (u16, RVec<OwnedHeaderV1>) {
        (h.status, h.headers)
    }

    /// The edits a request side made.
    pub fn edits(e: RequestEdit) -> Vec<(String, Option<Vec<u8>>)> {
        e.edits
    }
}
