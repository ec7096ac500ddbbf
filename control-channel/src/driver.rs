//! The tokio driver: runs one [`Endpoint`] over a UDP socket that has joined the control group on
//! a chosen interface (socket2: membership, interface, TTL, loopback). The same socket carries
//! unicast for direct paths, allocation queries and state transfers. It owns the clocks: every call
//! into the endpoint gets [`now`], the monotonic time (`std::time::Instant`, which a step of the
//! system clock does not move) for timers and the wall-clock time for signed timestamps.

use crate::endpoint::{Destination, Endpoint, Event};
use crate::time::Clock;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use igmp_ext::Timestamp;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Where and how to join the control group.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub group: Ipv4Addr,
    pub port: u16,
    /// Address of the interface to join and send on.
    pub interface: Ipv4Addr,
    /// Multicast TTL: 1 keeps the group on the link; more crosses multicast routers.
    pub ttl: u32,
    /// Whether our own multicasts come back to us (the endpoint drops them as `own-message`).
    pub multicast_loop: bool,
}

impl SocketConfig {
    pub fn new(group: Ipv4Addr, port: u16, interface: Ipv4Addr) -> Self {
        SocketConfig {
            group,
            port,
            interface,
            ttl: 1,
            multicast_loop: false,
        }
    }
}

/// A non-blocking UDP socket bound to the group port and joined to the group on the interface.
pub fn bind(cfg: &SocketConfig) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    // Bound to the wildcard address: multicast to the group and unicast to us both arrive.
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.port)).into())?;
    s.join_multicast_v4(&cfg.group, &cfg.interface)?;
    s.set_multicast_if_v4(&cfg.interface)?;
    s.set_multicast_ttl_v4(cfg.ttl)?;
    s.set_multicast_loop_v4(cfg.multicast_loop)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Where and how to join an IPv6 control group.
#[derive(Debug, Clone)]
pub struct SocketConfig6 {
    pub group: Ipv6Addr,
    pub port: u16,
    /// Index of the interface to join and send on (a link-local group's link).
    pub interface: u32,
    /// Multicast hop limit: 1 keeps the group on the link.
    pub hop_limit: u32,
    /// Whether our own multicasts come back to us.
    pub multicast_loop: bool,
}

impl SocketConfig6 {
    pub fn new(group: Ipv6Addr, port: u16, interface: u32) -> Self {
        SocketConfig6 {
            group,
            port,
            interface,
            hop_limit: 1,
            multicast_loop: false,
        }
    }
}

/// A non-blocking IPv6 UDP socket bound to the group port and joined to the group on the
/// interface (`IPV6_ADD_MEMBERSHIP`). Dual-stack (not `IPV6_V6ONLY`): an IPv4 direct path a
/// member announces still reaches it.
pub fn bind6(cfg: &SocketConfig6) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_only_v6(false)?;
    let any = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, cfg.port, 0, 0);
    s.bind(&SocketAddr::V6(any).into())?;
    s.join_multicast_v6(&cfg.group, cfg.interface)?;
    s.set_multicast_if_v6(cfg.interface)?;
    s.set_multicast_hops_v6(cfg.hop_limit)?;
    s.set_multicast_loop_v6(cfg.multicast_loop)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Where a datagram to `to` goes from `socket`: an IPv4 address from an IPv6 (dual-stack)
/// socket as its IPv4-mapped form, which every kernel takes on such a socket.
fn reachable(to: SocketAddr, ipv6_socket: bool) -> SocketAddr {
    match to {
        SocketAddr::V4(a) if ipv6_socket => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        other => other,
    }
}

/// Why a driver stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The OS refused a socket operation.
    #[error(transparent)]
    Socket(#[from] io::Error),
    /// The driver task panicked or was cancelled: a bug.
    #[error("driver task: {0}")]
    Task(tokio::task::JoinError),
    /// The driver's thread ended without handing the endpoint back (it panicked): a bug.
    #[error("driver thread ended without its endpoint")]
    Thread,
}

/// For callers that handle every driver error as an I/O error.
impl From<DriverError> for io::Error {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Socket(e) => e,
            DriverError::Task(e) => io::Error::other(format!("driver task: {e}")),
            DriverError::Thread => io::Error::other(DriverError::Thread.to_string()),
        }
    }
}

/// Now, on both clocks: the monotonic time since the process's first reading, and the wall
/// clock ([`daemon_kit::now`], whose origin the daemon's own cores share). Create the endpoint
/// with this, so that its start and the driver's readings agree.
pub fn now() -> Clock {
    daemon_kit::now()
}

/// A request run against the endpoint inside the driver task, with the current time.
pub type Request = Box<dyn FnOnce(&mut Endpoint, Clock) + Send>;

