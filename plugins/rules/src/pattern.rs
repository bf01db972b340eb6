//! The `match:` option of `redirect` and `rewrite`: an optional regular
//! expression on the normalised path, whose groups templates name `$1`...

use regex::Regex;

/// A rule's `match:`; without one, every path is selected with no groups.
#[derive(Debug, Default)]
pub struct Pattern(Option<Regex>);

impl Pattern {
    /// Compiles `match:` (an error names the option).
    pub fn parse(text: Option<&str>) -> Result<Pattern, String> {
        match text {
            Some(p) => Regex::new(p)
                .map(|r| Pattern(Some(r)))
                .map_err(|e| format!("match: `{p}` is not a valid regular expression: {e}")),
            None => Ok(Pattern(None)),
        }
    }

    /// How many groups templates may name (`$1`...).
    pub fn groups(&self) -> usize {
        self.0.as_ref().map_or(0, |r| r.captures_len() - 1)
    }

    /// The captures for `path` (index 0: the whole match), or `None` when
    /// the pattern does not select it.
    pub fn captures<'p>(&self, path: &'p str) -> Option<Vec<Option<&'p str>>> {
        match &self.0 {
            Some(re) => re
                .captures(path)
                .map(|c| c.iter().map(|m| m.map(|m| m.as_str())).collect()),
            None => Some(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_captures() {
        let p = Pattern::parse(Some("^/a/([^/]+)/(.*)$")).unwrap();
        assert_eq!(p.groups(), 2);
        assert_eq!(
            p.captures("/a/x/y/z"),
            Some(vec![Some("/a/x/y/z"), Some("x"), Some("y/z")])
        );
        assert_eq!(p.captures("/b"), None);
        let none = Pattern::parse(None).unwrap();
        assert_eq!((none.groups(), none.captures("/b")), (0, Some(vec![])));
        assert!(
            Pattern::parse(Some("("))
                .unwrap_err()
                .contains("match: `(`")
        );
    }
}
