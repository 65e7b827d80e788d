use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = fw_user::cli::Cli::parse();
    if cli.command.only_reads() {
        // Rust ignores SIGPIPE, so printing into a closed pipe panics.
        // Only for commands that change nothing: one that writes state
        // must not die between two steps because its reader went away.
        // SAFETY: restoring a default disposition, before any thread.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match fw_user::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.to_string();
            eprintln!("fw-user: error: {message}");
            // Causes the message does not already quote (e.g. a verifier log).
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let cause = s.to_string();
                if !message.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                }
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
