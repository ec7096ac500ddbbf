//! VIP forward's kernel side (SPEC.md §11.7.1): flood and static entries toward the peers on the
//! overlay, the overlay guard's peer set, one policy route per old owner, and the marking map
//! (and with an IPv6 VIP their `-6`/`ip6` counterparts, SPEC.md §11.7.2), following the plan the node's
//! [`crate::vip_forward::ForwardTable`] makes. An executor: it runs `ip`, `bridge` and `nft`
//! through `daemon_kit::command` and decides nothing but what changed since the last plan.

use crate::config::Overlay;
use crate::vip_forward::{
    map_update, map_update6, mark_of, overlay6, overlay_mac, peers_update, DEVICE, RULE_PREF,
};
use daemon_kit::command::{self, CommandError};
use igmp_ext::MemberId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use tracing::{info, warn};

/// Why a route toward an old owner could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The configuration gives the old owner no overlay address (the operator's to fix).
    #[error("member {member} has no address in vip.forward_overlay {overlay} (hosts 1..={max})")]
    NoOverlayAddress {
        member: MemberId,
        overlay: Overlay,
        max: u64,
    },
    /// The kernel refused the route or rule.
    #[error(transparent)]
    Command(#[from] CommandError),
}

fn run_cmd(program: &str, args: &[&str]) -> Result<(), CommandError> {
    command::run(program, args, None)
}

fn nft(script: &str) -> Result<(), CommandError> {
    command::run("nft", &["-f", "-"], Some(script))
}

/// The kernel side of the forwarding: flood entries toward the peers, one policy route per old
/// owner, the marking map. Remembers what it installed so that it changes only differences
/// and [`Forwarder::restore`] removes its rules (the routes and flood entries go with the
/// device, the map with the table).
#[derive(Debug)]
pub struct Forwarder {
    vip: Ipv4Addr,
    overlay: Overlay,
    me: MemberId,
    peers: BTreeMap<MemberId, Ipv4Addr>,
    /// The IPv6 VIP and the slicing's bits: its segments follow the same plan (SPEC.md §11.7.2).
    vip6: Option<(Ipv6Addr, u8)>,
    owners: BTreeSet<MemberId>,
    /// What the kernel's map holds, and the plan it was made from.
    map: Option<BTreeMap<u32, MemberId>>,
    requested: Option<BTreeMap<u32, MemberId>>,
}

impl Forwarder {
    pub fn new(vip: Ipv4Addr, overlay: Overlay, me: MemberId) -> Forwarder {
        Forwarder {
            vip,
            overlay,
            me,
            peers: BTreeMap::new(),
            vip6: None,
            owners: BTreeSet::new(),
            map: None,
            requested: None,
        }
    }

    /// Also forwards the IPv6 VIP's orphan segments (its table is `vip::HostSetup`'s).
    pub fn with_vip6(mut self, vip6: Ipv6Addr, bits: u8) -> Forwarder {
        self.vip6 = Some((vip6, bits));
        self
    }

    /// A peer's underlay address (its direct path): broadcast and unknown frames on the
    /// overlay (ARP for its overlay address first) go there, frames for its fixed MAC go there
    /// (static entry: the device learns nothing), and VXLAN from there is accepted.
    pub fn set_peer(&mut self, m: MemberId, addr: Ipv4Addr) {
        if m == self.me || self.peers.get(&m) == Some(&addr) {
            return;
        }
        self.remove_peer(m);
        let dst = addr.to_string();
        let mac = overlay_mac(m);
        let added = run_cmd(
            "bridge",
            &[
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                DEVICE,
                "dst",
                &dst,
            ],
        )
        .and_then(|()| {
            run_cmd(
                "bridge",
                &[
                    "fdb",
                    "replace",
                    &mac,
                    "dev",
                    DEVICE,
                    "dst",
                    &dst,
                    "self",
                    "permanent",
                ],
            )
        });
        match added {
            Ok(()) => {
                info!(member = %m, underlay = %addr, "VIP forward: overlay peer");
                self.peers.insert(m, addr);
            }
            Err(e) => warn!("{e}"),
        }
        self.sync_guard();
    }

    pub fn remove_peer(&mut self, m: MemberId) {
        if let Some(addr) = self.peers.remove(&m) {
            let dst = addr.to_string();
            let mac = overlay_mac(m);
            for entry in [
                &[
                    "fdb",
                    "del",
                    "00:00:00:00:00:00",
                    "dev",
                    DEVICE,
                    "dst",
                    &dst,
                ][..],
                &["fdb", "del", &mac, "dev", DEVICE, "self"][..],
            ] {
                if let Err(e) = run_cmd("bridge", entry) {
                    warn!("{e}");
                }
            }
            self.sync_guard();
        }
    }