/// Talks to a running driver.
#[derive(Debug)]
pub struct DriverHandle {
    requests: mpsc::UnboundedSender<Request>,
    pub events: mpsc::UnboundedReceiver<(Timestamp, Event)>,
    task: Task,
}

/// Where the driver runs.
#[derive(Debug)]
enum Task {
    /// A task on the caller's runtime.
    Spawned(tokio::task::JoinHandle<io::Result<Endpoint>>),
    /// A thread of its own, which hands the endpoint back when it ends.
    Thread(tokio::sync::oneshot::Receiver<io::Result<Endpoint>>),
}

impl DriverHandle {
    /// Runs `f` on the endpoint (for example `|ep, now| ep.leave(now)`).
    pub fn with(&self, f: impl FnOnce(&mut Endpoint, Clock) + Send + 'static) -> bool {
        self.requests.send(Box::new(f)).is_ok()
    }

    /// A cloneable way to run requests on the endpoint from other tasks (an admin socket).
    pub fn requester(&self) -> Requester {
        Requester {
            requests: self.requests.clone(),
        }
    }

    /// Stops the driver and returns the endpoint (for its counters and state).
    pub async fn stop(self) -> Result<Endpoint, DriverError> {
        drop(self.requests);
        match self.task {
            Task::Spawned(task) => Ok(task.await.map_err(DriverError::Task)??),
            Task::Thread(done) => Ok(done.await.map_err(|_| DriverError::Thread)??),
        }
    }
}

/// Runs requests on a driver's endpoint; the driver stops only when the [`DriverHandle`] and
/// every requester are gone.
#[derive(Debug, Clone)]
pub struct Requester {
    requests: mpsc::UnboundedSender<Request>,
}

impl Requester {
    /// Runs `f` on the endpoint; false if the driver has stopped.
    pub fn with(&self, f: impl FnOnce(&mut Endpoint, Clock) + Send + 'static) -> bool {
        self.requests.send(Box::new(f)).is_ok()
    }

    /// Runs `f` on the endpoint and returns its result; `None` if the driver has stopped.
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Endpoint, Clock) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.with(move |ep, now| {
            let _ = tx.send(f(ep, now));
        });
        rx.await.ok()
    }
}

/// Spawns the driver on the current tokio runtime.
pub fn spawn(
    endpoint: Endpoint,
    socket: std::net::UdpSocket,
    group: impl Into<SocketAddr>,
) -> io::Result<DriverHandle> {
    let group = group.into();
    let socket = UdpSocket::from_std(socket)?;
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(endpoint, socket, group, req_rx, ev_tx));
    Ok(DriverHandle {
        requests: req_tx,
        events: ev_rx,
        task: Task::Spawned(task),
    })
}

/// Runs the driver on a thread of its own (with its own single-threaded runtime), so that a
/// caller whose loop blocks (a daemon running `ip` or `nft`, writing a state transfer) does not
/// hold back its heartbeats: on the caller's single-threaded runtime such a stall of a few
/// hundred milliseconds made the peers find the member down.
pub fn spawn_thread(
    endpoint: Endpoint,
    socket: std::net::UdpSocket,
    group: impl Into<SocketAddr>,
) -> io::Result<DriverHandle> {
    let group = group.into();
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let result = runtime.block_on(async move {
                let socket = UdpSocket::from_std(socket)?;
                run(endpoint, socket, group, req_rx, ev_tx).await
            });
            let _ = done_tx.send(result);
        })?;
    Ok(DriverHandle {
        requests: req_tx,
        events: ev_rx,
        task: Task::Thread(done_rx),
    })
}

async fn flush(
    endpoint: &mut Endpoint,
    socket: &UdpSocket,
    group: SocketAddr,
    events: &mpsc::UnboundedSender<(Timestamp, Event)>,
    now: Clock,
) {
    let ipv6 = group.is_ipv6();
    while let Some(t) = endpoint.poll_transmit() {
        let to = match t.destination {
            Destination::Group => group,
            Destination::Unicast(a) => reachable(a, ipv6),
            #[allow(unreachable_patterns)]
            _ => continue,
        };
        // A send error (no route, buffer full) is a lost datagram; the protocol copes with loss.
        let _ = socket.send_to(&t.payload, to).await;
    }
    while let Some(e) = endpoint.poll_event() {
        let _ = events.send((now.wall, e));
    }
}

/// Most datagrams read in one go before a timer runs: bounds the time the timers wait when a
/// flood keeps the socket busy.
const MAX_QUEUED_BEFORE_TIMERS: usize = 1024;

