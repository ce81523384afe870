//! A linear pre-scan that refuses YAML nested deeper than any hub.yaml needs, before the YAML
//! parser sees it.
//!
//! libyaml (under serde_yaml) keeps a "simple key" slot for every open flow collection and walks
//! all of them for every token, so `[[[[…` or `{a: {a: …` costs time quadratic in its depth; and
//! serde_yaml reads the whole document into events before its own depth limit (128) can refuse
//! it. 250 KB of `{a: ` took 27 s. This scan finds the first collection opened past
//! [`MAX_DEPTH`] in one pass over the text.
//!
//! It follows libyaml's scanner (`yaml_parser_fetch_next_token` and its scalar scanners) token for
//! token, so brackets inside quoted, plain and block scalars and comments do not count, and it
//! opens the same collections libyaml does: flow collections (`[`, `{`) and block collections (a
//! key or `-` indented deeper than the collection around it). A block sequence written at its
//! key's indentation (`models:` then `- name: a` in the same column) opens no indentation level in
//! libyaml's scanner either, so it is not counted. Where libyaml would stop with an error this
//! scan carries on as best it can: what follows an error is never parsed, so it cannot cost time.
//! A test checks the collections it finds against libyaml's own tokens on mutated manifests.

use std::ops::ControlFlow;

/// The deepest nesting hub.yaml may have. A real one nests four or five levels
/// (`models` → a model → `env` → a value); the limit leaves room for any hand-written layout.
pub const MAX_DEPTH: usize = 64;

