use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = fw_user::cli::Cli::parse();
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
