//! Line and column for a problem's JSON path, found by re-reading the text with position marks.
//!
//! serde_yaml gives positions only for syntax errors, so for schema and semantic problems we walk
//! the same paths through saphyr's parser events, once for all problems: no tree is built, and a
//! file with many problems costs no more than one with a few. This runs only for files that
//! already parsed.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

use super::problem::Problem;

/// Fills in `line` and `column` of every problem whose path can be found in `text`: the position
/// of the value its pointer names, or of its key when `at_key` (so an unknown key points at
/// itself).
///
/// The walk follows only the branches that some problem's pointer names, one segment at a time,
/// so its cost is linear in the text however deep it nests (rebuilding and hashing each node's
/// whole pointer was quadratic in the depth).
pub fn fill_lines(text: &str, problems: &mut [Problem]) {
    // As `parse` reads it: a byte order mark is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut wanted = Wanted::default();
    for (i, problem) in problems.iter().enumerate() {
        if problem.line.is_none() {
            wanted.insert(&problem.pointer, i);
        }
    }
    if wanted.nodes.iter().all(|node| node.problems.is_empty()) {
        return;
    }

    /// A collection being read; with it, its node in `wanted`, if any problem is in it.
    enum Frame {
        Sequence {
            next: usize,
        },
        Mapping {
            /// `None` while the next node is a key; after a key, the node of its value in
            /// `wanted` (`Some(None)` where no problem wants it, or the key is no scalar).
            value_of: Option<Option<usize>>,
        },
    }
    let mut stack: Vec<(Frame, Option<usize>)> = Vec::new();
    let mut marks = Marks::new(text);
    for event in Parser::new_from_str(text) {
        // Stop at the first error: the parser yields it again forever after (past 255 flow
        // levels, for one).
        let Ok((event, span)) = event else {
            return;
        };
        let starts_node = matches!(
            event,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
        );
        if !starts_node {
            match event {
                Event::SequenceEnd | Event::MappingEnd => {
                    stack.pop();
                }
                Event::DocumentEnd => return,
                _ => {}
            }
            continue;
        }
        // This node's place in `wanted`, if some problem is at it or below it. A key has none:
        // only the key's own pointer is looked up, as a key.
        let node = match stack.last_mut() {
            None => {
                wanted.found(Wanted::ROOT, problems, false, || marks.start(&event, span));
                Some(Wanted::ROOT)
            }
            Some((Frame::Sequence { next }, parent)) => {
                let index = *next;
                *next += 1;
                let item = parent.and_then(|parent| wanted.child(parent, &index.to_string()));
                if let Some(item) = item {
                    wanted.found(item, problems, false, || marks.start(&event, span));
                }
                item
            }
            Some((Frame::Mapping { value_of }, parent)) => match value_of.take() {
                None => {
                    let key = match (&event, *parent) {
                        (Event::Scalar(key, ..), Some(parent)) => {
                            wanted.child(parent, &escape(key))
                        }
                        _ => None,
                    };
                    if let Some(key) = key {
                        wanted.found(key, problems, true, || marks.start(&event, span));
                    }
                    *value_of = Some(key);
                    None
                }
                Some(value) => {
                    if let Some(value) = value {
                        wanted.found(value, problems, false, || marks.start(&event, span));
                    }
                    value
                }
            },
        };
        match event {
            Event::SequenceStart(..) => stack.push((Frame::Sequence { next: 0 }, node)),
            Event::MappingStart(..) => stack.push((Frame::Mapping { value_of: None }, node)),
            _ => {}
        }
    }
}

/// The problems' pointers as a tree of their segments.
struct Wanted {
    nodes: Vec<WantedNode>,
}

#[derive(Default)]
struct WantedNode {
    /// The problems whose pointer ends here.
    problems: Vec<usize>,
    /// The next segment (an escaped key, or an index) → its node.
    children: HashMap<String, usize>,
}

impl Default for Wanted {
    fn default() -> Self {
        Wanted {
            nodes: vec![WantedNode::default()],
        }
    }
}

impl Wanted {
    /// The node of the empty pointer, the whole document.
    const ROOT: usize = 0;

