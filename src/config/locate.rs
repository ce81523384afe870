//! Line and column for a problem's JSON path, found by re-reading the text with position marks.
//!
//! serde_yaml gives positions only for syntax errors, so for schema and semantic problems we walk
//! the same paths through saphyr's parser events, once for all problems: no tree is built, and a
//! file with many problems costs no more than one with a few. This runs only for files that
//! already parsed.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

use super::load::Problem;

/// Fills in `line` and `column` of every problem whose path can be found in `text`: the position
/// of the value its pointer names, or of its key when `at_key` (so an unknown key points at
/// itself).
pub fn fill_lines(text: &str, problems: &mut [Problem]) {
    // As `parse` reads it: a byte order mark is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Pointer → the problems that want it, and whether any of them wants the key.
    let mut wanted: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, problem) in problems.iter().enumerate() {
        if problem.line.is_none() {
            wanted.entry(problem.pointer.clone()).or_default().push(i);
        }
    }
    if wanted.is_empty() {
        return;
    }
    let mut found = |pointer: &str, (line, column): (usize, usize), key: bool| {
        if let Some(indices) = wanted.get(pointer) {
            for &i in indices {
                let problem = &mut problems[i];
                // A key is wanted by `at_key` problems only; a value by the others, and by
                // `at_key` problems whose pointer names no key (a sequence item, the root).
                if problem.line.is_none() && (problem.at_key == key || !key) {
                    problem.line = Some(line);
                    problem.column = Some(column);
                }
            }
        }
    };

    /// A collection being read, and where its pointer ends in `path`.
    enum Frame {
        Sequence {
            next: usize,
        },
        Mapping {
            value_of: Option<Option<String>>,
        },
        /// Inside a key that is itself a collection: nothing in it has a pointer.
        Unaddressable,
    }
    let mut path = String::new();
    let mut stack: Vec<(Frame, usize)> = Vec::new();
    let mut marks = Marks::new(text);
    for event in Parser::new_from_str(text) {
        // Stop at the first error: the parser yields it again forever after (past 255 flow
        // levels, for one).
        let Ok((event, span)) = event else {
            return;
        };
        let start = marks.start(&event, span);
        let starts_node = matches!(
            event,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
        );
        let ends_node = matches!(event, Event::SequenceEnd | Event::MappingEnd);
        if ends_node && let Some((_, length)) = stack.pop() {
            path.truncate(length);
        }
        // Where this node sits in its parent: its pointer is `path` after this.
        let mut addressable = true;
        let parent_length = path.len();
        if starts_node {
            match stack.last_mut() {
                None => {}
                Some((Frame::Unaddressable, _)) => addressable = false,
                Some((Frame::Sequence { next }, _)) => {
                    path.push('/');
                    path.push_str(&next.to_string());
                    *next += 1;
                }
                Some((Frame::Mapping { value_of }, _)) => match value_of.take() {
                    // A key: remember it for the value that follows.
                    None => {
                        let key = match &event {
                            Event::Scalar(key, ..) => Some(escape(key)),
                            _ => None,
                        };
                        if let Some(key) = &key {
                            let key_pointer = format!("{path}/{key}");
                            found(&key_pointer, start, true);
                        }
                        *value_of = Some(key);
                        addressable = false;
                    }
                    Some(Some(key)) => {
                        path.push('/');
                        path.push_str(&key);
                    }
                    Some(None) => addressable = false,
                },
            }
            if addressable {
                found(&path, start, false);
            }
        }
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                let frame = if !addressable {
                    Frame::Unaddressable
                } else if matches!(event, Event::SequenceStart(..)) {
                    Frame::Sequence { next: 0 }
                } else {
                    Frame::Mapping { value_of: None }
                };
                stack.push((frame, parent_length));
            }
            Event::Scalar(..) | Event::Alias(_) => path.truncate(parent_length),
            Event::DocumentEnd => return,
            _ => {}
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
/// saphyr-parser 0.3 (as libyaml) starts a node's span at its properties, the `&anchor`
/// and `!tag` before it; hub has always pointed at the content after them (`model_type: &a
/// whisper` at `whisper`), so for a node with properties the text is read on from the span's
/// start, past them. Nodes without properties, nearly all, cost nothing more.
struct Marks<'a> {
    text: &'a str,
    /// The byte offset where each line starts, built when a node with properties first needs it.
    lines: Vec<usize>,
}

impl<'a> Marks<'a> {
    fn new(text: &'a str) -> Self {
        Marks {
            text,
            lines: Vec::new(),
        }
    }

    fn start(&mut self, event: &Event, span: Span) -> (usize, usize) {
        let properties = match event {
            Event::Scalar(_, _, anchor, tag)
            | Event::SequenceStart(anchor, tag)
            | Event::MappingStart(anchor, tag) => *anchor != 0 || tag.is_some(),
            _ => false,
        };
        if properties {
            self.past_properties(span.start.line(), span.start.col())
        } else {
            (span.start.line(), span.start.col() + 1)
        }
    }

    /// From a 1-based line and 0-based column, past every `&anchor` and `!tag` and the blanks,
    /// comments and line breaks after them; lines end as saphyr ends them (`\n`, `\r\n`, `\r`).
    fn past_properties(&mut self, mut line: usize, mut column: usize) -> (usize, usize) {
        if self.lines.is_empty() {
            self.lines.push(0);
            let bytes = self.text.as_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
                    self.lines.push(i + 1);
                }
            }
        }
        let Some(&line_start) = self.lines.get(line - 1) else {
            return (line, column + 1);
        };
        let mut chars = self.text[line_start..].chars().skip(column).peekable();
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
}
