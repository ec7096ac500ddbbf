//! The IGMPv3 router side, sans-IO (RFC 3376 §6 and §8): per interface, querier election
//! (§6.6.2, the lowest address wins), startup and periodic general queries, group-specific
//! queries after a leave (§6.6.3.1), and group soft state that expires when reports stop
//! (§6.6.1). The driver passes `now`, feeds received queries and reports, and sends what
//! [`Querier::poll_transmit`] returns. Signed joins are verified elsewhere; this module only keeps
//! the timers.

use core::time::Duration;
use igmp_ext::wire::igmp::{encode_code, QueryRepr, QueryV3Fields, ALL_SYSTEMS};
use igmp_ext::wire::record::{GroupRecordRepr, RecordType};
use igmp_ext::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

/// RFC 3376 §8 variables. Defaults are short lab values; RFC values are in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerierConfig {
    /// §8.1 Robustness Variable [2].
    pub robustness: u8,
    /// §8.2 Query Interval [125 s]; lab default 10 s.
    pub query_interval: Duration,
    /// §8.3 Query Response Interval [10 s]; lab default 2 s.
    pub query_response_interval: Duration,
    /// §8.8 Last Member Query Interval [1 s].
    pub last_member_query_interval: Duration,
    /// Other routers whose queries take part in the election (§6.6.2) and, when they are the
    /// querier, lower a plain group's timer (§6.6.1). Queries are unauthenticated: anyone
    /// else's are ignored, so by default the verifier always queries (SPEC.md §12).
    pub trusted_queriers: Vec<Ipv4Addr>,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        QuerierConfig {
            robustness: 2,
            query_interval: Duration::from_secs(10),
            query_response_interval: Duration::from_secs(2),
            last_member_query_interval: Duration::from_secs(1),
            trusted_queriers: Vec::new(),
        }
    }
}

impl QuerierConfig {
    /// §8.4 Group Membership Interval: R × QI + QRI.
    pub fn group_membership_interval(&self) -> Duration {
        self.query_interval * u32::from(self.robustness) + self.query_response_interval
    }
    /// §8.5 Other Querier Present Interval: R × QI + QRI / 2.
    pub fn other_querier_present_interval(&self) -> Duration {
        self.query_interval * u32::from(self.robustness) + self.query_response_interval / 2
    }
    /// §8.6 Startup Query Interval: QI / 4.
    pub fn startup_query_interval(&self) -> Duration {
        self.query_interval / 4
    }
    /// §8.12 Last Member Query Time: LMQC × LMQI (LMQC = R, §8.9).
    pub fn last_member_query_time(&self) -> Duration {
        self.last_member_query_interval * u32::from(self.robustness)
    }
}

/// The spacing and Max Resp Time of the queries [`Querier::ask_again`] sends: the shortest
/// the Max Resp Code can say (one tenth of a second).
pub const REASK_INTERVAL: Duration = Duration::from_millis(100);

/// A query to send: from `src` on `ifindex` to `dst` (224.0.0.1 or the group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub ifindex: u32,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub query: QueryRepr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Querier,
    NonQuerier,
}

#[derive(Debug, Clone)]
struct Iface {
    addr: Ipv4Addr,
    role: Role,
    other_querier_expires: Timestamp,
    next_general: Timestamp,
    startup_left: u8,
    /// Group → membership timer.
    groups: BTreeMap<Ipv4Addr, Timestamp>,
    /// Group → (group-specific queries left to send, when the next one is due).
    specific: BTreeMap<Ipv4Addr, (u8, Timestamp)>,
    /// Group → (re-ask queries left to send, when the next one is due): see
    /// [`Querier::ask_again`].
    reask: BTreeMap<Ipv4Addr, (u8, Timestamp)>,
}

/// A received query with what its IPv4 header said (RFC 3376 §4) and what the caller knows
/// about it.
#[derive(Debug, Clone, Copy)]
pub struct HeardQuery<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub router_alert: bool,
    /// `src` is on a subnet of the arrival interface.
    pub on_link: bool,
    /// The query's group is protected (signed joins): its state is not the querier's to age.
    pub protected: bool,
    pub query: &'a QueryRepr,
}

/// Why a query took no part in the election or the timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryIgnored {
    /// Not what RFC 3376 §4 says a query is: named by the broken rule.
    Malformed(&'static str),
    /// Well-formed, from a router not in `trusted_queriers`.
    Untrusted,
}

