//! Validation tests: each rule through one `check` helper that prints what `hub validate` prints.

use std::path::Path;

use expect_test::{Expect, expect};

fn check(yaml: &str, expected: Expect) {
    let actual = match super::parse(yaml, "hub.yaml", Path::new("/etc/hub")) {
        Ok(desired) => format!(
            "ok: {} models, {} groups",
            desired.models.len(),
            desired.groups.len()
        ),
        Err(rejection) => rejection.to_string(),
    };
    expected.assert_eq(&actual);
}

#[test]
fn a_minimal_file_is_valid() {
    check(
        "models:\n  - name: alpha\n    model_path: a.txt\n",
        expect!["ok: 1 models, 0 groups"],
    );
}

#[test]
fn unknown_keys_suggest_the_right_one() {
    check(
        "models: []\ngroups:\n  - name: g\n    max_laoded: 1\n",
        expect![[r#"
            hub.yaml:3:5: groups[0]: missing required key `max_loaded` or `memory`
            hub.yaml:4:5: groups[0].max_laoded: unknown key `max_laoded` (did you mean `max_loaded`?)"#]],
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once_with_its_line() {
    check(
        "port: 8000
models:
  - name: alpha
    model_path: a.txt
    port: 47851
  - name: alpha
    model_path: b.txt
  - name: beta
    model_path: c.txt
    port: 47851
    group: nope
  - name: delta
    model_path: d.txt
    port: 8000
    engine: vllm
",
        expect![[r#"
            hub.yaml:6:11: models[1].name: model "alpha" is defined twice (first at models[0])
            hub.yaml:10:11: models[2].port: port 47851 is already used by model "alpha"
            hub.yaml:11:12: models[2].group: group "nope" is not defined; add it under `groups:`
            hub.yaml:14:11: models[3].port: port 8000 is the API port; pick another
            hub.yaml:15:13: models[3].engine: unknown engine "vllm" (defined: builtin)"#]],
    );
}

#[test]
fn more_pinned_models_than_a_group_can_hold_is_an_impossible_state() {
    check(
        "models:
  - {name: a, model_path: a, state: loaded, group: g}
  - {name: b, model_path: b, state: loaded, group: g}
groups:
  - name: g
    max_loaded: 1
",
        expect![[
            r#"hub.yaml:6:17: groups[0].max_loaded: group "g" has 2 models with `state: loaded` but `max_loaded` is 1; raise it or set some to `running`"#
        ]],
    );
}

#[test]
fn schema_errors_name_types_ranges_patterns_and_durations() {
    check(
        "port: eighty
models:
  - name: Alpha
    model_path: a.txt
    port: 80
    idle_unload_after: 10 minutes
    state: paused
",
        expect![[r#"
            hub.yaml:1:7: port: expected integer, found "eighty"
            hub.yaml:3:11: models[0].name: invalid name "Alpha": use 1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit
            hub.yaml:5:11: models[0].port: 80 is less than the minimum of 1024
            hub.yaml:6:24: models[0].idle_unload_after: invalid duration "10 minutes": use a whole number and a unit, like 500ms, 90s, 15m or 1h
            hub.yaml:7:12: models[0].state: "paused" is not one of: stopped, running, loaded"#]],
    );
}

#[test]
fn default_is_the_seeds_spelling_of_running_and_must_agree_with_state() {
    check(
        "models:\n  - {name: a, model_path: a, default: true}\n",
        expect!["ok: 1 models, 0 groups"],
    );
    check(
        "models:\n  - name: a\n    model_path: a\n    default: false\n    state: running\n",
        expect![
            "hub.yaml:4:14: models[0].default: `default: false` disagrees with `state: running`; remove `default` (it is the old spelling of `state: running`)"
        ],
    );
}

#[test]
fn syntax_errors_and_empty_files_say_where_and_what() {
    check(
        "models:\n  - name: a\n   bad: [\n",
        expect![
            "hub.yaml:3:4: invalid YAML: did not find expected '-' indicator (check the indentation and quoting here and on the line above)"
        ],
    );
    check(
        "# nothing here\n",
        expect!["hub.yaml: the file is empty: it needs at least `models:`"],
    );
}

#[test]
fn the_committed_schema_is_what_the_code_generates() {
    let committed = include_str!("../../schemas/hub.schema.json");
    let generated = serde_json::to_string_pretty(super::schema()).unwrap() + "\n";
    assert!(
        committed == generated,
        "schemas/hub.schema.json is stale: run `cargo run -- schema > schemas/hub.schema.json`"
    );
}

#[test]
fn a_running_model_on_an_engine_without_unload_holds_its_groups_place() {
    check(
        "engines:
  plain: {command: [server, '{port}']}
models:
  - {name: a, model_path: a, engine: plain, state: running, group: g}
  - {name: b, model_path: b, state: loaded, group: g}
  - {name: c, model_path: c, state: running, group: g}
groups:
  - {name: g, max_loaded: 1}
",
        expect![[
            r#"hub.yaml:8:27: groups[0].max_loaded: group "g" must hold 2 models at once (1 with `state: loaded`, 1 `running` on an engine without load/unload) but `max_loaded` is 1; raise it or stop some"#
        ]],
    );
}

/// Found by `cargo fuzz`: a key full of `[` and `]` once panicked the code that finds its line,
/// and a key holding `.` was looked up in the wrong place. Problems are located by JSON pointer.
#[test]
fn keys_with_brackets_and_dots_are_located_exactly() {
    check(
        "# A model needs a model_path.\nmod[Z[[[+.KNF[[[[[[[[[w[[[]][0[[][[[: running\n",
        expect![[r#"
            hub.yaml:2:1: mod[Z[[[+.KNF[[[[[[[[[w[[[]][0[[][[[: unknown key `mod[Z[[[+.KNF[[[[[[[[[w[[[]][0[[][[[`
            hub.yaml:2:1: missing required key `models`"#]],
    );
    check(
        "models:\n  - name: a\n    model_path: a\n    env: {A: 1}\n    \"x.y\": 2\n",
        expect![[r#"
            hub.yaml:4:14: models[0].env.A: expected string, found 1
            hub.yaml:5:5: models[0].x.y: unknown key `x.y`"#]],
    );
}

/// A node's anchor and tag are not its value: a problem points at what follows them, on the
/// next line too, as it did with saphyr-parser 0.0.6 (0.3 starts a node's marks at its properties).
#[test]
fn anchored_and_tagged_values_are_located_at_their_content() {
    check(
        "models:\n  - name: a\n    model_path: a\n    port: &p !!str \"8000\"\n    env: &e # comment\n      A: 1\n  - &m\n    name: b\n",
        expect![[r#"
            hub.yaml:4:20: models[0].port: expected integer, found "8000"
            hub.yaml:6:10: models[0].env.A: expected string, found 1
            hub.yaml:8:5: models[1]: missing required key `model_path`"#]],
    );
    check(
        "models:\n  - name: a\n    model_path: a\n    &k name: b\n",
        expect![[r#"hub.yaml:4:8: invalid YAML: models[0]: duplicate entry with key "name""#]],
    );
}

/// A stable-toolchain cousin of the fuzz target in `fuzz/`: mutate every manifest in the repo
/// (byte flips, YAML punctuation, cut, duplicated and dropped lines) and parse each mutant. Any
/// panic fails the test. `HUB_FUZZ_ITERATIONS` runs more.
#[test]
fn mutated_manifests_never_panic_the_parser() {
    for bytes in mutants(manifest_seeds(), fuzz_iterations(3000)) {
        if let Ok(text) = std::str::from_utf8(&bytes)
            && let Err(rejection) = super::parse(text, "mutant.yaml", Path::new("/"))
        {
            let _ = rejection.to_string();
        }
    }
}

fn fuzz_iterations(default: u64) -> u64 {
    std::env::var("HUB_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Every `.yaml` file under `manifests/`, valid and invalid.
fn manifest_seeds() -> Vec<Vec<u8>> {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.join("manifests");
    let mut seeds = Vec::new();
    // The fuzz target's seeds too: nesting at the limit, aliases, anchors and tags.
    let fuzz_seeds = crate_dir.join("fuzz/seeds");
    for dir in [
        root.clone(),
        root.join("engines"),
        root.join("invalid"),
        fuzz_seeds,
    ] {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        seeds.extend(paths.into_iter().map(|path| std::fs::read(path).unwrap()));
    }
    seeds
}

/// `iterations` mutants of `seeds`, the same ones on every run.
fn mutants(seeds: Vec<Vec<u8>>, iterations: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const PUNCTUATION: &[&[u8]] = &[
        b":",
        b"-",
        b" ",
        b"\n",
        b"\t",
        b"&a",
        b"*a",
        b"!!str",
        b"{",
        b"}",
        b"[",
        b"]",
        b"'",
        b"\"",
        b"#",
        b"|",
        b">",
        b"---",
        b"~",
        b"?",
        b"%YAML 1.2",
        b"\xff",
        b"99999999999999999999",
        b"\r\n",
        b"\\",
        b"? ",
        b": ",
        b"- ",
        b"|2-\n",
        b"!<a,b>",
        "\u{2028}".as_bytes(),
        "\u{85}".as_bytes(),
        "\u{feff}".as_bytes(),
    ];
    (0..iterations).map(move |_| {
        let mut bytes = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..1 + next() % 4 {
            let at = if bytes.is_empty() {
                0
            } else {
                (next() % bytes.len() as u64) as usize
            };
            match next() % 5 {
                0 if !bytes.is_empty() => bytes[at] = next() as u8,
                1 => {
                    let piece = PUNCTUATION[(next() % PUNCTUATION.len() as u64) as usize];
                    bytes.splice(at..at, piece.iter().copied());
                }
                2 => bytes.truncate(at),
                3 => {
                    let line: Vec<u8> = bytes[at..]
                        .split(|b| *b == b'\n')
                        .next()
                        .unwrap_or(&[])
                        .to_vec();
                    bytes.splice(at..at, line.into_iter().chain([b'\n']));
                }
                _ => {
                    let end = bytes[at..]
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(bytes.len(), |n| at + n);
                    bytes.drain(at..end);
                }
            }
        }
        bytes
    })
}

#[test]
fn the_committed_hub_yaml_reference_is_what_the_schema_generates() {
    let committed = include_str!("../../docs/hub-yaml.md");
    assert!(
        committed == super::reference::markdown(),
        "docs/hub-yaml.md is stale: run `cargo run -- schema --markdown > docs/hub-yaml.md`"
    );
}

/// Issue 11, item 3: 200 KB of nested brackets took libyaml 42 s (its time grows with the square
/// of the depth). The pre-scan refuses it at the 65th level, before the parser runs.
#[test]
fn nesting_deeper_than_any_hub_yaml_needs_is_refused_where_it_happens() {
    let brackets = format!("{}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    check(
        &brackets,
        expect![
            "hub.yaml:1:65: nesting deeper than 64 levels: hub.yaml never needs more than a few"
        ],
    );
    check(
        &format!("models:\n  - {}\n", "{a: ".repeat(50_000)),
        expect![
            "hub.yaml:2:253: nesting deeper than 64 levels: hub.yaml never needs more than a few"
        ],
    );
    // Indentation nests too, one level per deeper key.
    let mut indented = String::new();
    for depth in 0..100 {
        indented.push_str(&format!("{}k{depth}:\n", " ".repeat(depth)));
    }
    check(
        &indented,
        expect![
            "hub.yaml:65:65: nesting deeper than 64 levels: hub.yaml never needs more than a few"
        ],
    );
}

/// Brackets in strings, comments and block scalars open nothing, and a real file is nowhere near
/// the limit.
#[test]
fn brackets_in_strings_comments_and_block_scalars_do_not_nest() {
    let many = "[{".repeat(100);
    let yaml = format!(
        "# {many}
engines:
  e:
    command: [srv, '{many}', \"{many}\\\"{many}\"]
    load:
      path: /load
      body: |
        {many}
    unload: {{path: /unload, body: \"{many}
      {many}\"}}
models:
  - name: a   # {many}
    model_path: a{many}
      {many} continued
    engine: e
    args:
      - plain{many}
"
    );
    check(&yaml, expect!["ok: 1 models, 0 groups"]);
    let mut deepest = 0;
    super::nesting::scan(&yaml, |open| {
        deepest = deepest.max(open.depth());
        std::ops::ControlFlow::Continue(())
    });
    assert_eq!(deepest, 4, "engines → e → unload → {{…}}");
}

/// The pre-scan against the scanner it stands in front of: on every manifest and thousands of
/// mutants, it must find the collections libyaml opens, where libyaml opens them, at the same
/// depth. If it missed one, a file could nest past the limit unseen and cost quadratic time.
#[test]
fn the_nesting_scan_opens_what_libyaml_opens() {
    let mut seeds = manifest_seeds();
    // What a scanner most easily gets wrong: multi-line scalars of every style, comments, tags,
    // anchors, explicit keys, document markers, and the line breaks libyaml knows besides `\n`.
    seeds.extend(
        [
            "a: \"x [ y\n  ] \\\" z\" \nb: 'it''s [\n  ] ok'\nc: plain [ text\n  continued ' quote [[\n",
            "d: |\n  [[[ {{{\n  \"unclosed\ne: >2-\n   ] ]\n  x\nf: [a, \"b]\", 'c}', {d: e}, [f # c\n  , g]  # [[\n",
            "? [complex, key]\n: value\n&anchor h: *anchor\n!tag i: !<tag:x,y> [j]\n- - [k]\n",
            "%YAML 1.2\n---\nl:\n- [m]\n- n: {o: [p]}\n...\n--- [q]\n",
            "r: [s\r\n  , t]\r\nu: v\u{2028}w: [x]\u{85}y: |\u{2028}  [z\n",
            "- \t[a]\nb:\t{c: d}\n- |\n\t[\n'e': [f]\n\"g\":\n  - h\n",
            "k: [a, b]:\n  c\n[x]: [y]\n{p: q}: r\n",
            "- a:\n  - b\n  -\n   - [c]\n-\n  ? d\n  : [e]\n",
        ]
        .map(|s| s.as_bytes().to_vec()),
    );
    use super::nesting::Kind;
    let mut compared = 0;
    for bytes in seeds
        .clone()
        .into_iter()
        .chain(mutants(seeds, fuzz_iterations(3000)))
    {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        // `parse` drops a leading byte order mark, as libyaml's reader does before its scanner.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut ours = Vec::new();
        super::nesting::scan(text, |open| {
            ours.push(open);
            std::ops::ControlFlow::Continue(())
        });
        let (theirs, complete) = libyaml::opens(text);
        // Flow levels are compared everywhere, block levels where a block collection opens: a
        // flow collection that turns out to be a key is seen before the mapping it opens, which
        // libyaml inserts before it.
        let comparable = |opens: Vec<super::nesting::Open>| {
            let mut opens: Vec<_> = opens
                .into_iter()
                .filter(|o| complete.is_none_or(|last| o.index < last))
                .map(|o| {
                    let block = matches!(o.kind, Kind::BlockMapping | Kind::BlockSequence);
                    (
                        o.index,
                        o.line,
                        o.column,
                        o.kind,
                        o.flow,
                        block.then_some(o.block),
                    )
                })
                .collect();
            opens.sort();
            opens
        };
        assert_eq!(comparable(ours), comparable(theirs), "for {text:?}");
        compared += 1;
    }
    assert!(compared > 1000, "only {compared} mutants were UTF-8");
}

/// libyaml's token stream, read through its C-style API.
mod libyaml {
    use std::mem::MaybeUninit;

    use libyaml_rs::{
        YAML_BLOCK_END_TOKEN, YAML_BLOCK_MAPPING_START_TOKEN, YAML_BLOCK_SEQUENCE_START_TOKEN,
        YAML_FLOW_MAPPING_END_TOKEN, YAML_FLOW_MAPPING_START_TOKEN, YAML_FLOW_SEQUENCE_END_TOKEN,
        YAML_FLOW_SEQUENCE_START_TOKEN, YAML_STREAM_END_TOKEN, yaml_parser_delete,
        yaml_parser_initialize, yaml_parser_scan, yaml_parser_set_input_string, yaml_parser_t,
        yaml_token_delete, yaml_token_t,
    };

    use crate::config::nesting::{Kind, Open};

    /// The collections libyaml opens in `text`, with the block and flow levels its tokens imply,
    /// and, when it stops at an error, the index of the last token it gave before: what follows
    /// was never scanned for good, so only what comes before can be compared.
    pub fn opens(text: &str) -> (Vec<Open>, Option<usize>) {
        let mut opens = Vec::new();
        let (mut block, mut flow) = (0usize, 0usize);
        let mut last = 0;
        // SAFETY: the parser is initialized before use and deleted once; every token it fills is
        // read only after a successful scan and deleted once; `text` outlives the parser.
        unsafe {
            let mut parser = MaybeUninit::<yaml_parser_t>::uninit();
            assert!(yaml_parser_initialize(parser.as_mut_ptr()).ok);
            let parser = parser.as_mut_ptr();
            yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as _);
            let complete = loop {
                let mut token = MaybeUninit::<yaml_token_t>::uninit();
                if yaml_parser_scan(parser, token.as_mut_ptr()).fail {
                    break false;
                }
                let token = token.as_mut_ptr();
                let mark = (*token).start_mark;
                last = mark.index as usize;
                let kind = match (*token).type_ {
                    YAML_BLOCK_SEQUENCE_START_TOKEN => Some(Kind::BlockSequence),
                    YAML_BLOCK_MAPPING_START_TOKEN => Some(Kind::BlockMapping),
                    YAML_FLOW_SEQUENCE_START_TOKEN => Some(Kind::FlowSequence),
                    YAML_FLOW_MAPPING_START_TOKEN => Some(Kind::FlowMapping),
                    _ => None,
                };
                match (*token).type_ {
                    YAML_BLOCK_SEQUENCE_START_TOKEN | YAML_BLOCK_MAPPING_START_TOKEN => block += 1,
                    YAML_BLOCK_END_TOKEN => block -= 1,
                    YAML_FLOW_SEQUENCE_START_TOKEN | YAML_FLOW_MAPPING_START_TOKEN => flow += 1,
                    YAML_FLOW_SEQUENCE_END_TOKEN | YAML_FLOW_MAPPING_END_TOKEN => {
                        flow = flow.saturating_sub(1)
                    }
                    _ => {}
                }
                if let Some(kind) = kind {
                    opens.push(Open {
                        index: mark.index as usize,
                        line: mark.line as usize,
                        column: mark.column as usize,
                        kind,
                        block,
                        flow,
                    });
                }
                let end = (*token).type_ == YAML_STREAM_END_TOKEN;
                yaml_token_delete(token);
                if end {
                    break true;
                }
            };
            yaml_parser_delete(parser);
            (opens, if complete { None } else { Some(last) })
        }
    }
}

/// Issue 11, item 12: a byte order mark is dropped, and lines and columns stay where an editor
/// shows them. It used to lose every line (`---` after it was a syntax error).
#[test]
fn a_byte_order_mark_is_ignored() {
    check(
        "\u{feff}models:\n  - name: a\n    model_path: a\n    port: 80\n",
        expect!["hub.yaml:4:11: models[0].port: 80 is less than the minimum of 1024"],
    );
    check(
        "\u{feff}---\nmodels:\n  - {name: a, model_path: a}\n",
        expect!["ok: 1 models, 0 groups"],
    );
    // Problems found outside `parse` are located in the same text, mark and all.
    let mut problems = vec![super::Problem {
        path: "models[0].port".to_string(),
        line: None,
        column: None,
        message: String::new(),
        at_key: false,
        pointer: "/models/0/port".to_string(),
    }];
    super::locate::fill_lines("\u{feff}models:\n  - {name: a, port: 80}\n", &mut problems);
    assert_eq!((problems[0].line, problems[0].column), (Some(2), Some(21)));
}

/// Issue 11, item 12: integers past 64 bits were "invalid type: integer `…` as u128, expected any
/// YAML value", and `8000.0` (an integer to JSON Schema) was "expected u16" with no path.
#[test]
fn numbers_that_are_not_integers_name_the_range_the_path_and_the_line() {
    check(
        "port: 99999999999999999999999
models:
  - {name: a, model_path: 99999999999999999999999, port: 8000.5}
  - {name: b, model_path: b, port: 8001.0}
  - {name: c, model_path: c, port: -99999999999999999999999}
groups:
  - {name: g, max_loaded: 2.0}
  - {name: h, max_loaded: 5000000000}
",
        expect![[r#"
            hub.yaml:1:7: port: expected an integer from 0 to 65535, found 99999999999999999999999
            hub.yaml:3:27: models[0].model_path: expected string, found 99999999999999999999999
            hub.yaml:3:58: models[0].port: expected an integer from 1024 to 65535, found 8000.5
            hub.yaml:4:36: models[1].port: expected an integer from 1024 to 65535, found 8001.0
            hub.yaml:5:36: models[2].port: expected an integer from 1024 to 65535, found -99999999999999999999999
            hub.yaml:7:27: groups[0].max_loaded: expected an integer from 1 to 4294967295, found 2.0
            hub.yaml:8:27: groups[1].max_loaded: 5000000000 is greater than the maximum of 4294967295"#]],
    );
}

/// The range in those messages comes from the schema, so every integer in it needs both bounds.
#[test]
fn every_integer_in_the_schema_has_a_range() {
    fn walk(node: &serde_json::Value, at: &str) {
        match node {
            serde_json::Value::Object(map) => {
                let integer = match map.get("type") {
                    Some(serde_json::Value::String(t)) => t == "integer",
                    Some(serde_json::Value::Array(types)) => types.iter().any(|t| t == "integer"),
                    _ => false,
                };
                if integer {
                    assert!(
                        map.contains_key("minimum") && map.contains_key("maximum"),
                        "{at}: an integer needs `range(min = …, max = …)`"
                    );
                }
                for (key, value) in map {
                    walk(value, &format!("{at}/{key}"));
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| walk(item, at)),
            _ => {}
        }
    }
    walk(super::schema(), "");
}

/// Issue 11, item 12: serde_yaml does not apply merge keys; they were "unknown key `<<`".
#[test]
fn merge_keys_are_refused_with_a_hint() {
    check(
        "base: &base {model_path: a, state: running}
models:
  - name: a
    <<: *base
  - name: b
    model_path: b
    env:
      <<: {A: b}
",
        expect![[r#"
            hub.yaml:1:1: base: unknown key `base`
            hub.yaml:3:5: models[0]: missing required key `model_path`
            hub.yaml:4:5: models[0].<<: merge keys (`<<`) are not supported; write the keys out
            hub.yaml:8:7: models[1].env.<<: merge keys (`<<`) are not supported; write the keys out"#]],
    );
}

/// Keys are strings: numbers become their text (and `1` and `"1"` are the same key), anything
/// else is refused where it stands.
#[test]
fn keys_must_be_strings() {
    check(
        "models:\n  - name: a\n    model_path: a\n    env: {1: x, true: y}\n",
        expect!["ok: 1 models, 0 groups"],
    );
    check(
        "models:\n  - name: a\n    model_path: a\n    env: {1: x, '1': y}\n",
        expect![[r#"hub.yaml:4:17: invalid YAML: models[0].env: duplicate entry with key "1""#]],
    );
    check(
        "models:\n  - name: a\n    model_path: a\n    env:\n      ? [a]\n      : x\n",
        expect![
            "hub.yaml:5:9: invalid YAML: models[0].env: a key must be a string, not a sequence"
        ],
    );
}

/// Issue 11, item 12: redefining `builtin` replaced the built-in engine for every model that
/// names none, and only showed as some other error (a group too full).
#[test]
fn the_builtin_engine_cannot_be_redefined() {
    check(
        "engines:
  builtin: {command: [other-server, '{port}']}
models:
  - {name: a, model_path: a, state: running, group: g}
  - {name: b, model_path: b, state: running, group: g}
groups:
  - {name: g, max_loaded: 1}
",
        expect![
            "hub.yaml:2:3: engines.builtin: `builtin` is the built-in engine and cannot be redefined; give this one another name"
        ],
    );
}

/// Issue 11, item 12: what a worker can never be started with. An environment variable needs a
/// name without `=`; no argument, variable or path can hold a NUL.
#[test]
fn environment_names_and_nul_characters_are_checked() {
    check(
        r#"engines:
  e:
    command: [srv, "--port={port}\0"]
    env: {"": a, "A=B": c}
models:
  - name: a
    model_path: "a\0"
    engine: e
    args: ["--x\0"]
    env: {"": x, "C=D": y, "E\0": z, F: "\0"}
"#,
        expect![[r#"
            hub.yaml:3:20: engines.e.command[1]: holds a NUL character (`\0`), which no argument, environment variable, path or request can carry
            hub.yaml:7:17: models[0].model_path: holds a NUL character (`\0`), which no argument, environment variable, path or request can carry
            hub.yaml:9:12: models[0].args[0]: holds a NUL character (`\0`), which no argument, environment variable, path or request can carry
            hub.yaml:10:28: models[0].env.E\0: holds a NUL character (`\0`), which no argument, environment variable, path or request can carry
            hub.yaml:10:41: models[0].env.F: holds a NUL character (`\0`), which no argument, environment variable, path or request can carry"#]],
    );
    check(
        r#"engines:
  e:
    command: [srv, "--port={port}"]
    env: {"": a, "A=B": c}
models:
  - name: a
    model_path: a
    engine: e
    env: {"": x, "C=D": y}
"#,
        expect![[r#"
            hub.yaml:4:11: engines.e.env[""]: an environment variable needs a name
            hub.yaml:4:18: engines.e.env.A=B: an environment variable's name cannot hold `=`: the worker would see "A" set to "B"
            hub.yaml:9:11: models[0].env[""]: an environment variable needs a name
            hub.yaml:9:18: models[0].env.C=D: an environment variable's name cannot hold `=`: the worker would see "C" set to "D""#]],
    );
}

/// Issue 11, item 12: the kernel refuses to start a process with an argument or environment
/// string over 128 KiB, or all of them over ARG_MAX (2 MiB, shared with the environment the
/// daemon passes on); `exec` failed with E2BIG at every start.
#[test]
fn arguments_the_kernel_would_refuse_are_refused_first() {
    let long = "x".repeat(131_072);
    let tenth = "y".repeat(100_000);
    let yaml = format!(
        "engines:
  e:
    command: [srv, '--model={{model_path}}', '{long}']
models:
  - name: a
    model_path: '{}'
  - name: b
    model_path: b
    args: ['{long}']
    env: {{K: '{long}'}}
  - name: c
    model_path: c
    args: [{}]
  - name: d
    model_path: '{}'
    engine: e
",
        "p".repeat(131_072),
        vec![format!("'{tenth}'"); 11].join(", "),
        "p".repeat(131_063),
    );
    check(
        &yaml,
        expect![[r#"
            hub.yaml:3:44: engines.e.command[2]: is 131072 bytes long once filled in; the kernel refuses an argument or environment string over 131071 bytes
            hub.yaml:6:17: models[0].model_path: makes the built-in engine's command[5] 131072 bytes long once filled in; the kernel refuses an argument or environment string over 131071 bytes
            hub.yaml:9:12: models[1].args[0]: is 131072 bytes long once filled in; the kernel refuses an argument or environment string over 131071 bytes
            hub.yaml:10:14: models[1].env.K: is 131074 bytes long once filled in; the kernel refuses an argument or environment string over 131071 bytes
            hub.yaml:11:5: models[2]: the worker's arguments and environment would take 1104337 bytes; hub.yaml may use 1048576 of the kernel's limit (ARG_MAX, usually 2 MiB), which also holds the environment the daemon passes on"#]],
    );
}

/// Issue 11, item 12: `engine::render` leaves an unknown `{word}` as written, so `{nmae}` reached
/// the worker verbatim. In an engine's command, stop_command and requests any `{word}` that is no
/// placeholder is refused; in args and environment values, which may hold literal braces, only a
/// likely typo of one.
#[test]
fn unknown_placeholders_are_refused_with_the_nearest() {
    check(
        r#"engines:
  e:
    command: [srv, "{nmae}", "--port={port}", "{json}"]
    stop_command: [docker, stop, "hub-{name}", "{modle_path}"]
    env: {A: "{prot}", B: "{literal}"}
    health: {path: "/health/{hots}"}
    load: {path: /load, body: '{"model": "{model}"}'}
    unload: {path: "/{name}/unload", body: '{"model": "{model_path}"}'}
models:
  - name: a
    model_path: a
    engine: e
    args: ["{hub_}", "{literal}", "{}", "{{name}}"]
    env: {C: "{nmae}", D: "{asctime} {message}"}
"#,
        expect![[r#"
            hub.yaml:3:20: engines.e.command[1]: unknown placeholder {nmae} (did you mean {name}?); hub fills in {name}, {model_path}, {port}, {host}, {hub}
            hub.yaml:3:47: engines.e.command[3]: unknown placeholder {json}; hub fills in {name}, {model_path}, {port}, {host}, {hub}
            hub.yaml:4:48: engines.e.stop_command[3]: unknown placeholder {modle_path} (did you mean {model_path}?); hub fills in {name}, {model_path}, {port}, {host}, {hub}
            hub.yaml:5:14: engines.e.env.A: unknown placeholder {prot} (did you mean {port}?); hub fills in {name}, {model_path}, {port}, {host}, {hub}
            hub.yaml:6:20: engines.e.health.path: unknown placeholder {hots} (did you mean {host}?); hub fills in {name}, {model_path}, {port}, {host}, {hub}
            hub.yaml:7:31: engines.e.load.body: unknown placeholder {model}; hub fills in {name}, {model_path}, {port}, {host}, {hub}
            hub.yaml:13:12: models[0].args[0]: unknown placeholder {hub_} (did you mean {hub}?); hub fills in {name}, {model_path}, {port}, {host}, {hub}
            hub.yaml:14:14: models[0].env.C: unknown placeholder {nmae} (did you mean {name}?); hub fills in {name}, {model_path}, {port}, {host}, {hub}"#]],
    );
}

/// The placeholders the checks know are the ones `engine::render` fills in.
#[test]
fn the_known_placeholders_are_the_rendered_ones() {
    let vars = crate::engine::Vars {
        name: "n",
        model_path: "m",
        port: 1,
        host: "h",
        hub: "x",
    };
    for placeholder in super::templates::PLACEHOLDERS {
        let template = format!("{{{placeholder}}}");
        assert_ne!(crate::engine::render(&template, &vars), template);
    }
    assert_eq!(crate::engine::render("{other}", &vars), "{other}");
}

/// Issue 11, item 12: a request path with a CR LF, a space or no leading `/` reached the worker
/// changed (a URL parser drops or encodes them) or not at all.
#[test]
fn request_paths_start_with_a_slash_and_hold_no_spaces_or_control_characters() {
    check(
        r#"engines:
  e:
    command: [srv]
    health: {path: "/health\r\nX-Injected: 1"}
    load: {path: load}
    unload: {path: "/un load"}
models: []
"#,
        expect![[r#"
            hub.yaml:4:20: engines.e.health.path: invalid request path "/health\r\nX-Injected: 1": start it with `/`, and write no spaces or control characters (percent-encode them)
            hub.yaml:5:18: engines.e.load.path: invalid request path "load": start it with `/`, and write no spaces or control characters (percent-encode them)
            hub.yaml:6:20: engines.e.unload.path: invalid request path "/un load": start it with `/`, and write no spaces or control characters (percent-encode them)"#]],
    );
}

/// Issue 11, item 12: `interval: 0ms` probed in a busy loop; a zero start, stop or request
/// timeout can never be met; and a duration past the year 9999 panics the clock it is added to.
#[test]
fn durations_have_a_floor_where_zero_cannot_work_and_a_ceiling() {
    check(
        "engines:
  e:
    command: [srv]
    health: {interval: 0ms, start_timeout: 999ms}
    stop_timeout: 0s
    load: {path: /load, timeout: 0ms}
    unload: {path: /unload, timeout: 8761h}
models:
  - {name: a, model_path: a, idle_unload_after: 99999999h}
  - {name: b, model_path: b, idle_unload_after: 0s}
",
        expect![[r#"
            hub.yaml:4:24: engines.e.health.interval: 0ms is less than the minimum of 100ms: probing more often is a busy loop
            hub.yaml:4:44: engines.e.health.start_timeout: 999ms is less than the minimum of 1s: a worker needs time to start and answer its first probe
            hub.yaml:5:19: engines.e.stop_timeout: 0s is less than the minimum of 100ms: the worker, and its stop_command, would be killed before they could stop it
            hub.yaml:6:34: engines.e.load.timeout: 0ms is less than the minimum of 100ms: no worker could answer in time
            hub.yaml:7:38: engines.e.unload.timeout: 8761h is more than the maximum of 8760h (a year)
            hub.yaml:9:49: models[0].idle_unload_after: 99999999h is more than the maximum of 8760h (a year)"#]],
    );
}

fn desired(yaml: &str) -> super::Desired {
    super::parse(yaml, "hub.yaml", Path::new("/etc/hub")).unwrap_or_else(|r| panic!("{r}"))
}

/// Memory budgets (SPEC 12): sizes with binary and decimal units, on groups and models.
#[test]
fn memory_sizes_with_units_land_in_the_desired_state() {
    let desired = desired(
        "models:
  - {name: a, model_path: a, group: gpu, memory: 7.5GiB}
  - {name: b, model_path: b, group: gpu, memory: 512MiB}
  - {name: c, model_path: c, group: cpu, memory: 8GB}
  - {name: d, model_path: d, group: gpu}
groups:
  - {name: gpu, memory: 24GiB, max_loaded: 2}
  - {name: cpu, memory: 7.5 GiB}
",
    );
    let memory = |name: &str| {
        let name = super::ModelName::new(name).unwrap();
        desired.models[&name].memory
    };
    assert_eq!(memory("a"), Some(15 << 29));
    assert_eq!(memory("b"), Some(512 << 20));
    assert_eq!(memory("c"), Some(8_000_000_000));
    assert_eq!(memory("d"), None);
    let gpu = &desired.groups["gpu"];
    assert_eq!((gpu.max_loaded, gpu.memory), (Some(2), Some(24 << 30)));
    let cpu = &desired.groups["cpu"];
    assert_eq!((cpu.max_loaded, cpu.memory), (None, Some(15 << 29)));
}

#[test]
fn a_group_with_only_a_memory_budget_is_valid() {
    check(
        "models:
  - {name: a, model_path: a, state: loaded, group: g, memory: 10GiB}
  - {name: b, model_path: b, state: loaded, group: g, memory: 10GiB}
  - {name: c, model_path: c, state: loaded, group: g}
groups:
  - name: g
    memory: 24GiB
",
        expect!["ok: 3 models, 1 groups"],
    );
}

#[test]
fn a_group_needs_max_loaded_or_memory() {
    check(
        "models: []
groups:
  - name: g
  - {name: h, max_loaded: ~}
",
        expect![[r#"
            hub.yaml:3:5: groups[0]: missing required key `max_loaded` or `memory`"#]],
    );
    // `max_loaded: ~` passes the schema's `required`, not the conversion.
    check(
        "models: []\ngroups:\n  - {name: h, max_loaded: ~}\n",
        expect!["hub.yaml:3:5: groups[0]: missing required key `max_loaded` or `memory`"],
    );
}

#[test]
fn sizes_need_a_number_and_a_unit() {
    check(
        "models:
  - name: a
    model_path: a
    memory: 24gb
groups:
  - name: g
    memory: 24 GiB
  - {name: h, memory: 24, max_loaded: 1}
  - {name: i, memory: '24'}
",
        expect![[r#"
            hub.yaml:4:13: models[0].memory: invalid size "24gb": use a number and a unit: B, KiB, MiB, GiB, TiB, KB, MB, GB or TB (e.g. 24GiB)
            hub.yaml:8:23: groups[1].memory: expected string, found 24
            hub.yaml:9:23: groups[2].memory: invalid size "24": use a number and a unit: B, KiB, MiB, GiB, TiB, KB, MB, GB or TB (e.g. 24GiB)"#]],
    );
    // What the schema's pattern lets through and bytes cannot hold: zero and past 64 bits.
    check(
        "models:
  - {name: b, model_path: b, memory: 0GiB}
  - {name: c, model_path: c, memory: 99999999999TiB}
  - {name: d, model_path: d, memory: 0.1B}
",
        expect![[r#"
            hub.yaml:2:38: models[0].memory: invalid size "0GiB": a size is at least 1 B
            hub.yaml:3:38: models[1].memory: invalid size "99999999999TiB": more than hub can count (16 EiB)
            hub.yaml:4:38: models[2].memory: invalid size "0.1B": a size is at least 1 B"#]],
    );
}

#[test]
fn a_model_larger_than_its_groups_budget_could_never_load() {
    check(
        "models:
  - name: big
    model_path: a
    group: g
    memory: 30GiB
  - {name: small, model_path: b, group: g, memory: 20GiB}
groups:
  - {name: g, memory: 24GiB}
",
        expect![[
            r#"hub.yaml:5:13: models[0].memory: model "big" declares 30 GiB but group "g" has a budget of 24 GiB; it could never be loaded"#
        ]],
    );
}

/// Pinned models, and running ones on an engine that cannot unload, hold their memory always:
/// declared together past the budget, the desired state is impossible. Undeclared members and
/// models loaded on demand do not count.
#[test]
fn pinned_models_declared_past_the_budget_are_an_impossible_state() {
    check(
        "engines:
  plain: {command: [server, '{port}']}
models:
  - {name: a, model_path: a, state: loaded, group: g, memory: 10GiB}
  - {name: b, model_path: b, engine: plain, state: running, group: g, memory: 7.5GiB}
  - {name: c, model_path: c, state: running, group: g, memory: 20GiB}
  - {name: d, model_path: d, state: loaded, group: g}
  - {name: e, model_path: e, state: loaded, group: g, memory: 8GB}
groups:
  - name: g
    max_loaded: 4
    memory: 24GiB
",
        expect![[
            r#"hub.yaml:12:13: groups[0].memory: group "g" must always hold 25 GiB ("a" 10 GiB, "b" 7.5 GiB, "e" 7.45 GiB: pinned with `state: loaded`, or `running` on an engine without load/unload) but its budget is 24 GiB; raise it or stop some"#
        ]],
    );
}

#[test]
fn an_engine_may_report_its_own_memory() {
    let desired = desired(
        "engines:
  e:
    command: [srv, '{port}']
    memory: {path: /stats, pointer: /memory/used_bytes}
  whole:
    command: [srv, '{port}']
    memory: {path: /bytes, pointer: ''}
models:
  - {name: a, model_path: a, engine: e}
  - {name: b, model_path: b, engine: whole}
  - {name: c, model_path: c}
",
    );
    let probe = |name: &str| {
        let name = super::ModelName::new(name).unwrap();
        desired.models[&name]
            .run
            .engine
            .memory
            .as_ref()
            .map(|p| (p.path.clone(), p.pointer.clone()))
    };
    assert_eq!(
        probe("a"),
        Some(("/stats".to_string(), "/memory/used_bytes".to_string()))
    );
    assert_eq!(probe("b"), Some(("/bytes".to_string(), String::new())));
    assert_eq!(probe("c"), None);
    check(
        "engines:
  e:
    command: [srv]
    memory: {path: stats, pointer: memory.used}
  f:
    command: [srv]
    memory: {path: /stats, pointer: /a~2b, extra: 1}
  g:
    command: [srv]
    memory: {path: /stats}
models: []
",
        expect![[r#"
            hub.yaml:4:20: engines.e.memory.path: invalid request path "stats": start it with `/`, and write no spaces or control characters (percent-encode them)
            hub.yaml:4:36: engines.e.memory.pointer: invalid JSON pointer "memory.used": start it with `/` (`/memory/used_bytes`), or leave it empty for the whole answer; write `~` as `~0` and a `/` within a key as `~1`
            hub.yaml:7:37: engines.f.memory.pointer: invalid JSON pointer "/a~2b": start it with `/` (`/memory/used_bytes`), or leave it empty for the whole answer; write `~` as `~0` and a `/` within a key as `~1`
            hub.yaml:7:44: engines.f.memory.extra: unknown key `extra`
            hub.yaml:10:13: engines.g.memory: missing required key `pointer`"#]],
    );
}
