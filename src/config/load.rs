//! From bytes to [`Desired`]: read with a size limit, parse YAML, check the JSON Schema, then the
//! semantic rules the schema cannot express. Every problem is collected and reported at once, each
//! with its JSON path and, where it can be known, the line and column in the file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

use super::desired::{
    Desired, Engine, Group, Health, HttpCall, ModelName, ModelSpec, RunSpec, Settings, is_slug,
    parse_duration,
};
use super::file::{
    DEFAULT_HOST, DEFAULT_MODEL_STARTING_PORT, DEFAULT_PORT, DURATION_PATTERN, DesiredState,
    EngineFile, HTTP_PATH_PATTERN, HttpCallFile, HttpMethod, HubFile, LogLevel, SLUG_PATTERN,
};
use super::problem::{Problem, Rejection, display_path};
use super::templates::{self, Rendered};
use super::{locate, nesting, yaml};

/// hub.yaml files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a config file as UTF-8 text, refusing what is too large or not text.
pub fn read(path: &Path) -> Result<String, Rejection> {
    use std::io::Read;
    let label = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|e| Rejection::whole_file(&label, format!("cannot read the file: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Rejection::whole_file(&label, format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Rejection::whole_file(
            &label,
            format!("the file is larger than the limit of {MAX_FILE_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let column = valid.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        Rejection {
            file: label.clone(),
            problems: vec![Problem {
                path: String::new(),
                line: Some(line),
                column: Some(column),
                message: "the file is not valid UTF-8 text".to_string(),
                at_key: false,
                pointer: String::new(),
            }],
        }
    })
}

/// Parses and validates hub.yaml text. `file` names it in errors; relative paths in it
/// (`log_path`, and the workers' working directory) are taken from `base_dir`.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Desired, Rejection> {
    let reject = |problems: Vec<Problem>| Rejection {
        file: file.to_string(),
        problems,
    };
    // A byte order mark is invisible in an editor; without it lines and columns stay where the
    // operator sees them.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Before the parser: libyaml's time grows with the square of the nesting depth.
    if let Some((line, column)) = nesting::too_deep(text) {
        return Err(reject(vec![Problem {
            path: String::new(),
            line: Some(line),
            column: Some(column),
            message: format!(
                "nesting deeper than {} levels: hub.yaml never needs more than a few",
                nesting::MAX_DEPTH
            ),
            at_key: false,
            pointer: String::new(),
        }]));
    }
    let value = yaml::to_json(text);
    let (value, notes) = match value {
        Ok(parsed) => parsed,
        Err(e) => {
            let message = yaml_message(&e);
            // serde_yaml points a duplicate key at its mapping; point at the second key instead.
            let location = duplicate_key_of(&message)
                .and_then(|key| locate::second_key(text, key))
                .or_else(|| e.location().map(|l| (l.line(), l.column())));
            return Err(reject(vec![Problem {
                path: String::new(),
                line: location.map(|l| l.0),
                column: location.map(|l| l.1),
                message: format!("invalid YAML: {message}"),
                at_key: false,
                pointer: String::new(),
            }]));
        }
    };
    if value.is_null() {
        return Err(reject(vec![Problem {
            path: String::new(),
            line: None,
            column: None,
            message: "the file is empty: it needs at least `models:`".to_string(),
            at_key: false,
            pointer: String::new(),
        }]));
    }

    let mut problems = schema_problems(&value, &notes);
    let mut nul = Vec::new();
    nul_problems(&value, &mut String::new(), &mut nul);
    if !nul.is_empty() {
        // A request path with a NUL already has the schema's word for it.
        let seen: HashSet<String> = problems.iter().map(|p| p.pointer.clone()).collect();
        problems.extend(nul.into_iter().filter(|p| !seen.contains(&p.pointer)));
    }
    if problems.is_empty() {
        match serde_json::from_value::<HubFile>(value) {
            Ok(hub) => match convert(hub, base_dir) {
                Ok(desired) => return Ok(desired),
                Err(semantic) => problems = semantic,
            },
            // The schema is generated from these types, so this is a bug, but report it as a
            // problem rather than panic on operator input.
            Err(e) => problems.push(Problem::at("", format!("{e}"))),
        }
    }
    locate::fill_lines(text, &mut problems);
    problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
    Err(reject(problems))
}