impl HeardQuery<'_> {
    fn check(&self) -> Result<(), QueryIgnored> {
        let src = self.src;
        if self.ttl != 1 {
            return Err(QueryIgnored::Malformed("ttl is not 1"));
        }
        if !self.router_alert {
            return Err(QueryIgnored::Malformed("no router alert"));
        }
        if src.is_unspecified() || src.is_multicast() || src.is_broadcast() || !self.on_link {
            return Err(QueryIgnored::Malformed(
                "source not a unicast address on the link",
            ));
        }
        let group = self.query.group;
        let dst_ok = if group.is_unspecified() {
            self.dst == ALL_SYSTEMS
        } else {
            group.is_multicast() && self.dst == group
        };
        if !dst_ok {
            return Err(QueryIgnored::Malformed(
                "not sent to 224.0.0.1 (general) or to its group (group-specific)",
            ));
        }
        Ok(())
    }
}

/// Events for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first report for `group` on `ifindex` since it had no listeners there.
    GroupJoined {
        ifindex: u32,
        group: Ipv4Addr,
    },
    /// No report for `group` on `ifindex` within the Group Membership Interval.
    GroupExpired {
        ifindex: u32,
        group: Ipv4Addr,
    },
    RoleChanged {
        ifindex: u32,
        role: Role,
    },
}

