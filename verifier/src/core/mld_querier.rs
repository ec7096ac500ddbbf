//! The MLDv2 querier (RFC 3810 §7), the part members need: general queries on every
//! member-facing interface at startup (Startup Query Count = Robustness, one Startup Query
//! Interval apart, §9.6-9.7) and then every Query Interval (§9.2), from the interface's
//! link-local address to ff02::1 with hop limit 1 and the Router Alert (§5.1.14). Members answer
//! with their signed joins, which refreshes their claims. The verifier always queries: queries
//! heard from other routers take no part (no election, §7.6.2, and no listener state for plain
//! IPv6 groups, which are not routed); the IGMPv3 querier's `trusted_queriers` do not apply.

use crate::querier::QuerierConfig;
use igmp_ext::time::Instant;
use igmp_ext::wire::ipv6::{Ipv6Repr, NEXT_HEADER_ICMPV6, ROUTER_ALERT_MLD};
use igmp_ext::wire::mld::{
    encode_max_resp_code, encode_qqic, MldRepr, QueryRepr, QueryV2Fields, ALL_NODES,
};
use std::collections::VecDeque;
use std::net::Ipv6Addr;

/// An IPv6 datagram (headers included) to send out of `ifindex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit6 {
    pub ifindex: u32,
    pub datagram: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct MldQuerier {
    config: QuerierConfig,
    /// (ifindex, link-local address) of each member-facing interface.
    interfaces: Vec<(u32, Ipv6Addr)>,
    /// Startup queries still to send (§9.7), and when the next general query is due.
    startup_left: u8,
    next: Option<Instant>,
    transmits: VecDeque<Transmit6>,
    pub(super) queries_built: u64,
}

impl MldQuerier {
    pub(super) fn new(config: QuerierConfig) -> Self {
        MldQuerier {
            startup_left: config.robustness,
            config,
            interfaces: Vec::new(),
            next: None,
            transmits: VecDeque::new(),
            queries_built: 0,
        }
    }

    /// The interfaces to query (their link-local addresses are the queries' source); the
    /// startup queries begin at the next tick.
    pub(super) fn set_interfaces(&mut self, interfaces: Vec<(u32, Ipv6Addr)>) {
        self.interfaces = interfaces;
        self.startup_left = self.config.robustness.max(1);
        self.next = None;
    }

    /// Queues the queries due by `now`.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if self.interfaces.is_empty() || self.next.is_some_and(|t| now < t) {
            return;
        }
        for &(ifindex, src) in &self.interfaces {
            self.transmits.push_back(Transmit6 {
                ifindex,
                datagram: general_query(&self.config, src),
            });
            self.queries_built += 1;
        }
        let interval = if self.startup_left > 1 {
            self.startup_left -= 1;
            self.config.startup_query_interval()
        } else {
            self.startup_left = 0;
            self.config.query_interval
        };
        self.next = Some(now.saturating_add(interval));
    }

    pub(super) fn poll_transmit(&mut self) -> Option<Transmit6> {
        self.transmits.pop_front()
    }
}

/// An MLDv2 general query from `src` (RFC 3810 §5.1): Maximum Response Code from the Query
/// Response Interval, QRV the robustness, QQIC the Query Interval.
fn general_query(config: &QuerierConfig, src: Ipv6Addr) -> Vec<u8> {
    let ms = u32::try_from(config.query_response_interval.as_millis()).unwrap_or(u32::MAX);
    let secs = u32::try_from(config.query_interval.as_secs()).unwrap_or(u32::MAX);
    let query = MldRepr::Query(QueryRepr {
        max_resp_code: encode_max_resp_code(ms),
        group: Ipv6Addr::UNSPECIFIED,
        v2: Some(QueryV2Fields {
            flags: 0,
            suppress: false,
            qrv: config.robustness.min(7),
            qqic: encode_qqic(secs),
            sources: Vec::new(),
            additional_data: Vec::new(),
        }),
    });
    let mut mld = vec![0u8; query.buffer_len()];
    query.emit(&mut mld, src, ALL_NODES);
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: ALL_NODES,
        next_header: NEXT_HEADER_ICMPV6,
        hop_limit: 1,
        traffic_class: 0,
        flow_label: 0,
        router_alert: Some(ROUTER_ALERT_MLD),
        payload_len: mld.len(),
    };
    let mut out = vec![0u8; ip.buffer_len()];
    ip.emit(&mut out);
    out[ip.header_len()..].copy_from_slice(&mld);
    out
}
