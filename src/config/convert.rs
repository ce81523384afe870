//! The rules the JSON Schema cannot express (unique names and ports, a group's members, an
//! engine's templates, durations' bounds, the kernel's limits on a worker's arguments), and the
//! conversion of a schema-valid file into a [`Desired`] when they all pass.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::desired::{
    DEFAULT_IDLE_UNLOAD_AFTER, Desired, Engine, GatewaySettings, Group, Health, HttpCall,
    MemoryProbe, ModelName, ModelSpec, RunSpec, Settings, is_slug, parse_duration,
};
use super::file::{
    DEFAULT_HOST, DEFAULT_MODEL_STARTING_PORT, DEFAULT_PORT, DesiredState, EngineFile, GatewayFile,
    HttpCallFile, HttpMethod, HubFile, LogLevel,
};
use super::problem::{Problem, display_path};
use super::templates::{self, Rendered};
use super::validate::{closest, escape_pointer, invalid_size};
use crate::bytes;

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
const GATEWAY_TIMEOUT_MIN: (Duration, &str) = (
    Duration::from_millis(100),
    "no request could be served in time",
);
const REQUEST_TIMEOUT_MIN: (Duration, &str) =
    (Duration::from_millis(100), "no worker could answer in time");

/// The semantic checks, and the conversion into [`Desired`] when they pass.
pub(super) fn convert(hub: HubFile, base_dir: &Path) -> Result<Desired, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |pointer: String, message: String| {
        problems.push(Problem::at(&pointer, message));
    };

    // Problems built whole: those that point at a key, and an engine's own.
    let mut built_problems = Vec::new();

    let api_port = hub.port.unwrap_or(DEFAULT_PORT);
    let default_idle = match &hub.idle_unload_after {
        Some(text) => duration(text, None).unwrap_or_else(|message| {
            problem("/idle_unload_after".to_string(), message);
            DEFAULT_IDLE_UNLOAD_AFTER
        }),
        None => DEFAULT_IDLE_UNLOAD_AFTER,
    };
    let gateway = gateway_settings(
        hub.gateway.as_ref().cloned().unwrap_or_default(),
        &mut problem,
    );
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
        // The schema asks for one of them too; this keeps a `Group` without a limit impossible.
        if group.max_loaded.is_none() && group.memory.is_none() {
            problem(
                format!("/groups/{i}"),
                "missing required key `max_loaded` or `memory`".to_string(),
            );
        }
        let memory = group.memory.as_deref().and_then(|text| {
            size(text)
                .map_err(|message| problem(format!("/groups/{i}/memory"), message))
                .ok()
        });
        groups.insert(
            group.name.clone(),
            Group {
                name: group.name.clone(),
                max_loaded: group.max_loaded,
                memory,
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

        let memory = model.memory.as_deref().and_then(|text| {
            size(text)
                .map_err(|message| problem(at("memory"), message))
                .ok()
        });

        if let Some(group) = &model.group {
            match groups.get_mut(group) {
                Some(g) => {
                    g.members.push(name.clone());
                    if let (Some(declared), Some(budget)) = (memory, g.memory)
                        && declared > budget
                    {
                        problem(
                            at("memory"),
                            format!(
                                "model {:?} declares {} but group {group:?} has a budget of {}; it could never be loaded",
                                model.name,
                                bytes::format(declared),
                                bytes::format(budget)
                            ),
                        );
                    }
                }
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
            None => Some(default_idle),
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
                    on_demand: model.on_demand.unwrap_or(true),
                    memory,
                    run: Arc::new(RunSpec {
                        engine_name,
                        engine,
                        model_path: model.model_path.clone(),
                        port: model.port,
                        args: model.args.clone(),
                        env: model.env.clone(),
                    }),
                },
            );
        }
    }

    // Models that must hold weights: `state: loaded`, and `state: running` on an engine that
    // cannot unload (its weights are loaded exactly while it runs). Counted per group in one pass
    // over the models, so many groups and many models cost their sum, not their product.
    #[derive(Default)]
    struct Holding<'a> {
        loaded: usize,
        running_without_unload: usize,
        /// Those that declare `memory`, with their sizes; an undeclared one is unknown until
        /// measured.
        declared: Vec<(&'a str, u64)>,
    }
    let mut holding: HashMap<&str, Holding> = HashMap::new();
    for model in &hub.models {
        let Some(group) = model.group.as_deref() else {
            continue;
        };
        let running = model.state == Some(DesiredState::Running)
            || (model.state.is_none() && model.default == Some(true));
        let engine = model.engine.as_deref().unwrap_or("builtin");
        let entry = holding.entry(group).or_default();
        if model.state == Some(DesiredState::Loaded) {
            entry.loaded += 1;
        } else if running && engines.get(engine).is_some_and(|e| !e.has_memory_control()) {
            entry.running_without_unload += 1;
        } else {
            continue;
        }
        if let Some(declared) = model.memory.as_deref().and_then(bytes::parse) {
            entry.declared.push((&model.name, declared));
        }
    }
    for (i, group) in hub.groups.iter().enumerate() {
        if group_index.get(group.name.as_str()) != Some(&i) {
            continue;
        }
        let Some(held) = holding.get(group.name.as_str()) else {
            continue;
        };
        let (loaded, running) = (held.loaded, held.running_without_unload);
        if let Some(max) = group.max_loaded.map(|max| max as usize)
            && loaded + running > max
        {
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
        let total: u64 = held
            .declared
            .iter()
            .fold(0u64, |sum, (_, bytes)| sum.saturating_add(*bytes));
        if let Some(budget) = group.memory.as_deref().and_then(bytes::parse)
            && total > budget
        {
            let models: Vec<String> = held
                .declared
                .iter()
                .map(|(name, size)| format!("{name:?} {}", bytes::format(*size)))
                .collect();
            problem(
                format!("/groups/{i}/memory"),
                format!(
                    "group {:?} must always hold {} ({}: pinned with `state: loaded`, or `running` on an engine without load/unload) but its budget is {}; raise it or stop some",
                    group.name,
                    bytes::format(total),
                    models.join(", "),
                    bytes::format(budget)
                ),
            );
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
            gateway,
        },
        models,
        groups,
    })
}

