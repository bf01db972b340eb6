//! SDK 1.1, feature `schema`: a plugin describes its options as a JSON
//! Schema, so that `tamada --schema` gives editors one schema for conf.d
//! with every loaded plugin's options in it (a misspelt option is flagged
//! as it is typed). Enable the feature (`tamada-sdk = { version = "1",
//! features = ["schema"] }`), bring the SDK's own `schemars` into scope
//! with `use tamada_sdk::schema::schemars;` (your crate then needs no
//! `schemars` dependency of its own, and the derive finds it), derive
//! [`schemars::JsonSchema`] on the options type (serde's attributes are
//! honoured: `deny_unknown_fields` becomes `additionalProperties: false`)
//! and name it in [`export_plugin!`](crate::export_plugin):
//!
//! ```
//! use serde::Deserialize;
//! use tamada_sdk::prelude::*;
//! use tamada_sdk::schema::schemars;
//! use tamada_sdk::units::Secs;
//!
//! #[derive(Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     /// Shown by editors as the option's documentation.
//!     greeting: String,
//!     delay: Option<Secs>,
//! }
//!
//! struct Hello(Config);
//! impl Handler for Hello {}
//!
//! tamada_sdk::export_plugin!(
//!     name: "hello",
//!     new: |o: &Options| Ok(Hello(o.parse::<Config>()?)),
//!     roles: [Handler],
//!     schema: |_role| tamada_sdk::schema::of::<Config>(),
//! );
//! # fn main() {}
//! ```
//!
//! `schema:` takes a function of the [`Role`](crate::Role) (a plugin that is
//! both a handler and a logger may take different options as each) that
//! returns the schema text, or `None`.
//!
//! Defaults: with `#[serde(default)]` on the type and a `Default` impl,
//! the schema shows each option's default; [`Size`](crate::units::Size)
//! and [`Secs`](crate::units::Secs) are shown as conf.d writes them:
//!
//! ```
//! use serde::Deserialize;
//! use tamada_sdk::schema::schemars;
//! use tamada_sdk::units::{Secs, Size};
//!
//! #[derive(Deserialize, serde::Serialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields, default)]
//! struct Config {
//!     buffer: Size,
//!     timeout: Secs,
//! }
//! impl Default for Config {
//!     fn default() -> Self {
//!         Config { buffer: Size(64 << 10), timeout: Secs(std::time::Duration::from_secs(30)) }
//!     }
//! }
//!
//! let text = tamada_sdk::schema::of::<Config>().unwrap();
//! assert!(text.contains(r#""default":"64KiB""#), "{text}");
//! assert!(text.contains(r#""default":"30s""#), "{text}");
//! ```

pub use schemars;

/// The JSON Schema of `T`, with every part inlined (it is embedded in
/// the server's own schema).
pub fn of<T: schemars::JsonSchema>() -> Option<String> {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut root = generator.into_root_schema_for::<T>();
    root.remove("$schema");
    serde_json::to_string(&root).ok()
}

impl schemars::JsonSchema for crate::units::Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: 4096, 512KiB, 10MB, 1GiB",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*([kKmMgGtT](i?[bB])?|[bB])?\\s*$" }
            ]
        })
    }
}

impl schemars::JsonSchema for crate::units::Secs {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: 5 (seconds), 5s, 500ms, 2m, 1h, 365d",
            "anyOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*(ms|s|m|h|d)?\\s*$" }
            ]
        })
    }
}
