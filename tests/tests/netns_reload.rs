//! Atomic reload under traffic: hundreds of swaps between two policies
//! while probes flow, checking that no packet was ever judged by a mix of
//! the two, and that an established connection lives through all of it.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use fw_tests::{
    lacks_privileges,
    netns::{EchoServer, Pair, Session, server_addr},
};

const SWAPS: usize = 200;
const P1: u16 = 7001;
const P2: u16 = 7002;
const S1: &str = "192.0.2.2";
const S2: &str = "198.51.100.2";

/// Accepts UDP from `src` to `port` only (and, in A, new connections to
/// 8080). Under either whole policy, (S1 -> P2) and (S2 -> P1) are dropped;
/// only a packet that saw A's source classes with B's port classes (or the
/// reverse) could get through.
fn policy(src: &str, port: u16, web: bool) -> String {
    let web = if web {
        "[[input]]\nproto = \"tcp\"\ndport = 8080\naction = \"accept\"\n"
    } else {
        ""
    };
    format!(
        "[defaults]\ninput = \"drop\"\n[[input]]\nproto = \"udp\"\nsrc = \"{src}\"\ndport = {port}\naction = \"accept\"\n{web}"
    )
}

#[test]
fn every_packet_sees_one_whole_policy() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    pair.server
        .ip(&["addr", "add", "198.51.100.1/24", "dev", &pair.server_if]);
    pair.client
        .ip(&["addr", "add", &format!("{S2}/24"), "dev", &pair.client_if]);
    let _echo: Vec<EchoServer> = [P1, P2, 8080]
        .iter()
        .map(|&p| EchoServer::start(&pair.server, p))
        .collect();
    let a = pair.policy_file("a.toml", &policy(S1, P1, true));
    let b = pair.policy_file("b.toml", &policy(S2, P2, false));
    pair.load_file(&a);
    let mut session = Session::open(&pair.client, server_addr(false, 8080));
    assert!(session.echo(b"before"));

    let stop = Arc::new(AtomicBool::new(false));
    // answered[0] = S1->P1 (A only), [1] = S2->P2 (B only),
    // [2] = S1->P2 and [3] = S2->P1 (neither), sent = probes of each kind.
    let answered: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let sent = Arc::new(AtomicU64::new(0));
    let (stop2, answered2, sent2) = (stop.clone(), answered.clone(), sent.clone());
    let prober = pair.client.spawn(move || {
        let to = |port| SocketAddr::new(IpAddr::V4("192.0.2.1".parse().unwrap()), port);
        let bind = |src: &str| {
            let s = UdpSocket::bind(SocketAddr::new(src.parse().unwrap(), 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(15))).unwrap();
            s
        };
        let mut buf = [0u8; 8];
        while !stop2.load(Ordering::Relaxed) {
            // Fresh sockets every round: a new source port is a new flow,
            // judged by the policy in force rather than passed as
            // established.
            let probes = [
                (bind(S1), P1),
                (bind(S2), P2),
                (bind(S1), P2),
                (bind(S2), P1),
            ];
            for (i, (sock, port)) in probes.iter().enumerate() {
                sock.send_to(b"probe", to(*port)).unwrap();
                if sock.recv_from(&mut buf).is_ok() {
                    answered2[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            sent2.fetch_add(1, Ordering::Relaxed);
        }
    });

    for i in 0..SWAPS {
        let out = pair.load_file(if i % 2 == 0 { &b } else { &a });
        assert!(
            out.contains("replaced the running policy"),
            "swap {i}: {out}"
        );
        if i % 20 == 0 {
            assert!(
                session.echo(format!("during swap {i}").as_bytes()),
                "the established connection died at swap {i}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();

    let got: Vec<u64> = answered.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let rounds = sent.load(Ordering::Relaxed);
    eprintln!("{SWAPS} swaps, {rounds} probe rounds, answers {got:?}");
    assert_eq!(
        got[2] + got[3],
        0,
        "a packet was judged by a mix of the two policies: {got:?}"
    );
    assert!(
        got[0] > 0 && got[1] > 0,
        "both policies were in force during the run: {got:?}"
    );
    assert!(rounds > 100, "the probes kept flowing: {rounds}");
    assert!(session.echo(b"after all swaps"));
}