/// Reads and parses a file.
pub fn load(path: &Path) -> Result<(String, Desired), Rejection> {
    let text = read(path)?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let desired = parse(&text, &path.display().to_string(), &base_dir)?;
    Ok((text, desired))
}

/// The JSON Schema of hub.yaml, generated from [`HubFile`].
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::to_value(schemars::schema_for!(HubFile)).expect("a schema is plain JSON")
    })
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        jsonschema::validator_for(schema()).expect("the generated schema is a valid JSON Schema")
    })
}

/// serde_yaml's messages end with " at line N column M", which we print separately.
/// The key of serde_yaml's `duplicate entry with key "name"` message.
fn duplicate_key_of(message: &str) -> Option<&str> {
    let start = message.find("duplicate entry with key \"")? + "duplicate entry with key \"".len();
    message[start..].strip_suffix('"')
}

fn yaml_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    match text.as_str() {
        "repetition limit exceeded" | "recursion limit exceeded" => format!(
            "{text}: aliases or nesting expand too far (a YAML alias bomb?); write the values out"
        ),
        // libyaml's scanner and parser errors: say where to look.
        _ if e.location().is_some()
            && !text.contains("duplicate entry")
            && !text.contains("a key must be a string") =>
        {
            format!("{text} (check the indentation and quoting here and on the line above)")
        }
        _ => text,
    }
}

