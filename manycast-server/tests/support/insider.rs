//! A compromised but certified member in the namespace labs (issue 13, SPEC.md §9.7): with one
//! member's own key and certificate, signed control datagrams that say whatever it likes, sent
//! on the control group from that member's namespace while its real daemon keeps running. The
//! test `insider.rs` and the benchmark `benches/insider.rs` use it; included by `#[path]`, it
//! needs a root module `harness` (`tests/harness.rs`).
//!
//! Sequence numbers: receivers keep a 64-message window per sender (SPEC.md §9.2), and the
//! daemon and the forger sign as the same member. An observer on the control group follows the
//! daemon's sequence numbers, and each forged datagram takes one a few ahead of them, so the
//! daemon's own messages stay inside the window. Each forged datagram costs the daemon the one
//! message that later carries the same number (`replayed` at the receivers), so the forger must
//! send well below the daemon's rate (about 21 a second: heartbeats every 50 ms, hellos), or
//! the insider's heartbeats stop reaching anyone and it is declared down.

use crate::harness::{in_netns, Lab, CONTROL};
use control_channel::wire::{
    self, Commit, EpochId, Header, Heartbeat, Hello, Message, OperatorAuthority, Proposal, Request,
    RequestAction,
};
use igmp_ext::ed25519_dalek::SigningKey;
use igmp_ext::operator::{sign_request, OperatorCertificateBody};
use igmp_ext::{KeyId, MemberId, Timestamp};
use manycast_server::admin::protocol::Status;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The servers' default control port (`control.port`).
pub const CONTROL_PORT: u16 = 4790;
/// How far ahead of the daemon's last sequence number a forged datagram goes: past what the
/// daemon may have in flight, and short, because when the forger stops the daemon still loses
/// the numbers it reserved (a run of them longer than the down timeout would take the insider
/// down).
const AHEAD: u64 = 3;
/// Forged datagrams may run at most this far ahead of the daemon (then the forger waits).
const MAX_AHEAD: u64 = 40;

fn now_ms() -> u64 {
    daemon_kit::wall_clock().as_millis()
}

/// What the observer heard from the insider's member id.
#[derive(Debug, Default)]
struct Heard {
    /// The daemon's highest sequence number.
    daemon: Option<u64>,
    /// Sequence numbers the forger used, and whether the forged datagram was heard: the
    /// second datagram heard with one of them is the daemon's (it reaches them later).
    forged: BTreeMap<u64, bool>,
}

/// A socket bound to the control group's address and port (so that it shares the port with the
/// daemon there and never takes its unicast), joined on the interface with `local`.
fn group_socket(local: Ipv4Addr) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp");
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    s.bind(&SockAddr::from(SocketAddrV4::new(CONTROL, CONTROL_PORT)))
        .expect("bind the control group's port");
    s.join_multicast_v4(&CONTROL, &local).expect("join");
    s.set_multicast_if_v4(&local).expect("multicast interface");
    s.set_multicast_ttl_v4(1).expect("ttl");
    s.set_multicast_loop_v4(false).expect("no loop");
    s
}

