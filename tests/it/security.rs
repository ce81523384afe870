//! The CLI against a closed pipe: printing to it ends the command quietly.

use std::process::{Command, Stdio};

use crate::support::hub_bin;

#[test]
fn printing_to_a_closed_pipe_ends_quietly() {
    let mut child = Command::new(hub_bin())
        .arg("schema")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before hub writes: `hub schema | true`.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
