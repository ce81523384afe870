//! The JSON Schema check (jsonschema over the schema schemars generates from [`HubFile`]), with
//! each error turned into a problem an operator can act on: the nearest known key for a typo, the
//! allowed range for a number, what was found where a type was expected.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::Value;

use super::file::{
    DURATION_PATTERN, HTTP_PATH_PATTERN, HubFile, JSON_POINTER_PATTERN, SLUG_PATTERN,
};
use super::problem::Problem;
use super::yaml;

/// The JSON Schema of hub.yaml, generated from [`HubFile`].
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::to_value(schemars::schema_for!(HubFile)).expect("a schema is plain JSON")
    })
}

pub(super) fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        jsonschema::validator_for(schema()).expect("the generated schema is a valid JSON Schema")
    })
}

pub(super) fn schema_problems(value: &Value, notes: &yaml::Notes) -> Vec<Problem> {
    use jsonschema::error::ValidationErrorKind as Kind;
    // Numbers that are not 64-bit integers: where the schema wants an integer, one message with
    // the range replaces what the schema says of the stand-in float (or says nothing of `8000.0`,
    // which JSON Schema counts as an integer); elsewhere the schema's message names the number
    // as written.
    let written: HashMap<&str, &str> = notes
        .numbers
        .iter()
        .map(|(pointer, number)| (pointer.as_str(), number.as_str()))
        .collect();
    let ranges: HashMap<&str, (&Value, &Value)> = notes
        .numbers
        .iter()
        .filter_map(|(pointer, _)| Some((pointer.as_str(), integer_range(pointer)?)))
        .collect();
    let mut problems = Vec::new();
    let errors = validator()
        .iter_errors(value)
        .flat_map(|error| optional_unwrapped(error.to_owned()));
    for error in errors {
        let pointer = error.instance_path().as_str().to_string();
        if ranges.contains_key(pointer.as_str()) {
            continue;
        }
        match error.kind() {
            Kind::AdditionalProperties { unexpected } => {
                let known = known_keys(&pointer);
                for key in unexpected {
                    let mut message = format!("unknown key `{key}`");
                    if let Some(suggestion) = closest(key, known.iter().map(String::as_str)) {
                        message.push_str(&format!(" (did you mean `{suggestion}`?)"));
                    }
                    let key_pointer = format!("{pointer}/{}", escape_pointer(key));
                    problems.push(Problem {
                        at_key: true,
                        ..Problem::at(&key_pointer, message)
                    });
                }
            }
            Kind::Required { property } => {
                let key = property.as_str().unwrap_or_default();
                problems.push(Problem::at(
                    &pointer,
                    format!("missing required key `{key}`"),
                ));
            }
            Kind::Pattern { pattern } if pattern == SLUG_PATTERN => {
                problems.push(Problem::at(
                    &pointer,
                    format!(
                        "invalid name {}: use 1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit",
                        error.instance()
                    ),
                ));
            }
            Kind::Pattern { pattern } if pattern == HTTP_PATH_PATTERN => {
                problems.push(Problem::at(
                    &pointer,
                    format!(
                        "invalid request path {}: start it with `/`, and write no spaces or control characters (percent-encode them)",
                        error.instance()
                    ),
                ));
            }
            Kind::Pattern { pattern } if pattern == DURATION_PATTERN => {
                problems.push(Problem::at(
                    &pointer,
                    format!(
                        "invalid duration {}: use a whole number and a unit, like 500ms, 90s, 15m or 1h",
                        error.instance()
                    ),
                ));
            }
            Kind::Pattern { pattern } if pattern == crate::bytes::PATTERN => {
                problems.push(Problem::at(
                    &pointer,
                    invalid_size(&error.instance().to_string()),
                ));
            }
            Kind::Pattern { pattern } if pattern == JSON_POINTER_PATTERN => {
                problems.push(Problem::at(
                    &pointer,
                    invalid_pointer(&error.instance().to_string()),
                ));
            }
            Kind::AnyOf { context } if one_of_required(context).is_some() => {
                let keys = one_of_required(context).unwrap_or_default();
                problems.push(Problem::at(
                    &pointer,
                    format!("missing required key {}", keys.join(" or ")),
                ));
            }
            _ => {
                let found = written.get(pointer.as_str()).copied();
                problems.push(Problem::at(&pointer, describe(&error, found)));
            }
        }
    }
    for (pointer, number) in &notes.numbers {
        if let Some((minimum, maximum)) = ranges.get(pointer.as_str()) {
            problems.push(Problem::at(
                pointer,
                format!("expected an integer from {minimum} to {maximum}, found {number}"),
            ));
        }
    }
    // serde_yaml reads `<<: *base` as an ordinary key, so whatever the schema says of it and
    // under it is beside the point.
    if !notes.merge_keys.is_empty() {
        let merge_keys: HashSet<&str> = notes.merge_keys.iter().map(String::as_str).collect();
        problems.retain(|problem| {
            !pointer_prefixes(&problem.pointer).any(|prefix| merge_keys.contains(prefix))
        });
        for pointer in &notes.merge_keys {
            problems.push(Problem {
                at_key: true,
                ..Problem::at(
                    pointer,
                    "merge keys (`<<`) are not supported; write the keys out".to_string(),
                )
            });
        }
    }
    problems
}

