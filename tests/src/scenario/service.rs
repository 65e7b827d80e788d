//! The services of a scenario's hosts: real TCP and UDP listeners that
//! echo what they receive, and TCP proxies (a load balancer's frontends).
//! They listen on `[::]` (IPv4 and IPv6) inside the host's namespace and
//! stop when dropped.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use super::spec::{Proxy, Service};
use crate::netns::{Netns, pump};

/// How long a proxy waits for one backend before trying the next.
const BACKEND_CONNECT: Duration = Duration::from_millis(500);
/// How often blocked reads look at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// Every listener of one host.
pub struct Services {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Services {
    /// Start the host's listeners in namespace `ns`; returns once all of
    /// them are bound.
    ///
    /// # Panics
    /// A port cannot be bound (the message says which host and port).
    #[must_use]
    pub fn start(host: &str, ns: &str, services: &[Service], proxies: &[Proxy]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let ns = Netns::existing(ns);
        for &svc in services {
            let (tx, rx) = mpsc::channel();
            let s = stop.clone();
            threads.push(ns.spawn(move || {
                let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), svc.port);
                if svc.tcp {
                    match TcpListener::bind(any) {
                        Ok(l) => {
                            let _ = tx.send(Ok(()));
                            serve_tcp(&l, &s, |stream, s| echo_tcp(stream, &s));
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                } else {
                    match UdpSocket::bind(any) {
                        Ok(sock) => {
                            let _ = tx.send(Ok(()));
                            echo_udp(&sock, &s);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                }
            }));
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("host {host}: cannot listen on {svc}: {e}"),
                Err(e) => panic!("host {host}: listener {svc} died: {e}"),
            }
        }
        for proxy in proxies {
            let (tx, rx) = mpsc::channel();
            let s = stop.clone();
            let backends = Arc::new(proxy.backends.clone());
            let port = proxy.port;
            threads.push(ns.spawn(move || {
                let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
                match TcpListener::bind(any) {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        let next = Arc::new(AtomicUsize::new(0));
                        serve_tcp(&l, &s, move |stream, s| {
                            relay(stream, &backends, &next, &s);
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }));
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("host {host}: cannot listen for proxy tcp/{port}: {e}"),
                Err(e) => panic!("host {host}: proxy tcp/{port} died: {e}"),
            }
        }
        Self { stop, threads }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Accept connections until stopped, each handled on a thread of its own
/// (which inherits the namespace: setns moved this thread).
fn serve_tcp(
    listener: &TcpListener,
    stop: &Arc<AtomicBool>,
    handle: impl Fn(TcpStream, Arc<AtomicBool>) + Send + Sync + Clone + 'static,
) {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let mut conns: Vec<thread::JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let (s, h) = (stop.clone(), handle.clone());
                conns.push(thread::spawn(move || h(stream, s)));
                conns.retain(|c| !c.is_finished());
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

fn echo_tcp(stream: TcpStream, stop: &AtomicBool) {
    if let Ok(out) = stream.try_clone() {
        pump(stream, out, stop);
    }
}

fn echo_udp(sock: &UdpSocket, stop: &AtomicBool) {
    let _ = sock.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

/// A load balancer's frontend: the connection goes to the next backend in
/// turn; one that does not accept within `BACKEND_CONNECT` is skipped, as
/// a health-checking balancer would. No backend: the client's connection
/// is closed.
fn relay(client: TcpStream, backends: &[SocketAddr], next: &AtomicUsize, stop: &Arc<AtomicBool>) {
    let first = next.fetch_add(1, Ordering::Relaxed);
    let upstream = (0..backends.len())
        .map(|i| backends[(first + i) % backends.len()])
        .find_map(|b| TcpStream::connect_timeout(&b, BACKEND_CONNECT).ok());
    let Some(upstream) = upstream else {
        return;
    };
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let s = stop.clone();
    let back = thread::spawn(move || pump(u2, c2, &s));
    pump(client, upstream, stop);
    let _ = back.join();
}
