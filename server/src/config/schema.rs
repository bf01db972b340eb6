//! `tamada --schema`: one JSON Schema for every file of conf.d, made from
//! the same types the server parses (schemars), with the options of each
//! loaded plugin that describes them (SDK 1.1) in place: editors with a
//! YAML language server flag a misspelt key as it is typed. A file is
//! either `server.yaml` or a vhost file (the one with `vhost:`).

use crate::config::{LoggerConf, RouteConf, Settings, VhostRaw};
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
    let mut defs: serde_json::Map<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    // Each route's and logger's `options` as its plugin describes them.
    for (def, role) in [
        ("RouteConf", RoleV1::Handler),
        ("LoggerConf", RoleV1::Logger),
    ] {
        let fit: Vec<_> = registry
            .plugins
            .values()
            .filter(|p| p.refuses(role).is_none())
            .collect();
        let conds: Vec<Value> = fit
            .iter()
            .filter_map(|p| {
                let options = p.options_schema(role)?;
                Some(json!({
                    "if": { "properties": { "handler": { "const": p.name } }, "required": ["handler"] },
                    "then": { "properties": { "options": options } }
                }))
            })
            .collect();
        let names: Vec<&str> = fit.iter().map(|p| p.name.as_str()).collect();
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
