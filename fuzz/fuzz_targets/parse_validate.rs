//! Fuzz target: any bytes through what the daemon does with a saved hub.yaml (size limit, UTF-8,
//! YAML, schema, semantic checks, line lookup) must end in a `Desired` or a `Rejection`, never a
//! panic, a hang or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(rejection) = hub::config::parse(text, "fuzz.yaml", std::path::Path::new("/")) {
        // Rendering the problems walks the same paths operators see.
        let _ = rejection.to_string();
    }
});
