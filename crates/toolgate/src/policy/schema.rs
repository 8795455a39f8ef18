//! The Cedar schema policies are validated against: toolgate's published one,
//! with the argument and attribute types a policy directory declares for itself.
//!
//! Arguments are arbitrary JSON that differs per tool, so the published schema
//! declares `Args` (and the principal's `Attrs`) as empty records. A directory
//! adds `*.cedarschema` files that define those common types (and helper common
//! types they use); nothing else may be declared there, so the model a policy
//! sees — principals, actions, resources, context — is always toolgate's.

use super::{PolicyError, Problem};
use cedar_policy::{Schema, SchemaFragment};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The published schema (also `docs/toolgate.cedarschema`).
pub const SCHEMA: &str = include_str!("toolgate.cedarschema");

/// The namespace of every toolgate entity type and action.
pub const NAMESPACE: &str = "Toolgate";

/// Common types a policy directory may define in place of toolgate's empty ones.
const DECLARABLE: [&str; 2] = ["Args", "Attrs"];

/// The schema to validate against, and the text that describes it.
pub(crate) struct Effective {
    pub schema: Schema,
    /// The base schema's JSON with the directory's declarations in it.
    json: Value,
}

impl Effective {
    /// The schema as Cedar schema text (for `toolgate policy schema --policies`).
    pub fn to_cedarschema(&self) -> Result<String, String> {
        SchemaFragment::from_json_value(self.json.clone())
            .map_err(|e| e.to_string())?
            .to_cedarschema()
            .map_err(|e| e.to_string())
    }
}

impl Effective {
    /// `values` (a call's arguments, `Args`; or a principal's attributes, `Attrs`)
    /// with every value whose JSON type differs from the declared one replaced by
    /// null, which policies see as unknown — so a policy that reads it denies
    /// instead of comparing, say, a number with the string it forbids. `None` when
    /// every value fits (the common case: nothing is copied). The second part
    /// names what was replaced.
    pub fn conform(
        &self,
        common: &str,
        values: &Map<String, Value>,
    ) -> Option<(Map<String, Value>, Vec<String>)> {
        let types = &self.json[NAMESPACE]["commonTypes"];
        let attrs = types.get(common)?.get("attributes")?.as_object()?;
        let misfits: Vec<&String> = values
            .iter()
            .filter(|(k, v)| attrs.get(*k).is_some_and(|ty| !fits(v, ty, types, 0)))
            .map(|(k, _)| k)
            .collect();
        if misfits.is_empty() {
            return None;
        }
        let mut fixed = values.clone();
        let mut notes = Vec::with_capacity(misfits.len());
        for k in misfits {
            fixed.insert(k.clone(), Value::Null);
            notes.push(format!(
                "{}.{k}: not of its declared type",
                common.to_lowercase()
            ));
        }
        Some((fixed, notes))
    }
}

/// Whether a JSON value has the Cedar type `ty` (schema JSON form). Types this
/// cannot judge (entities, extensions) are left to Cedar.
fn fits(v: &Value, ty: &Value, common: &Value, depth: usize) -> bool {
    if depth > 16 {
        return false;
    }
    let kind = ty.get("type").and_then(Value::as_str).unwrap_or("");
    let name = ty
        .get("name")
        .and_then(Value::as_str)
        .map(|n| n.trim_start_matches("__cedar::"));
    let primitive = match (kind, name) {
        ("EntityOrCommon", Some(n)) => n,
        (k, _) => k,
    };
    match primitive {
        // An integral float is that integer (as the value mapping reads it).
        "Long" => {
            v.is_i64()
                || v.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < i64::MAX as f64)
        }
        "String" => v.is_string(),
        "Bool" | "Boolean" => v.is_boolean(),
        "Set" => v.as_array().is_some_and(|items| {
            let element = ty.get("element").unwrap_or(&Value::Null);
            items.iter().all(|i| fits(i, element, common, depth + 1))
        }),
        "Record" => v.as_object().is_some_and(|map| {
            let attrs = ty.get("attributes").and_then(Value::as_object);
            map.iter().all(|(k, item)| {
                attrs
                    .and_then(|a| a.get(k))
                    .is_none_or(|t| fits(item, t, common, depth + 1))
            })
        }),
        other => match common.get(other) {
            Some(declared) => fits(v, declared, common, depth + 1),
            None => true,
        },
    }
}

