//! The client's address from `X-Forwarded-For` and `Forwarded` (RFC 7239)
//! behind trusted proxies, and the PROXY protocol (v1 and v2) header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use tamada::exchange::realip::{Cidr, Proxy, forwarded_for, forwarded_nodes, parse_proxy};

fuzz_target!(|data: &[u8]| {
    match parse_proxy(data) {
        Proxy::Header(n, _) => assert!(n <= data.len()),
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
    let nodes = forwarded_nodes(values.iter().copied());
    let _ = forwarded_for(&trusted, peer, nodes.iter().map(String::as_str));
});