/// The message for what is not a size; `quoted` is the text as written, in quotes.
pub(super) fn invalid_size(quoted: &str) -> String {
    format!(
        "invalid size {quoted}: use a number and a unit: B, KiB, MiB, GiB, TiB, KB, MB, GB or TB (e.g. 24GiB)"
    )
}

/// The message for what is not a JSON pointer; `quoted` is the text as written, in quotes.
pub(super) fn invalid_pointer(quoted: &str) -> String {
    format!(
        "invalid JSON pointer {quoted}: start it with `/` (`/memory/used_bytes`), or leave it empty for the whole answer; write `~` as `~0` and a `/` within a key as `~1`"
    )
}

/// The keys of an `anyOf` of which each alternative failed only for a missing key (a group's
/// `max_loaded` or `memory`), quoted: `` [`max_loaded`, `memory`] ``.
fn one_of_required(context: &[Vec<jsonschema::ValidationError<'_>>]) -> Option<Vec<String>> {
    use jsonschema::error::ValidationErrorKind as Kind;
    context
        .iter()
        .map(|alternative| match alternative.as_slice() {
            [only] => match only.kind() {
                Kind::Required { property } => Some(format!("`{}`", property.as_str()?)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Strings and keys holding a NUL (YAML writes one as `"\0"`), which no argument, environment
/// variable, path or request can carry: the worker would fail to start, or get the text cut short.
pub(super) fn nul_problems(value: &Value, pointer: &mut String, problems: &mut Vec<Problem>) {
    let message = || {
        "holds a NUL character (`\\0`), which no argument, environment variable, path or request can carry".to_string()
    };
    match value {
        Value::String(text) if text.contains('\0') => {
            problems.push(Problem::at(pointer, message()));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let length = pointer.len();
                pointer.push_str(&format!("/{i}"));
                nul_problems(item, pointer, problems);
                pointer.truncate(length);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let length = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape_pointer(key));
                if key.contains('\0') {
                    problems.push(Problem {
                        at_key: true,
                        ..Problem::at(pointer, message())
                    });
                }
                nul_problems(item, pointer, problems);
                pointer.truncate(length);
            }
        }
        _ => {}
    }
}

/// `/a/b/c`, `/a/b`, `/a`.
pub(super) fn pointer_prefixes(pointer: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(pointer), |p| p.rfind('/').map(|i| &p[..i]))
        .filter(|p| !p.is_empty())
}

/// The smallest and largest integer the schema allows at `pointer`, if it wants an integer there.
pub(super) fn integer_range(pointer: &str) -> Option<(&'static Value, &'static Value)> {
    let node = schema_at(pointer)?;
    let integer = match node.get("type")? {
        Value::String(t) => t == "integer",
        Value::Array(types) => types.iter().any(|t| t == "integer"),
        _ => false,
    };
    if !integer {
        return None;
    }
    Some((node.get("minimum")?, node.get("maximum")?))
}

/// An optional value's schema is `anyOf: [its type, null]`, so what is wrong inside it comes as
/// one `anyOf` error about the whole value. What matters is what the first alternative says, at
/// the places it says it: the request path inside `load`, the unknown key inside `health`.
pub(super) fn optional_unwrapped(
    error: jsonschema::ValidationError<'static>,
) -> Vec<jsonschema::ValidationError<'static>> {
    use jsonschema::error::{TypeKind, ValidationErrorKind as Kind};
    let is_null = |alternative: &[jsonschema::ValidationError<'_>]| {
        matches!(alternative, [only] if matches!(
            only.kind(),
            Kind::Type { kind: TypeKind::Single(t) } if t.as_str() == "null"
        ))
    };
    let optional = match error.kind() {
        Kind::AnyOf { context } => {
            context.len() == 2 && context.iter().filter(|a| is_null(a)).count() == 1
        }
        _ => false,
    };
    if !optional {
        return vec![error];
    }
    let Kind::AnyOf { context } = error.into_parts().kind else {
        return Vec::new();
    };
    context
        .into_iter()
        .filter(|alternative| !is_null(alternative))
        .flatten()
        .flat_map(optional_unwrapped)
        .collect()
}

/// A message for a type or enum error, looking inside `anyOf` (which is how an optional field's
/// schema reads) for the alternative that is not `null`.
pub(super) fn describe(error: &jsonschema::ValidationError<'_>, found: Option<&str>) -> String {
    use jsonschema::error::{TypeKind, ValidationErrorKind as Kind};
    match error.kind() {
        Kind::Type { kind } => {
            let types: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![t.as_str()],
                TypeKind::Multiple(set) => set.iter().map(|t| t.as_str()).collect(),
            };
            let types: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
            let found = found.map_or_else(|| error.instance().to_string(), String::from);
            format!("expected {}, found {found}", types.join(" or "))
        }
        Kind::Enum { options } => {
            let options: Vec<String> = options
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| !o.is_null())
                .map(|o| o.as_str().map_or_else(|| o.to_string(), String::from))
                .collect();
            format!("{} is not one of: {}", error.instance(), options.join(", "))
        }
        Kind::OneOfNotValid { context }
            if context
                .iter()
                .flatten()
                .all(|e| matches!(e.kind(), Kind::Constant { .. })) =>
        {
            let options: Vec<String> = context
                .iter()
                .flatten()
                .filter_map(|e| match e.kind() {
                    Kind::Constant { expected_value } => expected_value.as_str().map(String::from),
                    _ => None,
                })
                .collect();
            format!("{} is not one of: {}", error.instance(), options.join(", "))
        }
        Kind::AnyOf { context } => {
            let alternatives: Vec<&jsonschema::ValidationError<'_>> =
                context.iter().flatten().collect();
            let not_null = |e: &&jsonschema::ValidationError<'_>| !matches!(e.kind(), Kind::Type { kind: TypeKind::Single(t) } if t.as_str() == "null");
            match alternatives.into_iter().find(not_null) {
                Some(inner) => describe(inner, found),
                None => error.to_string(),
            }
        }
        _ => error.to_string(),
    }
}

