//! Where a node of a YAML file is: the line and column of the key (or
//! sequence item) a path leads to, from a parse that keeps positions
//! (yaml-rust2's events; serde's values have none). Used to name the
//! conf.d file's own line for an error a plugin reports deep in its
//! `options:` (`routes[0].options.cache.valid`).

use yaml_rust2::Event;
use yaml_rust2::parser::{MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Splits an option path as the SDK reports it (`cache.valid`,
/// `hosts[2].name`) into steps.
pub fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_owned()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            if let Ok(n) = r[..end].parse() {
                out.push(Seg::Index(n));
            }
            rest = &r[end + 1..];
        }
    }
    out
}

struct Sink(Vec<(Event, Marker)>);

impl MarkedEventReceiver for Sink {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.0.push((ev, mark));
    }
}

/// The 1-based line and column of the node at `path` in `text`.
pub fn locate(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let mut sink = Sink(Vec::new());
    Parser::new_from_str(text).load(&mut sink, false).ok()?;
    let ev = &sink.0;
    // The document's root node.
    let root = ev
        .iter()
        .position(|(e, _)| matches!(e, Event::DocumentStart))?
        + 1;
    let m = find(ev, root, path)?;
    Some((m.line(), m.col() + 1))
}

/// The index just after the node that starts at `i`.
fn skip(ev: &[(Event, Marker)], i: usize) -> usize {
    match ev.get(i).map(|e| &e.0) {
        Some(Event::MappingStart(..)) | Some(Event::SequenceStart(..)) => {
            let mut depth = 0usize;
            let mut j = i;
            while j < ev.len() {
                match ev[j].0 {
                    Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
                    Event::MappingEnd | Event::SequenceEnd => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            j
        }
        _ => i + 1,
    }
}

fn find(ev: &[(Event, Marker)], i: usize, path: &[Seg]) -> Option<Marker> {
    let (first, rest) = match path.split_first() {
        None => return ev.get(i).map(|e| e.1),
        Some(x) => x,
    };
    match (&ev.get(i)?.0, first) {
        (Event::MappingStart(..), Seg::Key(want)) => {
            let mut j = i + 1;
            while !matches!(ev.get(j)?.0, Event::MappingEnd) {
                let value = skip(ev, j);
                if let Event::Scalar(k, ..) = &ev[j].0
                    && k == want
                {
                    return if rest.is_empty() {
                        Some(ev[j].1)
                    } else {
                        find(ev, value, rest)
                    };
                }
                j = skip(ev, value);
            }
            None
        }
        (Event::SequenceStart(..), Seg::Index(n)) => {
            let mut j = i + 1;
            for _ in 0..*n {
                if matches!(ev.get(j)?.0, Event::SequenceEnd) {
                    return None;
                }
                j = skip(ev, j);
            }
            if matches!(ev.get(j)?.0, Event::SequenceEnd) {
                return None;
            }
            find(ev, j, rest)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "vhost: a\nroutes:\n  - path: /x/\n    handler: static\n    options:\n      cache:\n        valid: soon\n  - path: /\n    handler: echo\n    options: { tag: t, extra_thing: 1, list: [a, b, c] }\n";

    fn at(p: &str) -> Option<(usize, usize)> {
        locate(FILE, &parse_path(p))
    }

    #[test]
    fn block_and_flow_styles() {
        assert_eq!(at("routes[0].options.cache.valid"), Some((7, 9)));
        assert_eq!(at("routes[1].options.extra_thing"), Some((10, 24)));
        assert_eq!(at("routes[1].options.list[2]"), Some((10, 53)));
        assert_eq!(at("routes[1].handler"), Some((9, 5)));
        assert_eq!(at("routes[2]"), None);
        assert_eq!(at("routes[0].options.nothing"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("a.b[2].c"),
            vec![
                Seg::Key("a".into()),
                Seg::Key("b".into()),
                Seg::Index(2),
                Seg::Key("c".into())
            ]
        );
        assert_eq!(parse_path(""), vec![]);
    }
}