/// The published schema with the declarations of these `.cedarschema` files
/// (path, text).
pub(crate) fn build(declarations: &[(PathBuf, String)]) -> Result<Effective, PolicyError> {
    let mut json = base_json();
    let mut declared_by: Map<String, Value> = Map::new();
    let mut problems = Vec::new();
    for (path, text) in declarations {
        match declared_types(path, text) {
            Ok(types) => {
                for (name, ty) in types {
                    let common = &mut json[NAMESPACE]["commonTypes"];
                    let clashes_with_base = common.get(&name).is_some()
                        && !DECLARABLE.contains(&name.as_str())
                        && !declared_by.contains_key(&name);
                    if let Some(other) = declared_by.get(&name) {
                        problems.push(Problem::in_file(
                            path,
                            format!(
                                "type `{name}` is already declared in {}",
                                other.as_str().unwrap_or("?")
                            ),
                        ));
                    } else if clashes_with_base {
                        problems.push(Problem::in_file(
                            path,
                            format!("type `{name}` is toolgate's own and cannot be redeclared; only {} can", DECLARABLE.join(" and ")),
                        ));
                    } else {
                        common[&name] = ty;
                        declared_by.insert(name, Value::String(path.display().to_string()));
                    }
                }
            }
            Err(p) => problems.push(p),
        }
    }
    if !problems.is_empty() {
        return Err(PolicyError::Invalid { problems });
    }
    match Schema::from_json_value(json.clone()) {
        Ok(schema) => Ok(Effective { schema, json }),
        Err(e) => {
            let files: Vec<String> = declarations
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            let at = files.first().map_or_else(PathBuf::new, PathBuf::from);
            Err(PolicyError::Invalid {
                problems: vec![Problem::in_file(
                    &at,
                    format!(
                        "the declarations in {} do not fit the schema: {}",
                        files.join(", "),
                        super::load::chain(&e)
                    ),
                )],
            })
        }
    }
}

fn base_json() -> Value {
    let fragment = SchemaFragment::from_cedarschema_str(SCHEMA)
        .map(|(f, _warnings)| f)
        .unwrap_or_else(|e| unreachable!("the published schema parses: {e}"));
    fragment
        .to_json_value()
        .unwrap_or_else(|e| unreachable!("the published schema converts to JSON: {e}"))
}

/// The common types one declaration file defines, refusing anything else.
fn declared_types(path: &Path, text: &str) -> Result<Map<String, Value>, Problem> {
    let fragment = match SchemaFragment::from_cedarschema_str(text) {
        Ok((f, _warnings)) => f,
        Err(e) => return Err(super::load::located(path, text, &e, None)),
    };
    let json = fragment
        .to_json_value()
        .map_err(|e| Problem::in_file(path, e.to_string()))?;
    let Value::Object(namespaces) = json else {
        return Err(Problem::in_file(path, "not a schema fragment".into()));
    };
    let mut out = Map::new();
    for (ns, body) in namespaces {
        if ns != NAMESPACE {
            return Err(Problem::in_file(
                path,
                format!(
                    "declarations belong in `namespace {NAMESPACE} {{ … }}`, not in `{}`",
                    if ns.is_empty() {
                        "the empty namespace"
                    } else {
                        &ns
                    }
                ),
            ));
        }
        let non_empty = |k: &str| {
            body.get(k)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        };
        if non_empty("entityTypes") || non_empty("actions") {
            return Err(Problem::in_file(
                path,
                "a policy directory may only declare types (`type Args = {…};`), not entities or actions: the model is toolgate's".into(),
            ));
        }
        if let Some(Value::Object(types)) = body.get("commonTypes") {
            out.extend(types.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_schema_is_the_documented_one() {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/toolgate.cedarschema");
        let text = std::fs::read_to_string(&doc).expect("docs/toolgate.cedarschema exists");
        assert!(
            text == SCHEMA,
            "docs/toolgate.cedarschema differs from the schema in the crate: copy crates/toolgate/src/policy/toolgate.cedarschema over it"
        );
    }

    #[test]
    fn declarations_replace_the_empty_args() {
        let decl = "namespace Toolgate { type Customer = { tier: String }; type Args = { amount?: Long, customer?: Customer }; }";
        let eff = build(&[(PathBuf::from("args.cedarschema"), decl.into())]).unwrap();
        let text = eff.to_cedarschema().unwrap();
        assert!(text.contains("amount"), "{text}");
    }

    #[test]
    fn declarations_cannot_change_the_model() {
        for (decl, wanted) in [
            (
                "namespace Toolgate { entity Tool; }",
                "not entities or actions",
            ),
            (
                "namespace Toolgate { type Context = {}; }",
                "toolgate's own",
            ),
            ("type Args = {};", "namespace Toolgate"),
            (
                "namespace Toolgate { type Args = { a: Nope }; }",
                "do not fit",
            ),
        ] {
            let err = build(&[(PathBuf::from("x.cedarschema"), decl.into())])
                .err()
                .unwrap_or_else(|| panic!("{decl} was accepted"));
            assert!(err.to_string().contains(wanted), "{decl}: {err}");
        }
    }
}
