//! The proxy's machine on both paths, against scripted upstreams.
use std::io::{Read, Write};
use std::net::TcpListener;
use tamada_sdk::testing::TestRequest;

/// An upstream that answers each request on a connection with `reply`
/// (its request line and body echoed where it says `{req}`).
fn upstream(reply: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).into_owned();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|n| n.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            let line = head.lines().next().unwrap_or("").to_owned();
                            let body =
                                String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned();
                            got.drain(..end + 4 + len);
                            let text = format!("{line} {body}");
                            let r = reply
                                .replace("{len}", &text.len().to_string())
                                .replace("{req}", &text);
                            if s.write_all(r.as_bytes()).is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&b[..n]),
                    }
                }
            });
        }
    });
    port
}

fn proxy(port: u16, req: &TestRequest) -> crate::Proxy {
    crate::new(&req.options(&format!("{{ upstreams: [\"127.0.0.1:{port}\"] }}"))).unwrap()
}

#[test]
fn on_the_loop_a_request_waits_for_its_upstream_and_answers_from_memory() {
    let port = upstream("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nX-Up: 1\r\n\r\n{req}");
    let req = TestRequest::new("POST", "/p?q=1").body("hello");
    let p = proxy(port, &req);
    let mut out = req.run_waiting(&p);
    assert_eq!(out.response.get_status(), 200);
    assert_eq!(out.response.get_header("x-up"), Some(&b"1"[..]));
    assert_eq!(out.read_body(), b"POST /p?q=1 HTTP/1.1 hello");
}

#[test]
fn on_the_pool_the_same_machine_blocks_and_a_chunked_answer_is_decoded() {
    let port = upstream(
        "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
    );
    let req = TestRequest::new("PUT", "/x").body("body").chunked(true);
    let p = proxy(port, &req);
    let mut out = req.run(&p);
    assert_eq!(out.response.get_status(), 201);
    assert_eq!(out.read_body(), b"abcde");
}

#[test]
fn a_refused_connect_is_a_502_on_both_paths() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let req = TestRequest::get("/");
    let p = proxy(port, &req);
    assert_eq!(req.run_waiting(&p).response.get_status(), 502);
    assert_eq!(req.run(&p).response.get_status(), 502);
}
