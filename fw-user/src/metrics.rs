//! Prometheus metrics: the counters of `fw-user status` in the text
//! exposition format (encoded by `prometheus-client`), served over HTTP at
//! `/metrics` (by `tiny_http`). Every scrape reads the pinned maps afresh,
//! so the numbers are the datapath's own, whoever loaded the policy.

use std::{net::SocketAddr, thread};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    commands::status::{self, Status},
    error::{Error, Result},
    pin::PinLayout,
};

type Labels = Vec<(&'static str, String)>;

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// The metrics of `s` in the Prometheus text format.
#[must_use]
#[expect(
    clippy::too_many_lines,
    reason = "one block per metric family, registered then filled"
)]
pub fn encode_status(s: &Status) -> String {
    let mut reg = Registry::default();
    let rule_packets = counter_family(
        &mut reg,
        "fw_rule_packets",
        "Packets a rule decided or logged; kept across reloads while the rule is unchanged",
    );
    let rule_bytes = counter_family(&mut reg, "fw_rule_bytes", "Bytes of fw_rule_packets");
    let default_packets = counter_family(
        &mut reg,
        "fw_default_packets",
        "New connections a chain's default policy decided",
    );
    let default_bytes = counter_family(&mut reg, "fw_default_bytes", "Bytes of fw_default_packets");
    let packets = counter_family(
        &mut reg,
        "fw_packets",
        "Packets by direction and outcome (the reason of a drop)",
    );
    let bytes = counter_family(&mut reg, "fw_bytes", "Bytes of fw_packets");
    let events = counter_family(
        &mut reg,
        "fw_log_events",
        "Log events: emitted, suppressed by the rate limit, lost to a full ring buffer",
    );
    let ct_entries = gauge_family(
        &mut reg,
        "fw_conntrack_entries",
        "Entries in a connection-tracking table",
    );
    let ct_capacity = gauge_family(
        &mut reg,
        "fw_conntrack_capacity",
        "Capacity of a connection-tracking table",
    );
    let info = gauge_family(
        &mut reg,
        "fw_policy_info",
        "The policy in force (always 1): fingerprint and generation",
    );
    let guarded = gauge_family(
        &mut reg,
        "fw_interface_guarded",
        "Interfaces fw is attached to (1), with the attachment modes",
    );

    for chain in &s.chains {
        for r in &chain.rules {
            let labels: Labels = vec![
                ("chain", chain.name.to_string()),
                ("rule", r.number.to_string()),
                ("name", r.name.clone().unwrap_or_default()),
                ("action", r.action.to_string()),
                ("match", r.matches.clone()),
            ];
            rule_packets.get_or_create(&labels).inc_by(r.packets);
            rule_bytes.get_or_create(&labels).inc_by(r.bytes);
        }
        let labels: Labels = vec![
            ("chain", chain.name.to_string()),
            ("policy", chain.policy.to_string()),
        ];
        default_packets.get_or_create(&labels).inc_by(chain.packets);
        default_bytes.get_or_create(&labels).inc_by(chain.bytes);
    }
    for c in &s.counters {
        let labels: Labels = vec![
            ("direction", c.direction.to_string()),
            ("reason", c.name.to_string()),
        ];
        packets.get_or_create(&labels).inc_by(c.packets);
        bytes.get_or_create(&labels).inc_by(c.bytes);
    }
    for (outcome, n) in [
        ("emitted", s.events.emitted),
        ("suppressed", s.events.suppressed),
        ("lost", s.events.lost),
    ] {
        events
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc_by(n);
    }
    for t in s.conntrack.tables.iter().chain([&s.conntrack.fragments]) {
        let labels: Labels = vec![("table", t.name.to_string())];
        ct_entries.get_or_create(&labels).set(gauge(t.entries));
        ct_capacity.get_or_create(&labels).set(gauge(t.max_entries));
    }
    info.get_or_create(&vec![
        ("fingerprint", s.policy_fingerprint.clone()),
        ("generation", s.generation.to_string()),
    ])
    .set(1);
    for i in &s.interfaces {
        guarded
            .get_or_create(&vec![
                ("interface", i.name.clone()),
                ("xdp", i.xdp.clone()),
                ("tc_egress", i.tc_egress.clone()),
            ])
            .set(1);
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Serve the metrics of the firewall at `layout` on `addr` from a thread
/// of its own, until the process exits.
///
/// # Errors
/// The address cannot be bound.
pub fn serve(layout: &PinLayout, addr: SocketAddr) -> Result<()> {
    let server = tiny_http::Server::http(addr).map_err(|e| Error::MetricsBind {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    let layout = layout.clone();
    thread::Builder::new()
        .name("fw-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = match request.url() {
                    "/metrics" => match status::collect(&layout) {
                        Ok(s) => tiny_http::Response::from_string(encode_status(&s))
                            .with_header(content_type()),
                        Err(e) => tiny_http::Response::from_string(format!("fw: {e}\n"))
                            .with_status_code(503),
                    },
                    _ => {
                        tiny_http::Response::from_string("fw metrics are at /metrics\n".to_string())
                            .with_status_code(404)
                    }
                };
                let _ = request.respond(response);
            }
        })
        .map_err(|e| Error::io("cannot start the metrics thread", e))?;
    Ok(())
}

fn content_type() -> tiny_http::Header {
    tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
    )
    .expect("a valid header")
}
