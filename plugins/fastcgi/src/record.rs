//! The FastCGI record protocol (FastCGI 1.0 specification, sections 3
//! to 6): records of at most 65535 content bytes padded to 8, name-value
//! pairs with one- or four-byte lengths. Pure functions on bytes.

pub const VERSION: u8 = 1;
pub const BEGIN_REQUEST: u8 = 1;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const RESPONDER: u16 = 1;
/// BEGIN_REQUEST flag: the application keeps the connection open.
pub const KEEP_CONN: u8 = 1;
/// The request id tamada uses (one request at a time per connection).
pub const ID: u16 = 1;
/// Most content bytes in one record.
pub const MAX_CONTENT: usize = 65535;

/// Appends one record (content at most [`MAX_CONTENT`] bytes).
pub fn push(out: &mut Vec<u8>, ty: u8, content: &[u8]) {
    debug_assert!(content.len() <= MAX_CONTENT);
    let len = content.len() as u16;
    let pad = (8 - content.len() % 8) % 8;
    out.extend_from_slice(&[VERSION, ty]);
    out.extend_from_slice(&ID.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[pad as u8, 0]);
    out.extend_from_slice(content);
    out.extend_from_slice(&[0u8; 8][..pad]);
}

/// Appends a stream (`PARAMS`, `STDIN`) split into records; an empty
/// `content` is the stream's end.
pub fn push_stream(out: &mut Vec<u8>, ty: u8, content: &[u8]) {
    if content.is_empty() {
        push(out, ty, &[]);
        return;
    }
    for part in content.chunks(MAX_CONTENT) {
        push(out, ty, part);
    }
}

/// BEGIN_REQUEST for a responder (`keep`: the application keeps the
/// connection open after the response).
pub fn begin(out: &mut Vec<u8>, keep: bool) {
    let mut body = [0u8; 8];
    body[..2].copy_from_slice(&RESPONDER.to_be_bytes());
    body[2] = if keep { KEEP_CONN } else { 0 };
    push(out, BEGIN_REQUEST, &body);
}

fn push_len(out: &mut Vec<u8>, n: usize) {
    if n < 128 {
        out.push(n as u8);
    } else {
        out.extend_from_slice(&((n as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// Name-value pairs, encoded (the content of PARAMS records).
pub fn params<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        push_len(&mut out, k.len());
        push_len(&mut out, v.len());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// A record header.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Header {
    pub ty: u8,
    pub id: u16,
    pub len: usize,
    pub pad: usize,
}

/// Parses the 8 bytes of a record header.
pub fn header(b: &[u8; 8]) -> Result<Header, String> {
    if b[0] != VERSION {
        return Err(format!("a record of FastCGI version {} (not 1)", b[0]));
    }
    Ok(Header {
        ty: b[1],
        id: u16::from_be_bytes([b[2], b[3]]),
        len: u16::from_be_bytes([b[4], b[5]]) as usize,
        pad: b[6] as usize,
    })
}

/// The record at the front of `buf`, with no I/O (fuzzed:
/// `fuzz/fuzz_targets/fastcgi_records.rs`): its header and its whole
/// length with padding, or `None` until all of it is there.
pub fn split(buf: &[u8]) -> Result<Option<(Header, usize)>, String> {
    let Some(h) = buf.first_chunk::<8>() else {
        return Ok(None);
    };
    let h = header(h)?;
    let whole = 8 + h.len + h.pad;
    Ok((buf.len() >= whole).then_some((h, whole)))
}

/// END_REQUEST's protocol status, as words.
pub fn protocol_status(s: u8) -> &'static str {
    match s {
        0 => "request complete",
        1 => "cannot multiplex connections",
        2 => "overloaded",
        3 => "unknown role",
        _ => "unknown protocol status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_padded_to_eight() {
        let mut v = Vec::new();
        push(&mut v, STDIN, b"hello");
        assert_eq!(v.len(), 8 + 8);
        assert_eq!(&v[..8], &[1, 5, 0, 1, 0, 5, 3, 0]);
        assert_eq!(&v[8..13], b"hello");
        let h = header(v[..8].try_into().unwrap()).unwrap();
        assert_eq!((h.ty, h.id, h.len, h.pad), (STDIN, 1, 5, 3));
        let mut v = Vec::new();
        push(&mut v, STDIN, &[]);
        assert_eq!(v, [1, 5, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn long_streams_split_and_long_names_take_four_bytes() {
        let mut v = Vec::new();
        push_stream(&mut v, STDIN, &vec![7u8; 70_000]);
        let h = header(v[..8].try_into().unwrap()).unwrap();
        assert_eq!(h.len, MAX_CONTENT);
        let second = 8 + MAX_CONTENT + h.pad;
        let h2 = header(v[second..second + 8].try_into().unwrap()).unwrap();
        assert_eq!(h2.len, 70_000 - MAX_CONTENT);
        let long = "x".repeat(200);
        let p = params([("A", b"1" as &[u8]), ("B", long.as_bytes())]);
        assert_eq!(&p[..4], &[1, 1, b'A', b'1']);
        assert_eq!(&p[4..9], &[1, 0x80, 0, 0, 200]);
        assert_eq!(p.len(), 4 + 5 + 1 + 200);
    }

    #[test]
    fn a_bad_version_is_refused() {
        assert!(header(b"HTTP/1.1").is_err());
    }
}
