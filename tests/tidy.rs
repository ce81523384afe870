//! The architecture's invariants, checked on the source (rust-analyzer's "tidy" tests): each
//! rule that `docs/ARCHITECTURE.md` states is a test here, so a change that breaks one fails CI
//! instead of quietly making the document untrue.
//!
//! - The planner and the pure step do no IO, no async and read no clock.
//! - Only `supervisor` (and `hub start`, which starts the daemon itself, and the built-in
//!   worker's own test child) spawns processes or sends signals.
//! - A `Desired` is built only in `config` (from a validated file), or in tests.
//! - No two top-level modules import each other, directly or through others, and no two files of
//!   one module do.
//!
//! Each rule's checker also runs on a line that breaks it, so a checker that can no longer fail
//! fails its own test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, as (path relative to `src/`, text).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("src is readable")
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).expect("under src");
                let text = std::fs::read_to_string(&path).expect("a source file is UTF-8");
                out.push((relative.to_string_lossy().into_owned(), text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    assert!(out.len() > 20, "found the sources");
    out
}

/// A file's code without its `#[cfg(test)] mod tests { ... }` block and comments: what ships.
fn shipped(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_test_file(path: &str) -> bool {
    path.ends_with("tests.rs") || path.contains("/tests/")
}

/// What makes code impure: IO, async, a clock, threads, processes.
const IMPURE: &[&str] = &[
    "tokio",
    "async ",
    ".await",
    "std::fs",
    "std::net",
    "std::io",
    "std::process",
    "std::thread",
    "std::env",
    "Instant",
    "SystemTime",
    "now_utc",
    "rand",
    "crate::supervisor",
    "crate::statefile",
    "crate::api",
    "crate::engine",
];

/// The impure things `code` mentions.
fn impurities(code: &str) -> Vec<&'static str> {
    IMPURE
        .iter()
        .copied()
        .filter(|word| code.contains(word))
        .collect()
}

#[test]
fn the_planner_and_the_step_do_no_io_no_async_and_read_no_clock() {
    let pure = ["plan.rs", "reconcile/step.rs"];
    for (path, text) in sources() {
        if pure.contains(&path.as_str()) {
            let found = impurities(&shipped(&text));
            assert!(
                found.is_empty(),
                "src/{path} must stay pure, but uses {found:?}"
            );
        }
    }
    // The checker itself catches what it must.
    assert_eq!(
        impurities("use tokio::time::Instant;"),
        ["tokio", "Instant"]
    );
    assert_eq!(
        impurities("let t = time::OffsetDateTime::now_utc();"),
        ["now_utc"]
    );
    assert!(impurities("use crate::observed::Time;").is_empty());
}

/// What starts a process or sends a signal.
const PROCESS_CONTROL: &[&str] = &["Command::new", "killpg(", "kill(", "posix_spawn", "fork("];

fn process_control(code: &str) -> Vec<&'static str> {
    PROCESS_CONTROL
        .iter()
        .copied()
        .filter(|word| code.contains(word))
        .collect()
}

#[test]
fn only_the_supervisor_spawns_workers_or_signals_them() {
    // `hub start` starts the daemon itself (and checks that it lives, with signal 0); the
    // built-in worker is a separate program, whose `--fork-child` mode starts a child of its own so
    // tests can prove that stops reach a worker's whole process group.
    let allowed = ["cli/daemon.rs", "worker/mod.rs"];
    let mut offenders = BTreeMap::new();
    for (path, text) in sources() {
        if path.starts_with("supervisor/")
            || allowed.contains(&path.as_str())
            || is_test_file(&path)
        {
            continue;
        }
        let found = process_control(&shipped(&text));
        if !found.is_empty() {
            offenders.insert(path, found);
        }
    }
    assert!(
        offenders.is_empty(),
        "only the supervisor may start or signal processes: {offenders:?}"
    );
    assert_eq!(
        process_control("let child = tokio::process::Command::new(program);"),
        ["Command::new"]
    );
    assert_eq!(process_control("killpg(pid, Signal::SIGTERM)"), ["killpg("]);
}

