//! fw's datapath against real iptables: every example policy is loaded
//! into fw's XDP/TC datapath on one server and, through `fw-user export`,
//! into iptables/ip6tables on a twin server; the same probes go to both
//! (TCP connections and UDP datagrams to a spread of ports from several
//! sources and source ports, pings, stray ACK/FIN/NULL/XMAS segments) and
//! every outcome must agree. A mismatch prints the probe and both answers.

use fw_tests::{
    diff::{Oracle, Twin, standard_probes},
    lacks_privileges,
};

/// Ports the example policies talk about (one of the FTP passive range).
const TCP_PORTS: [u16; 9] = [21, 22, 25, 53, 80, 443, 3306, 8080, 62_000];
const UDP_PORTS: [u16; 3] = [53, 443, 9999];

fn example(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .display()
        .to_string()
}

fn agree(policy: &str) {
    let mut ports: Vec<u16> = TCP_PORTS.to_vec();
    ports.extend(UDP_PORTS);
    ports.sort_unstable();
    ports.dedup();
    let twin = Twin::new(&ports, &["eth1"]);
    twin.load(&example(policy), &Oracle::Export);
    let probes = standard_probes(&TCP_PORTS, &UDP_PORTS);
    twin.compare(&probes).assert_agree(policy, probes.len());
}

macro_rules! examples {
    ($($test:ident => $file:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            if lacks_privileges() {
                return;
            }
            agree($file);
        }
    )*};
}

examples! {
    web_server_agrees_with_iptables => "web-server.toml",
    database_server_agrees_with_iptables => "database-server.toml",
    private_server_agrees_with_iptables => "private-server.toml",
    bastion_agrees_with_iptables => "bastion.toml",
    locked_down_webapp_agrees_with_iptables => "locked-down-webapp.toml",
    mail_dns_ftp_agrees_with_iptables => "mail-dns-ftp.toml",
    blocklist_agrees_with_iptables => "blocklist.toml",
}
