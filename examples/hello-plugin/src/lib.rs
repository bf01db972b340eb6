//! `hello`: a tamada plugin template. It answers `<greeting> <path>\n` as
//! `text/plain`, and passes requests under its `skip:` prefix on to the
//! next route.
//!
//! Options (all optional):
//! - `greeting`: the first word of the answer (default `hello`);
//! - `uppercase`: write the greeting in capitals (default `false`);
//! - `skip`: a path prefix (`/private` or `/private/`) whose requests this
//!   handler declines, so the next route answers them;
//! - `backend_ms`: stand in for a slow backend taking this long (default
//!   0): the pattern for blocking work, [`Request::offload`].
//!
//! It is also a response filter (`filters: [{ handler: hello }]`):
//! [`Greeter`] adds `X-Greeting` to every answer of the vhost or route, and
//! upper-cases `text/plain` bodies with `shout: true`.
//!
//! The SDK guide (`cargo doc -p tamada-sdk --all-features --open` in the tamada
//! repository) explains every line.

use serde::Deserialize;
use tamada_sdk::prelude::*;

/// The route's `options:`. `deny_unknown_fields` turns an admin's typo
/// into an error at `tamada -t` instead of a silently ignored key.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
struct Config {
    greeting: String,
    uppercase: bool,
    skip: Option<String>,
    backend_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            greeting: "hello".into(),
            uppercase: false,
            skip: None,
            backend_ms: 0,
        }
    }
}

/// One instance per route naming `hello`, shared by every worker thread
/// (so it is `Send + Sync` and holds nothing that changes per request).
pub struct Hello {
    /// The greeting, already in capitals when `uppercase` is set.
    greeting: String,
    /// Requests under this prefix are declined.
    skip: Option<String>,
    /// How long the stand-in backend takes.
    backend: Option<std::time::Duration>,
}

impl Hello {
    /// Whether `path` is `skip` itself or below it, on a segment boundary
    /// (`/private` skips `/private` and `/private/x`, not `/privateer`).
    fn skips(&self, path: &str) -> bool {
        let Some(skip) = self.skip.as_deref() else {
            return false;
        };
        let base = skip.trim_end_matches('/');
        match path.strip_prefix(base) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl Handler for Hello {
    /// It answers from memory: it runs on the event loop, with no thread
    /// hand-off. Anything slow is offloaded (below), never done here.
    fn placement(&self) -> Placement {
        Placement::Inline
    }

    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        if self.skips(req.path()) {
            // Not ours: the next route with this prefix, then shorter
            // prefixes, get the request.
            return Outcome::Decline;
        }
        if req.method() != "GET" && req.method() != "HEAD" {
            res.status(405).header("allow", "GET, HEAD");
            return Outcome::Done;
        }
        let greeting = match self.backend {
            None => self.greeting.clone(),
            // Blocking work: offloaded to a thread of the SDK's; the
            // request waits on its loop holding no server thread, and
            // `handle` is called again with the result.
            Some(delay) => match req.offloaded::<String>() {
                Some(Ok(answer)) => answer,
                Some(Err(_timed_out)) => {
                    res.status(504).body("the backend did not answer in time\n");
                    return Outcome::Done;
                }
                None => {
                    let greeting = self.greeting.clone();
                    return req.offload(std::time::Duration::from_secs(5), move || {
                        std::thread::sleep(delay); // the slow backend
                        greeting
                    });
                }
            },
        };
        // The core sends no body for HEAD; the headers are the same.
        res.status(200)
            .header("content-type", "text/plain; charset=utf-8")
            .body(format!("{greeting} {}\n", req.path()));
        Outcome::Done
    }
}

/// Builds the handler for one route from its options: at start-up, on
/// `tamada -t` and on every reload. An `Err` is reported with the vhost
/// file and route.
pub fn new(options: &Options) -> Result<Hello, String> {
    let c: Config = options.parse()?;
    if let Some(skip) = &c.skip
        && !skip.starts_with('/')
    {
        return Err(format!("skip: `{skip}` must start with `/`"));
    }
    let greeting = if c.uppercase {
        c.greeting.to_uppercase()
    } else {
        c.greeting
    };
    // Outside a request this goes to the server's own log, as
    // `hello_plugin: greeting "hello" on / of vhost example.com`.
    log::info!(
        "greeting {greeting:?} on {} of vhost {}",
        options.route(),
        options.vhost().name()
    );
    Ok(Hello {
        greeting,
        skip: c.skip,
        backend: (c.backend_ms > 0).then(|| std::time::Duration::from_millis(c.backend_ms)),
    })
}

/// `hello` is also a response filter (SDK 1.2), named in a vhost's or a
/// route's `filters:`: it adds `X-Greeting: <greeting>` to every answer,
/// whichever handler made it, and with `shout: true` upper-cases
/// `text/plain` bodies on their way out.
pub struct Greeter {
    greeting: String,
    shout: bool,
}

/// The filter's `options:`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, default)]
struct FilterConfig {
    greeting: Option<String>,
    shout: bool,
}

/// Upper-cases a body as it streams past (no buffering).
struct Shout;

impl tamada_sdk::filter::BodyFilter for Shout {
    fn data(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        out.extend(input.iter().map(u8::to_ascii_uppercase));
        Ok(())
    }
}

impl tamada_sdk::filter::Filter for Greeter {
    fn response(
        &self,
        _req: &Request,
        head: &mut tamada_sdk::filter::ResponseHead,
    ) -> tamada_sdk::filter::Action {
        use tamada_sdk::filter::Action;
        head.set_header("x-greeting", &self.greeting);
        let text = head
            .header_str("content-type")
            .is_some_and(|t| t.starts_with("text/plain"));
        if self.shout && text && head.status() == 200 {
            // A different representation: the handler's ETag no longer
            // names it.
            head.remove_header("etag");
            return Action::Transform(Box::new(Shout));
        }
        // Anything else goes out as the handler made it (a file stays a
        // file, sent with sendfile).
        Action::Keep
    }
}

/// Builds the filter for one `filters:` entry from its options.
pub fn new_filter(options: &Options) -> Result<Greeter, String> {
    let c: FilterConfig = options.parse()?;
    Ok(Greeter {
        greeting: c.greeting.unwrap_or_else(|| "hello".into()),
        shout: c.shout,
    })
}

// The name routes and `filters:` use in `handler:`, and the constructors.
tamada_sdk::export_plugin!(name: "hello", new: new, filter: new_filter);

#[cfg(test)]
mod tests {
    use super::*;
    use tamada_sdk::testing::TestRequest;

