//! `cargo xtask bench` runs this (as root): fw beside iptables, nftables,
//! ipset, xdp-filter and bare XDP programs, in namespaces it creates. See
//! `fw_tests::bench` and docs/performance.md.

use std::path::PathBuf;

use fw_tests::bench::{Depth, Measurement, control, report, testrun, traffic};

struct Args {
    depth: Depth,
    sections: Vec<String>,
    out: PathBuf,
    /// Print the JSON on stdout instead of the table (the table goes to
    /// stderr, the files are written either way).
    json: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        depth: Depth::Full,
        sections: Vec::new(),
        out: PathBuf::from("target/bench"),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.depth = Depth::Quick,
            "--only" => args
                .sections
                .push(it.next().expect("--only needs kernel, traffic or control")),
            "--out" => args.out = PathBuf::from(it.next().expect("--out needs a directory")),
            "--json" => args.json = true,
            other => {
                eprintln!(
                    "fw-bench: unknown argument {other:?} (expected --quick, --only kernel|traffic|control, --out DIR, --json)"
                );
                std::process::exit(2);
            }
        }
    }
    args
}

/// Run by hand as `target/release/fw-bench`, time the `fw-user` built
/// beside it (the tests' lookup expects to run from `target/*/deps`);
/// `cargo xtask bench` sets `FW_USER_BIN` itself.
fn use_sibling_fw_user() {
    if std::env::var_os("FW_USER_BIN").is_some() {
        return;
    }
    let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("fw-user")))
        .filter(|p| p.exists())
    else {
        return;
    };
    // SAFETY: at the start of main, before any thread exists.
    unsafe { std::env::set_var("FW_USER_BIN", sibling) };
}

fn main() {
    if fw_tests::lacks_privileges() {
        std::process::exit(2);
    }
    let args = parse_args();
    use_sibling_fw_user();
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
    let json = serde_json::to_string_pretty(&all).expect("serialise");
    if args.json {
        eprintln!("{table}");
        println!("{json}");
    } else {
        println!("{table}");
    }
    let txt = args.out.join("report.txt");
    std::fs::write(&txt, &table).expect("write report.txt");
    let json_path = args.out.join("report.json");
    std::fs::write(&json_path, json).expect("write report.json");
    eprintln!(
        "fw-bench: wrote {} and {}",
        txt.display(),
        json_path.display()
    );
    let svg_path = args.out.join("report.svg");
    match report::plot::svg(&all) {
        Ok(Some(svg)) => {
            std::fs::write(&svg_path, svg).expect("write report.svg");
            eprintln!("fw-bench: wrote {}", svg_path.display());
        }
        Ok(None) => {
            // A stale plot from an earlier run would pass for this one's.
            let _ = std::fs::remove_file(&svg_path);
            eprintln!("fw-bench: no plot: no arm has figures at several rule counts");
        }
        Err(e) => eprintln!("fw-bench: drawing report.svg failed: {e}"),
    }
}
