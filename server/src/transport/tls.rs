//! TLS as a transport (rustls, sans-I/O): the record layer sits between
//! the socket and the protocol, which sees plaintext through the same
//! [`Transport`] as on a plain socket. Each call goes as far as the
//! socket allows (`read_tls` / `process_new_packets` / `reader()`,
//! `writer()` / `write_tls`); records that could not go out yet wait in
//! rustls and go with [`Transport::flush`] once the socket is writable.
//!
//! A connection starts with rustls's `Acceptor`: the ClientHello is read
//! first, its SNI picks the vhost's own configuration (certificates,
//! client certificates, versions: `config/tls.rs`), and only then does
//! the handshake go on, on the connection's loop like the rest of it.
//! Plain HTTP sent to the TLS port is answered with a 400 in clear text,
//! as nginx does.
//!
//! Reads keep the rule the connection's readiness relies on
//! (`proto/h1/sock.rs`): a read that returns less than was asked for has
//! drained the socket (it met `WouldBlock`), so no edge is lost.

use super::{Io, Transport, retry};
use crate::config::tls::SiteTls;
use rustls::ServerConnection;
use rustls::server::Acceptor;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

use super::tlsinfo::negotiated;
pub use super::tlsinfo::{ClientCert, TlsInfo, describe_client_cert};

/// How many bytes come before the TLS handshake: a PROXY protocol header
/// from a load balancer (the connection's own parser reads it as it does
/// on a plain socket).
pub enum Prefix {
    /// Not all of it has come.
    Partial,
    /// This many bytes.
    Len(usize),
    /// Not a valid prefix: the bytes go to the connection, which refuses
    /// them.
    Bad,
}

/// Measures a connection's prefix (`realip::parse_proxy`, given by the
/// loop: this layer knows nothing of HTTP).
pub type PrefixFn = fn(&[u8]) -> Prefix;

enum State {
    /// Reading the ClientHello.
    Hello(Box<Acceptor>),
    /// Handshaking, then open.
    Open(Box<ServerConnection>),
    /// Refused or failed: nothing more is read or written.
    Done,
}

/// `Some` when a ClientHello is ACME's TLS-ALPN-01 validation (its only
/// ALPN protocol is `acme-tls/1`, with a server name): the challenge's
/// configuration if one is pending for the name.
fn acme_challenge(
    a: &rustls::server::Accepted,
    sni: Option<&str>,
) -> Option<Option<Arc<rustls::ServerConfig>>> {
    let mut alpn = a.client_hello().alpn()?;
    let only = alpn.next()? == crate::acme::store::ACME_TLS_ALPN && alpn.next().is_none();
    if !only {
        return None;
    }
    Some(sni.and_then(crate::acme::store::tls_alpn))
}

/// The largest head held back to share a record with the body (a
/// record carries 16 KiB).
const HOLD_MAX: usize = 8 * 1024;

/// A TLS connection over a non-blocking TCP socket.
pub struct TlsStream {
    sock: mio::net::TcpStream,
    state: State,
    site: Arc<SiteTls>,
    info: Option<Arc<TlsInfo>>,
    /// The first bytes were looked at (plain HTTP to a TLS port).
    sniffed: bool,
    /// A PROXY protocol header comes first.
    prefix: Option<PrefixFn>,
    /// A response head held back (plaintext) for the body bytes that
    /// follow at once: both go into one record.
    held: Vec<u8>,
    /// Bytes read off the socket that rustls has not taken yet.
    unfed: Vec<u8>,
    /// A TLS-ALPN-01 validation: closed once the handshake is done, no
    /// byte of plaintext ever reaches HTTP (RFC 8737 section 3).
    acme: bool,
}

impl TlsStream {
    pub fn new(sock: mio::net::TcpStream, site: Arc<SiteTls>, prefix: Option<PrefixFn>) -> Self {
        TlsStream {
            sock,
            state: State::Hello(Box::default()),
            site,
            info: None,
            sniffed: false,
            prefix,
            held: Vec::new(),
            unfed: Vec::new(),
            acme: false,
        }
    }

    /// The socket (for the loop's poll).
    pub fn socket_mut(&mut self) -> &mut mio::net::TcpStream {
        &mut self.sock
    }

