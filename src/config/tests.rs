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
            hub.yaml:3:5: groups[0]: missing required key `max_loaded`
            hub.yaml:4:5: groups[0].max_laoded: unknown key `max_laoded` (did you mean `max_loaded`?)"#]],
    );
}