    fn insert(&mut self, pointer: &str, problem: usize) {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            // Not a JSON pointer: nothing in the text has it.
            return;
        }
        let mut node = Self::ROOT;
        for segment in pointer.split('/').skip(1) {
            node = match self.nodes[node].children.get(segment) {
                Some(&child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(WantedNode::default());
                    self.nodes[node].children.insert(segment.to_string(), child);
                    child
                }
            };
        }
        self.nodes[node].problems.push(problem);
    }

    fn child(&self, node: usize, segment: &str) -> Option<usize> {
        self.nodes[node].children.get(segment).copied()
    }

    /// Locates the problems that want `node` at `start()`, computed only if one does.
    fn found(
        &self,
        node: usize,
        problems: &mut [Problem],
        key: bool,
        start: impl FnOnce() -> (usize, usize),
    ) {
        // A key is wanted by `at_key` problems only; a value by the others, and by `at_key`
        // problems whose pointer names no key (a sequence item, the root).
        let wants = |problem: &Problem| problem.line.is_none() && (problem.at_key == key || !key);
        let indices = &self.nodes[node].problems;
        if !indices.iter().any(|&i| wants(&problems[i])) {
            return;
        }
        let (line, column) = start();
        for &i in indices {
            if wants(&problems[i]) {
                problems[i].line = Some(line);
                problems[i].column = Some(column);
            }
        }
    }
}

/// A key as a JSON pointer segment.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Where a mapping repeats `key` (a duplicate key): the 1-based line and column of its second
/// appearance. Walks parser events only, so aliases are never expanded.
pub fn second_key(text: &str, key: &str) -> Option<(usize, usize)> {
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
    let mut marks = Marks::new(text);
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
            Event::Scalar(value, style, anchor, tag) => {
                if let Some(Some(mapping)) = stack.last_mut()
                    && mapping.at_key
                {
                    if value == key && mapping.keys.contains(&value) {
                        return Some(marks.start(&Event::Scalar(value, style, anchor, tag), span));
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

/// Where nodes start, as hub reports them: 1-based line and column (in characters) of a node's
/// content.
///
/// saphyr-parser 0.3 (as libyaml) starts a node's span at its properties, the `&anchor` and
/// `!tag` before it; hub has always pointed at the content after them (`model_type: &a whisper`
/// at `whisper`), so for a node with properties the text is read on from the span's start, past
/// them. Nodes without properties, nearly all, cost nothing more.
struct Marks<'a> {
    text: &'a str,
    /// A character index and its byte offset in `text`: where the last node with properties
    /// started. Nodes are asked for in order, so the next one is found by reading on from here,
    /// and all of them cost one pass over the text.
    cursor: (usize, usize),
}

impl<'a> Marks<'a> {
    fn new(text: &'a str) -> Self {
        Marks {
            text,
            cursor: (0, 0),
        }
    }

    fn start(&mut self, event: &Event, span: Span) -> (usize, usize) {
        let properties = match event {
            Event::Scalar(_, _, anchor, tag)
            | Event::SequenceStart(anchor, tag)
            | Event::MappingStart(anchor, tag) => *anchor != 0 || tag.is_some(),
            _ => false,
        };
        if !properties {
            return (span.start.line(), span.start.col() + 1);
        }
        // saphyr's index counts characters; find its byte offset.
        let index = span.start.index();
        if index < self.cursor.0 {
            self.cursor = (0, 0);
        }
        let (mut at, mut byte) = self.cursor;
        let mut chars = self.text[byte..].chars();
        while at < index
            && let Some(c) = chars.next()
        {
            at += 1;
            byte += c.len_utf8();
        }
        self.cursor = (at, byte);
        past_properties(&self.text[byte..], span.start.line(), span.start.col())
    }
}

/// From `text`, which starts at a node's properties at 1-based `line` and 0-based `column`, past
/// every `&anchor` and `!tag` and the blanks, comments and line breaks after them (lines end as
/// saphyr ends them: `\n`, `\r\n`, `\r`): the 1-based line and column of the content.
fn past_properties(text: &str, mut line: usize, mut column: usize) -> (usize, usize) {
    let mut chars = text.chars().peekable();
    let flow = |c: char| matches!(c, ',' | '[' | ']' | '{' | '}');
    let blank = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    while let Some(&c) = chars.peek()
        && (c == '&' || c == '!')
    {
        chars.next();
        column += 1;
        if c == '!' && chars.peek() == Some(&'<') {
            // A verbatim tag, `!<tag:yaml.org,2002:str>`, may hold flow indicators.
            for c in chars.by_ref() {
                column += 1;
                if c == '>' {
                    break;
                }
            }
        }
        while chars.next_if(|&c| !blank(c) && !flow(c)).is_some() {
            column += 1;
        }
        // Blanks, comments and line breaks up to the next property or the content.
        loop {
            match chars.peek() {
                Some(' ' | '\t') => {
                    chars.next();
                    column += 1;
                }
                Some('#') => while chars.next_if(|&c| c != '\r' && c != '\n').is_some() {},
                Some('\r' | '\n') => {
                    if chars.next() == Some('\r') {
                        chars.next_if_eq(&'\n');
                    }
                    line += 1;
                    column = 0;
                }
                _ => break,
            }
        }
    }
    (line, column + 1)
}
