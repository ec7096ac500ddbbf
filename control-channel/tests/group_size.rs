//! A flat control group past what one datagram can describe: the member says so (an
//! `Unsendable` event, a counter) instead of going silent. The figures behind it are in
//! NOTES.md "Scale": a heartbeat lists every peer heard within the down timeout, and at a few
//! hundred members that list no longer fits a datagram.

use control_channel::wire::{Header, Hello, Message, MessageType};
use control_channel::{Clock, Config, Endpoint, Event, Identity, Instant};
use igmp_ext::fixtures::{Fixture, NOW};
use std::net::SocketAddr;

fn clock(mono_ms: u64) -> Clock {
    Clock::new(Instant(mono_ms), NOW)
}

/// Member 1 of `f`, having heard a hello from every other member at time 0.
fn member_hearing_everyone(f: &Fixture) -> Endpoint {
    let me = &f.members[0];
    let mut e = Endpoint::new(
        Config::new(f.group),
        Identity {
            key: me.key.clone(),
            certificate: me.cert.clone(),
        },
        f.group_key.verifying_key(),
        clock(0),
    );
    let from: SocketAddr = "10.0.0.2:4790".parse().expect("address");
    for m in &f.members[1..] {
        let hello = Message::Hello(Hello {
            certificate: m.cert.as_bytes().to_vec(),
            weight: 1,
            reply_wanted: false,
        })
        .encode_signed(
            &Header {
                cluster: u32::from(f.group),
                sender: m.id,
                epoch: 0,
                sequence: 1,
                timestamp: NOW,
            },
            &m.key,
        )
        .expect("a hello fits");
        e.handle_datagram(clock(0), from, &hello)
            .expect("a certified member's hello is accepted");
    }
    assert_eq!(e.known_peers().len(), f.members.len() - 1);
    e
}

/// Runs the member's timers for `ms` milliseconds; the heartbeat-unsendable reports seen.
fn run(e: &mut Endpoint, from_ms: u64, ms: u64) -> usize {
    let mut reports = 0;
    for t in (from_ms..from_ms + ms).step_by(10) {
        e.handle_timeout(clock(t));
        while e.poll_transmit().is_some() {}
        while let Some(ev) = e.poll_event() {
            if let Event::Unsendable {
                message: MessageType::Heartbeat,
                peers,
            } = ev
            {
                assert_eq!(peers, e.known_peers().len());
                reports += 1;
            }
        }
    }
    reports
}

#[test]
fn a_heartbeat_too_large_for_a_datagram_is_reported_not_dropped_in_silence() {
    let f = Fixture::new(600);
    let mut e = member_hearing_everyone(&f);
    let reports = run(&mut e, 1, 150);
    assert_eq!(reports, 1, "reported once, not once per heartbeat");
    assert!(
        e.counters().unsendable >= 2,
        "every unsent heartbeat counted: {}",
        e.counters().unsendable
    );
}

#[test]
fn a_group_whose_heartbeats_fit_reports_nothing() {
    let f = Fixture::new(50);
    let mut e = member_hearing_everyone(&f);
    assert_eq!(run(&mut e, 1, 150), 0);
    assert_eq!(e.counters().unsendable, 0);
    assert!(e.counters().sent > 0, "it did send its heartbeats");
}
