//! `hub validate` on every file in `manifests/invalid/` (one broken file per rule) against the
//! exact text in its `.expected` file, and on every good manifest.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::hub_bin;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

fn validate(dir: &Path, file: &str) -> (Option<i32>, String) {
    let out = Command::new(hub_bin())
        .args(["validate", "-f", file])
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code(), stdout)
}

#[test]
fn every_invalid_manifest_is_refused_with_its_exact_message() {
    let dir = manifests().join("invalid");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "one broken file per rule: {files:?}");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for file in &files {
        let expected_path = dir.join(file.replace(".yaml", ".expected"));
        let (code, stdout) = validate(&dir, file);
        assert_eq!(code, Some(1), "{file} must be refused:\n{stdout}");
        if update {
            std::fs::write(&expected_path, &stdout).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} is missing", expected_path.display()));
        if stdout != expected {
            failures.push(format!(
                "{file}:\n  expected: {expected}  actual:   {stdout}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "messages changed (UPDATE_GOLDEN=1 rewrites them):\n{}",
        failures.join("\n")
    );
    let expected_files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".expected")
        })
        .count();
    assert_eq!(
        expected_files,
        files.len(),
        "an .expected file without its .yaml"
    );
}

#[test]
fn a_ten_megabyte_file_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let line = "# padding padding padding padding padding padding padding padding padding\n";
    let text = format!(
        "models: []\n{}",
        line.repeat(10 * 1024 * 1024 / line.len() + 1)
    );
    std::fs::write(dir.path().join("huge.yaml"), text).unwrap();
    let (code, stdout) = validate(dir.path(), "huge.yaml");
    assert_eq!(code, Some(1));
    assert_eq!(
        stdout,
        "huge.yaml: the file is larger than the limit of 4194304 bytes\n1 problem\n"
    );
}

#[test]
fn every_good_manifest_validates() {
    for dir in [manifests(), manifests().join("engines")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                let (code, stdout) = validate(&dir, &name);
                assert_eq!(code, Some(0), "{}: {stdout}", path.display());
                assert!(stdout.contains(": valid ("), "{stdout}");
            }
        }
    }
}
