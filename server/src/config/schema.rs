//! `tamada --schema`: one JSON Schema for every file of conf.d, made from
//! the same types the server parses (schemars), with the options of each
//! loaded plugin that describes them (SDK 1.1) in place: editors with a
//! YAML language server flag a misspelt key as it is typed. A file is
//! either `server.yaml` or a vhost file (the one with `vhost:`).

use crate::config::{AccessConf, FilterConf, LoggerConf, RouteConf, Settings, VhostRaw};
use crate::plugins::Registry;
use serde_json::{Value, json};
use tamada_sdk::abi::RoleV1;

/// The schema, for the plugins in `registry`.
pub fn build(registry: &Registry) -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let server = generator.subschema_for::<Settings>();
    let vhost = generator.subschema_for::<VhostRaw>();
    generator.subschema_for::<RouteConf>();
    generator.subschema_for::<LoggerConf>();
    generator.subschema_for::<AccessConf>();
    generator.subschema_for::<FilterConf>();
    let mut defs: serde_json::Map<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    // Each route's, logger's, access rule's and filter's `options` as its
    // plugin describes them.
    let parse = |text: abi_stable::std_types::RString| serde_json::from_str(text.as_str()).ok();
    for def in ["RouteConf", "LoggerConf", "AccessConf", "FilterConf"] {
        let fit: Vec<(&str, Option<Value>)> = registry
            .plugins
            .values()
            .filter_map(|p| {
                let name = p.name.as_str();
                match def {
                    "RouteConf" => p
                        .refuses(RoleV1::Handler)
                        .is_none()
                        .then(|| (name, p.options_schema(RoleV1::Handler))),
                    "LoggerConf" => p
                        .refuses(RoleV1::Logger)
                        .is_none()
                        .then(|| (name, p.options_schema(RoleV1::Logger))),
                    "AccessConf" => p.access.map(|t| (name, parse((t.options_schema)()))),
                    _ => p.filter.map(|t| (name, parse((t.options_schema)()))),
                }
            })
            .collect();
        let conds: Vec<Value> = fit
            .iter()
            .filter_map(|(name, options)| {
                let options = options.clone()?;
                Some(json!({
                    "if": { "properties": { "handler": { "const": name } }, "required": ["handler"] },
                    "then": { "properties": { "options": options } }
                }))
            })
            .collect();
        let names: Vec<&str> = fit.iter().map(|(n, _)| *n).collect();
        if let Some(Value::Object(d)) = defs.get_mut(def) {
            d.insert("allOf".into(), Value::Array(conds));
            // A handler is one of the plugins loaded that can be one.
            if let Some(Value::Object(props)) = d.get_mut("properties")
                && let Some(Value::Object(h)) = props.get_mut("handler")
            {
                h.insert("enum".into(), json!(names));
            }
        }
    }
    // server.yaml is the file without `vhost:`.
    if let Some(Value::Object(s)) = defs.get_mut("Settings") {
        s.insert("not".into(), json!({ "required": ["vhost"] }));
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://tamada.invalid/conf.d.schema.json",
        "title": "tamada conf.d: server.yaml or a vhost file",
        "anyOf": [server.to_value(), vhost.to_value()],
        "$defs": defs,
    })
}
