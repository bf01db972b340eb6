//! What the `redirect` and `rewrite` access plugins share: templates of
//! a target (`$scheme`, `$host`, `$request_uri`, `$path`, `$query`,
//! `$is_args`, `$1`-`$9`) checked when options are read and expanded for
//! a request, and the `match:` pattern whose groups they name.

pub mod pattern;
pub mod template;

pub use pattern::Pattern;
pub use template::Template;
