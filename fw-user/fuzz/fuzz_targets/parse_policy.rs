//! `policy.toml` parsing on arbitrary input: never a panic; every error
//! names a line and column inside the text, with a message and a hint;
//! every policy that parses can describe its rules.
//!
//! The input is the policy, optionally followed by a NUL byte and the text
//! of the one set file the target serves, `set.txt`.
#![no_main]

use fw_fuzz::{Input, check_error, check_policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    match input.parse() {
        Ok(policy) => check_policy(&policy, input.policy),
        Err(e) => check_error(&e, input.policy),
    }
});
