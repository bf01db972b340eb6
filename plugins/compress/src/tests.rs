use super::*;
use std::io::Read;
use tamada_sdk::testing::TestRequest;

fn filter(yaml: &str) -> Compress {
    let t = TestRequest::get("/");
    new(&t.options(yaml)).unwrap()
}

fn text(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    let mut i = 0u64;
    while v.len() < n {
        v.extend_from_slice(format!("<p>line {i} of a page about things</p>\n").as_bytes());
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            % 1000;
    }
    v.truncate(n);
    v
}

pub fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(data).unwrap(),
        other => panic!("{other}"),
    }
    out
}

fn html(body: Vec<u8>) -> ResponseBuilder {
    let mut r = ResponseBuilder::new();
    r.header("content-type", "text/html; charset=utf-8")
        .header("etag", "\"5f-1a\"")
        .header("accept-ranges", "bytes")
        .body(body);
    r
}

#[test]
fn each_coding_round_trips_and_marks_the_representation() {
    let f = filter("");
    let body = text(20_000);
    for (ae, coding) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip;q=1, br;q=0.9, zstd;q=0.1", "gzip"),
    ] {
        let out = TestRequest::get("/")
            .header("accept-encoding", ae)
            .filter(&f, html(body.clone()));
        assert!(out.error.is_none(), "{:?}", out.error);
        assert!(out.transformed, "{ae}");
        assert_eq!(
            out.head.header_str("content-encoding"),
            Some(coding),
            "{ae}"
        );
        assert_eq!(out.head.header_str("vary"), Some("Accept-Encoding"));
        assert_eq!(
            out.head.header_str("etag"),
            Some(format!("\"5f-1a-{coding}\"").as_str())
        );
        assert_eq!(out.head.header("accept-ranges"), None);
        assert!(out.body.len() < body.len() / 3, "{ae}: {}", out.body.len());
        assert_eq!(decode(coding, &out.body), body, "{ae}");
    }
}

#[test]
fn what_is_left_alone() {
    let f = filter("");
    let gz = TestRequest::get("/").header("accept-encoding", "gzip");
    // No Accept-Encoding: identity, but Vary says it depends.
    let out = TestRequest::get("/").filter(&f, html(text(5000)));
    assert!(!out.transformed);
    assert_eq!(out.head.header_str("vary"), Some("Accept-Encoding"));
    // Small.
    assert!(!gz.filter(&f, html(text(100))).transformed);
    // Not a text type.
    let mut png = ResponseBuilder::new();
    png.header("content-type", "image/png").body(text(5000));
    let out = gz.filter(&f, png);
    assert!(!out.transformed);
    assert_eq!(out.head.header("vary"), None);
    // Already encoded.
    let mut r = html(text(5000));
    r.header("content-encoding", "br");
    assert!(!gz.filter(&f, r).transformed);
    // no-transform.
    let mut r = html(text(5000));
    r.header("cache-control", "public, no-transform");
    assert!(!gz.filter(&f, r).transformed);
    // 206, 204, 404.
    for status in [206, 204, 404] {
        let mut r = html(text(5000));
        r.status(status);
        assert!(!gz.filter(&f, r).transformed, "{status}");
    }
    // An event stream, unless named.
    let mut r = ResponseBuilder::new();
    r.header("content-type", "text/event-stream")
        .body(text(5000));
    assert!(!gz.filter(&f, r).transformed);
}

#[test]
fn identity_refused_compresses_anything_acceptable() {
    let f = filter("");
    let req = TestRequest::get("/").header("accept-encoding", "gzip, identity;q=0");
    let out = req.filter(&f, html(text(50)));
    assert!(out.transformed);
    assert_eq!(decode("gzip", &out.body), text(50));
    // Nothing acceptable: sent as it is.
    let req = TestRequest::get("/").header("accept-encoding", "compress, identity;q=0");
    assert!(!req.filter(&f, html(text(5000))).transformed);
}

#[test]
fn options_choose_order_levels_and_types() {
    let f = filter("encodings: [gzip, br]\nlevels: { gzip: 9 }\ntypes: [application/x-thing]");
    let req = TestRequest::get("/").header("accept-encoding", "zstd, br, gzip");
    let mut r = ResponseBuilder::new();
    r.header("content-type", "application/x-thing")
        .body(text(5000));
    let out = req.filter(&f, r);
    assert_eq!(out.head.header_str("content-encoding"), Some("gzip"));
    assert!(
        !req.filter(&f, html(text(5000))).transformed,
        "text/html not listed"
    );
    let t = TestRequest::get("/");
    for (yaml, want) in [
        (
            "encodings: [deflate]",
            "encodings[0]: `deflate` is not one of zstd, br, gzip",
        ),
        (
            "levels: { gzip: 12 }",
            "levels.gzip: 12 is not a gzip level (1 to 9)",
        ),
        ("types: [html]", "types[0]: `html` is not a MIME type"),
        ("levels: { lz4: 1 }", "unknown field `lz4`"),
    ] {
        let e = new(&t.options(yaml)).err().unwrap();
        assert!(e.contains(want), "{yaml}: {e}");
    }
}

