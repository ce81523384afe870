//! What a worker is started from, checked before it is: the placeholders `engine::render` fills
//! in, and the kernel's limits on a new process's arguments and environment.

use super::file::DEFAULT_HOST;

/// The placeholders `engine::render` fills in. It leaves any other `{word}` as written (so JSON
/// bodies keep their braces), and has no escape for a literal `{name}`.
pub const PLACEHOLDERS: [&str; 5] = ["name", "model_path", "port", "host", "hub"];

/// The longest argument or environment string (`KEY=value`) the kernel passes to a new process:
/// MAX_ARG_STRLEN, 32 pages, less the terminating NUL. Past it `exec` fails with E2BIG.
pub const MAX_ARG_BYTES: usize = 32 * 4096 - 1;

/// The most a worker's arguments and environment from hub.yaml may take, counting each string's
/// NUL and pointer as the kernel does. Its own limit, ARG_MAX, is a quarter of the stack limit,
/// 2 MiB with the usual 8 MiB stack, and it also covers the environment the worker inherits from
/// the daemon, which hub.yaml cannot see: so hub.yaml gets half.
pub const MAX_ARGV_ENV_BYTES: usize = 1024 * 1024;

/// What the kernel counts for one string besides its bytes: its NUL and its pointer.
pub const PER_STRING_BYTES: usize = 1 + std::mem::size_of::<usize>();

/// The longest path `{hub}` (this binary) can be: PATH_MAX.
const HUB_PATH_BYTES: usize = 4096;

/// Every `{word}` (ASCII letters, digits, `_`) in `template`, left to right, as `render` finds
/// them.
pub fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    let mut rest = template;
    std::iter::from_fn(move || {
        loop {
            let start = rest.find('{')?;
            rest = &rest[start + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end > 0 && rest[end..].starts_with('}') {
                let word = &rest[..end];
                rest = &rest[end + 1..];
                return Some(word);
            }
        }
    })
}

/// The message for a `{word}` that is no placeholder, with the nearest one if it is a likely typo.
pub fn unknown_placeholder(word: &str, nearest: Option<&str>) -> String {
    let known: Vec<String> = PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect();
    let suggestion = nearest.map_or_else(String::new, |p| format!(" (did you mean {{{p}}}?)"));
    format!(
        "unknown placeholder {{{word}}}{suggestion}; hub fills in {}",
        known.join(", ")
    )
}

/// How long a template is once rendered for a model: `fixed` bytes, plus the model's name and
/// model_path as many times as they appear. `{port}` counts as its longest (5 digits) and `{hub}`
/// as the longest path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rendered {
    pub names: usize,
    pub model_paths: usize,
    pub fixed: usize,
}

impl Rendered {
    pub fn of(template: &str) -> Rendered {
        let mut rendered = Rendered {
            fixed: template.len(),
            ..Rendered::default()
        };
        for word in placeholders(template) {
            let filled = match word {
                "name" => {
                    rendered.names += 1;
                    0
                }
                "model_path" => {
                    rendered.model_paths += 1;
                    0
                }
                "port" => "65535".len(),
                "host" => DEFAULT_HOST.len(),
                "hub" => HUB_PATH_BYTES,
                _ => continue,
            };
            rendered.fixed = rendered.fixed - (word.len() + 2) + filled;
        }
        rendered
    }

    /// `KEY=value`, as the kernel sees an environment entry.
    pub fn of_env(key: &str, value: &str) -> Rendered {
        let mut rendered = Rendered::of(value);
        rendered.fixed += key.len() + 1;
        rendered
    }

    pub fn len(self, name: usize, model_path: usize) -> usize {
        self.fixed
            .saturating_add(self.names.saturating_mul(name))
            .saturating_add(self.model_paths.saturating_mul(model_path))
    }

    /// The kernel's count for these strings together with `other`'s.
    pub fn plus(self, other: Rendered) -> Rendered {
        Rendered {
            names: self.names + other.names,
            model_paths: self.model_paths + other.model_paths,
            fixed: self.fixed.saturating_add(other.fixed),
        }
    }

    /// These strings less `other`'s, which they hold.
    pub fn minus(self, other: Rendered) -> Rendered {
        Rendered {
            names: self.names.saturating_sub(other.names),
            model_paths: self.model_paths.saturating_sub(other.model_paths),
            fixed: self.fixed.saturating_sub(other.fixed),
        }
    }

    /// With the NUL and pointer the kernel adds to a string.
    pub fn as_string(self) -> Rendered {
        Rendered {
            fixed: self.fixed.saturating_add(PER_STRING_BYTES),
            ..self
        }
    }
}
