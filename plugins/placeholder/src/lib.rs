//! `placeholder`: answers every request it gets with one fixed page.
//!
//! It stands in for real content while the static plugin is not there, and
//! is a minimal example of a tamada plugin.
//!
//! Options (all optional):
//! - `status`: the status code (default 200)
//! - `content_type`: default `text/html; charset=utf-8`
//! - `body`: the page (default: a short page naming the vhost)

use serde::Deserialize;
use tamada_sdk::prelude::*;

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    status: Option<u16>,
    content_type: Option<String>,
    body: Option<String>,
}

/// The handler: one page for every request.
pub struct Placeholder {
    status: u16,
    content_type: String,
    body: Option<String>,
}

impl Handler for Placeholder {
    /// Only memory work (SDK 1.1): runs on the event loop.
    fn placement(&self) -> Placement {
        Placement::Inline
    }
    fn handle(&self, req: &Request, res: &mut ResponseBuilder) -> Outcome {
        let body = match &self.body {
            Some(b) => b.clone(),
            None => format!(
                "<!DOCTYPE html>\n<html><head><title>tamada</title></head>\n<body><h1>tamada is serving {}</h1>\n<p>This page comes from the <code>placeholder</code> plugin.</p></body></html>\n",
                html_escape(req.vhost().name())
            ),
        };
        res.status(self.status)
            .header("content-type", &self.content_type)
            .body(body);
        Outcome::Done
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Builds the handler from its options.
pub fn new(options: &Options) -> Result<Placeholder, String> {
    let c: Config = options.parse()?;
    let status = c.status.unwrap_or(200);
    if !(200..=599).contains(&status) {
        return Err(format!(
            "status: {status} is not a final status code (200-599)"
        ));
    }
    Ok(Placeholder {
        status,
        content_type: c
            .content_type
            .unwrap_or_else(|| "text/html; charset=utf-8".into()),
        body: c.body,
    })
}

tamada_sdk::export_plugin!(
    name: "placeholder",
    new: new,
    roles: [Handler],
    schema: |_| tamada_sdk::schema::of::<Config>(),
);

#[cfg(test)]
mod tests {
    use super::*;
    use tamada_sdk::testing::TestRequest;

    #[test]
    fn answers_with_configured_page() {
        let req = TestRequest::get("/anything");
        let h = new(&req.options("{status: 203, body: hi}")).unwrap();
        let out = req.run(&h);
        assert_eq!(out.outcome, Outcome::Done);
        assert_eq!(out.response.get_status(), 203);
        assert_eq!(out.body_bytes(), b"hi");
    }

    #[test]
    fn rejects_unknown_option() {
        let req = TestRequest::get("/");
        let err = new(&req.options("{stauts: 200}")).err().unwrap();
        assert!(err.contains("unknown field `stauts`"), "{err}");
    }
}
