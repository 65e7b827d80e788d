//! fw's one entry point for setting up, building, running and testing.
//! Every command first runs the same idempotent preflight (`setup`), so a
//! fresh Debian machine needs nothing else.
//!
//! The xtask must not depend on fw-user: building that needs bpf-linker,
//! which is what `setup` installs.

mod setup;
mod workspace;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Set up, build, run and test fw")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install every prerequisite (Debian packages, nightly rust-src,
    /// bpf-linker); skips what is present.
    Setup,
    /// Build the kernel programs and fw-user.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run fw-user with the given arguments,
    /// e.g. `cargo xtask run -- load examples/web-server.toml`.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every test: host unit tests, `BPF_PROG_TEST_RUN` verdict tables and
    /// netns traffic tests (needs root). Extra arguments go to `cargo test`.
    Test {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Show the firewall working in a throwaway pair of network namespaces:
    /// load examples/web-server.toml there, probe it, print status, clean up.
    Demo,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::run(),
        Command::Build { release } => {
            setup::run()?;
            workspace::build(release)
        }
        Command::Run { release, args } => {
            setup::run()?;
            workspace::build(release)?;
            workspace::run_fw_user(release, &args)
        }
        Command::Test { args } => {
            setup::run()?;
            workspace::test(&args)
        }
        Command::Demo => {
            setup::run()?;
            workspace::demo()
        }
    }
}
