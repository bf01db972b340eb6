//! What the `redirect` and `rewrite` access plugins share: templates of
//! a target (`$scheme`, `$host`, `$request_uri`, `$path`, `$query`,
//! `$is_args`, `$1`-`$9`) checked when options are read and expanded for
//! a request.

pub mod template;

pub use template::Template;