fn schema_problems(value: &Value, notes: &yaml::Notes) -> Vec<Problem> {
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

/// Strings and keys holding a NUL (YAML writes one as `"\0"`), which no argument, environment
/// variable, path or request can carry: the worker would fail to start, or get the text cut short.
fn nul_problems(value: &Value, pointer: &mut String, problems: &mut Vec<Problem>) {
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
fn pointer_prefixes(pointer: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(pointer), |p| p.rfind('/').map(|i| &p[..i]))
        .filter(|p| !p.is_empty())
}

/// The smallest and largest integer the schema allows at `pointer`, if it wants an integer there.
fn integer_range(pointer: &str) -> Option<(&'static Value, &'static Value)> {
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
fn optional_unwrapped(
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
fn describe(error: &jsonschema::ValidationError<'_>, found: Option<&str>) -> String {
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

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The keys the schema allows for the object at `pointer`.
fn known_keys(pointer: &str) -> Vec<String> {
    schema_at(pointer)
        .and_then(|node| node.get("properties"))
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

/// The schema of the value at `pointer`, found by walking the schema (through `$ref`s, and past
/// the `null` of an optional value).
fn schema_at(pointer: &str) -> Option<&'static Value> {
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
            } else if let Some(first) =
                node.get("anyOf")
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
fn closest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
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
fn edit_distance(a: &str, b: &str) -> usize {
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

/// The semantic checks, and the conversion into [`Desired`] when they pass.
fn convert(hub: HubFile, base_dir: &Path) -> Result<Desired, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |pointer: String, message: String| {
        problems.push(Problem::at(&pointer, message));
    };

    // Problems built whole: those that point at a key, and an engine's own.
    let mut built_problems = Vec::new();

    let api_port = hub.port.unwrap_or(DEFAULT_PORT);
    let mut engines: BTreeMap<String, Arc<Engine>> = BTreeMap::new();
    let mut engine_sizes: HashMap<&str, EngineSizes> = HashMap::new();
    let builtin = Engine::builtin_shared();
    engine_sizes.insert("builtin", EngineSizes::of(&builtin, ""));
    engines.insert("builtin".to_string(), builtin);
    for (name, file) in &hub.engines {
        let pointer = format!("/engines/{}", escape_pointer(name));
        if name == "builtin" {
            built_problems.push(Problem {
                at_key: true,
                ..Problem::at(
                    &pointer,
                    "`builtin` is the built-in engine and cannot be redefined; give this one another name"
                        .to_string(),
                )
            });
            continue;
        }
        if !is_slug(name) {
            problem(
                pointer,
                format!(
                    "invalid engine name {name:?}: use 1-63 lowercase letters, digits, '_' or '-'"
                ),
            );
            continue;
        }
        match convert_engine(file, &pointer) {
            Ok(engine) => {
                let sizes = EngineSizes::of(&engine, &pointer);
                for (pointer, message) in &sizes.problems {
                    problem(pointer.clone(), message.clone());
                }
                engine_sizes.insert(name, sizes);
                engines.insert(name.clone(), Arc::new(engine));
            }
            Err(engine_problems) => built_problems.extend(engine_problems),
        }
    }

    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut group_index: HashMap<&str, usize> = HashMap::new();
    for (i, group) in hub.groups.iter().enumerate() {
        if let Some(first) = group_index.insert(&group.name, i) {
            problem(
                format!("/groups/{i}/name"),
                format!(
                    "group {:?} is defined twice (first at groups[{first}])",
                    group.name
                ),
            );
            group_index.insert(&group.name, first);
            continue;
        }
        groups.insert(
            group.name.clone(),
            Group {
                name: group.name.clone(),
                max_loaded: group.max_loaded,
                members: Vec::new(),
            },
        );
    }

    let mut models: BTreeMap<ModelName, ModelSpec> = BTreeMap::new();
    let mut model_index: HashMap<&str, usize> = HashMap::new();
    let mut port_owner: HashMap<u16, &str> = HashMap::new();
    for (i, model) in hub.models.iter().enumerate() {
        let at = |key: &str| format!("/models/{i}/{key}");
        let name = match ModelName::new(&model.name) {
            Ok(name) => name,
            Err(message) => {
                problem(at("name"), message);
                continue;
            }
        };
        if let Some(first) = model_index.insert(&model.name, i) {
            problem(
                at("name"),
                format!(
                    "model {:?} is defined twice (first at models[{first}])",
                    model.name
                ),
            );
            model_index.insert(&model.name, first);
            continue;
        }

        let state = match (model.state, model.default) {
            (Some(state), None) => state,
            (None, Some(true)) => DesiredState::Running,
            (None, Some(false)) | (None, None) => DesiredState::Stopped,
            (Some(state), Some(default)) => {
                let agree = default == (state != DesiredState::Stopped);
                if !agree {
                    problem(
                        at("default"),
                        format!(
                            "`default: {default}` disagrees with `state: {}`; remove `default` (it is the old spelling of `state: running`)",
                            state.as_str()
                        ),
                    );
                }
                state
            }
        };

        let engine_name = model
            .engine
            .clone()
            .unwrap_or_else(|| "builtin".to_string());
        let engine = match engines.get(&engine_name) {
            Some(engine) => Some(engine.clone()),
            None => {
                if !hub.engines.contains_key(&engine_name) {
                    let defined: Vec<&str> = engines.keys().map(String::as_str).collect();
                    problem(
                        at("engine"),
                        format!(
                            "unknown engine {engine_name:?} (defined: {})",
                            defined.join(", ")
                        ),
                    );
                }
                None
            }
        };

        if let Some(port) = model.port {
            if port == api_port {
                problem(
                    at("port"),
                    format!("port {port} is the API port; pick another"),
                );
            } else if let Some(owner) = port_owner.insert(port, &model.name) {
                problem(
                    at("port"),
                    format!("port {port} is already used by model {owner:?}"),
                );
                port_owner.insert(port, owner);
            }
        }

        if let Some(group) = &model.group {
            match groups.get_mut(group) {
                Some(g) => g.members.push(name.clone()),
                None => problem(
                    at("group"),
                    format!("group {group:?} is not defined; add it under `groups:`"),
                ),
            }
        }

        let idle_unload_after = match &model.idle_unload_after {
            Some(text) => match duration(text, None) {
                Ok(d) => Some(d),
                Err(message) => {
                    problem(at("idle_unload_after"), message);
                    None
                }
            },
            None => None,
        };

        for (key, value) in &model.env {
            let pointer = format!("{}/{}", at("env"), escape_pointer(key));
            if let Some(message) = env_name_problem(key) {
                built_problems.push(Problem {
                    at_key: true,
                    ..Problem::at(&pointer, message)
                });
            }
            if let Some(message) = placeholder_typo(value) {
                problem(pointer, message);
            }
        }
        for (j, arg) in model.args.iter().enumerate() {
            if let Some(message) = placeholder_typo(arg) {
                problem(format!("{}/{j}", at("args")), message);
            }
        }
        if let Some(sizes) = engine_sizes.get(engine_name.as_str()) {
            for (pointer, message) in sizes.check(model, i) {
                problem(pointer, message);
            }
        }

        if let Some(engine) = engine {
            models.insert(
                name.clone(),
                ModelSpec {
                    name,
                    model_type: model.model_type.clone(),
                    state,
                    group: model.group.clone(),
                    idle_unload_after,
                    run: RunSpec {
                        engine_name,
                        engine,
                        model_path: model.model_path.clone(),
                        port: model.port,
                        args: model.args.clone(),
                        env: model.env.clone(),
                    },
                },
            );
        }
    }

    // Models that must hold weights: `state: loaded`, and `state: running` on an engine that
    // cannot unload (its weights are loaded exactly while it runs). Counted per group in one pass
    // over the models, so many groups and many models cost their sum, not their product.
    let mut holding: HashMap<&str, (usize, usize)> = HashMap::new();
    for model in &hub.models {
        let Some(group) = model.group.as_deref() else {
            continue;
        };
        let running = model.state == Some(DesiredState::Running)
            || (model.state.is_none() && model.default == Some(true));
        let engine = model.engine.as_deref().unwrap_or("builtin");
        let (loaded, running_without_unload) = holding.entry(group).or_default();
        if model.state == Some(DesiredState::Loaded) {
            *loaded += 1;
        } else if running && engines.get(engine).is_some_and(|e| !e.has_memory_control()) {
            *running_without_unload += 1;
        }
    }
    for (i, group) in hub.groups.iter().enumerate() {
        let (loaded, running) = holding
            .get(group.name.as_str())
            .copied()
            .unwrap_or_default();
        let max = group.max_loaded as usize;
        if loaded + running > max && group_index.get(group.name.as_str()) == Some(&i) {
            let message = if running == 0 {
                format!(
                    "group {:?} has {loaded} models with `state: loaded` but `max_loaded` is {max}; raise it or set some to `running`",
                    group.name
                )
            } else {
                format!(
                    "group {:?} must hold {} models at once ({loaded} with `state: loaded`, {running} `running` on an engine without load/unload) but `max_loaded` is {max}; raise it or stop some",
                    group.name,
                    loaded + running
                )
            };
            problem(format!("/groups/{i}/max_loaded"), message);
        }
    }

    problems.extend(built_problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    for group in groups.values_mut() {
        group.members.sort();
    }
    let log_path = match &hub.log_path {
        Some(path) => normalize(&base_dir.join(path)),
        None => default_log_path(),
    };
    Ok(Desired {
        settings: Settings {
            host: hub.host.clone().unwrap_or_else(|| DEFAULT_HOST.to_string()),
            port: api_port,
            model_starting_port: hub
                .model_starting_port
                .unwrap_or(DEFAULT_MODEL_STARTING_PORT),
            log_level: hub.log_level.unwrap_or(LogLevel::Info),
            log_path,
            enable_status_page: hub.enable_status_page.unwrap_or(true),
            config_dir: base_dir.to_path_buf(),
        },
        models,
        groups,
    })
}

/// The shortest and longest each duration may be. Shorter ones could never work; longer ones
/// only overflow the clocks they are added to (a time past the year 9999 panics).
const DURATION_MAX: Duration = Duration::from_secs(365 * 24 * 3600);
const HEALTH_INTERVAL_MIN: (Duration, &str) = (
    Duration::from_millis(100),
    "probing more often is a busy loop",
);
const START_TIMEOUT_MIN: (Duration, &str) = (
    Duration::from_secs(1),
    "a worker needs time to start and answer its first probe",
);
const STOP_TIMEOUT_MIN: (Duration, &str) = (
    Duration::from_millis(100),
    "the worker, and its stop_command, would be killed before they could stop it",
);
const REQUEST_TIMEOUT_MIN: (Duration, &str) =
    (Duration::from_millis(100), "no worker could answer in time");

/// A duration from hub.yaml, within its bounds.
fn duration(text: &str, minimum: Option<(Duration, &str)>) -> Result<Duration, String> {
    let Some(duration) = parse_duration(text) else {
        return Err(format!("invalid duration {text:?}"));
    };
    if let Some((minimum, why)) = minimum
        && duration < minimum
    {
        let minimum = match minimum.as_millis() {
            ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
            ms => format!("{ms}ms"),
        };
        return Err(format!(
            "{text} is less than the minimum of {minimum}: {why}"
        ));
    }
    if duration > DURATION_MAX {
        return Err(format!("{text} is more than the maximum of 8760h (a year)"));
    }
    Ok(duration)
}

fn convert_engine(file: &EngineFile, pointer: &str) -> Result<Engine, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut duration = |value: &Option<String>, key: &str, default, minimum| match value {
        None => default,
        Some(text) => duration(text, Some(minimum)).unwrap_or_else(|message| {
            problems.push(Problem::at(&format!("{pointer}/{key}"), message));
            default
        }),
    };
    let defaults = Health::default();
    let health = match &file.health {
        None => defaults,
        Some(h) => Health {
            path: h.path.clone().unwrap_or(defaults.path),
            interval: duration(
                &h.interval,
                "health/interval",
                defaults.interval,
                HEALTH_INTERVAL_MIN,
            ),
            start_timeout: duration(
                &h.start_timeout,
                "health/start_timeout",
                defaults.start_timeout,
                START_TIMEOUT_MIN,
            ),
        },
    };
    let mut call = |call: &Option<HttpCallFile>, key: &str| -> Option<HttpCall> {
        let call = call.as_ref()?;
        Some(HttpCall {
            method: call.method.unwrap_or(HttpMethod::Post),
            path: call.path.clone(),
            body: call.body.clone(),
            timeout: duration(
                &call.timeout,
                &format!("{key}/timeout"),
                HttpCall::post("/").timeout,
                REQUEST_TIMEOUT_MIN,
            ),
        })
    };
    let load = call(&file.load, "load");
    let unload = call(&file.unload, "unload");
    let stop_timeout = duration(
        &file.stop_timeout,
        "stop_timeout",
        Engine::builtin().stop_timeout,
        STOP_TIMEOUT_MIN,
    );
    if load.is_some() != unload.is_some() {
        let missing = if load.is_some() { "unload" } else { "load" };
        problems.push(Problem::at(
            pointer,
            format!("an engine with `load` or `unload` needs both; add `{missing}`"),
        ));
    }

    // Placeholders: in what only an engine's author writes, any `{word}` that is not one is a
    // mistake; in environment values, which may hold literal braces, only a likely typo of one.
    let mut strict: Vec<(String, &str)> = Vec::new();
    for (i, arg) in file.command.iter().enumerate() {
        strict.push((format!("{pointer}/command/{i}"), arg));
    }
    for (i, arg) in file.stop_command.iter().flatten().enumerate() {
        strict.push((format!("{pointer}/stop_command/{i}"), arg));
    }
    if let Some(path) = file.health.as_ref().and_then(|h| h.path.as_deref()) {
        strict.push((format!("{pointer}/health/path"), path));
    }
    for (key, call) in [("load", &file.load), ("unload", &file.unload)] {
        if let Some(call) = call {
            strict.push((format!("{pointer}/{key}/path"), &call.path));
            if let Some(body) = &call.body {
                strict.push((format!("{pointer}/{key}/body"), body));
            }
        }
    }
    for (at, template) in strict {
        if let Some(word) =
            templates::placeholders(template).find(|word| !templates::PLACEHOLDERS.contains(word))
        {
            let nearest = closest(word, templates::PLACEHOLDERS);
            problems.push(Problem::at(
                &at,
                templates::unknown_placeholder(word, nearest),
            ));
        }
    }
    for (key, value) in &file.env {
        let at = format!("{pointer}/env/{}", escape_pointer(key));
        if let Some(message) = env_name_problem(key) {
            problems.push(Problem {
                at_key: true,
                ..Problem::at(&at, message)
            });
        }
        if let Some(message) = placeholder_typo(value) {
            problems.push(Problem::at(&at, message));
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Engine {
        command: file.command.clone(),
        env: file.env.clone(),
        health,
        stop_timeout,
        stop_command: file.stop_command.clone(),
        load,
        unload,
    })
}

/// Why `key` cannot name an environment variable, if it cannot.
fn env_name_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        Some("an environment variable needs a name".to_string())
    } else if key.contains('=') {
        Some(format!(
            "an environment variable's name cannot hold `=`: the worker would see {:?} set to {:?}",
            key.split('=').next().unwrap_or_default(),
            key.split_once('=').map_or("", |(_, rest)| rest)
        ))
    } else {
        None
    }
}

/// A `{word}` in `template` that is a likely typo of a placeholder (`{nmae}`): `render` would
/// leave it as written.
fn placeholder_typo(template: &str) -> Option<String> {
    templates::placeholders(template)
        .filter(|word| !templates::PLACEHOLDERS.contains(word))
        .find_map(|word| {
            let nearest = closest(word, templates::PLACEHOLDERS)?;
            Some(templates::unknown_placeholder(word, Some(nearest)))
        })
}

/// An engine's share of its workers' arguments and environment, for the kernel's limits.
struct EngineSizes {
    /// The command and environment, each counted as the kernel counts a string.
    command: Rendered,
    env: Rendered,
    /// Each environment entry's share, for a model's `env` that replaces it.
    env_entries: HashMap<String, Rendered>,
    /// Of the strings that grow with the model (per count of `{name}` and `{model_path}`), the
    /// longest, and what it is.
    growing: BTreeMap<(usize, usize), (usize, String)>,
    /// Strings too long whatever the model: (pointer, message).
    problems: Vec<(String, String)>,
    /// The part of a worker's arguments and environment no model changes is over the limit.
    too_big: bool,
}

impl EngineSizes {
    /// `pointer` is where the engine stands in the file; empty for the built-in one.
    fn of(engine: &Engine, pointer: &str) -> EngineSizes {
        let what = |at: &str| match at.strip_prefix(pointer) {
            Some(rest) if pointer.is_empty() => {
                format!("the built-in engine's {}", display_path(rest))
            }
            _ => display_path(at),
        };
        let mut sizes = EngineSizes {
            command: Rendered::default(),
            env: Rendered::default(),
            env_entries: HashMap::new(),
            growing: BTreeMap::new(),
            problems: Vec::new(),
            too_big: false,
        };
        let mut string = |rendered: Rendered, at: String, what: String| {
            if rendered.names == 0 && rendered.model_paths == 0 {
                if rendered.fixed > templates::MAX_ARG_BYTES {
                    sizes.problems.push((at, too_long(rendered.fixed)));
                }
            } else {
                let longest = sizes
                    .growing
                    .entry((rendered.names, rendered.model_paths))
                    .or_insert((0, String::new()));
                if rendered.fixed >= longest.0 {
                    *longest = (rendered.fixed, what);
                }
            }
        };
        let stop_command = engine.stop_command.as_deref().unwrap_or_default();
        for (key, args) in [
            ("command", engine.command.iter()),
            ("stop_command", stop_command.iter()),
        ] {
            for (i, arg) in args.enumerate() {
                let rendered = Rendered::of(arg);
                if key == "command" {
                    sizes.command = sizes.command.plus(rendered.as_string());
                }
                let at = format!("{pointer}/{key}/{i}");
                string(rendered, at.clone(), what(&at));
            }
        }
        for (key, value) in &engine.env {
            let rendered = Rendered::of_env(key, value);
            sizes.env = sizes.env.plus(rendered.as_string());
            sizes.env_entries.insert(key.clone(), rendered.as_string());
            let at = format!("{pointer}/env/{}", escape_pointer(key));
            string(rendered, at.clone(), what(&at));
        }
        let alone = sizes.command.plus(sizes.env).len(0, 0);
        if alone > templates::MAX_ARGV_ENV_BYTES {
            sizes.too_big = true;
            sizes.problems.push((pointer.to_string(), too_big(alone)));
        }
        sizes
    }

    /// Problems of model `i`'s worker with this engine: a string longer than the kernel takes,
    /// or arguments and environment together past hub's share of the kernel's limit.
    fn check(&self, model: &super::file::ModelFile, i: usize) -> Vec<(String, String)> {
        let (name, model_path) = (model.name.len(), model.model_path.len());
        let mut problems = Vec::new();
        for (&(names, model_paths), (fixed, what)) in &self.growing {
            let rendered = Rendered {
                names,
                model_paths,
                fixed: *fixed,
            };
            let length = rendered.len(name, model_path);
            if length > templates::MAX_ARG_BYTES {
                let message = format!(
                    "makes {what} {length} bytes long once filled in; the kernel refuses an argument or environment string over {} bytes",
                    templates::MAX_ARG_BYTES
                );
                let key = if model_paths > 0 {
                    "model_path"
                } else {
                    "name"
                };
                problems.push((format!("/models/{i}/{key}"), message));
                break;
            }
        }
        let mut total = self.command.plus(self.env);
        for (j, arg) in model.args.iter().enumerate() {
            let rendered = Rendered::of(arg);
            total = total.plus(rendered.as_string());
            let length = rendered.len(name, model_path);
            if length > templates::MAX_ARG_BYTES {
                problems.push((format!("/models/{i}/args/{j}"), too_long(length)));
            }
        }
        for (key, value) in &model.env {
            let rendered = Rendered::of_env(key, value);
            // The model's entry replaces the engine's.
            if let Some(replaced) = self.env_entries.get(key) {
                total = total.minus(*replaced);
            }
            total = total.plus(rendered.as_string());
            let length = rendered.len(name, model_path);
            if length > templates::MAX_ARG_BYTES {
                let at = format!("/models/{i}/env/{}", escape_pointer(key));
                problems.push((at, too_long(length)));
            }
        }
        let bytes = total.len(name, model_path);
        if bytes > templates::MAX_ARGV_ENV_BYTES && !self.too_big {
            problems.push((format!("/models/{i}"), too_big(bytes)));
        }
        problems
    }
}

fn too_long(length: usize) -> String {
    format!(
        "is {length} bytes long once filled in; the kernel refuses an argument or environment string over {} bytes",
        templates::MAX_ARG_BYTES
    )
}

fn too_big(bytes: usize) -> String {
    format!(
        "the worker's arguments and environment would take {bytes} bytes; hub.yaml may use {} of the kernel's limit (ARG_MAX, usually 2 MiB), which also holds the environment the daemon passes on",
        templates::MAX_ARGV_ENV_BYTES
    )
}

/// Removes `.` and `..` without touching the file system (the directory may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `$XDG_STATE_HOME/hub`, else `~/.local/state/hub`, else a directory under the temp dir.
pub fn default_log_path() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(state).join("hub");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(home).join(".local/state/hub");
    }
    std::env::temp_dir().join(format!("hub-{}", nix::unistd::getuid()))
}
