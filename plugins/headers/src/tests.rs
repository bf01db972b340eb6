use super::*;
use tamada_sdk::testing::TestRequest;

fn filter(yaml: &str) -> Headers {
    new(&TestRequest::get("/").options(yaml)).unwrap()
}

fn answer(status: u16, ct: &str) -> ResponseBuilder {
    let mut r = ResponseBuilder::new();
    r.status(status)
        .header("content-type", ct)
        .header("x-powered-by", "php")
        .header("cache-control", "private")
        .body("body");
    r
}

#[test]
fn set_add_remove_by_status() {
    let f = filter(
        "set: { Cache-Control: 'public, max-age=60', X-Frame-Options: DENY }\nadd: { Link: ['</a.css>; rel=preload', '</b.js>; rel=preload'] }\nremove: [X-Powered-By]",
    );
    let out = TestRequest::get("/").filter(&f, answer(200, "text/html"));
    assert_eq!(
        out.head.header_str("cache-control"),
        Some("public, max-age=60")
    );
    assert_eq!(out.head.header_str("x-frame-options"), Some("DENY"));
    assert_eq!(out.head.header("x-powered-by"), None);
    let links: Vec<_> = out.head.headers().filter(|(n, _)| *n == "Link").collect();
    assert_eq!(links.len(), 2);
    assert_eq!(out.body, b"body");
    // nginx's list: not on a 404 without `always`.
    let out = TestRequest::get("/").filter(&f, answer(404, "text/html"));
    assert_eq!(out.head.header("x-frame-options"), None);
    let f = filter("set: { X-Frame-Options: DENY }\nalways: true");
    let out = TestRequest::get("/").filter(&f, answer(500, "text/html"));
    assert_eq!(out.head.header_str("x-frame-options"), Some("DENY"));
}

#[test]
fn rules_by_type_and_expires() {
    let f = filter(
        "rules:\n  - types: [image/*, text/css]\n    expires: 30d\n  - status: [404]\n    set: { Cache-Control: no-store }\n  - types: [text/html]\n    expires: epoch",
    );
    let out = TestRequest::get("/").filter(&f, answer(200, "image/png"));
    assert_eq!(
        out.head.header_str("cache-control"),
        Some("max-age=2592000")
    );
    let exp = httpdate::parse_http_date(out.head.header_str("expires").unwrap()).unwrap();
    let ahead = exp.duration_since(SystemTime::now()).unwrap().as_secs();
    assert!((2_591_000..=2_592_000).contains(&ahead), "{ahead}");
    let out = TestRequest::get("/").filter(&f, answer(404, "text/plain"));
    assert_eq!(out.head.header_str("cache-control"), Some("no-store"));
    let out = TestRequest::get("/").filter(&f, answer(200, "text/html; charset=utf-8"));
    assert_eq!(out.head.header_str("cache-control"), Some("no-cache"));
    let out = TestRequest::get("/").filter(&f, answer(200, "application/json"));
    assert_eq!(out.head.header_str("cache-control"), Some("private"));
    // Past ten years is `max` (the date stays printable).
    let f = filter("expires: 3000000d");
    let out = TestRequest::get("/").filter(&f, answer(200, "text/css"));
    assert_eq!(
        out.head.header_str("cache-control"),
        Some("max-age=315360000")
    );
    assert_eq!(
        out.head.header_str("expires"),
        Some("Thu, 31 Dec 2037 23:55:55 GMT")
    );
}

#[test]
fn bad_names_and_values_are_refused_where_they_are() {
    let t = TestRequest::get("/");
    for (yaml, want, path) in [
        (
            "set: { X-A: \"a\\r\\nSet-Cookie: x\" }",
            "may not hold CR, LF or NUL",
            "set.X-A",
        ),
        ("set: { \"X A\": b }", "is not a header field name", "set"),
        (
            "add: { Content-Length: '5' }",
            "the server's own field",
            "add",
        ),
        ("rules: [{ expires: soon }]", "not a duration", ""),
        (
            "cors: { origins: ['*'], credentials: true }",
            "list the origins",
            "",
        ),
    ] {
        let o = t.options(yaml);
        let e = new(&o).err().unwrap_or_else(|| panic!("{yaml} passed"));
        assert!(e.contains(want), "{yaml}: {e}");
        if !path.is_empty() {
            assert!(
                o.error_path().is_some_and(|p| p.starts_with(path)),
                "{yaml}: {:?}",
                o.error_path()
            );
        }
    }
}

#[test]
fn cors_for_listed_origins_and_preflights() {
    let f = filter(
        "cors: { origins: ['https://app.example'], credentials: true, expose: [X-Total], methods: [GET, PUT] }",
    );
    let out = TestRequest::get("/api")
        .header("origin", "https://app.example")
        .filter(&f, answer(200, "application/json"));
    assert_eq!(
        out.head.header_str("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        out.head.header_str("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        out.head.header_str("access-control-expose-headers"),
        Some("X-Total")
    );
    assert_eq!(out.head.header_str("vary"), Some("Origin"));
    let out = TestRequest::get("/api")
        .header("origin", "https://evil.example")
        .filter(&f, answer(200, "application/json"));
    assert_eq!(out.head.header("access-control-allow-origin"), None);
    let out = TestRequest::new("OPTIONS", "/api")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type")
        .filter(&f, answer(405, "text/html"));
    assert_eq!(out.head.status(), 204);
    assert!(out.replaced && out.body.is_empty());
    assert_eq!(
        out.head.header_str("access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        out.head.header_str("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(out.head.header_str("access-control-max-age"), Some("86400"));
}