    /// Reads a PROXY protocol header off the socket, without a byte of
    /// what follows it.
    fn read_prefix(&mut self, buf: &mut [u8], f: PrefixFn) -> io::Result<Io> {
        let n = match retry(|| self.sock.peek(buf))? {
            Io::Ready(n) => n,
            Io::Blocked => return Ok(Io::Blocked),
        };
        if n == 0 {
            return Ok(Io::Ready(0));
        }
        let want = match f(&buf[..n]) {
            Prefix::Len(k) => k,
            Prefix::Partial if n < buf.len() => return Ok(Io::Blocked),
            Prefix::Partial | Prefix::Bad => n,
        };
        self.prefix = None;
        retry(|| Read::read(&mut self.sock, &mut buf[..want]))
    }

    /// The ClientHello is in: its SNI picks the vhost's configuration.
    /// `Blocked` when the socket has nothing more for now.
    fn hello(&mut self) -> io::Result<Io> {
        let State::Hello(acc) = &mut self.state else {
            return Ok(Io::Blocked);
        };
        loop {
            match acc.read_tls(&mut self.sock) {
                Ok(0) => return Ok(Io::Ready(0)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Io::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let accepted = match acc.accept() {
                Ok(None) => continue,
                Ok(Some(a)) => a,
                Err((e, mut alert)) => {
                    let _ = alert.write_all(&mut self.sock);
                    self.state = State::Done;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("TLS: {e}"),
                    ));
                }
            };
            let sni = accepted
                .client_hello()
                .server_name()
                .map(|s| s.to_ascii_lowercase());
            // ACME's TLS-ALPN-01 (RFC 8737): a hello offering only
            // `acme-tls/1` for a name with a pending challenge gets the
            // challenge certificate, whatever the vhost's own state; with
            // none pending, a `no_application_protocol` alert. Otherwise
            // the SNI picks the vhost; none (`reject_unknown_sni`): an
            // `unrecognized_name` alert, as nginx's `ssl_reject_handshake`.
            let name = || sni.as_deref().unwrap_or("(none)").to_owned();
            let (config, vhost, acme) = match acme_challenge(&accepted, sni.as_deref()) {
                Some(Some(cfg)) => (cfg, None, true),
                Some(None) => {
                    let why = format!("TLS: acme-tls/1 for {} with no challenge pending", name());
                    return Err(self.refuse(0x78, why));
                }
                None => match self.site.select(sni.as_deref()) {
                    Some(v) => (
                        v.config.clone(),
                        sni.as_ref().map(|_| v.vhost.clone()),
                        false,
                    ),
                    None => {
                        let why = format!("TLS: no certificate for the server name {}", name());
                        return Err(self.refuse(0x70, why));
                    }
                },
            };
            return match accepted.into_connection(config) {
                Ok(conn) => {
                    self.info = Some(Arc::new(TlsInfo {
                        vhost,
                        sni,
                        ..TlsInfo::default()
                    }));
                    self.acme = acme;
                    self.state = State::Open(Box::new(conn));
                    // The first flight goes out as the open connection reads.
                    Ok(Io::Blocked)
                }
                Err((e, mut alert)) => {
                    let _ = alert.write_all(&mut self.sock);
                    self.state = State::Done;
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("TLS: {e}"),
                    ))
                }
            };
        }
    }

    /// Sends a fatal alert (`description`, TLS 1.2 record framing, which
    /// every client reads before a handshake) and ends the connection.
    fn refuse(&mut self, description: u8, why: String) -> io::Error {
        let _ = self
            .sock
            .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]);
        self.state = State::Done;
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    /// Reads plaintext into `buf`, as far as the socket allows.
    ///
    /// PERF: the socket is read here into a scratch buffer, and a read
    /// that comes back short has drained it (as on a plain socket): no
    /// second `recv` that can only say EAGAIN (it was one syscall of three
    /// per keep-alive request). What rustls cannot take yet waits in
    /// `unfed`.
    fn read_open(&mut self, buf: &mut [u8], mut total: usize) -> io::Result<Io> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(vec![0; SCRATCH_LEN]);
        }
        let State::Open(c) = &mut self.state else {
            return Ok(Io::Ready(total));
        };
        let mut drained = false;
        loop {
            if self.acme && !c.is_handshaking() {
                // The validation is the handshake: close_notify, then the
                // end (what the CA may have sent is never read).
                c.send_close_notify();
                let _ = send_records(c, &mut self.sock);
                self.state = State::Done;
                return Ok(Io::Ready(total));
            }
            match c.reader().read(&mut buf[total..]) {
                // A close_notify: the end of the stream.
                Ok(0) => return Ok(Io::Ready(total)),
                Ok(n) => {
                    total += n;
                    if total == buf.len() {
                        return Ok(Io::Ready(total));
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: its end too.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(Io::Ready(total));
                }
                Err(e) => return Err(e),
            }
            if self.unfed.is_empty() {
                if drained {
                    // An alert, the handshake's next flight, tickets.
                    send_records(c, &mut self.sock)?;
                    return Ok(if total > 0 {
                        Io::Ready(total)
                    } else {
                        Io::Blocked
                    });
                }
                let n = SCRATCH.with(|b| {
                    let mut b = b.borrow_mut();
                    let r = retry(|| Read::read(&mut self.sock, &mut b[..]));
                    if let Ok(Io::Ready(n)) = r {
                        self.unfed.extend_from_slice(&b[..n]);
                    }
                    r
                })?;
                match n {
                    Io::Blocked => drained = true,
                    // The peer's end: rustls hears of it, and what was
                    // decrypted goes first.
                    Io::Ready(0) => {
                        let _ = c.read_tls(&mut io::empty());
                        return Ok(Io::Ready(total));
                    }
                    Io::Ready(n) => drained = n < SCRATCH_LEN,
                }
                if self.unfed.is_empty() {
                    continue;
                }
            }
            // As much as rustls takes before its plaintext is read.
            let mut fed = 0;
            while fed < self.unfed.len() && c.wants_read() {
                let mut rest = &self.unfed[fed..];
                match c.read_tls(&mut rest) {
                    Ok(0) => break,
                    Ok(k) => fed += k,
                    Err(e) => {
                        self.state = State::Done;
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("TLS: {e}"),
                        ));
                    }
                }
                if let Err(e) = c.process_new_packets() {
                    // The alert goes out.
                    let _ = send_records(c, &mut self.sock);
                    self.state = State::Done;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("TLS: {e}"),
                    ));
                }
            }
            self.unfed.drain(..fed);
            if !c.is_handshaking()
                && let Some(info) = &mut self.info
                && info.version.is_empty()
            {
                negotiated(c, Arc::make_mut(info));
            }
            if fed == 0 && c.wants_read() && !self.unfed.is_empty() {
                // rustls asks for input and takes none: end, never spin.
                return Err(io::Error::other(
                    "TLS: the record layer takes no more input",
                ));
            }
        }
    }
}

