//! `fw-user import` on arbitrary input: it never panics, and whatever it
//! imports is a policy fw accepts.
//!
//! The input is an IPv4 ruleset, optionally followed by a NUL byte and an
//! IPv6 one; both option settings are tried.
#![no_main]

use fw_user::iptables::import::{ImportOptions, import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (v4, v6) = match text.split_once('\0') {
        Some((v4, v6)) => (v4, Some(v6)),
        None => (text, None),
    };
    for skip_unsupported in [false, true] {
        match import(
            Some(("rules.v4", v4)),
            v6.map(|t| ("rules.v6", t)),
            &ImportOptions { skip_unsupported },
        ) {
            Ok(imported) => {
                // Served no set files: fuzzed text must not read the disk.
                let no_files = |_: &std::path::Path| Err("no files here".to_string());
                let parsed = fw_user::policy::parse_with_set_files(
                    &imported.toml,
                    "imported.toml",
                    &no_files,
                );
                if let Err(e) = parsed {
                    panic!("the import is not a valid policy: {e}\n{}", imported.toml);
                }
            }
            Err(e) => assert!(!e.diagnostics.is_empty(), "an error without diagnostics"),
        }
    }
});
