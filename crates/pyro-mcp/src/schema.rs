//! JSON Schemas of the tools and the lax argument coercion the reference server offers:
//! inputs come from the argument structs (schemars, draft 2020-12, doc comments as
//! descriptions, serde defaults as `default`); every output is one open result object.

use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde_json::{json, Value};

/// The input schema of an argument struct `A`, without the struct's own title and doc
/// (noise to a model; the tool has its own).
pub(crate) fn input_schema<A: JsonSchema>() -> JsonObject {
    let schema = schemars::generate::SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<A>();
    let mut object = match Value::from(schema) {
        Value::Object(object) => object,
        _ => JsonObject::new(),
    };
    object.remove("title");
    object.remove("description");
    object.insert("type".into(), json!("object"));
    object.entry("properties").or_insert_with(|| json!({}));
    object
}

/// Every tool's `outputSchema`: the result object, whose fields are those of the CLI's
/// `--json` output for the same operation (or `error`/`error_kind` on failure).
pub(crate) fn output_schema() -> JsonObject {
    match json!({"type": "object", "additionalProperties": true}) {
        Value::Object(object) => object,
        _ => JsonObject::new(),
    }
}

/// Removes `names` from a schema's properties and `required` list (and the shared
/// definitions, once no property refers to them).
pub(crate) fn without(mut schema: JsonObject, names: &[&str]) -> JsonObject {
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        properties.retain(|name, _| !names.contains(&name.as_str()));
        if !Value::Object(properties.clone()).to_string().contains("#/$defs/") {
            schema.remove("$defs");
        }
    }
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|name| !name.as_str().is_some_and(|n| names.contains(&n)));
    }
    schema
}

/// Lax coercion, as the reference server does: a string given for a parameter that does
/// not take strings (`"2"` for an integer, `"true"`, a JSON-encoded object or list) is
/// parsed as JSON first. Anything that still does not fit fails in deserialisation.
pub(crate) fn coerce(arguments: &mut JsonObject, schema: &JsonObject) {
    let Some(Value::Object(properties)) = schema.get("properties") else { return };
    for (name, value) in arguments.iter_mut() {
        let (Some(property), Value::String(text)) = (properties.get(name), &*value) else { continue };
        if accepts_string(property, schema) {
            continue;
        }
        if let Ok(parsed) = serde_json::from_str::<Value>(text) {
            *value = parsed;
        }
    }
}

/// Whether `property` admits a string (unknown shapes count as yes, so nothing is
/// coerced that might have been meant as text).
fn accepts_string(property: &Value, root: &JsonObject) -> bool {
    if let Some(reference) = property.get("$ref").and_then(Value::as_str) {
        let target = reference.strip_prefix("#/$defs/").and_then(|name| root.get("$defs")?.get(name));
        return target.is_none_or(|t| accepts_string(t, root));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(choices)) = property.get(key) {
            return choices.iter().any(|choice| accepts_string(choice, root));
        }
    }
    match property.get("type") {
        Some(Value::String(kind)) => kind == "string",
        Some(Value::Array(kinds)) => kinds.iter().any(|k| k == "string"),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arguments of a test tool.
    #[derive(Debug, PartialEq, serde::Deserialize, JsonSchema)]
    struct Example {
        /// A count.
        count: u32,
        /// A name.
        name: Option<String>,
        /// Labels.
        labels: Option<std::collections::BTreeMap<String, String>>,
    }

    #[test]
    fn strings_are_parsed_only_where_a_string_is_not_allowed() {
        let schema = input_schema::<Example>();
        let mut arguments = match json!({"count": "2", "name": "7", "labels": "{\"a\": \"b\"}", "other": "3"}) {
            Value::Object(o) => o,
            _ => unreachable!(),
        };
        coerce(&mut arguments, &schema);
        assert_eq!(Value::Object(arguments.clone()), json!({"count": 2, "name": "7", "labels": {"a": "b"}, "other": "3"}));
        let parsed: Example = serde_json::from_value(Value::Object(arguments)).unwrap();
        let labels = [("a".to_string(), "b".to_string())].into();
        assert_eq!(parsed, Example { count: 2, name: Some("7".into()), labels: Some(labels) });
    }

    #[test]
    fn narrowing_drops_properties_and_requirements() {
        let schema = without(input_schema::<Example>(), &["count", "labels"]);
        assert_eq!(schema["properties"].as_object().unwrap().keys().collect::<Vec<_>>(), ["name"]);
        assert_eq!(schema["required"], json!([]));
    }
}