    /// The overlay guard's peer set follows `peers` (one transaction).
    fn sync_guard(&self) {
        if let Err(e) = nft(&peers_update(self.peers.values().copied())) {
            warn!("VIP forward: overlay guard: {e}");
        }
    }

    /// Makes the kernel follow `plan`: routes for new old owners first, then the map in one
    /// transaction, then the routes nobody needs any more. Returns the units forwarded.
    pub fn apply(&mut self, plan: &BTreeMap<u32, MemberId>) -> usize {
        // The same request again changes nothing (also not a warning per tick for an old owner
        // without an overlay address).
        if self.requested.as_ref() == Some(plan) {
            return self.map.as_ref().map_or(0, |m| m.len());
        }
        self.requested = Some(plan.clone());
        let mut plan = plan.clone();
        let wanted: BTreeSet<MemberId> = plan.values().copied().collect();
        for &m in wanted.difference(&self.owners.clone()) {
            match self.add_owner(m) {
                Ok(()) => {
                    self.owners.insert(m);
                }
                Err(e) => {
                    warn!(member = %m, "VIP forward: {e}");
                    plan.retain(|_, o| *o != m);
                }
            }
        }
        let mut script = map_update(&plan);
        if let Some((_, bits)) = self.vip6 {
            script.push_str(&map_update6(&plan, bits));
        }
        match nft(&script) {
            Ok(()) => {
                info!(
                    units = plan.len(),
                    old_owners = wanted.len(),
                    "VIP forward: map set"
                );
                self.map = Some(plan.clone());
            }
            Err(e) => {
                warn!("VIP forward: {e}");
                self.map = None;
                // Tried again at the next sync.
                self.requested = None;
            }
        }
        let unused: Vec<MemberId> = self
            .owners
            .iter()
            .filter(|m| !plan.values().any(|o| o == *m))
            .copied()
            .collect();
        for m in unused {
            self.remove_owner(m);
        }
        self.map.as_ref().map_or(0, |m| m.len())
    }

    fn add_owner(&self, m: MemberId) -> Result<(), ForwardError> {
        let via = self
            .overlay
            .host(m.0)
            .ok_or(ForwardError::NoOverlayAddress {
                member: m,
                overlay: self.overlay,
                max: self.overlay.max_member(),
            })?;
        let table = mark_of(m).to_string();
        let vip = format!("{}/32", self.vip);
        run_cmd(
            "ip",
            &[
                "-4",
                "route",
                "replace",
                &vip,
                "via",
                &via.to_string(),
                "dev",
                DEVICE,
                "onlink",
                "table",
                &table,
            ],
        )?;
        let mark = format!("{:#x}", mark_of(m));
        let pref = RULE_PREF.to_string();
        let rule = ["pref", &pref, "fwmark", &mark, "lookup", &table];
        // A rule left by a killed daemon would make the add fail with "File exists".
        let _ = run_cmd("ip", &[&["-4", "rule", "del"][..], &rule].concat());
        run_cmd("ip", &[&["-4", "rule", "add"][..], &rule].concat())?;
        if let Some((vip6, _)) = self.vip6 {
            let vip6 = format!("{vip6}/128");
            let via6 = overlay6(m).to_string();
            let route = ["route", "replace", &vip6, "via", &via6, "dev", DEVICE];
            run_cmd("ip", &[&["-6"][..], &route, &["table", &table]].concat())?;
            let _ = run_cmd("ip", &[&["-6", "rule", "del"][..], &rule].concat());
            run_cmd("ip", &[&["-6", "rule", "add"][..], &rule].concat())?;
        }
        info!(member = %m, %via, "VIP forward: route to old owner");
        Ok(())
    }

    fn remove_owner(&mut self, m: MemberId) {
        let table = mark_of(m).to_string();
        let mark = format!("{:#x}", mark_of(m));
        let pref = RULE_PREF.to_string();
        if let Err(e) = run_cmd(
            "ip",
            &[
                "-4", "rule", "del", "pref", &pref, "fwmark", &mark, "lookup", &table,
            ],
        ) {
            warn!("{e}");
        }
        let _ = run_cmd("ip", &["-4", "route", "flush", "table", &table]);
        if self.vip6.is_some() {
            let rule = ["pref", &pref, "fwmark", &mark, "lookup", &table];
            if let Err(e) = run_cmd("ip", &[&["-6", "rule", "del"][..], &rule].concat()) {
                warn!("{e}");
            }
            let _ = run_cmd("ip", &["-6", "route", "flush", "table", &table]);
        }
        self.owners.remove(&m);
        info!(member = %m, "VIP forward: no more forwarding to this old owner");
    }

    /// Removes the policy rules (safe to call twice).
    pub fn restore(&mut self) {
        for m in self.owners.clone() {
            self.remove_owner(m);
        }
        self.map = None;
        self.requested = None;
    }
}
