//! fw's one entry point for setting up, building, running and testing.
//! Every command first runs the same idempotent preflight (`setup`), so a
//! fresh Debian machine needs nothing else.
//!
//! The xtask must not depend on fw-user: building that needs bpf-linker,
//! which is what `setup` installs.

mod bench;
mod fuzz;
mod kernels;
mod setup;
mod vm;
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
    /// bpf-linker, cargo-fuzz); skips what is present.
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
    /// Run every test (needs root): the host unit tests, the fuzz targets
    /// for a bounded time, then the privileged suite (`BPF_PROG_TEST_RUN`
    /// verdict tables, netns traffic tests, scenarios) on this machine's
    /// kernel in namespaces and inside a QEMU VM on each Debian kernel.
    /// Arguments after `--` go to every test binary, e.g. a test name
    /// filter.
    Test {
        /// Where the privileged suite runs: `host` (this kernel, in
        /// namespaces), a Debian series (`6.1`, `6.12`: the newest image,
        /// fetched with apt-get download and cached in ~/.cache/fw/kernels)
        /// or a path to a vmlinuz. Repeatable. Default: host, 6.1 and 6.12.
        #[arg(long = "kernel", value_name = "KERNEL")]
        kernels: Vec<String>,
        /// Only this machine's kernel, no VM (same as `--kernel host`).
        #[arg(long, conflicts_with = "kernels")]
        no_vm: bool,
        /// Run only these suites of the privileged tests (file names in
        /// tests/tests, e.g. `verdict_policy`); skips the host unit tests
        /// and fuzzing.
        #[arg(long = "test", value_name = "SUITE")]
        suites: Vec<String>,
        /// Minutes a VM may run before it is killed as hung.
        #[arg(long, default_value_t = 40)]
        vm_timeout: u64,
        /// What the VMs run: `all`, `compat` (the kernel-dependent
        /// selection: every program, hook and feature, and every scenario)
        /// or `auto`: all with KVM, compat when emulating.
        #[arg(long, value_enum, default_value = "auto")]
        vm_suite: workspace::VmSuite,
        /// Seconds each fuzz target runs (`cargo xtask fuzz`); a full run
        /// fuzzes after the host unit tests.
        #[arg(long, value_name = "SECS", default_value_t = 50)]
        fuzz_time: u64,
        /// Do not fuzz.
        #[arg(long)]
        no_fuzz: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the cargo-fuzz targets of fw-user/fuzz (policy parser, policy
    /// compiler, iptables-save import), each for a bounded time from its
    /// seeds; fails on a finding and names its reproducer. Needs nightly
    /// and cargo-fuzz, which `setup` installs.
    Fuzz {
        /// Seconds each target runs.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        time: u64,
        /// Only this target (repeatable): `parse_policy`, `compile_policy`,
        /// `import`.
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
    },
    /// Measure fw beside iptables, nftables, ipset, xdp-filter and bare XDP
    /// programs (needs root; everything runs in namespaces it creates):
    /// builds fw-user and fw-bench in release, writes report.txt,
    /// report.json and report.svg. See docs/performance.md.
    Bench {
        /// A smoke run (small sizes, short floods) that proves every arm
        /// works; the default is the full run docs/performance.md records.
        #[arg(long)]
        quick: bool,
        /// Only these sections (repeatable).
        #[arg(long, value_name = "SECTION", value_parser = ["kernel", "traffic", "control"])]
        only: Vec<String>,
        /// Where the report goes (default: target/bench).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Print every figure as JSON on stdout (the table goes to stderr).
        #[arg(long)]
        json: bool,
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
        Command::Test {
            kernels,
            no_vm,
            suites,
            vm_timeout,
            vm_suite,
            fuzz_time,
            no_fuzz,
            args,
        } => {
            setup::run()?;
            let kernels = if no_vm {
                vec![kernels::Spec::Host]
            } else if kernels.is_empty() {
                std::iter::once(kernels::Spec::Host)
                    .chain(
                        kernels::DEBIAN_SERIES
                            .iter()
                            .map(|s| kernels::Spec::Debian((*s).into())),
                    )
                    .collect()
            } else {
                kernels
                    .iter()
                    .map(|k| kernels::Spec::parse(k))
                    .collect::<Result<_>>()?
            };
            // Only a full run fuzzes: `--test SUITE` is for iterating on
            // one suite.
            let fuzz_secs = (suites.is_empty() && !no_fuzz && fuzz_time > 0).then_some(fuzz_time);
            workspace::test(&workspace::TestPlan {
                kernels,
                suites,
                vm_timeout: std::time::Duration::from_secs(vm_timeout * 60),
                vm_suite,
                fuzz_secs,
                harness_args: args,
            })
        }
        Command::Fuzz { time, targets } => {
            setup::run()?;
            workspace::fuzz(time, &targets)
        }
        Command::Bench {
            quick,
            only,
            out,
            json,
        } => {
            setup::run()?;
            bench::run(&bench::Options {
                quick,
                only,
                out,
                json,
            })
        }
        Command::Demo => {
            setup::run()?;
            workspace::demo()
        }
    }
}
