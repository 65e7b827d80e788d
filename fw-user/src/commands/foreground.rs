//! The foreground loop shared by `load`, `events` and `metrics`: follow
//! log events, sweep expired connections, serve metrics, until SIGINT or
//! SIGTERM. Leaving it never unloads the firewall: the pinned programs
//! keep filtering.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use fw_common::Direction;
use tokio::io::unix::AsyncFd;

use crate::{
    backend::{conntrack::Removed, iptables, maps::FwMaps, nflog, xdp},
    error::{Error, Result},
    events::{self, Decoder, Sink, UndeliveredWatch},
    pin::PinLayout,
};

/// How often the loop reclaims expired connection entries and reports
/// undelivered events.
const TICK: Duration = Duration::from_secs(10);

/// How events are printed (`--json`, `--syslog`).
#[derive(Clone, Debug, Default)]
pub struct EventOutput {
    pub json: bool,
    /// Send to syslog at this socket instead of stdout.
    pub syslog: Option<PathBuf>,
}

impl EventOutput {
    fn sink(&self) -> Result<Sink> {
        match &self.syslog {
            Some(socket) => Sink::syslog(socket),
            None if self.json => Ok(Sink::Json),
            None => Ok(Sink::Lines),
        }
    }
}

/// What the loop does.
pub struct Jobs {
    /// Reclaim expired connections (the firewall's janitor: `load`).
    pub sweep: bool,
    /// Follow events. With `required`, another reader is an error; without,
    /// the loop goes on without events and says why.
    pub events: Option<(EventOutput, bool)>,
    pub metrics: Option<SocketAddr>,
    /// Printed once events can no longer be missed: after the NFLOG group
    /// is bound (the kernel drops what nobody is bound to); the ring buffer
    /// keeps what comes before its reader.
    pub announce: Option<String>,
}

/// Run `jobs` for the firewall at `layout` until interrupted.
///
/// # Errors
/// The maps cannot be read, or a required job cannot start.
pub fn run(layout: &PinLayout, jobs: &Jobs) -> Result<()> {
    if iptables::is_active(layout) {
        return run_iptables(layout, jobs);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the runtime", e))?;
    if let Some(addr) = jobs.metrics {
        crate::metrics::serve(layout, addr)?;
        println!("fw: serving Prometheus metrics at http://{addr}/metrics");
    }
    let follower = follower(layout, jobs)?;
    if let Some(msg) = &jobs.announce {
        println!("{msg}");
    }
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::io("cannot watch SIGTERM", e))?;
        let maps = FwMaps::open_pinned(&layout.maps_dir())?;
        let mut ring = match &follower {
            Some(_) => {
                let rb = events::open_ring(layout)?;
                // SAFETY: the ring buffer owns its descriptor, which stays
                // open and unchanged while `AsyncFd` holds it.
                Some(
                    unsafe { AsyncFd::register(rb) }
                        .map_err(|e| Error::io("cannot poll the event ring buffer", e.into_parts().1))?,
                )
            }
            None => None,
        };
        // The lock lives as long as the loop: one reader at a time.
        let mut sink = follower;
        let mut undelivered = UndeliveredWatch::new(&maps)?;
        let mut decoder = Decoder::new(&maps)?;
        let mut tick = tokio::time::interval(TICK);
        tick.tick().await;
        let mut last_drops = None;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                ready = async {
                    match ring.as_mut() {
                        Some(r) => r.readable_mut().await.map(Some),
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(mut guard) = ready.map_err(|e| Error::io("cannot poll the event ring buffer", e))? else {
                        continue;
                    };
                    if let Some((_, sink)) = sink.as_mut() {
                        let rb = guard.get_inner_mut();
                        while let Some(item) = rb.next() {
                            if let Some(e) = events::parse_event(&item) {
                                sink.event(&decoder.decode(&e));
                            }
                        }
                    }
                    guard.clear_ready();
                }
                _ = tick.tick() => {
                    if !layout.is_installed() {
                        println!(
                            "fw: the firewall at {} was unloaded; leaving",
                            layout.root.display()
                        );
                        return Ok(());
                    }
                    decoder.sync_clock()?;
                    if let Some((_, sink)) = sink.as_mut() {
                        undelivered.check(&maps, sink)?;
                    }
                    if jobs.sweep {
                        sweep(layout, &mut last_drops)?;
                    }
                }
            }
        }
        println!("fw: leaving the foreground; the firewall stays loaded");
        Ok(())
    })
}

/// The lock and the sink, when events are to be followed and no other
/// reader has them (an error then only if the events were required).
fn follower(layout: &PinLayout, jobs: &Jobs) -> Result<Option<(events::ReaderLock, Sink)>> {
    let Some((output, required)) = &jobs.events else {
        return Ok(None);
    };
    match events::lock_reader(layout) {
        Ok(lock) => Ok(Some((lock, output.sink()?))),
        Err(e) if !required => {
            println!("fw: not following events: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The loop for the iptables backend: the kernel's conntrack needs no
/// sweeping; events come from NFLOG, read on a thread of their own.
fn run_iptables(layout: &PinLayout, jobs: &Jobs) -> Result<()> {
    let mut follower = follower(layout, jobs)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    if follower.is_some() {
        let mut reader = nflog::Reader::bind(iptables::NFLOG_GROUP)?;
        std::thread::Builder::new()
            .name("fw-nflog".into())
            .spawn(move || {
                while let Ok(batch) = reader.next_batch() {
                    for r in batch {
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Error::io("cannot start the NFLOG reader", e))?;
    }
    if let Some(msg) = &jobs.announce {
        println!("{msg}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the runtime", e))?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::io("cannot watch SIGTERM", e))?;
        let mut tick = tokio::time::interval(TICK);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                Some(r) = rx.recv() => {
                    if let Some((_, sink)) = follower.as_mut() {
                        sink.event(&r);
                    }
                }
                _ = tick.tick() => {
                    if !iptables::is_active(layout) {
                        println!(
                            "fw: the firewall at {} was unloaded; leaving",
                            layout.root.display()
                        );
                        return Ok(());
                    }
                }
            }
        }
        println!("fw: leaving the foreground; the rules stay loaded");
        Ok(())
    })
}

/// Reclaim expired entries, and say so when something changed.
fn sweep(layout: &PinLayout, last_drops: &mut Option<u64>) -> Result<()> {
    let mut maps = xdp::open_loaded(layout)?;
    let swept = maps.sweep(maps.datapath_now()?)?;
    let entries = maps.ct_records()?.len();
    let drops: u64 = maps
        .counters()?
        .iter()
        .filter(|(d, c, _)| *d == Direction::Ingress && c.is_drop())
        .map(|(_, _, v)| v.packets)
        .sum();
    if *last_drops != Some(drops) || swept != Removed::default() {
        println!(
            "fw: {entries} tracked connections; swept {} expired connections and {} fragment entries; {drops} inbound packets dropped so far",
            swept.connections(),
            swept.fragments,
        );
        *last_drops = Some(drops);
    }
    Ok(())
}
