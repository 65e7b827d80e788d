//! Imported rulesets against the originals: each realistic iptables-save
//! file of the importer's corpus (`fw-user/src/iptables/testdata/`,
//! modelled on the classic server setups) is loaded as it is into
//! iptables on one server, and `fw-user import` of it into fw's XDP/TC
//! datapath on a twin; the same probes go to both and every outcome must
//! agree. A ruleset without an IPv6 twin is probed over IPv4 only (the
//! original leaves IPv6 to an empty ip6tables).

use fw_tests::{
    diff::{Oracle, Twin, standard_probes},
    fwcli::fw_user_ok,
    lacks_privileges,
};

const TCP_PORTS: [u16; 12] = [21, 22, 25, 53, 80, 110, 443, 3306, 5432, 7000, 8080, 62_000];
const UDP_PORTS: [u16; 3] = [53, 443, 5060];

fn testdata(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fw-user/src/iptables/testdata")
        .join(name);
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .display()
        .to_string()
}

fn agree(v4: &str, v6: Option<&str>) {
    let mut ports: Vec<u16> = TCP_PORTS.to_vec();
    ports.extend(UDP_PORTS);
    ports.sort_unstable();
    ports.dedup();
    let twin = Twin::new(&ports, &["eth1"]);
    let (v4_path, v6_path) = (testdata(v4), v6.map(testdata));
    let mut args = vec!["import", v4_path.as_str()];
    if let Some(p) = &v6_path {
        args.extend(["--ipv6", p.as_str()]);
    }
    let policy = fw_user_ok(&twin.fw.server, &args);
    let policy_file = twin.fw.policy_file("imported.toml", &policy);
    let v4_text = std::fs::read_to_string(&v4_path).unwrap();
    let v6_text = v6_path.map(|p| std::fs::read_to_string(p).unwrap());
    twin.load(
        &policy_file,
        &Oracle::Files {
            v4: &v4_text,
            v6: v6_text.as_deref(),
        },
    );
    let mut probes = standard_probes(&TCP_PORTS, &UDP_PORTS);
    if v6.is_none() {
        probes.retain(|p| !p.is_v6());
    }
    twin.compare(&probes)
        .assert_agree(&format!("{v4} imported"), probes.len());
}

macro_rules! rulesets {
    ($($test:ident => $v4:literal, $v6:expr);* $(;)?) => {$(
        #[test]
        fn $test() {
            if lacks_privileges() {
                return;
            }
            agree($v4, $v6);
        }
    )*};
}

rulesets! {
    imported_web_server_agrees_with_the_original => "web-server.v4", Some("web-server.v6");
    imported_database_agrees_with_the_original => "database.v4", None;
    imported_private_server_agrees_with_the_original => "private-server.v4", None;
    imported_bastion_agrees_with_the_original => "bastion.v4", None;
    imported_egress_dns_agrees_with_the_original => "egress-dns.v4", None;
    imported_rc_firewall_agrees_with_the_original => "rc-firewall.v4", None;
}
