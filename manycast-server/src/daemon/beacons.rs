//! The thread that sends liveness beacons (SPEC.md §5.5). It runs beside the main loop, not in
//! it: a loop busy with a kernel update or a state transfer must not make the router find the
//! member dead. What to send is the shared [`Beaconer`]'s decision. The next hash chain is drawn
//! on a thread of its own at ordinary priority: drawing it on this one held the beacons back for
//! as long as it took (tens of milliseconds in a debug build), long enough for the router to
//! find the member dead.

use crate::beaconer::{lock, Beaconer, ChainOrder, NextChain, SharedBeaconer};
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

/// How a chain is drawn for an order (tests slow it down).
type Draw = Arc<dyn Fn(ChainOrder) -> NextChain + Send + Sync>;

/// Sends each beacon `beaconer` makes due to `to` from `socket`, until `stop` is set.
pub fn spawn(
    beaconer: SharedBeaconer,
    socket: UdpSocket,
    to: SocketAddrV4,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    spawn_drawing(beaconer, socket, to, stop, Arc::new(ChainOrder::draw))
}

fn spawn_drawing(
    beaconer: SharedBeaconer,
    socket: UdpSocket,
    to: SocketAddrV4,
    stop: Arc<AtomicBool>,
    draw: Draw,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("beacons".into())
        .spawn(move || {
            realtime();
            let mut random = super::sockets::random_u64;
            let mut late = LateBeacons::default();
            while !stop.load(Ordering::Relaxed) {
                let now = daemon_kit::now().mono;
                let asked = std::time::Instant::now();
                let (beacon, order, due, interval, was_due) = {
                    let mut b = lock(&beaconer);
                    let locked = asked.elapsed();
                    let was_due = b.poll_timeout();
                    let (beacon, order) = b.poll_beacon(now, &mut random);
                    (
                        beacon,
                        order,
                        b.poll_timeout(),
                        b.interval(),
                        was_due.map(|d| (d, locked)),
                    )
                };
                if let Some(beacon) = beacon {
                    // A lost beacon is one interval of silence; the next one makes up for it.
                    let sending = std::time::Instant::now();
                    let _ = socket.send_to(&beacon.encode(), to);
                    if let Some((was_due, locked)) = was_due {
                        let behind = now.saturating_duration_since(was_due);
                        late.note(behind, locked, sending.elapsed(), interval);
                    }
                }
                if let Some(order) = order {
                    draw_next(&beaconer, order, &draw);
                }
                let wait = due.map_or(IDLE, |t| {
                    t.saturating_duration_since(daemon_kit::now().mono)
                        .min(IDLE)
                });
                std::thread::sleep(wait);
            }
        })
}

/// Beacons that went out two intervals or more after they were due: the router finds a
/// member dead after a few (SPEC.md §5.5), so this host held the beacon thread up for about as
/// long as the router allows. Logged at most once a second, with where the time went.
#[derive(Default)]
struct LateBeacons {
    last_logged: Option<std::time::Instant>,
    since_logged: u64,
}

impl LateBeacons {
    fn note(&mut self, behind: Duration, locked: Duration, sending: Duration, interval: Duration) {
        if behind < interval * 2 && sending < interval * 2 {
            return;
        }
        self.since_logged += 1;
        if self
            .last_logged
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        tracing::warn!(
            behind_ms = behind.as_millis() as u64,
            lock_wait_ms = locked.as_millis() as u64,
            send_ms = sending.as_millis() as u64,
            late_beacons = self.since_logged,
            "liveness beacon late: this host held the beacon thread up; the router may find this member dead"
        );
        self.last_logged = Some(std::time::Instant::now());
        self.since_logged = 0;
    }
}

/// Draws the ordered chain on a thread of its own and hands it to `beaconer`. Without a thread
/// it is drawn here: some beacons late rather than none once the running chain ends.
fn draw_next(beaconer: &SharedBeaconer, order: ChainOrder, draw: &Draw) {
    let (to, with) = (beaconer.clone(), draw.clone());
    let spawned = std::thread::Builder::new()
        .name("beacon-chain".into())
        .spawn(move || {
            ordinary();
            let next = with(order);
            lock(&to).add_next(next);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "liveness beacons: no thread to draw the next chain on; drawn between beacons");
        let next = draw(order);
        lock(beaconer).add_next(next);
    }
}

/// Back to the ordinary class for the calling thread (threads inherit the real-time class of
/// the one that made them): drawing a chain is CPU work (milliseconds), not a beacon.
#[allow(unsafe_code)]
fn ordinary() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as in `realtime`: pid 0 is the calling thread, `param` outlives the call.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::liveness::Beacon;
    use std::sync::mpsc;

    /// While the next chain is being drawn (here: held until the test lets it finish), the
    /// beacons go on. Drawn on the beacon thread, it silenced the member for as long as the
    /// draw took; the router found it dead.
    #[test]
    fn beacons_go_on_while_the_next_chain_is_drawn() {
        let iv = Duration::from_millis(5);
        let now = daemon_kit::now().mono;
        let mut random = super::super::sockets::random_u64;
        let life = Duration::from_secs(2);
        let mut b = Beaconer::new(
            Ipv4Addr::new(232, 1, 1, 1),
            MemberId(1),
            iv,
            life,
            now,
            &mut random,
        );
        b.start(now);
        let beaconer = Arc::new(Mutex::new(b));
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let std::net::SocketAddr::V4(to) = rx.local_addr().expect("addr") else {
            unreachable!("bound to IPv4")
        };
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
        let draw: Draw = Arc::new(move |order: ChainOrder| {
            let _ = started_tx.lock().expect("lock").send(());
            let _ = release_rx.lock().expect("lock").recv();
            order.draw()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let thread = spawn_drawing(beaconer.clone(), tx, to, stop.clone(), draw).expect("spawn");
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the next chain is ordered halfway through the first");
        // Beacons from after the order (the first chain's second half), the draw still held.
        let half = (life.as_millis() / iv.as_millis() / 2) as u32;
        let mut after = 0;
        let mut buf = [0u8; 128];
        while after < 5 {
            let n = rx
                .recv(&mut buf)
                .expect("a beacon while the chain is drawn");
            let beacon = Beacon::decode(&buf[..n]).expect("a beacon");
            after += u32::from(beacon.index > half);
        }
        release.send(()).expect("release");
        // The drawn chain arrives: joins name it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&beaconer).anchors(daemon_kit::now().mono).len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the drawn chain never arrived"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        thread.join().expect("beacon thread");
    }
}
