use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = fw_user::cli::Cli::parse();
    match fw_user::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fw-user: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