/// The gateway's limits from hub.yaml's `gateway:`, defaults for what it leaves out.
fn gateway_settings(
    file: GatewayFile,
    problem: &mut impl FnMut(String, String),
) -> GatewaySettings {
    let defaults = GatewaySettings::default();
    let mut timeout = |key: &str, text: Option<&String>, default: Duration| match text {
        Some(text) => duration(text, Some(GATEWAY_TIMEOUT_MIN)).unwrap_or_else(|message| {
            problem(format!("/gateway/{key}"), message);
            default
        }),
        None => default,
    };
    GatewaySettings {
        queue_timeout: timeout(
            "queue_timeout",
            file.queue_timeout.as_ref(),
            defaults.queue_timeout,
        ),
        drain_timeout: timeout(
            "drain_timeout",
            file.drain_timeout.as_ref(),
            defaults.drain_timeout,
        ),
        upstream_timeout: timeout(
            "upstream_timeout",
            file.upstream_timeout.as_ref(),
            defaults.upstream_timeout,
        ),
        max_queued: file.max_queued.unwrap_or(defaults.max_queued),
    }
}

/// A byte size from hub.yaml (`24GiB`, `7.5 GiB`, `8GB`).
pub(super) fn size(text: &str) -> Result<u64, String> {
    if let Some(bytes) = bytes::parse(text) {
        return Ok(bytes);
    }
    // The schema lets through only a number and a unit, which fails here when it is under one
    // byte or past 64 bits: the same text with a whole part of 1 would parse.
    let whole = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let shaped = whole > 0 && bytes::parse(&format!("1{}", &text[whole..])).is_some();
    if !shaped {
        Err(invalid_size(&format!("{text:?}")))
    } else if text[..whole].bytes().all(|b| b == b'0') {
        Err(format!("invalid size {text:?}: a size is at least 1 B"))
    } else {
        Err(format!(
            "invalid size {text:?}: more than hub can count (16 EiB)"
        ))
    }
}

/// A duration from hub.yaml, within its bounds.
pub(super) fn duration(text: &str, minimum: Option<(Duration, &str)>) -> Result<Duration, String> {
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

pub(super) fn convert_engine(file: &EngineFile, pointer: &str) -> Result<Engine, Vec<Problem>> {
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
        memory: file.memory.as_ref().map(|probe| MemoryProbe {
            path: probe.path.clone(),
            pointer: probe.pointer.clone(),
        }),
    })
}

/// Why `key` cannot name an environment variable, if it cannot.
pub(super) fn env_name_problem(key: &str) -> Option<String> {
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
pub(super) fn placeholder_typo(template: &str) -> Option<String> {
    templates::placeholders(template)
        .filter(|word| !templates::PLACEHOLDERS.contains(word))
        .find_map(|word| {
            let nearest = closest(word, templates::PLACEHOLDERS)?;
            Some(templates::unknown_placeholder(word, Some(nearest)))
        })
}

/// An engine's share of its workers' arguments and environment, for the kernel's limits.
pub(super) struct EngineSizes {
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

pub(super) fn too_long(length: usize) -> String {
    format!(
        "is {length} bytes long once filled in; the kernel refuses an argument or environment string over {} bytes",
        templates::MAX_ARG_BYTES
    )
}

pub(super) fn too_big(bytes: usize) -> String {
    format!(
        "the worker's arguments and environment would take {bytes} bytes; hub.yaml may use {} of the kernel's limit (ARG_MAX, usually 2 MiB), which also holds the environment the daemon passes on",
        templates::MAX_ARGV_ENV_BYTES
    )
}

/// Removes `.` and `..` without touching the file system (the directory may not exist yet).
pub(super) fn normalize(path: &Path) -> PathBuf {
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
