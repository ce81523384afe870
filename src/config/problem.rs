//! What is wrong with a config file: its problems, each at a JSON pointer and, once located, a
//! line and column; and the rejection that lists them. The parser finds problems, `locate` gives
//! them lines, the loop and the API show them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Where in the document, as `models[2].group`; empty for the whole file.
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// Locate the key rather than its value (for unknown keys).
    #[serde(skip)]
    pub at_key: bool,
    /// The same place as a JSON pointer (`/models/2/group`), which, unlike `path`, stays
    /// unambiguous when a key holds `.` or `[`.
    #[serde(skip)]
    pub pointer: String,
}

/// A config file that was refused, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Rejection {
    /// One line per problem, as compilers print them: `file:line:column: path: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file)?;
            if let Some(line) = problem.line {
                write!(f, ":{line}")?;
                if let Some(column) = problem.column {
                    write!(f, ":{column}")?;
                }
            }
            if problem.path.is_empty() {
                write!(f, ": {}", problem.message)?;
            } else {
                write!(f, ": {}: {}", problem.path, problem.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

impl Rejection {
    pub(super) fn whole_file(file: &str, message: impl Into<String>) -> Rejection {
        Rejection {
            file: file.to_string(),
            problems: vec![Problem::whole_file(message)],
        }
    }
}

impl Problem {
    /// A problem at `pointer` (`/models/2/group`), to be located in the text later.
    pub fn at(pointer: &str, message: String) -> Problem {
        Problem {
            path: display_path(pointer),
            line: None,
            column: None,
            message,
            at_key: false,
            pointer: pointer.to_string(),
        }
    }

    /// A problem with the file as a whole (no place in it).
    pub fn whole_file(message: impl Into<String>) -> Problem {
        Problem {
            path: String::new(),
            line: None,
            column: None,
            message: message.into(),
            at_key: false,
            pointer: String::new(),
        }
    }
}

/// `/models/2/group` → `models[2].group`; an empty key is `[""]`.
pub fn display_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else if segment.is_empty() {
            out.push_str("[\"\"]");
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            // A key may hold a NUL or a line break; it is printed on one line, readably.
            for c in segment.chars() {
                if c.is_control() {
                    out.extend(c.escape_debug());
                } else {
                    out.push(c);
                }
            }
        }
    }
    out
}