/// How much one read of a TLS socket asks for: a whole record and more.
const SCRATCH_LEN: usize = 32 * 1024;

/// Writes what rustls has to send; false when the socket is full.
fn send_records(c: &mut ServerConnection, sock: &mut mio::net::TcpStream) -> io::Result<bool> {
    while c.wants_write() {
        match c.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl Transport for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Io> {
        let mut total = 0;
        if let Some(f) = self.prefix {
            match self.read_prefix(buf, f)? {
                Io::Ready(n) => total = n,
                Io::Blocked => return Ok(Io::Blocked),
            }
            if total == 0 {
                return Ok(Io::Ready(0));
            }
        }
        if let State::Hello(_) = self.state {
            if !self.sniffed {
                let mut b = [0u8; 1];
                match self.sock.peek(&mut b) {
                    // A TLS record starts with 0x16 (a handshake); a
                    // request line with a method's capitals.
                    Ok(1) if b[0].is_ascii_uppercase() => {
                        let _ = self.sock.write_all(PLAIN_HTTP_400);
                        self.state = State::Done;
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "plain HTTP sent to the TLS port (answered 400)",
                        ));
                    }
                    Ok(_) => self.sniffed = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(if total > 0 {
                            Io::Ready(total)
                        } else {
                            Io::Blocked
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            match self.hello()? {
                Io::Ready(0) if total == 0 => return Ok(Io::Ready(0)),
                _ if matches!(self.state, State::Open(_)) => {}
                _ => {
                    return Ok(if total > 0 {
                        Io::Ready(total)
                    } else {
                        Io::Blocked
                    });
                }
            }
        }
        match self.read_open(buf, total)? {
            // The end, after the bytes of a prefix.
            Io::Ready(0) if total > 0 => Ok(Io::Ready(total)),
            r => Ok(r),
        }
    }

    fn write(&mut self, data: &[u8], more: bool) -> io::Result<Io> {
        let State::Open(c) = &mut self.state else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS: no connection to write to",
            ));
        };
        // Records not sent yet go first: a full socket is back-pressure.
        if !send_records(c, &mut self.sock)? {
            return Ok(Io::Blocked);
        }
        if more && self.held.is_empty() && data.len() <= HOLD_MAX {
            // PERF: a head waits for the body's first bytes, so that both
            // go in one record (one seal here, one open for the client)
            // and one write, instead of two of each.
            self.held.extend_from_slice(data);
            return Ok(Io::Ready(data.len()));
        }
        let n = if self.held.is_empty() {
            c.writer().write(data)?
        } else {
            let head = std::mem::take(&mut self.held);
            let bufs = [io::IoSlice::new(&head), io::IoSlice::new(data)];
            let n = c.writer().write_vectored(&bufs)?;
            if n < head.len() {
                // Not with the send buffer empty (rustls takes 64 KiB);
                // kept right all the same.
                self.held = head[n..].to_vec();
                send_records(c, &mut self.sock)?;
                return Ok(Io::Blocked);
            }
            n - head.len()
        };
        if n == 0 && !data.is_empty() {
            return Ok(Io::Blocked);
        }
        send_records(c, &mut self.sock)?;
        Ok(Io::Ready(n))
    }

    fn sendfile(&mut self, file: BorrowedFd<'_>, off: &mut u64, len: u64) -> io::Result<Io> {
        // No kernel TLS: the file is read in large pieces and encrypted
        // (one copy into the records, which rustls needs anyway).
        thread_local! {
            static CHUNK: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(vec![0; 64 * 1024]);
        }
        if let State::Open(c) = &mut self.state
            && !send_records(c, &mut self.sock)?
        {
            return Ok(Io::Blocked);
        }
        CHUNK.with(|b| {
            let mut b = b.borrow_mut();
            let want = (len as usize).min(b.len());
            let fd = file.as_raw_fd();
            let n = match retry(|| {
                // SAFETY: `b` is a valid buffer of at least `want` bytes
                // for the call, and `fd` is open (borrowed from the body).
                let r = unsafe {
                    libc::pread(
                        fd,
                        b.as_mut_ptr() as *mut libc::c_void,
                        want,
                        *off as libc::off_t,
                    )
                };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            })? {
                Io::Ready(n) => n,
                Io::Blocked => return Ok(Io::Blocked),
            };
            if n == 0 && len > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file ended before its announced length (truncated while sent?)",
                ));
            }
            let r = self.write(&b[..n], false)?;
            if let Io::Ready(k) = r {
                *off += k as u64;
            }
            Ok(r)
        })
    }

    fn shutdown_write(&mut self) {
        if let State::Open(c) = &mut self.state {
            c.send_close_notify();
            let _ = send_records(c, &mut self.sock);
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }

    fn large_body(&mut self) {
        self.sock.large_body();
    }

    fn pending(&self) -> bool {
        matches!(&self.state, State::Open(c) if c.wants_write() || !self.held.is_empty())
    }

    fn flush(&mut self) -> io::Result<bool> {
        match &mut self.state {
            State::Open(c) => {
                if !self.held.is_empty() {
                    let n = c.writer().write(&self.held)?;
                    self.held.drain(..n);
                }
                Ok(send_records(c, &mut self.sock)? && self.held.is_empty())
            }
            _ => Ok(true),
        }
    }

    fn tls(&self) -> Option<&Arc<TlsInfo>> {
        self.info.as_ref().filter(|i| !i.version.is_empty())
    }

    fn buffer(&mut self, data: &[u8]) -> io::Result<Option<usize>> {
        let State::Open(c) = &mut self.state else {
            return Ok(None);
        };
        if !self.held.is_empty() {
            let n = c.writer().write(&self.held)?;
            self.held.drain(..n);
            if !self.held.is_empty() {
                return Ok(Some(0));
            }
        }
        // rustls takes what its send buffer limit allows (0 when full).
        Ok(Some(c.writer().write(data)?))
    }
}

/// The answer to plain HTTP on a TLS port (nginx's, with a 400 status).
const PLAIN_HTTP_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 51\r\n\
Connection: close\r\n\r\n\
The plain HTTP request was sent to the HTTPS port.\n";