#[test]
fn conditional_requests_see_the_files_tag() {
    let f = filter("");
    let req = TestRequest::get("/")
        .header("accept-encoding", "gzip")
        .header("if-none-match", "\"5f-1a-gzip\", \"other\"");
    let e = req.filter_request(&f);
    assert_eq!(
        e.edits(),
        &[(
            "if-none-match".to_owned(),
            Some(b"\"5f-1a\", \"other\"".to_vec())
        )]
    );
    // The handler's 304 names the compressed tag again.
    let mut r = ResponseBuilder::new();
    r.status(304).header("etag", "\"5f-1a\"");
    let out = req.filter(&f, r);
    assert_eq!(out.head.header_str("etag"), Some("\"5f-1a-gzip\""));
    assert_eq!(out.head.header_str("vary"), Some("Accept-Encoding"));
    // If-Match too (a PUT with the tag it got).
    let req_m = TestRequest::get("/")
        .header("accept-encoding", "gzip")
        .header("if-match", "\"5f-1a-gzip\"");
    assert_eq!(
        req_m.filter_request(&f).edits(),
        &[("if-match".to_owned(), Some(b"\"5f-1a\"".to_vec()))]
    );
    // A tag of another coding than the one chosen is not touched.
    let req = TestRequest::get("/")
        .header("accept-encoding", "br")
        .header("if-none-match", "\"5f-1a-gzip\"");
    assert!(req.filter_request(&f).edits().is_empty());
    // If-Range with a compressed tag: the whole body.
    let req = TestRequest::get("/")
        .header("accept-encoding", "gzip")
        .header("range", "bytes=0-9")
        .header("if-range", "\"5f-1a-gzip\"");
    let e = req.filter_request(&f);
    assert_eq!(
        e.edits(),
        &[("range".to_owned(), None), ("if-range".to_owned(), None)]
    );
}

#[test]
fn head_gets_the_fields_of_a_get() {
    let f = filter("");
    let out = TestRequest::new("HEAD", "/")
        .header("accept-encoding", "br")
        .filter(&f, html(text(5000)));
    assert_eq!(out.head.header_str("content-encoding"), Some("br"));
    assert_eq!(out.head.header_str("etag"), Some("\"5f-1a-br\""));
}

#[test]
fn streams_are_flushed_piece_by_piece() {
    let f = filter("");
    let data = text(30_000);
    let mut r = ResponseBuilder::new();
    r.header("content-type", "text/plain")
        .body(Body::Stream(Box::new(ReadStream(std::io::Cursor::new(
            data.clone(),
        )))));
    let out = TestRequest::get("/")
        .header("accept-encoding", "zstd")
        .filter(&f, r);
    assert!(out.transformed);
    assert_eq!(decode("zstd", &out.body), data);
    let f = filter("streams: false");
    let mut r = ResponseBuilder::new();
    r.header("content-type", "text/plain")
        .body(Body::Stream(Box::new(ReadStream(std::io::Cursor::new(
            data,
        )))));
    assert!(
        !TestRequest::get("/")
            .header("accept-encoding", "zstd")
            .filter(&f, r)
            .transformed
    );
}

#[test]
fn the_cache_stores_once_and_never_serves_a_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("c");
    let f = filter(&format!(
        "cache: {{ dir: {}, max_size: 1MiB }}",
        cache_dir.display()
    ));
    let page = dir.path().join("page.html");
    std::fs::write(&page, text(9000)).unwrap();
    let serve = || {
        let file = std::fs::File::open(&page).unwrap();
        let len = file.metadata().unwrap().len();
        let mut r = ResponseBuilder::new();
        r.header("content-type", "text/html").body(Body::File {
            file,
            offset: 0,
            len,
        });
        TestRequest::get("/page.html")
            .header("accept-encoding", "gzip")
            .filter(&f, r)
    };
    let first = serve();
    assert!(first.transformed && !first.replaced);
    assert_eq!(decode("gzip", &first.body), text(9000));
    let second = serve();
    assert!(second.replaced, "the second answer comes from the cache");
    assert_eq!(second.body, first.body);
    // A changed file (another size or time) is a miss.
    std::fs::write(&page, text(9500)).unwrap();
    let third = serve();
    assert!(third.transformed && !third.replaced);
    assert_eq!(decode("gzip", &third.body), text(9500));
    let entries = std::fs::read_dir(&cache_dir).unwrap().count();
    assert_eq!(entries, 2);
}

#[test]
fn the_cache_evicts_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let c = cache::open(&dir.path().join("c"), 1 << 20).unwrap();
    let md = std::fs::metadata(dir.path()).unwrap();
    let mut names = Vec::new();
    for i in 0..6u64 {
        let mut key = cache::Key::of(&md, Coding::Gzip, 5);
        key.ino = i;
        key.size = 1000;
        let mut w = c.writer(key.clone()).unwrap();
        w.write(&vec![b'x'; 250 * 1024]);
        names.push(w.commit().unwrap());
        if i == 2 {
            // Entry 0 is used again: entry 1 is now the oldest.
            key.ino = 0;
            assert!(c.get(&key).is_some());
        }
    }
    let left: Vec<_> = names
        .iter()
        .filter(|n| dir.path().join("c").join(n).exists())
        .collect();
    assert!(left.len() <= 4, "{left:?}");
    assert!(
        dir.path().join("c").join(&names[0]).exists(),
        "used recently"
    );
    assert!(
        !dir.path().join("c").join(&names[1]).exists(),
        "least recently used"
    );
}

#[test]
fn entry_names_come_back_as_keys() {
    let dir = tempfile::tempdir().unwrap();
    let md = std::fs::metadata(dir.path()).unwrap();
    for c in Coding::ALL {
        let k = cache::Key::of(&md, c, 7);
        assert_eq!(cache::Key::parse(&k.name()), Some(k));
    }
    assert_eq!(cache::Key::parse("x.gz"), None);
    assert_eq!(cache::Key::parse(".tmp-1-2"), None);
}