/// Hands the endpoint every datagram already queued on the socket, without waiting.
fn drain_queued(endpoint: &mut Endpoint, socket: &UdpSocket, buf: &mut [u8], now: Clock) {
    for _ in 0..MAX_QUEUED_BEFORE_TIMERS {
        match socket.try_recv_from(buf) {
            Ok((n, from)) => {
                let _ = endpoint.handle_datagram(now, from, &buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // ICMP reports about earlier unicast sends: nothing to do, keep reading.
            Err(_) => {}
        }
    }
}

/// Runs until the request channel closes; returns the endpoint.
pub async fn run(
    mut endpoint: Endpoint,
    socket: UdpSocket,
    group: SocketAddr,
    mut requests: mpsc::UnboundedReceiver<Request>,
    events: mpsc::UnboundedSender<(Timestamp, Event)>,
) -> io::Result<Endpoint> {
    let mut buf = vec![0u8; 65_536];
    let now = self::now();
    endpoint.handle_timeout(now);
    flush(&mut endpoint, &socket, group, &events, now).await;
    loop {
        let now = self::now();
        // On the monotonic clock: a step of the wall clock neither delays nor hurries a timer.
        let wait = endpoint.poll_timeout().map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(now.mono)
        });
        // Biased toward the socket: after a stall (an overloaded host) the datagrams queued
        // meanwhile are evidence that peers are alive and must be read before the timers run,
        // or a stalled member declares every peer down.
        tokio::select! {
            biased;
            r = socket.recv_from(&mut buf) => {
                let now = self::now();
                // Errors here are ICMP reports about earlier unicast sends; nothing to do.
                if let Ok((n, from)) = r {
                    let _ = endpoint.handle_datagram(now, from, &buf[..n]);
                }
                flush(&mut endpoint, &socket, group, &events, now).await;
            }
            _ = tokio::time::sleep(wait) => {
                let now = self::now();
                drain_queued(&mut endpoint, &socket, &mut buf, now);
                endpoint.handle_timeout(now);
                flush(&mut endpoint, &socket, group, &events, now).await;
            }
            req = requests.recv() => {
                let now = self::now();
                match req {
                    Some(f) => f(&mut endpoint, now),
                    None => return Ok(endpoint),
                }
                flush(&mut endpoint, &socket, group, &events, now).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{Config, Identity};
    use igmp_ext::fixtures::Fixture;

    /// A driver on its own thread goes on sending heartbeats while the thread that started it
    /// blocks (here: a blocking read on the caller's single-threaded runtime, as a daemon's
    /// loop blocks running `ip` or `nft`). Spawned on the caller's runtime it sent nothing
    /// meanwhile, and peers found the member down (a VIP forward test saw it under load).
    #[test]
    fn a_driver_on_its_own_thread_heartbeats_while_its_caller_blocks() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let f = Fixture::new(1);
            let m = &f.members[0];
            let identity = Identity {
                key: m.key.clone(),
                certificate: m.cert.clone(),
            };
            let mut config = Config::new(Ipv4Addr::new(239, 77, 0, 1));
            config.heartbeat_interval = Duration::from_millis(20);
            let endpoint = Endpoint::new(config, identity, f.group_key.verifying_key(), now());
            // The "group" is a unicast socket of the test's: it counts what the driver sends.
            let heard = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            heard
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let SocketAddr::V4(group) = heard.local_addr().expect("addr") else {
                unreachable!("bound to IPv4")
            };
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            socket.set_nonblocking(true).expect("nonblocking");
            let handle = spawn_thread(endpoint, socket, group).expect("driver");
            let mut buf = [0u8; 2048];
            for k in 0..5 {
                heard
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("message {k} while the caller blocks: {e}"));
            }
            handle.stop().await.expect("the endpoint back");
        });
    }

    /// From the dual-stack socket of an IPv6 group an IPv4 direct path goes to its
    /// IPv4-mapped form; IPv6 destinations keep their zone; an IPv4 socket sends as given.
    #[test]
    fn an_ipv6_socket_reaches_ipv4_paths_by_their_mapped_form() {
        let v4: SocketAddr = "10.0.1.2:4790".parse().expect("address");
        let mapped: SocketAddr = "[::ffff:10.0.1.2]:4790".parse().expect("address");
        assert_eq!(reachable(v4, true), mapped);
        assert_eq!(reachable(v4, false), v4);
        let ll = SocketAddr::V6(SocketAddrV6::new(
            "fe80::2".parse().expect("address"),
            4790,
            0,
            7,
        ));
        assert_eq!(reachable(ll, true), ll);
    }

    #[tokio::test]
    async fn a_crashed_driver_task_is_a_task_error_and_keeps_its_message_as_io() {
        let join = tokio::spawn(async { panic!("boom") }).await.unwrap_err();
        let e = DriverError::Task(join);
        assert!(e.to_string().starts_with("driver task: "), "{e}");
        let as_io = io::Error::from(e);
        assert!(as_io.to_string().starts_with("driver task: "), "{as_io}");
        let refused = DriverError::from(io::Error::from(io::ErrorKind::AddrInUse));
        assert_eq!(io::Error::from(refused).kind(), io::ErrorKind::AddrInUse);
    }
}
