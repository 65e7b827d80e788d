//! `policy.toml` parsing on arbitrary input: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Does the text set a `file` key (or spell a key with escapes, which could
/// be one)? A set may name a file to read (`{ file = "…" }`): the target
/// parses, it does not read the machine's files (`/dev/zero` never ends).
fn names_a_file(text: &str) -> bool {
    text.contains("\\u")
        || text.contains("\\U")
        || text.match_indices("file").any(|(i, _)| {
            text[i + 4..]
                .trim_start_matches(['"', '\'', ' ', '\t'])
                .starts_with('=')
        })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if names_a_file(text) {
        return;
    }
    let _ = fw_user::policy::parse(text, "fuzz.toml");
});