pub(super) fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The keys the schema allows for the object at `pointer`.
pub(super) fn known_keys(pointer: &str) -> Vec<String> {
    schema_at(pointer)
        .and_then(|node| node.get("properties"))
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

/// The schema of the value at `pointer`, found by walking the schema (through `$ref`s, and past
/// the `null` of an optional value).
pub(super) fn schema_at(pointer: &str) -> Option<&'static Value> {
    let root = schema();
    let resolve = |mut node: &'static Value| -> &'static Value {
        loop {
            if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
                let Some(name) = reference.strip_prefix("#/$defs/") else {
                    return node;
                };
                match root.get("$defs").and_then(|defs| defs.get(name)) {
                    Some(target) => node = target,
                    None => return node,
                }
            } else if let Some(first) = node
                .get("anyOf")
                // An object's own `anyOf` (a group's `max_loaded` or `memory`) is a rule, not
                // the choice of an optional value's type.
                .filter(|_| node.get("properties").is_none())
                .and_then(Value::as_array)
                .and_then(|options| {
                    options
                        .iter()
                        .find(|o| o.get("type") != Some(&"null".into()))
                })
            {
                node = first;
            } else {
                return node;
            }
        }
    };
    let mut node = resolve(root);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        let next = if let Some(items) = node.get("items") {
            Some(items)
        } else if let Some(property) = node.get("properties").and_then(|p| p.get(&segment)) {
            Some(property)
        } else {
            node.get("additionalProperties").filter(|a| a.is_object())
        };
        node = resolve(next?);
    }
    Some(node)
}

/// The known key nearest to a misspelt one, if it is near enough to be a likely typo.
pub(super) fn closest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // The distance takes time and memory in the product of the lengths, and a key (`? "…"`) may
    // be megabytes long; no typo of a known key is longer than this.
    if key.len() > 64 {
        return None;
    }
    known
        .into_iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= (k.len().max(key.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions (`laoded`).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}
