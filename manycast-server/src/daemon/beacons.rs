//! The thread that sends liveness beacons (SPEC.md §5.5). It runs beside the main loop, not in
//! it: a loop busy with a kernel update or a state transfer must not make the router find the
//! member dead. What to send is the shared [`Beaconer`]'s decision.

use crate::beaconer::{lock, Beaconer, SharedBeaconer};
use crate::config::Config;
use igmp_ext::MemberId;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread sleeps while no beacon is due (no claim), between checks for one.
const IDLE: Duration = Duration::from_millis(50);

/// Opens the beacon socket on `addr` and starts the thread, unless `beacon_interval_ms` is 0.
/// Returns the beacons' state for the join agent and the socket the router's standby notices
/// arrive on.
pub fn start(
    config: &Config,
    addr: Ipv4Addr,
    me: MemberId,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Option<(SharedBeaconer, tokio::net::UdpSocket)>> {
    if config.igmp.beacon_interval_ms == 0 {
        return Ok(None);
    }
    let port = config.igmp.beacon_port;
    // An ephemeral port of our own: the router sends its standby notices back to where our
    // beacons come from, so two daemons on one host (two groups) each get theirs.
    let socket = super::sockets::beacon_socket(&config.interface, addr, 0)?;
    let (interval, life) = config.beacon_chain();
    let now = daemon_kit::now().mono;
    let mut random = super::sockets::random_u64;
    let beaconer = Beaconer::new(config.group, me, interval, life, now, &mut random);
    let beaconer = Arc::new(Mutex::new(beaconer));
    let to = SocketAddrV4::new(super::sockets::ALL_ROUTERS, port);
    spawn(beaconer.clone(), socket.try_clone()?, to, stop)?;
    tracing::debug!(
        interval_ms = config.igmp.beacon_interval_ms,
        "liveness beacons on"
    );
    Ok(Some((beaconer, tokio::net::UdpSocket::from_std(socket)?)))
}

/// Sends each beacon `beaconer` makes due to `to` from `socket`, until `stop` is set.
pub fn spawn(
    beaconer: SharedBeaconer,
    socket: UdpSocket,
    to: SocketAddrV4,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("beacons".into())
        .spawn(move || {
            realtime();
            let mut random = super::sockets::random_u64;
            while !stop.load(Ordering::Relaxed) {
                let now = daemon_kit::now().mono;
                let (beacon, due) = {
                    let mut b = lock(&beaconer);
                    let (beacon, _) = b.poll_beacon(now, &mut random);
                    (beacon, b.poll_timeout())
                };
                if let Some(beacon) = beacon {
                    // A lost beacon is one interval of silence; the next one makes up for it.
                    let _ = socket.send_to(&beacon.encode(), to);
                }
                let wait = due.map_or(IDLE, |t| {
                    t.saturating_duration_since(daemon_kit::now().mono)
                        .min(IDLE)
                });
                std::thread::sleep(wait);
            }
        })
}

/// Puts the calling thread in the lowest real-time class (SCHED_FIFO, priority 1) when the
/// process may (root or CAP_SYS_NICE), as routing daemons do for their hellos (keepalived's
/// `vrrp_rt_priority`, bfdd): a machine busy with ordinary work (a build on every core) then
/// cannot hold a beacon back for the intervals after which the router finds the member dead
/// (SPEC.md §5.5). The thread sleeps between beacons, so it takes next to no CPU from others;
/// the kernel's real-time throttling bounds it anyway. Refused: it stays an ordinary thread.
#[allow(unsafe_code)]
fn realtime() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: pid 0 names the calling thread; `param` is a valid sched_param that outlives the
    // call, which only reads it.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "liveness beacons: no real-time priority");
    }
}
