//! `cargo xtask bench` runs this (as root): fw beside iptables, nftables,
//! ipset, xdp-filter and bare XDP programs, in namespaces it creates. See
//! `fw_tests::bench` and docs/performance.md.

use std::path::PathBuf;

use fw_tests::bench::{Depth, Measurement, control, report, testrun, traffic};

struct Args {
    depth: Depth,
    sections: Vec<String>,
    out: PathBuf,
}

fn parse_args() -> Args {
    let mut args = Args {
        depth: Depth::Full,
        sections: Vec::new(),
        out: PathBuf::from("target/bench"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.depth = Depth::Quick,
            "--only" => args
                .sections
                .push(it.next().expect("--only needs kernel, traffic or control")),
            "--out" => args.out = PathBuf::from(it.next().expect("--out needs a directory")),
            other => {
                eprintln!(
                    "fw-bench: unknown argument {other:?} (expected --quick, --only kernel|traffic|control, --out DIR)"
                );
                std::process::exit(2);
            }
        }
    }
    args
}

fn main() {
    if fw_tests::lacks_privileges() {
        std::process::exit(2);
    }
    let args = parse_args();
    let wants = |s: &str| args.sections.is_empty() || args.sections.iter().any(|x| x == s);
    let mut all: Vec<Measurement> = Vec::new();
    if wants("kernel") {
        all.extend(testrun::run(args.depth));
    }
    if wants("traffic") {
        all.extend(traffic::run(args.depth));
    }
    if wants("control") {
        all.extend(control::run(args.depth));
    }
    std::fs::create_dir_all(&args.out).expect("create the output directory");
    let table = report::table(&all);
    println!("{table}");
    std::fs::write(args.out.join("report.txt"), &table).expect("write report.txt");
    let json = serde_json::to_string_pretty(&all).expect("serialise");
    std::fs::write(args.out.join("report.json"), json).expect("write report.json");
}
