//! A Linux bridge with IGMP snooping, in its own namespace, with hosts on veth ports; raw sending
//! from a host and the bridge's multicast database (`bridge -d -j mdb show`) as parsed entries.

use super::netns::{Lab, Netns};
use serde_json::Value;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The bridge's IGMP snooping settings.
#[derive(Debug, Clone, Copy)]
pub struct Snooping {
    /// `mcast_igmp_version`: with 3 the bridge keeps per-source state from v3 reports.
    pub igmp_version: u8,
    /// `mcast_querier`: whether the bridge itself sends general queries.
    pub querier: bool,
}

impl Default for Snooping {
    fn default() -> Self {
        Snooping {
            igmp_version: 3,
            querier: false,
        }
    }
}

/// A host namespace on one bridge port.
#[derive(Debug, Clone)]
pub struct BridgeHost {
    pub ns: Netns,
    /// The interface in the host's namespace.
    pub ifname: String,
    /// The bridge port (veth peer) in the switch's namespace.
    pub port: String,
    pub addr: Ipv4Addr,
}

impl BridgeHost {
    /// Sends one complete IPv4 datagram from this host into its bridge port.
    pub fn send_raw(&self, datagram: &[u8]) {
        self.ns.send_raw(&self.ifname, datagram);
    }
}

/// One row of the multicast database.
#[derive(Debug, Clone, PartialEq)]
pub struct MdbEntry {
    pub port: String,
    pub group: String,
    /// Set for an (S,G) entry.
    pub source: Option<String>,
    /// `include`/`exclude` for IGMPv3 (*,G) entries.
    pub filter_mode: Option<String>,
    /// Sources of a (*,G) entry.
    pub source_list: Vec<String>,
    /// Seconds left on each source's timer, parallel to `source_list`.
    pub source_timers: Vec<f64>,
    pub state: String,
    /// Seconds left on the entry's own timer; 0 when it is not running (IGMPv3 INCLUDE-mode
    /// (*,G) entries live by their sources' timers).
    pub timer: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct SnoopingBridge {
    pub switch: Netns,
    pub bridge: String,
    pub hosts: Vec<BridgeHost>,
}

impl SnoopingBridge {
    /// A bridge `br0` in a new namespace with `hosts` hosts, host i on port `p<i>` with address
    /// 10.98.0.<10+i>/24 on its `eth0`. Returns once every port forwards.
    pub fn new(lab: &Lab, snooping: Snooping, hosts: usize) -> Self {
        let switch = lab.netns("switch");
        let bridge = "br0".to_owned();
        let add = format!(
            "link add {bridge} type bridge mcast_snooping 1 mcast_igmp_version {} mcast_querier {}",
            snooping.igmp_version,
            u8::from(snooping.querier)
        );
        switch.ip(&add.split(' ').collect::<Vec<_>>());
        lab.track_link(&switch, &bridge);
        let hosts = (0..hosts)
            .map(|i| {
                let ns = lab.netns(&format!("h{i}"));
                let port = format!("p{i}");
                lab.veth(&switch, &port, &ns, "eth0");
                switch.ip(&["link", "set", "dev", &port, "master", &bridge]);
                let addr = Ipv4Addr::new(
                    10,
                    98,
                    0,
                    10 + u8::try_from(i).expect("fewer than 245 hosts"),
                );
                ns.add_addr("eth0", addr, 24);
                BridgeHost {
                    ns,
                    ifname: "eth0".to_owned(),
                    port,
                    addr,
                }
            })
            .collect();
        switch.link_up(&bridge);
        let br = SnoopingBridge {
            switch,
            bridge,
            hosts,
        };
        br.wait_ports_forwarding(Duration::from_secs(5));
        br
    }

    /// Without STP a port forwards as soon as it has carrier, but carrier on veth comes up
    /// asynchronously; a report arriving before that is dropped by the bridge.
    fn wait_ports_forwarding(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let json = self.switch.bridge(&["-j", "link", "show"]);
            let links: Value = serde_json::from_str(&json).expect("bridge -j link show JSON");
            let forwarding = links
                .as_array()
                .into_iter()
                .flatten()
                .filter(|l| l.get("master").and_then(Value::as_str) == Some(&self.bridge))
                .filter(|l| l.get("state").and_then(Value::as_str) == Some("forwarding"))
                .count();
            if forwarding == self.hosts.len() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bridge ports not forwarding after {timeout:?}: {json}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `bridge -d -s -j mdb show dev <bridge>` as JSON (`-s` adds the timers).
    pub fn mdb_json(&self) -> Value {
        let json = self
            .switch
            .bridge(&["-d", "-s", "-j", "mdb", "show", "dev", &self.bridge]);
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("bridge mdb JSON: {e}\n{json}"))
    }

    /// The IPv4 entries of the multicast database (the kernel also snoops MLD for the hosts'
    /// own IPv6 link-local groups; those are left out).
    pub fn mdb(&self) -> Vec<MdbEntry> {
        self.entries(|g| g.parse::<Ipv4Addr>().is_ok())
    }

    /// The IPv6 entries of the multicast database, the hosts' own link-scope groups (ff02::/16,
    /// solicited-node and all-nodes) left out.
    pub fn mdb_v6(&self) -> Vec<MdbEntry> {
        self.entries(|g| {
            g.parse::<Ipv6Addr>()
                .is_ok_and(|a| a.segments()[0] != 0xff02)
        })
    }

    fn entries(&self, keep_group: impl Fn(&str) -> bool) -> Vec<MdbEntry> {
        let json = self.mdb_json();
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        // iproute2 prints timers as strings such as "  259.79".
        let t = |v: &Value| {
            v.get("timer")
                .and_then(Value::as_str)
                .map(|x| x.trim().parse::<f64>().expect("mdb timer is a number"))
        };
        let sources = |e: &Value| -> Vec<Value> {
            e.get("source_list")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        json.as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.get("mdb").and_then(Value::as_array))
            .flatten()
            .filter(|e| s(e, "grp").is_some_and(|g| keep_group(&g)))
            .map(|e| MdbEntry {
                port: s(e, "port").unwrap_or_default(),
                group: s(e, "grp").unwrap_or_default(),
                source: s(e, "src"),
                filter_mode: s(e, "filter_mode"),
                source_list: sources(e).iter().filter_map(|x| s(x, "address")).collect(),
                source_timers: sources(e).iter().filter_map(t).collect(),
                state: s(e, "state").unwrap_or_default(),
                timer: t(e),
            })
            .collect()
    }

    /// Polls the database until `done` holds for it, or panics with the last contents.
    pub fn wait_mdb(&self, timeout: Duration, done: impl Fn(&[MdbEntry]) -> bool) -> Vec<MdbEntry> {
        self.wait_entries(timeout, Self::mdb, done)
    }

    /// [`SnoopingBridge::wait_mdb`] for the IPv6 entries.
    pub fn wait_mdb_v6(
        &self,
        timeout: Duration,
        done: impl Fn(&[MdbEntry]) -> bool,
    ) -> Vec<MdbEntry> {
        self.wait_entries(timeout, Self::mdb_v6, done)
    }

    fn wait_entries(
        &self,
        timeout: Duration,
        read: impl Fn(&Self) -> Vec<MdbEntry>,
        done: impl Fn(&[MdbEntry]) -> bool,
    ) -> Vec<MdbEntry> {
        let deadline = Instant::now() + timeout;
        loop {
            let mdb = read(self);
            if done(&mdb) {
                return mdb;
            }
            assert!(
                Instant::now() < deadline,
                "mdb did not reach the expected state in {timeout:?}: {mdb:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