    fn run(options: &str, req: TestRequest) -> tamada_sdk::testing::TestResponse {
        let hello = new(&req.options(options)).expect("options are valid");
        req.run(&hello)
    }

    #[test]
    fn greets_with_the_path() {
        let out = run("", TestRequest::get("/world"));
        assert_eq!(out.outcome, Outcome::Done);
        assert_eq!(out.response.get_status(), 200);
        assert_eq!(
            out.response.get_header("content-type"),
            Some(&b"text/plain; charset=utf-8"[..])
        );
        assert_eq!(out.body_bytes(), b"hello /world\n");
    }

    #[test]
    fn greeting_and_uppercase_options() {
        let out = run("{ greeting: hi }", TestRequest::get("/x"));
        assert_eq!(out.body_bytes(), b"hi /x\n");
        let out = run("{ greeting: hi, uppercase: true }", TestRequest::get("/x"));
        assert_eq!(out.body_bytes(), b"HI /x\n");
    }

    #[test]
    fn declines_under_the_skip_prefix_only() {
        let opts = "{ skip: /private }";
        for p in ["/private", "/private/", "/private/a/b"] {
            assert_eq!(
                run(opts, TestRequest::get(p)).outcome,
                Outcome::Decline,
                "{p}"
            );
        }
        for p in ["/privateer", "/", "/public/private"] {
            assert_eq!(run(opts, TestRequest::get(p)).outcome, Outcome::Done, "{p}");
        }
    }

    #[test]
    fn a_slow_backend_is_offloaded_and_the_answer_comes_back() {
        let out = run("{ backend_ms: 20 }", TestRequest::get("/slow"));
        assert_eq!(out.outcome, Outcome::Done);
        assert_eq!(out.body_bytes(), b"hello /slow\n");
    }

    #[test]
    fn the_filter_greets_every_answer_and_shouts_text() {
        let req = TestRequest::get("/page");
        let f = new_filter(&req.options("{ greeting: hey, shout: true }")).unwrap();
        let mut res = ResponseBuilder::new();
        res.header("content-type", "text/plain")
            .header("etag", "\"1\"")
            .body("quiet words");
        let out = req.filter(&f, res);
        assert_eq!(out.head.header_str("x-greeting"), Some("hey"));
        assert_eq!(out.body, b"QUIET WORDS");
        assert_eq!(out.head.header("etag"), None);
        // Other types are kept as they are.
        let mut res = ResponseBuilder::new();
        res.header("content-type", "image/png").body("png");
        let out = req.filter(&f, res);
        assert!(!out.transformed);
        assert_eq!(out.body, b"png");
        assert_eq!(out.head.header_str("x-greeting"), Some("hey"));
    }

    #[test]
    fn other_methods_get_405() {
        let out = run("", TestRequest::new("POST", "/x").body("data"));
        assert_eq!(out.response.get_status(), 405);
        assert_eq!(out.response.get_header("allow"), Some(&b"GET, HEAD"[..]));
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        let req = TestRequest::get("/");
        let err = new(&req.options("{ greting: hi }")).err().expect("refused");
        assert!(err.contains("unknown field `greting`"), "{err}");
        let err = new(&req.options("{ skip: private }"))
            .err()
            .expect("refused");
        assert!(err.contains("must start with `/`"), "{err}");
    }
}