/// Where a collection past [`MAX_DEPTH`] opens: 1-based line and column.
pub fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut found = None;
    scan(text, |open| {
        if open.depth() > MAX_DEPTH {
            found = Some((open.line + 1, open.column + 1));
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// A collection the scan saw open, at a 0-based line and column (in characters) and byte index,
/// as libyaml marks its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Open {
    pub index: usize,
    pub line: usize,
    pub column: usize,
    pub kind: Kind,
    /// Block indentation levels and flow levels open, this one included.
    pub block: usize,
    pub flow: usize,
}

impl Open {
    pub fn depth(&self) -> usize {
        self.block + self.flow
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    BlockSequence,
    BlockMapping,
    FlowSequence,
    FlowMapping,
}

/// Calls `visit` for every collection `text` opens, in the order libyaml's scanner finds them,
/// until it breaks.
pub(super) fn scan(text: &str, visit: impl FnMut(Open) -> ControlFlow<()>) {
    let mut scanner = Scanner {
        text: text.as_bytes(),
        index: 0,
        line: 0,
        column: 0,
        flow_level: 0,
        indent: -1,
        indents: Vec::new(),
        simple_key_allowed: true,
        block_key: None,
        visit,
    };
    let _ = scanner.run();
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    index: usize,
    line: usize,
    column: usize,
}

/// libyaml's scanner state, less what only builds tokens.
struct Scanner<'a, F> {
    text: &'a [u8],
    index: usize,
    line: usize,
    /// In characters, as libyaml counts.
    column: usize,
    flow_level: usize,
    /// The column of the innermost block collection; -1 outside any.
    indent: isize,
    indents: Vec<isize>,
    simple_key_allowed: bool,
    /// Where a possible simple key starts in block context. It decides at which column a
    /// mapping opens when its `:` arrives; keys inside flow collections never move indentation,
    /// so they are not tracked.
    block_key: Option<Mark>,
    visit: F,
}

impl<F: FnMut(Open) -> ControlFlow<()>> Scanner<'_, F> {
    fn run(&mut self) -> ControlFlow<()> {
        loop {
            self.scan_to_next_token();
            // A simple key is at most one line and 1024 bytes long.
            if let Some(key) = self.block_key
                && (key.line < self.line || key.index + 1024 < self.index)
            {
                self.block_key = None;
            }
            self.unroll_indent(self.column as isize);
            if self.is_z(0) {
                return ControlFlow::Continue(());
            }
            let c = self.at(0);
            if self.column == 0 && c == b'%' {
                // A directive (`%YAML 1.2`) is one line.
                self.unroll_indent(-1);
                self.remove_simple_key();
                self.simple_key_allowed = false;
                while !self.is_breakz(0) {
                    self.skip();
                }
                self.skip_line();
                continue;
            }
            if self.document_indicator() {
                self.unroll_indent(-1);
                self.remove_simple_key();
                self.simple_key_allowed = false;
                for _ in 0..3 {
                    self.skip();
                }
                continue;
            }
            match c {
                b'[' | b'{' => {
                    self.save_simple_key();
                    let mark = self.mark();
                    self.flow_level += 1;
                    self.simple_key_allowed = true;
                    self.skip();
                    let kind = if c == b'[' {
                        Kind::FlowSequence
                    } else {
                        Kind::FlowMapping
                    };
                    self.open(mark, kind)?;
                }
                b']' | b'}' => {
                    self.remove_simple_key();
                    self.flow_level = self.flow_level.saturating_sub(1);
                    self.simple_key_allowed = false;
                    self.skip();
                }
                b',' => {
                    self.remove_simple_key();
                    self.simple_key_allowed = true;
                    self.skip();
                }
                b'-' if self.is_blankz(1) => {
                    self.roll_indent(self.mark(), Kind::BlockSequence)?;
                    self.remove_simple_key();
                    self.simple_key_allowed = true;
                    self.skip();
                }
                b'?' if self.flow_level > 0 || self.is_blankz(1) => {
                    self.roll_indent(self.mark(), Kind::BlockMapping)?;
                    self.remove_simple_key();
                    self.simple_key_allowed = self.flow_level == 0;
                    self.skip();
                }
                b':' if self.flow_level > 0 || self.is_blankz(1) => {
                    if self.flow_level == 0 {
                        match self.block_key.take() {
                            Some(key) => {
                                self.roll_indent(key, Kind::BlockMapping)?;
                                self.simple_key_allowed = false;
                            }
                            None => {
                                self.roll_indent(self.mark(), Kind::BlockMapping)?;
                                self.simple_key_allowed = true;
                            }
                        }
                    } else {
                        self.simple_key_allowed = false;
                    }
                    self.skip();
                }
                b'*' | b'&' => {
                    self.save_simple_key();
                    self.simple_key_allowed = false;
                    self.skip();
                    while self.at(0).is_ascii_alphanumeric() || matches!(self.at(0), b'_' | b'-') {
                        self.skip();
                    }
                }
                b'!' => {
                    self.save_simple_key();
                    self.simple_key_allowed = false;
                    self.tag();
                }
                b'|' | b'>' if self.flow_level == 0 => {
                    self.remove_simple_key();
                    self.simple_key_allowed = true;
                    self.block_scalar();
                }
                b'\'' | b'"' => {
                    self.save_simple_key();
                    self.simple_key_allowed = false;
                    self.quoted_scalar(c == b'\'');
                }
                _ if self.starts_plain_scalar() => {
                    self.save_simple_key();
                    self.simple_key_allowed = false;
                    self.plain_scalar();
                }
                // libyaml stops here: "found character that cannot start any token".
                _ => self.skip(),
            }
        }
    }

    fn open(&mut self, mark: Mark, kind: Kind) -> ControlFlow<()> {
        let open = Open {
            index: mark.index,
            line: mark.line,
            column: mark.column,
            kind,
            block: self.indents.len(),
            flow: self.flow_level,
        };
        (self.visit)(open)
    }

    /// A block collection opens where a key or `-` stands deeper than the current one.
    fn roll_indent(&mut self, mark: Mark, kind: Kind) -> ControlFlow<()> {
        if self.flow_level == 0 && self.indent < mark.column as isize {
            self.indents.push(self.indent);
            self.indent = mark.column as isize;
            return self.open(mark, kind);
        }
        ControlFlow::Continue(())
    }

    fn unroll_indent(&mut self, column: isize) {
        if self.flow_level != 0 {
            return;
        }
        while self.indent > column {
            self.indent = self.indents.pop().unwrap_or(-1);
        }
    }

    fn save_simple_key(&mut self) {
        if self.flow_level == 0 && self.simple_key_allowed {
            self.block_key = Some(self.mark());
        }
    }

    fn remove_simple_key(&mut self) {
        if self.flow_level == 0 {
            self.block_key = None;
        }
    }

    /// Skips blanks, comments and line breaks up to the next token.
    fn scan_to_next_token(&mut self) {
        loop {
            if self.column == 0 && self.text[self.index..].starts_with("\u{feff}".as_bytes()) {
                self.skip();
            }
            while self.at(0) == b' '
                || ((self.flow_level > 0 || !self.simple_key_allowed) && self.at(0) == b'\t')
            {
                self.skip();
            }
            if self.at(0) == b'#' {
                while !self.is_breakz(0) {
                    self.skip();
                }
            }
            if !self.is_break(0) {
                return;
            }
            self.skip_line();
            if self.flow_level == 0 {
                self.simple_key_allowed = true;
            }
        }
    }

    fn starts_plain_scalar(&self) -> bool {
        let c = self.at(0);
        let indicator = matches!(
            c,
            b'-' | b'?'
                | b':'
                | b','
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'#'
                | b'&'
                | b'*'
                | b'!'
                | b'|'
                | b'>'
                | b'\''
                | b'"'
                | b'%'
                | b'@'
                | b'`'
        );
        !(self.is_blankz(0) || indicator)
            || (c == b'-' && !self.is_blank(1))
            || (self.flow_level == 0 && matches!(c, b'?' | b':') && !self.is_blankz(1))
    }

    /// `yaml_parser_scan_plain_scalar`: up to `: `, ` #`, a flow indicator inside a flow
    /// collection, or a line indented no deeper than the collection around it.
    fn plain_scalar(&mut self) {
        let indent = self.indent + 1;
        let mut leading_blanks = false;
        loop {
            if self.document_indicator() || self.at(0) == b'#' {
                break;
            }
            while !self.is_blankz(0) {
                let c = self.at(0);
                if self.flow_level > 0
                    && c == b':'
                    && matches!(self.at(1), b',' | b'?' | b'[' | b']' | b'{' | b'}')
                {
                    // libyaml stops here: "found unexpected ':'".
                    return;
                }
                if (c == b':' && self.is_blankz(1))
                    || (self.flow_level > 0 && matches!(c, b',' | b'[' | b']' | b'{' | b'}'))
                {
                    break;
                }
                self.skip();
            }
            if !(self.is_blank(0) || self.is_break(0)) {
                break;
            }
            while self.is_blank(0) || self.is_break(0) {
                if self.is_blank(0) {
                    self.skip();
                } else {
                    self.skip_line();
                    leading_blanks = true;
                }
            }
            if self.flow_level == 0 && (self.column as isize) < indent {
                break;
            }
        }
        if leading_blanks {
            self.simple_key_allowed = true;
        }
    }

    /// `yaml_parser_scan_flow_scalar`: a single- or double-quoted scalar, over as many lines as
    /// it takes.
    fn quoted_scalar(&mut self, single: bool) {
        let quote = if single { b'\'' } else { b'"' };
        self.skip();
        loop {
            if self.document_indicator() || self.is_z(0) {
                // libyaml stops here: a quoted scalar may not run into a document marker or the
                // end of the file.
                return;
            }
            while !self.is_blankz(0) {
                let c = self.at(0);
                if single && c == b'\'' && self.at(1) == b'\'' {
                    self.skip();
                    self.skip();
                } else if c == quote {
                    self.skip();
                    return;
                } else if !single && c == b'\\' && self.is_break(1) {
                    self.skip();
                    self.skip_line();
                    break;
                } else if !single && c == b'\\' {
                    self.skip();
                    if !self.is_z(0) {
                        self.skip();
                    }
                } else {
                    self.skip();
                }
            }
            while self.is_blank(0) || self.is_break(0) {
                if self.is_blank(0) {
                    self.skip();
                } else {
                    self.skip_line();
                }
            }
        }
    }

    /// `yaml_parser_scan_block_scalar`: `|` or `>`, a header, then every line indented at least
    /// as deep as the first (or as the header's indentation indicator says).
    fn block_scalar(&mut self) {
        self.skip();
        // The header: a chomping indicator and an indentation indicator (1-9), in either order.
        let mut increment = 0isize;
        let mut chomping = false;
        for _ in 0..2 {
            match self.at(0) {
                b'+' | b'-' if !chomping => chomping = true,
                b'0' if increment == 0 => {
                    // libyaml stops here: "found an indentation indicator equal to 0".
                    return;
                }
                c @ b'1'..=b'9' if increment == 0 => increment = (c - b'0') as isize,
                _ => break,
            }
            self.skip();
        }
        while self.is_blank(0) {
            self.skip();
        }
        if self.at(0) == b'#' {
            while !self.is_breakz(0) {
                self.skip();
            }
        }
        if !self.is_breakz(0) {
            // libyaml stops here: "did not find expected comment or line break".
            return;
        }
        self.skip_line();
        let mut indent = 0isize;
        if increment != 0 {
            indent = if self.indent >= 0 {
                self.indent + increment
            } else {
                increment
            };
        }
        if !self.block_scalar_breaks(&mut indent) {
            return;
        }
        while self.column as isize == indent && !self.is_z(0) {
            while !self.is_breakz(0) {
                self.skip();
            }
            self.skip_line();
            if !self.block_scalar_breaks(&mut indent) {
                return;
            }
        }
    }

    /// `yaml_parser_scan_block_scalar_breaks`: skips indentation and empty lines, and settles
    /// the indentation from the first non-empty line when the header did not give it. False
    /// where libyaml stops with an error.
    fn block_scalar_breaks(&mut self, indent: &mut isize) -> bool {
        let mut max_indent = 0isize;
        loop {
            while (*indent == 0 || (self.column as isize) < *indent) && self.at(0) == b' ' {
                self.skip();
            }
            max_indent = max_indent.max(self.column as isize);
            if (*indent == 0 || (self.column as isize) < *indent) && self.at(0) == b'\t' {
                return false;
            }
            if !self.is_break(0) {
                break;
            }
            self.skip_line();
        }
        if *indent == 0 {
            *indent = max_indent.max(self.indent + 1).max(1);
        }
        true
    }

    /// A tag: `!<verbatim>` may hold `,`, `[` and `]`; any other ends at a blank, or at `,` in a
    /// flow collection (libyaml refuses anything else after a tag).
    fn tag(&mut self) {
        self.skip();
        if self.at(0) == b'<' {
            while !self.is_blankz(0) && self.at(0) != b'>' {
                self.skip();
            }
        }
        while !(self.is_blankz(0) || (self.flow_level > 0 && self.at(0) == b',')) {
            self.skip();
        }
    }

    fn document_indicator(&self) -> bool {
        self.column == 0
            && (self.text[self.index..].starts_with(b"---")
                || self.text[self.index..].starts_with(b"..."))
            && self.is_blankz(3)
    }

    fn mark(&self) -> Mark {
        Mark {
            index: self.index,
            line: self.line,
            column: self.column,
        }
    }

    /// The byte `k` ahead, or 0 past the end. libyaml reads a NUL as the end of its input too
    /// (its reader refuses a NUL in the text).
    fn at(&self, k: usize) -> u8 {
        self.text.get(self.index + k).copied().unwrap_or(0)
    }

    fn is_z(&self, k: usize) -> bool {
        self.at(k) == 0
    }

    fn is_blank(&self, k: usize) -> bool {
        matches!(self.at(k), b' ' | b'\t')
    }

    /// `\r`, `\n`, and the Unicode breaks libyaml also ends lines at: NEL, LS and PS.
    fn is_break(&self, k: usize) -> bool {
        match self.at(k) {
            b'\r' | b'\n' => true,
            0xC2 => self.at(k + 1) == 0x85,
            0xE2 => self.at(k + 1) == 0x80 && matches!(self.at(k + 2), 0xA8 | 0xA9),
            _ => false,
        }
    }

    fn is_breakz(&self, k: usize) -> bool {
        self.is_break(k) || self.is_z(k)
    }

    fn is_blankz(&self, k: usize) -> bool {
        self.is_blank(k) || self.is_breakz(k)
    }

    /// One character forward.
    fn skip(&mut self) {
        if self.index >= self.text.len() {
            return;
        }
        let width = match self.text[self.index] {
            b if b < 0x80 => 1,
            b if b >= 0xF0 => 4,
            b if b >= 0xE0 => 3,
            _ => 2,
        };
        self.index = (self.index + width).min(self.text.len());
        self.column += 1;
    }

    /// Past one line break (`\r\n` is one).
    fn skip_line(&mut self) {
        if self.at(0) == b'\r' && self.at(1) == b'\n' {
            self.index += 2;
        } else if self.is_break(0) {
            self.skip();
        } else {
            return;
        }
        self.line += 1;
        self.column = 0;
    }
}
