//! The autoindex page: a folder's entries, directories first, then by
//! name; names HTML-escaped and links percent-encoded.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use std::fs;
use std::path::Path;
use std::time::SystemTime;

/// Characters encoded in a link's path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\'')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']')
    .add(b';')
    .add(b'&')
    .add(b'+')
    .add(b'=');

/// A normalised path as a URL path: each segment percent-encoded.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| utf8_percent_encode(seg, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

pub fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

struct Entry {
    name: String,
    dir: bool,
    size: u64,
    mtime: Option<SystemTime>,
}

/// Renders the listing of `dir`, shown at URL path `url_path` (ends in `/`).
pub fn render(dir: &Path, url_path: &str, show_dotfiles: bool) -> std::io::Result<String> {
    let mut entries = Vec::new();
    for e in fs::read_dir(dir)? {
        let Ok(e) = e else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && !show_dotfiles {
            continue;
        }
        // Follow symlinks for the type and size; a dangling link is skipped.
        let Ok(md) = fs::metadata(e.path()) else {
            continue;
        };
        entries.push(Entry {
            name,
            dir: md.is_dir(),
            size: md.len(),
            mtime: md.modified().ok(),
        });
    }
    entries.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
    let title = html_escape(url_path);
    let mut h = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title>\n<style>body{{font-family:sans-serif}}td{{padding:0 1em}}td.s{{text-align:right}}</style></head>\n<body><h1>Index of {title}</h1>\n<table>\n<tr><th>Name</th><th>Size</th><th>Last modified</th></tr>\n"
    );
    if url_path != "/" {
        h.push_str("<tr><td><a href=\"../\">../</a></td><td class=\"s\">-</td><td></td></tr>\n");
    }
    for e in &entries {
        let slash = if e.dir { "/" } else { "" };
        let href = utf8_percent_encode(&e.name, SEGMENT).to_string();
        let size = if e.dir {
            "-".to_owned()
        } else {
            e.size.to_string()
        };
        let when = e.mtime.map(httpdate::fmt_http_date).unwrap_or_default();
        h.push_str(&format!(
            "<tr><td><a href=\"{href}{slash}\">{}{slash}</a></td><td class=\"s\">{size}</td><td>{when}</td></tr>\n",
            html_escape(&e.name)
        ));
    }
    h.push_str("</table></body></html>\n");
    Ok(h)
}