/// One forged datagram: what it is, the epoch in its header, the message.
pub type Attack = (&'static str, u64, Message);

/// The compromised member `me`: its key and certificate, a sender in its namespace, an observer
/// in another member's.
pub struct Insider {
    pub me: MemberId,
    key: SigningKey,
    certificate: Vec<u8>,
    cluster: u32,
    sock: Socket,
    heard: Arc<Mutex<Heard>>,
    stop: Arc<AtomicBool>,
    observer: Option<JoinHandle<()>>,
    next_seq: u64,
    next_request: u64,
    /// Datagrams sent, by attack.
    pub sent: BTreeMap<&'static str, u64>,
}

impl Insider {
    /// Member `i` of `lab` turned: it sends from `ns` (its own namespace, address `local` on
    /// the control link); the observer listens in `observer_ns` (another member's, address
    /// `observer_local`).
    pub fn start(
        lab: &Lab,
        i: usize,
        ns: &str,
        local: Ipv4Addr,
        observer_ns: &str,
        observer_local: Ipv4Addr,
    ) -> Insider {
        let m = &lab.fixture.members[i];
        let me = m.id;
        let cert =
            manycast_server::keys::read_certificate(&lab.dir.path().join(format!("{me}.cert")))
                .expect("the insider's certificate");
        let sock = in_netns(ns, || group_socket(local));
        let listen: std::net::UdpSocket =
            in_netns(observer_ns, || group_socket(observer_local)).into();
        listen
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let heard = Arc::new(Mutex::new(Heard::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, flag) = (heard.clone(), stop.clone());
        let observer = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok(n) = listen.recv(&mut buf) else {
                    continue;
                };
                let Ok(p) = wire::ControlPacket::new_checked(&buf[..n]) else {
                    continue;
                };
                if p.sender() != me {
                    continue;
                }
                let mut heard = h.lock().expect("lock");
                let seq = p.sequence();
                if let Some(forged_heard) = heard.forged.get_mut(&seq) {
                    if !*forged_heard {
                        *forged_heard = true;
                        continue;
                    }
                }
                if heard.daemon.is_none_or(|d| seq > d) {
                    heard.daemon = Some(seq);
                }
            }
        });
        Insider {
            me,
            key: m.key.clone(),
            certificate: cert.as_bytes().to_vec(),
            cluster: u32::from(CONTROL),
            sock,
            heard,
            stop,
            observer: Some(observer),
            next_seq: 0,
            next_request: now_ms() << 20,
            sent: BTreeMap::new(),
        }
    }

    /// Whether the observer has heard the daemon yet.
    pub fn heard_daemon(&self) -> bool {
        self.heard.lock().expect("lock").daemon.is_some()
    }

    /// A sequence number a little ahead of the daemon's; `None` until the daemon was heard or
    /// while the forger is already far ahead.
    fn sequence(&mut self) -> Option<u64> {
        let mut heard = self.heard.lock().expect("lock");
        let d = heard.daemon?;
        if self.next_seq > d + MAX_AHEAD {
            return None;
        }
        let seq = self.next_seq.max(d + AHEAD);
        self.next_seq = seq + 1;
        heard.forged.insert(seq, false);
        Some(seq)
    }

    /// Signs `m` as the member, with `header_epoch` in the header, and multicasts it; waits
    /// (up to a second) for a sequence number. Whether it was sent.
    pub fn send(&mut self, name: &'static str, header_epoch: u64, m: &Message) -> bool {
        let mut seq = self.sequence();
        for _ in 0..100 {
            if seq.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            seq = self.sequence();
        }
        let Some(sequence) = seq else {
            return false;
        };
        let header = Header {
            cluster: self.cluster,
            sender: self.me,
            epoch: header_epoch,
            sequence,
            timestamp: Timestamp(now_ms()),
        };
        let bytes = m
            .encode_signed(&header, &self.key)
            .expect("fits a datagram");
        let to = SockAddr::from(SocketAddrV4::new(CONTROL, CONTROL_PORT));
        let sent = self.sock.send_to(&bytes, &to).is_ok();
        if sent {
            *self.sent.entry(name).or_default() += 1;
        }
        sent
    }

    fn request(&mut self, action: RequestAction, authority: Option<OperatorAuthority>) -> Message {
        self.next_request += 1;
        Message::Request(Request {
            request_id: self.next_request,
            action,
            authority,
        })
    }

    /// An operator authority the member made itself: an operator certificate "issued" by its
    /// own member key, and its signature over `action`.
    fn self_made_authority(&self, action: &RequestAction) -> OperatorAuthority {
        let now = daemon_kit::wall_clock();
        let cert = OperatorCertificateBody {
            operator_key: self.key.verifying_key(),
            issuer: KeyId::of(&self.key.verifying_key()),
            not_before: Timestamp(now.0.saturating_sub(3_600_000)),
            not_after: now.saturating_add(Duration::from_secs(3_600)),
            cluster: CONTROL,
        }
        .issue(&self.key)
        .expect("self-issued");
        OperatorAuthority {
            certificate: cert.as_bytes().to_vec(),
            issued_at: now.as_millis(),
            signature: sign_request(&self.key, CONTROL, now, &action.signed_bytes()).to_vec(),
        }
    }

    /// Every attack once, made against `status` (an honest member's view: its committed epoch,
    /// its live members and weights, the owner of each unit) with `max_weight` the cluster's
    /// `control.max_weight`: forged proposals (zero quotas and all units to the insider at
    /// epoch `u64::MAX`, one in the coordinator's name, one 2^40 epochs ahead), a commit and a
    /// heartbeat advertising epoch `u64::MAX`, an oversized weight in a hello and in a
    /// heartbeat, faked hearing, and drains, a resume, a move and a rebalance of the others
    /// without an operator certificate or with one the member made itself.
    pub fn attacks(&mut self, status: &Status, max_weight: u32) -> Vec<Attack> {
        let me = self.me.0;
        let committed = status
            .epoch
            .as_ref()
            .map(|e| EpochId {
                epoch: e.epoch,
                proposer: e.proposer,
                incarnation: e.incarnation,
            })
            .unwrap_or_default();
        let digest = status
            .epoch
            .as_ref()
            .and_then(|e| u64::from_str_radix(&e.digest, 16).ok())
            .unwrap_or(0);
        let mut view: Vec<(u32, u32)> = status
            .members
            .iter()
            .filter(|m| m.live)
            .map(|m| (m.id, m.weight.unwrap_or(1)))
            .collect();
        view.sort_unstable();
        let lowest = view.first().map_or(1, |m| m.0);
        let other = view.iter().map(|m| m.0).find(|&m| m != me && m != lowest);
        let index = |id: u32| {
            view.iter()
                .position(|m| m.0 == id)
                .map_or(0xff, |i| i as u8)
        };
        let units = status.unit_owner.len();
        let last = |proposer| EpochId {
            epoch: u64::MAX,
            proposer,
            incarnation: u64::MAX,
        };
        let signed = |key: &SigningKey, cluster: u32, mut p: Proposal| {
            p.sign(cluster, key);
            Message::Proposal(p)
        };
        let (key, cluster) = (self.key.clone(), self.cluster);
        let huge = committed.epoch.saturating_add(1 << 40);
        // The current allocation as owner indices: every quota right, only the proposer and
        // the epoch wrong.
        let current: Vec<u8> = status
            .unit_owner
            .iter()
            .map(|o| o.map_or(0xff, index))
            .collect();
        let heard: Vec<(u32, u16)> = view
            .iter()
            .filter(|m| m.0 != me)
            .map(|m| (m.0, 0))
            .collect();
        let lowest_units: Vec<u16> = status
            .unit_owner
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == Some(lowest))
            .map(|(u, _)| u as u16)
            .collect();
        let mut out: Vec<Attack> = vec![
            (
                "proposal: zero quotas, epoch u64::MAX",
                u64::MAX,
                signed(
                    &key,
                    cluster,
                    Proposal {
                        id: last(lowest),
                        members: view.iter().map(|m| (m.0, 0)).collect(),
                        owners: vec![0xff; units],
                        base: committed,
                        signature: Vec::new(),
                        scope: None,
                    },
                ),
            ),
            (
                "proposal: every unit to the insider, epoch u64::MAX",
                u64::MAX,
                signed(
                    &key,
                    cluster,
                    Proposal {
                        id: last(me),
                        members: vec![(me, max_weight)],
                        owners: vec![0; units],
                        base: committed,
                        signature: Vec::new(),
                        scope: None,
                    },
                ),
            ),
            (
                "proposal: in the coordinator's name, next epoch",
                committed.epoch + 1,
                signed(
                    &key,
                    cluster,
                    Proposal {
                        id: EpochId {
                            epoch: committed.epoch + 1,
                            proposer: lowest,
                            incarnation: committed.incarnation,
                        },
                        members: view.clone(),
                        owners: vec![index(me); units],
                        base: committed,
                        signature: Vec::new(),
                        scope: None,
                    },
                ),
            ),
            (
                "proposal: epoch + 2^40 by the insider",
                huge,
                signed(
                    &key,
                    cluster,
                    Proposal {
                        id: EpochId {
                            epoch: huge,
                            proposer: me,
                            incarnation: now_ms(),
                        },
                        members: view.clone(),
                        owners: current,
                        base: committed,
                        signature: Vec::new(),
                        scope: None,
                    },
                ),
            ),
            (
                "commit: epoch u64::MAX",
                u64::MAX,
                Message::Commit(Commit {
                    id: last(lowest),
                    digest: [0xa5; 32],
                }),
            ),
            (
                "heartbeat: weight u32::MAX, committed u64::MAX, faked hearing",
                u64::MAX,
                Message::Heartbeat(Heartbeat {
                    weight: u32::MAX,
                    heard: heard.clone(),
                    committed: last(lowest),
                    digest: 0,
                    load: Vec::new(),
                }),
            ),
            (
                "heartbeat: weight max_weight + 1, header epoch + 2^40",
                huge,
                Message::Heartbeat(Heartbeat {
                    weight: max_weight + 1,
                    heard,
                    committed,
                    digest,
                    load: Vec::new(),
                }),
            ),
            (
                "hello: weight u32::MAX",
                u64::MAX,
                Message::Hello(Hello {
                    certificate: self.certificate.clone(),
                    weight: u32::MAX,
                    reply_wanted: true,
                }),
            ),
        ];
        let mut actions = vec![
            (
                "request: drain the coordinator",
                RequestAction::Drain { member: lowest },
            ),
            ("request: rebalance", RequestAction::Rebalance),
            (
                "request: move the coordinator's units to the insider",
                RequestAction::Move {
                    units: lowest_units,
                    to: me,
                },
            ),
        ];
        if let Some(o) = other {
            actions.push((
                "request: drain another member",
                RequestAction::Drain { member: o },
            ));
            actions.push((
                "request: resume another member",
                RequestAction::Resume { member: o },
            ));
        }
        for (name, action) in actions {
            let m = self.request(action, None);
            out.push((name, committed.epoch, m));
        }
        let drain = RequestAction::Drain { member: lowest };
        let authority = self.self_made_authority(&drain);
        let m = self.request(drain, Some(authority));
        out.push((
            "request: drain the coordinator, self-made operator certificate",
            committed.epoch,
            m,
        ));
        out
    }
}

impl Drop for Insider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.observer.take() {
            let _ = t.join();
        }
    }
}
