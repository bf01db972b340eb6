//! The client's address from `X-Forwarded-For` and `Forwarded` (RFC 7239)
//! behind trusted proxies, the scheme they claim (`X-Forwarded-Proto`,
//! `Forwarded: proto=`), and the PROXY protocol (v1 and v2) header with
//! its SSL flag.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use tamada::exchange::realip::{
    Cidr, Proxy, forwarded_for, forwarded_https, forwarded_nodes, parse_proxy, proxy_ssl,
};
use tamada::http::request::{Framing, RequestHead};

fuzz_target!(|data: &[u8]| {
    match parse_proxy(data) {
        Proxy::Header(n, _) => {
            assert!(n <= data.len());
            let _ = proxy_ssl(&data[..n]);
        }
        Proxy::Partial | Proxy::Bad(_) => {}
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let trusted: Vec<Cidr> = ["127.0.0.0/8", "10.0.0.0/8", "::1/128"]
        .iter()
        .map(|c| c.parse::<Cidr>().unwrap())
        .collect();
    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let values: Vec<&str> = text.split('\n').collect();
    let client = forwarded_for(&trusted, peer, values.iter().copied());
    // An untrusted peer is never replaced.
    let outside: SocketAddr = "192.0.2.9:1".parse().unwrap();
    assert_eq!(
        forwarded_for(&trusted, outside, values.iter().copied()),
        outside
    );
    let _ = client;
    // The scheme a proxy claims: only a trusted one's word counts.
    let mut head = RequestHead {
        method: "GET".into(),
        target: "/".into(),
        version_minor: 1,
        http2: false,
        headers: Vec::new(),
        path: "/".into(),
        query: None,
        host: String::new(),
        framing: Framing::None,
        keep_alive: true,
        expect_continue: false,
        head_len: 0,
    };
    for (i, v) in values.iter().enumerate() {
        let name = if i % 2 == 0 {
            "X-Forwarded-Proto"
        } else {
            "Forwarded"
        };
        head.headers.push((name.to_owned(), v.as_bytes().to_vec()));
    }
    let _ = forwarded_https(&trusted, peer, &head);
    assert!(!forwarded_https(&trusted, outside, &head));
    let nodes = forwarded_nodes(values.iter().copied());
    let _ = forwarded_for(&trusted, peer, nodes.iter().map(String::as_str));
});
