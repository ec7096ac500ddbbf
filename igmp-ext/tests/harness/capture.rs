//! Receiving IGMP as a router does: a raw IPPROTO_IGMP socket in a namespace, datagrams read with
//! a timeout so that a test can never hang on a report that does not come.

use super::netns::Netns;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{ErrorKind, Read};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct IgmpReceiver {
    sock: Socket,
}

impl IgmpReceiver {
    /// Opens the socket inside `ns`. The kernel hands IGMP for a multicast destination to raw
    /// sockets only when the host is a member of that group (ip_check_mc_rcu), so the receiver
    /// joins 224.0.0.22 on the interface that has `local_addr`.
    pub fn open(ns: &Netns, local_addr: Ipv4Addr) -> Self {
        let sock = ns.run(|| {
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(2)))
                .expect("raw IGMP socket");
            s.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 22), &local_addr)
                .expect("join 224.0.0.22 on the receiver");
            s
        });
        IgmpReceiver { sock }
    }

    /// The next datagram (IPv4 header included) or `None` once `deadline` has passed.
    pub fn recv_until(&self, deadline: Instant) -> Option<Vec<u8>> {
        recv_until(&self.sock, deadline, "raw IGMP")
    }

    /// Collects datagrams whose IPv4 source is `from` until `done` holds for what was collected and
    /// then no further datagram has come for `quiet` (so that retransmissions are included), or
    /// panics after `timeout`.
    pub fn collect_from(
        &self,
        from: Ipv4Addr,
        timeout: Duration,
        quiet: Duration,
        done: impl Fn(&[Vec<u8>]) -> bool,
    ) -> Vec<Vec<u8>> {
        collect(
            |until| self.recv_until(until),
            |d| d.len() >= 20 && d[12..16] == from.octets(),
            &format!("reports from {from}"),
            (timeout, quiet),
            done,
        )
    }
}

/// The next packet on `sock` (a capture of `what`) or `None` once `deadline` has passed.
pub fn recv_until(sock: &Socket, deadline: Instant, what: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        // A zero timeout would mean "block forever".
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("SO_RCVTIMEO");
        match (&*sock).read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("{what} receive: {e}"),
        }
    }
}

/// Collects what `recv` returns and `keep` accepts until `done` holds for what was collected
/// and then nothing more has come for `quiet` (so that retransmissions are included), or
/// panics after `timeout` naming `what` (the limits are (timeout, quiet)).
pub fn collect(
    recv: impl Fn(Instant) -> Option<Vec<u8>>,
    keep: impl Fn(&[u8]) -> bool,
    what: &str,
    (timeout, quiet): (Duration, Duration),
    done: impl Fn(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got: Vec<Vec<u8>> = Vec::new();
    loop {
        let satisfied = done(&got);
        let wait_until = if satisfied {
            (Instant::now() + quiet).min(deadline)
        } else {
            deadline
        };
        match recv(wait_until) {
            Some(p) if keep(&p) => got.push(p),
            Some(_) => {}
            None if satisfied => return got,
            None => panic!(
                "no complete set of {what} within {timeout:?}; got {}: {:#?}",
                got.len(),
                got.iter().map(hex::encode).collect::<Vec<_>>()
            ),
        }
    }
}
