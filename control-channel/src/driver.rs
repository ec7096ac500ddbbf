//! The tokio driver: runs one [`Endpoint`] over a UDP socket that has joined the control group on
//! a chosen interface (socket2: membership, interface, TTL, loopback). The same socket carries
//! unicast for direct paths, allocation queries and state transfers. It owns the clocks: every call
//! into the endpoint gets [`now`], the monotonic time (`std::time::Instant`, which a step of the
//! system clock does not move) for timers and the wall-clock time for signed timestamps.

use crate::endpoint::{Destination, Endpoint, Event};
use crate::time::Clock;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
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
}

/// For callers that handle every driver error as an I/O error.
impl From<DriverError> for io::Error {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Socket(e) => e,
            DriverError::Task(e) => io::Error::other(format!("driver task: {e}")),
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
    task: tokio::task::JoinHandle<io::Result<Endpoint>>,
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
        Ok(self.task.await.map_err(DriverError::Task)??)
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
    group: SocketAddrV4,
) -> io::Result<DriverHandle> {
    let socket = UdpSocket::from_std(socket)?;
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(endpoint, socket, group, req_rx, ev_tx));
    Ok(DriverHandle {
        requests: req_tx,
        events: ev_rx,
        task,
    })
}

async fn flush(
    endpoint: &mut Endpoint,
    socket: &UdpSocket,
    group: SocketAddrV4,
    events: &mpsc::UnboundedSender<(Timestamp, Event)>,
    now: Clock,
) {
    while let Some(t) = endpoint.poll_transmit() {
        let to = match t.destination {
            Destination::Group => SocketAddr::V4(group),
            Destination::Unicast(a) => a,
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
    group: SocketAddrV4,
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