/// Whether `code` builds a `Desired` by hand (a struct literal).
fn builds_desired(code: &str) -> bool {
    code.match_indices("Desired {").any(|(at, _)| {
        let before = code[..at].trim_end();
        // `struct Desired {`, `impl Desired {` and `-> Desired {` declare; anything else builds.
        !(before.ends_with("struct") || before.ends_with("impl") || before.ends_with("->"))
            && code[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_')
    })
}

#[test]
fn a_desired_state_is_built_only_by_config() {
    for (path, text) in sources() {
        if path.starts_with("config/") || is_test_file(&path) {
            continue;
        }
        assert!(
            !builds_desired(&shipped(&text)),
            "src/{path} builds a Desired by hand; only config builds one, from a validated file"
        );
    }
    assert!(builds_desired(
        "let d = Desired { models, groups, settings };"
    ));
    assert!(!builds_desired("pub struct Desired {"));
    assert!(!builds_desired("fn parse(text: &str) -> Desired {"));
    assert!(!builds_desired("struct ModelDesired { x: u8 }"));
}

/// The module a file belongs to: `reconcile/probe.rs` → (`reconcile`, `probe`); `plan.rs` →
/// (`plan`, ``).
fn module_of(path: &str) -> (String, String) {
    let path = path.trim_end_matches(".rs");
    match path.split_once('/') {
        Some((module, rest)) => {
            let file = rest.split('/').next().unwrap_or_default();
            let file = if file == "mod" { "" } else { file };
            (module.to_string(), file.to_string())
        }
        None => (path.to_string(), String::new()),
    }
}

/// The modules `code` names with a `crate::` path.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with('$') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
        // `use crate::{a, b::c}` names several.
        if rest.starts_with('{') {
            let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// The sibling files `code` names with a `super::` path (for a file inside a module directory).
fn sibling_imports(code: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("super::") {
        let rest = &code[at + "super::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .collect()
        } else {
            vec![rest]
        };
        for name in names {
            let name: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if siblings.contains(&name) {
                out.insert(name);
            }
        }
    }
    out
}

/// A cycle in `graph`, if there is one, as the nodes along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The import graphs: between top-level modules, and between the files of each module.
fn import_graphs(
    sources: &[(String, String)],
) -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let modules: BTreeSet<String> = sources.iter().map(|(p, _)| module_of(p).0).collect();
    let mut files_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, _) in sources {
        let (module, file) = module_of(path);
        if !file.is_empty() && !file.starts_with("tests") {
            files_of.entry(module).or_default().insert(file);
        }
    }
    let mut top = BTreeMap::<String, BTreeSet<String>>::new();
    let mut within = BTreeMap::<String, BTreeSet<String>>::new();
    for (path, text) in sources {
        if is_test_file(path) {
            continue;
        }
        let code = shipped(text);
        let (module, file) = module_of(path);
        let imports = crate_imports(&code);
        let edges = top.entry(module.clone()).or_default();
        edges.extend(
            imports
                .into_iter()
                .filter(|m| *m != module && modules.contains(m)),
        );
        if !file.is_empty() {
            let siblings = files_of.get(&module).cloned().unwrap_or_default();
            let node = format!("{module}/{file}");
            let edges = within.entry(node).or_default();
            edges.extend(
                sibling_imports(&code, &siblings)
                    .into_iter()
                    .filter(|f| *f != file)
                    .map(|f| format!("{module}/{f}")),
            );
        }
    }
    (top, within)
}

#[test]
fn no_two_modules_import_each_other() {
    let (top, within) = import_graphs(&sources());
    assert!(top.len() > 10, "found the modules: {top:?}");
    if let Some(cycle) = find_cycle(&top) {
        panic!("an import cycle between modules: {}", cycle.join(" -> "));
    }
    if let Some(cycle) = find_cycle(&within) {
        panic!("an import cycle between files: {}", cycle.join(" -> "));
    }
    // The checker finds a cycle that is there.
    let planted = vec![
        (
            "status.rs".to_string(),
            "use crate::api::Envelope;".to_string(),
        ),
        (
            "api/mod.rs".to_string(),
            "use crate::status::Status;".to_string(),
        ),
        (
            "plan.rs".to_string(),
            "use crate::config::Desired;".to_string(),
        ),
    ];
    let (top, _) = import_graphs(&planted);
    let cycle = find_cycle(&top).expect("the planted cycle is found");
    assert!(cycle.contains(&"api".to_string()) && cycle.contains(&"status".to_string()));
    let planted = vec![
        (
            "config/load.rs".to_string(),
            "use super::locate;".to_string(),
        ),
        (
            "config/locate.rs".to_string(),
            "use super::load::Problem;".to_string(),
        ),
    ];
    let (_, within) = import_graphs(&planted);
    assert!(find_cycle(&within).is_some(), "a cycle between two files");
}

/// What the shared vocabulary must not depend on: the server, the runtime, the loop.
const SERVER_SIDE: &[&str] = &["axum", "tokio", "hyper", "crate::api", "crate::reconcile"];

fn server_side(code: &str) -> Vec<&'static str> {
    SERVER_SIDE
        .iter()
        .copied()
        .filter(|word| code.contains(word))
        .collect()
}

#[test]
fn wire_is_plain_data_and_the_cli_speaks_it_not_the_server() {
    for (path, text) in sources() {
        let code = shipped(&text);
        if path.starts_with("wire/") || path == "wire.rs" {
            let found = server_side(&code);
            assert!(
                found.is_empty(),
                "src/{path} must stay plain data, but uses {found:?}"
            );
        }
        // `hub serve` starts the server; every other command is a client.
        if path.starts_with("cli/") && path != "cli/serve.rs" {
            assert!(
                !code.contains("crate::api"),
                "src/{path} imports the server; clients use crate::wire"
            );
        }
    }
    assert_eq!(server_side("use axum::Json;"), ["axum"]);
    assert!(server_side("use crate::config::Problem;").is_empty());
}
