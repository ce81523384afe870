//! Line and column for a problem's JSON path, found by re-parsing the text with position marks.
//!
//! serde_yaml gives positions only for syntax errors, so for schema and semantic problems we walk
//! the same path through saphyr's marked nodes. This runs only for files that already parsed.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use super::load::Problem;

/// Fills in `line` and `column` of every problem whose path can be found in `text`.
pub fn fill_lines(text: &str, problems: &mut [Problem]) {
    if problems.iter().all(|p| p.line.is_some()) {
        return;
    }
    let Ok(documents) = MarkedYaml::load_from_str(text) else {
        return;
    };
    let Some(root) = documents.first() else {
        return;
    };
    for problem in problems.iter_mut().filter(|p| p.line.is_none()) {
        if let Some((line, column)) = find(root, &problem.pointer, problem.at_key) {
            problem.line = Some(line);
            problem.column = Some(column);
        }
    }
}

/// Walks a JSON pointer (`/models/2/group`) and returns the 1-based position of the value it
/// names, or of its key when `at_key` (so an unknown key points at itself).
fn find(root: &MarkedYaml, pointer: &str, at_key: bool) -> Option<(usize, usize)> {
    let mut node = root;
    let mut key_position = None;
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        match &node.data {
            YamlData::Mapping(map) => {
                let (k, v) = map
                    .iter()
                    .find(|(k, _)| scalar_text(k) == Some(segment.as_str()))?;
                key_position = Some(mark(k));
                node = v;
            }
            YamlData::Sequence(items) => {
                node = items.get(segment.parse::<usize>().ok()?)?;
                key_position = None;
            }
            _ => return None,
        }
    }
    match key_position {
        Some(position) if at_key => Some(position),
        _ => Some(mark(node)),
    }
}

/// Where a mapping repeats `key` (a duplicate key): the 1-based line and column of its second
/// appearance. Walks parser events only, so aliases are never expanded.
pub fn second_key(text: &str, key: &str) -> Option<(usize, usize)> {
    use saphyr_parser::{Event, Parser};
    /// A mapping being read: its keys so far, and whether the next node is a key.
    struct Mapping<'a> {
        keys: Vec<std::borrow::Cow<'a, str>>,
        at_key: bool,
    }
    // `None` stands for a sequence.
    let mut stack: Vec<Option<Mapping>> = Vec::new();
    // After a node, the enclosing mapping alternates between key and value.
    fn node_done(stack: &mut [Option<Mapping>]) {
        if let Some(Some(mapping)) = stack.last_mut() {
            mapping.at_key = !mapping.at_key;
        }
    }
    for event in Parser::new_from_str(text) {
        let (event, span) = event.ok()?;
        match event {
            Event::MappingStart(..) => stack.push(Some(Mapping {
                keys: Vec::new(),
                at_key: true,
            })),
            Event::SequenceStart(..) => stack.push(None),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                node_done(&mut stack);
            }
            Event::Scalar(value, ..) => {
                if let Some(Some(mapping)) = stack.last_mut()
                    && mapping.at_key
                {
                    if value == key && mapping.keys.contains(&value) {
                        return Some((span.start.line(), span.start.col() + 1));
                    }
                    mapping.keys.push(value);
                }
                node_done(&mut stack);
            }
            Event::Alias(_) => node_done(&mut stack),
            _ => {}
        }
    }
    None
}

fn mark(node: &MarkedYaml) -> (usize, usize) {
    (node.span.start.line(), node.span.start.col() + 1)
}

fn scalar_text<'a>(node: &'a MarkedYaml) -> Option<&'a str> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s),
        YamlData::Representation(s, _, _) => Some(s),
        _ => None,
    }
}