/// The querier for every interface the verifier serves.
#[derive(Debug)]
pub struct Querier {
    config: QuerierConfig,
    ifaces: BTreeMap<u32, Iface>,
    transmit: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Querier {
    pub fn new(config: QuerierConfig) -> Self {
        Querier {
            config,
            ifaces: BTreeMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &QuerierConfig {
        &self.config
    }

    /// Starts serving `ifindex` as querier (§6.6.2: every router starts as querier), with the
    /// startup queries of §8.6/§8.7 beginning now.
    pub fn add_interface(&mut self, now: Timestamp, ifindex: u32, addr: Ipv4Addr) {
        self.ifaces.insert(
            ifindex,
            Iface {
                addr,
                role: Role::Querier,
                other_querier_expires: now,
                next_general: now,
                startup_left: self.config.robustness,
                groups: BTreeMap::new(),
                specific: BTreeMap::new(),
                reask: BTreeMap::new(),
            },
        );
    }

    pub fn role(&self, ifindex: u32) -> Option<Role> {
        self.ifaces.get(&ifindex).map(|i| i.role)
    }

    /// Groups with live membership on `ifindex`.
    pub fn groups(&self, ifindex: u32) -> impl Iterator<Item = (Ipv4Addr, Timestamp)> + '_ {
        self.ifaces
            .get(&ifindex)
            .into_iter()
            .flat_map(|i| i.groups.iter().map(|(&g, &t)| (g, t)))
    }

    /// Interfaces with live membership for `group` (group-level: source lists are not kept).
    pub fn listening_interfaces(&self, group: Ipv4Addr) -> impl Iterator<Item = u32> + '_ {
        self.ifaces
            .iter()
            .filter(move |(_, i)| i.groups.contains_key(&group))
            .map(|(&ifindex, _)| ifindex)
    }

    fn query(&self, group: Ipv4Addr, max_resp: Duration) -> QueryRepr {
        let tenths = u32::try_from(max_resp.as_millis() / 100).unwrap_or(u32::MAX);
        let qi = u32::try_from(self.config.query_interval.as_secs()).unwrap_or(u32::MAX);
        QueryRepr {
            max_resp_code: encode_code(tenths),
            group,
            v3: Some(QueryV3Fields {
                flags: 0,
                suppress: false,
                qrv: self.config.robustness.min(7),
                qqic: encode_code(qi),
                sources: Vec::new(),
                additional_data: Vec::new(),
            }),
        }
    }

    /// A query heard on `ifindex` (§6.6.2): a lower address takes over as querier, and as
    /// non-querier a group-specific query lowers that group's timer to LMQT (§6.6.1). Queries
    /// are unauthenticated, so only one that is well-formed for §4 (TTL 1, Router Alert, an
    /// on-link unicast source, sent to 224.0.0.1 or to its group) and comes from a router in
    /// `trusted_queriers` counts; and never for a protected group, whose claims live on their
    /// signed hold time, not on listener timers.
    pub fn handle_query(
        &mut self,
        now: Timestamp,
        ifindex: u32,
        heard: &HeardQuery<'_>,
    ) -> Result<(), QueryIgnored> {
        let oqpi = self.config.other_querier_present_interval();
        let lmqt = self.config.last_member_query_time();
        let Some(iface) = self.ifaces.get_mut(&ifindex) else {
            return Ok(());
        };
        let (src, q) = (heard.src, heard.query);
        if src == iface.addr {
            return Ok(());
        }
        heard.check()?;
        if !self.config.trusted_queriers.contains(&src) {
            return Err(QueryIgnored::Untrusted);
        }
        if u32::from(src) < u32::from(iface.addr) {
            if iface.role != Role::NonQuerier {
                iface.role = Role::NonQuerier;
                iface.specific.clear();
                iface.reask.clear();
                self.events.push_back(Event::RoleChanged {
                    ifindex,
                    role: Role::NonQuerier,
                });
            }
            iface.other_querier_expires = now.saturating_add(oqpi);
        }
        if iface.role == Role::NonQuerier && !q.group.is_unspecified() && !heard.protected {
            let suppress = q.v3.as_ref().is_some_and(|v| v.suppress);
            if !suppress {
                if let Some(t) = iface.groups.get_mut(&q.group) {
                    *t = (*t).min(now.saturating_add(lmqt));
                }
            }
        }
        Ok(())
    }

    /// A report's records heard on `ifindex` (§6.4): current-state and filter-mode-change
    /// records keep the group alive; a change to INCLUDE with no sources is a leave, answered by
    /// group-specific queries when we are the querier.
    pub fn handle_records(
        &mut self,
        now: Timestamp,
        ifindex: u32,
        records: &[GroupRecordRepr<Ipv4Addr>],
    ) {
        for r in records {
            let leave =
                matches!(r.record_type, RecordType::ChangeToIncludeMode) && r.sources.is_empty();
            if leave {
                self.handle_leave(now, ifindex, r.group);
            } else {
                self.handle_membership(now, ifindex, r.group);
            }
        }
    }

    /// A v1/v2 report or any record that says the group has listeners.
    pub fn handle_membership(&mut self, now: Timestamp, ifindex: u32, group: Ipv4Addr) {
        let gmi = self.config.group_membership_interval();
        if let Some(iface) = self.ifaces.get_mut(&ifindex) {
            if iface
                .groups
                .insert(group, now.saturating_add(gmi))
                .is_none()
            {
                self.events.push_back(Event::GroupJoined { ifindex, group });
            }
            iface.specific.remove(&group);
        }
    }

    /// A v2 leave or an IGMPv3 change to INCLUDE {}.
    pub fn handle_leave(&mut self, now: Timestamp, ifindex: u32, group: Ipv4Addr) {
        let lmqt = self.config.last_member_query_time();
        let count = self.config.robustness;
        let Some(iface) = self.ifaces.get_mut(&ifindex) else {
            return;
        };
        if iface.role != Role::Querier {
            return;
        }
        if let Some(t) = iface.groups.get_mut(&group) {
            *t = (*t).min(now.saturating_add(lmqt));
        }
        iface.specific.insert(group, (count, now));
    }

    /// `group`'s owners changed without its members asking (a claim revoked, retired or
    /// expired): members whose joins the dropped claim had refused would otherwise wait for
    /// their next unprompted report. Every interface we query for sends `robustness`
    /// group-specific queries, [`REASK_INTERVAL`] apart, each answered within that time
    /// (SPEC.md §5.4). Returns whether any interface will ask. The callers' drops are bounded
    /// by the claims there are, so this needs no rate limit of its own.
    pub fn ask_again(&mut self, now: Timestamp, group: Ipv4Addr) -> bool {
        let mut asked = false;
        for iface in self.ifaces.values_mut() {
            if iface.role == Role::Querier {
                iface
                    .reask
                    .insert(group, (self.config.robustness.max(1), now));
                asked = true;
            }
        }
        asked
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let cfg = &self.config;
        let mut out = Vec::new();
        let mut reasks = Vec::new();
        for (&ifindex, iface) in self.ifaces.iter_mut() {
            if iface.role == Role::NonQuerier && now >= iface.other_querier_expires {
                iface.role = Role::Querier;
                iface.next_general = now;
                self.events.push_back(Event::RoleChanged {
                    ifindex,
                    role: Role::Querier,
                });
            }
            if iface.role == Role::Querier && now >= iface.next_general {
                out.push((ifindex, iface.addr, ALL_SYSTEMS, Ipv4Addr::UNSPECIFIED));
                let gap = if iface.startup_left > 1 {
                    iface.startup_left -= 1;
                    cfg.startup_query_interval()
                } else {
                    iface.startup_left = 0;
                    cfg.query_interval
                };
                iface.next_general = now.saturating_add(gap);
            }
            iface.specific.retain(|&group, (left, due)| {
                if now >= *due {
                    out.push((ifindex, iface.addr, group, group));
                    *left -= 1;
                    *due = now.saturating_add(cfg.last_member_query_interval);
                }
                *left > 0
            });
            iface.reask.retain(|&group, (left, due)| {
                if now >= *due {
                    reasks.push((ifindex, iface.addr, group));
                    *left -= 1;
                    *due = now.saturating_add(REASK_INTERVAL);
                }
                *left > 0
            });
            iface.groups.retain(|&group, expires| {
                let live = *expires > now;
                if !live {
                    self.events
                        .push_back(Event::GroupExpired { ifindex, group });
                }
                live
            });
        }
        for (ifindex, src, dst, group) in out {
            let max_resp = if group == Ipv4Addr::UNSPECIFIED {
                cfg.query_response_interval
            } else {
                cfg.last_member_query_interval
            };
            let query = self.query(group, max_resp);
            self.transmit.push_back(Transmit {
                ifindex,
                src,
                dst,
                query,
            });
        }
        for (ifindex, src, group) in reasks {
            let query = self.query(group, REASK_INTERVAL);
            self.transmit.push_back(Transmit {
                ifindex,
                src,
                dst: group,
                query,
            });
        }
    }

    /// Sends a general query on every interface at once, whatever the timers say (used at
    /// start so that members re-announce without waiting).
    pub fn query_now(&mut self, now: Timestamp) {
        for iface in self.ifaces.values_mut() {
            if iface.role == Role::Querier {
                iface.next_general = now;
            }
        }
        self.handle_timeout(now);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Querier::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.ifaces
            .values()
            .flat_map(|i| {
                let election = (i.role == Role::NonQuerier).then_some(i.other_querier_expires);
                let general = (i.role == Role::Querier).then_some(i.next_general);
                election
                    .into_iter()
                    .chain(general)
                    .chain(i.specific.values().map(|&(_, due)| due))
                    .chain(i.reask.values().map(|&(_, due)| due))
                    .chain(i.groups.values().copied())
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::wire::igmp::decode_code;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const G: Ipv4Addr = Ipv4Addr::new(232, 1, 1, 1);

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn drain(q: &mut Querier) -> Vec<Transmit> {
        std::iter::from_fn(|| q.poll_transmit()).collect()
    }

    /// Runs the querier from `from` to `to` ms, jumping from timeout to timeout.
    fn run(q: &mut Querier, from: u64, to: u64) -> Vec<(u64, Transmit)> {
        let mut now = from;
        let mut sent = Vec::new();
        while now <= to {
            q.handle_timeout(at(now));
            sent.extend(drain(q).into_iter().map(|t| (now, t)));
            match q.poll_timeout() {
                Some(t) if t.as_millis() > now => now = t.as_millis(),
                _ => now += 1,
            }
        }
        sent
    }

    #[test]
    fn startup_queries_then_query_interval() {
        let cfg = QuerierConfig::default();
        let mut q = Querier::new(cfg.clone());
        q.add_interface(at(0), 1, ME);
        let sent = run(&mut q, 0, 25_000);
        let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
        // Robustness 2: two startup queries QI/4 apart, then every QI.
        assert_eq!(times, vec![0, 2_500, 12_500, 22_500]);
        let t = &sent[0].1;
        assert_eq!((t.ifindex, t.src, t.dst), (1, ME, ALL_SYSTEMS));
        assert_eq!(t.query.group, Ipv4Addr::UNSPECIFIED);
        let v3 = t.query.v3.as_ref().expect("v3 query");
        assert_eq!(v3.qrv, 2);
        assert_eq!(decode_code(v3.qqic), 10);
        assert_eq!(decode_code(t.query.max_resp_code), 20); // 2 s in tenths
    }

    #[test]
    fn lower_address_wins_election_and_querier_returns_when_it_goes_quiet() {
        let cfg = QuerierConfig {
            trusted_queriers: vec![Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 2)],
            ..QuerierConfig::default()
        };
        let mut q = Querier::new(cfg.clone());
        q.add_interface(at(0), 1, ME);
        run(&mut q, 0, 0);
        let general = q.query(Ipv4Addr::UNSPECIFIED, cfg.query_response_interval);
        let heard = |src| HeardQuery {
            src,
            dst: ALL_SYSTEMS,
            ttl: 1,
            router_alert: true,
            on_link: true,
            protected: false,
            query: &general,
        };
        // A higher address does not displace us; nor a lower one nobody configured.
        q.handle_query(at(100), 1, &heard(Ipv4Addr::new(10, 0, 0, 9)))
            .unwrap();
        assert_eq!(q.role(1), Some(Role::Querier));
        assert_eq!(
            q.handle_query(at(100), 1, &heard(Ipv4Addr::new(10, 0, 0, 1))),
            Err(QueryIgnored::Untrusted)
        );
        assert_eq!(q.role(1), Some(Role::Querier));
        q.handle_query(at(100), 1, &heard(Ipv4Addr::new(10, 0, 0, 2)))
            .unwrap();
        assert_eq!(q.role(1), Some(Role::NonQuerier));
        assert_eq!(
            q.poll_event(),
            Some(Event::RoleChanged {
                ifindex: 1,
                role: Role::NonQuerier
            })
        );
        // Silent until the Other Querier Present Interval (2 × 10 s + 1 s) runs out.
        let oqpi = 100 + cfg.other_querier_present_interval().as_millis() as u64;
        assert!(run(&mut q, 101, oqpi - 1).is_empty());
        let sent = run(&mut q, oqpi, oqpi);
        assert_eq!(sent.len(), 1);
        assert_eq!(q.role(1), Some(Role::Querier));
    }

    #[test]
    fn leave_triggers_group_specific_queries_and_membership_expires() {
        let cfg = QuerierConfig::default();
        let mut q = Querier::new(cfg.clone());
        q.add_interface(at(0), 1, ME);
        run(&mut q, 0, 0);
        q.handle_membership(at(1_000), 1, G);
        q.handle_membership(at(1_500), 1, G); // a repeated report is no new listener
        assert_eq!(q.groups(1).count(), 1);
        assert_eq!(q.listening_interfaces(G).collect::<Vec<_>>(), vec![1]);
        q.handle_leave(at(2_000), 1, G);
        let sent = run(&mut q, 2_000, 2_400);
        let specific: Vec<_> = sent.iter().filter(|(_, t)| t.query.group == G).collect();
        assert_eq!(specific.len(), 1);
        assert_eq!(specific[0].1.dst, G);
        let sent = run(&mut q, 2_401, 4_100);
        assert_eq!(sent.iter().filter(|(_, t)| t.query.group == G).count(), 1);
        // LMQT = 2 × 1 s after the leave, the group is gone.
        assert!(q.groups(1).count() == 0);
        assert_eq!(q.listening_interfaces(G).count(), 0);
        let events: Vec<_> = std::iter::from_fn(|| q.poll_event()).collect();
        assert_eq!(
            events,
            vec![
                Event::GroupJoined {
                    ifindex: 1,
                    group: G
                },
                Event::GroupExpired {
                    ifindex: 1,
                    group: G
                }
            ]
        );
    }

    #[test]
    fn asking_again_sends_robustness_queries_a_tenth_of_a_second_apart_while_querier() {
        let mut q = Querier::new(QuerierConfig::default());
        q.add_interface(at(0), 1, ME);
        q.add_interface(at(0), 2, Ipv4Addr::new(10, 0, 1, 1));
        run(&mut q, 0, 0);
        assert!(q.ask_again(at(5_000), G));
        let sent = run(&mut q, 5_000, 5_300);
        let asked: Vec<_> = sent
            .iter()
            .filter(|(_, t)| t.query.group == G)
            .map(|(ms, t)| (*ms, t.ifindex, t.dst, decode_code(t.query.max_resp_code)))
            .collect();
        assert_eq!(
            asked,
            [
                (5_000, 1, G, 1),
                (5_000, 2, G, 1),
                (5_100, 1, G, 1),
                (5_100, 2, G, 1)
            ]
        );
        // A non-querier leaves the asking to the querier.
        let mut other = Querier::new(QuerierConfig::default());
        other.add_interface(at(0), 1, ME);
        let iface = other.ifaces.get_mut(&1).expect("added");
        iface.role = Role::NonQuerier;
        iface.other_querier_expires = at(60_000);
        assert!(!other.ask_again(at(5_000), G));
        assert!(run(&mut other, 5_000, 5_300).is_empty());
    }

    #[test]
    fn reports_keep_the_group_for_the_membership_interval() {
        let cfg = QuerierConfig::default();
        let mut q = Querier::new(cfg.clone());
        q.add_interface(at(0), 1, ME);
        let rec = GroupRecordRepr {
            record_type: RecordType::ModeIsInclude,
            group: G,
            sources: vec![Ipv4Addr::new(0, 0, 0, 1)],
            aux_data: Vec::new(),
        };
        q.handle_records(at(0), 1, &[rec]);
        let gmi = cfg.group_membership_interval().as_millis() as u64;
        q.handle_timeout(at(gmi - 1));
        assert_eq!(q.groups(1).count(), 1);
        q.handle_timeout(at(gmi));
        assert_eq!(q.groups(1).count(), 0);
    }
}
