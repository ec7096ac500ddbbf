//! The executor: applies the core's [`DataplaneOp`]s to the kernel (the mroute control socket,
//! a persistent libnftables context, `ip`, procfs) and logs what the kernel refused. With
//! `sys`'s other modules, the only code that changes the kernel. It also times each ownership
//! change's ops (`repoint_us`).

use super::announce_dev::AnnounceDevice;
use super::bpf::PinPlane;
use super::libnft::{NftError, NftSession};
use super::mroute::{self, MrouteControl};
use super::nfnl::{ElementBatch, Nfnl};
use super::rtnl::{Rtnl, RtnlError};
use super::{nft, procfs};
use crate::config::VipPinSection;
use crate::plan::mfc::Probed;
use crate::plan::netdev::{self, parse_counters, KernelCounters};
use crate::plan::NftBatch;
use crate::plan::{control, netdev6, vip, vip6, vip_netdev};
use crate::plan::{DataplaneOp, VipChange};
use crate::plan::{MfcSpec, VifSet};
use daemon_kit::CommandError;
use socket2::Socket;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// What the kernel refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A multicast routing call (setsockopt, ioctl) failed.
    #[error(transparent)]
    Mroute(#[from] std::io::Error),
    /// `nft` or `ip` failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// libnftables refused a transaction.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The kernel refused a VIP route or rule.
    #[error(transparent)]
    Route(#[from] RtnlError),
    /// The nfnetlink socket for map element updates could not be opened.
    #[error("nfnetlink socket: {0}")]
    Nfnl(std::io::Error),
}

/// How many re-points the status's figures summarise (the most recent ones).
const REPOINT_WINDOW: usize = 1024;

/// The cost of ownership changes in the kernel: the time the executor took to apply each
/// change's ops (every data plane's share), the most recent [`REPOINT_WINDOW`] of them.
#[derive(Debug, Default)]
pub struct RepointTimes {
    recent: VecDeque<Duration>,
    /// Re-points timed since start.
    pub count: u64,
    /// The change being applied: ops left and when it started.
    open: Option<(usize, Instant)>,
}

/// Percentiles of [`RepointTimes`], in microseconds (none before the first re-point).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepointSummary {
    pub count: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

impl RepointTimes {
    fn begin(&mut self, ops: usize) {
        self.open = (ops > 0).then(|| (ops, Instant::now()));
    }

    /// One op of the open change was applied (or failed: a failed change is timed too).
    fn applied(&mut self) {
        let Some((left, started)) = self.open.as_mut() else {
            return;
        };
        *left -= 1;
        if *left == 0 {
            let took = started.elapsed();
            self.open = None;
            debug!(us = took.as_micros() as u64, "re-point applied");
            self.record(took);
        }
    }

    fn record(&mut self, took: Duration) {
        if self.recent.len() == REPOINT_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(took);
        self.count += 1;
    }

    pub fn summary(&self) -> RepointSummary {
        let mut v: Vec<Duration> = self.recent.iter().copied().collect();
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() as f64 - 1.0) * q).round() as usize;
            v.get(i).map(|d| d.as_micros() as u64)
        };
        RepointSummary {
            count: self.count,
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: v.last().map(|d| d.as_micros() as u64),
        }
    }
}
/// Applies ops; holds the nft data plane's counters across table rewrites.
#[derive(Debug)]
pub struct Executor {
    control: MrouteControl,
    /// The MRT socket (a duplicate of the daemon's), for MRT_DONE.
    mrt: Option<Socket>,
    /// The libnftables context every nft transaction and listing goes through (a `RefCell`:
    /// the status reads counters through `&self`; the executor is used from one thread).
    nft: RefCell<NftSession>,
    /// VIP routes and rules.
    rtnl: Rtnl,
    /// The device announced routes go through, created at the first announcement and held
    /// for the life of the process (its routes go with it, SPEC.md §10.6).
    announce: Option<AnnounceDevice>,
    /// Map element updates, without libnftables' parser and cache (see [`super::nfnl`]).
    nfnl: Nfnl,
    /// Whether the kernel holds a native nft table this process wrote.
    netdev_written: bool,
    /// The counters of the native tables we replaced (a rewrite starts at zero).
    netdev_counted: KernelCounters,
    /// Whole-table rewrites of either nft table (the other changes move elements only).
    pub nft_rewrites: u64,
    /// Element updates sent straight over nfnetlink (the rest went through libnftables).
    pub nfnl_batches: u64,
    pub repoints: RepointTimes,
    /// Pin mode's tc program (`[vip_pin] dataplane = "bpf"`).
    pin: PinPlane,
}

impl Executor {
    /// With `announce`, the announce device is created now, so that a kernel without TUN
    /// stops the start with one clear line rather than failing each announcement later.
    pub fn new(
        control: MrouteControl,
        mrt: Option<Socket>,
        announce: bool,
        (pin, families): (VipPinSection, [bool; 2]),
    ) -> Result<Self, KernelError> {
        let mut exec = Executor {
            control,
            mrt,
            nft: RefCell::new(NftSession::new()?),
            rtnl: Rtnl::new()?,
            announce: None,
            nfnl: Nfnl::new().map_err(KernelError::Nfnl)?,
            netdev_written: false,
            netdev_counted: KernelCounters::default(),
            nft_rewrites: 0,
            nfnl_batches: 0,
            repoints: RepointTimes::default(),
            pin: PinPlane::new(pin, families),
        };
        if announce {
            exec.announce_device()?;
        }
        Ok(exec)
    }

    /// What carries pin mode's pinned flows, into the status: IPv4's ([`PinPlane::path`]);
    /// IPv6's "tc" when the program carries them (the core says "nft" otherwise).
    pub fn pin_status(&self, status: &mut crate::status::Status) {
        status.pin_dataplane = self.pin.path().into();
        if !status.pin_dataplane6.is_empty() && self.pin.carries6() {
            status.pin_dataplane6 = "tc".into();
        }
    }

    /// Applies `op`, logs a failure; returns whether it was applied (for the core).
    pub fn run(&mut self, op: &DataplaneOp) -> bool {
        if let DataplaneOp::Repoint { ops } = op {
            self.repoints.begin(*ops);
            return true;
        }
        let result = self.apply(op);
        self.repoints.applied();
        let Err(e) = result else {
            return true;
        };
        match op {
            DataplaneOp::MfcInstall(_) | DataplaneOp::MfcRemove(_) => {
                warn!(?op, error = %e, "MFC update failed")
            }
            DataplaneOp::NetdevTable(_) => {
                warn!(error = %e, "native nft data plane update failed; retried every second")
            }
            DataplaneOp::Vip(c) => {
                warn!(group = ?c.group, error = %e, "VIP steering update failed")
            }
            DataplaneOp::DeleteNetdevTable => warn!(error = %e, "removing the native nft table"),
            DataplaneOp::Netdev6Table(_) => {
                warn!(error = %e, "IPv6 native nft data plane update failed; retried next tick")
            }
            DataplaneOp::DeleteNetdev6Table => warn!(error = %e, "removing the IPv6 native table"),
            DataplaneOp::Vip6Table(_) => {
                warn!(error = %e, "IPv6 VIP steering update failed; retried next tick")
            }
            DataplaneOp::DeleteVip6Table => warn!(error = %e, "removing the IPv6 VIP table"),
            DataplaneOp::ControlTable(_) => {
                warn!(error = %e, "control group table update failed; rewritten next tick")
            }
            DataplaneOp::DeleteControlTable => warn!(error = %e, "removing the control table"),
            DataplaneOp::VipRemove { .. } => warn!(error = %e, "removing VIP steering"),
            DataplaneOp::Announce { vip, on: true, .. } => {
                warn!(%vip, error = %e, "announcing the VIP's route failed; retried")
            }
            DataplaneOp::Announce { vip, on: false, .. } => {
                warn!(%vip, error = %e, "withdrawing the VIP's route failed")
            }
            DataplaneOp::MfcProbe(_)
            | DataplaneOp::MfcRemoveLeftovers { .. }
            | DataplaneOp::DelVif(_)
            | DataplaneOp::MrtDone
            | DataplaneOp::Repoint { .. }
            | DataplaneOp::SetAllmulti { .. } => debug!(?op, error = %e, "kernel update failed"),
        }
        false
    }

    fn apply(&mut self, op: &DataplaneOp) -> Result<(), KernelError> {
        match op {
            DataplaneOp::MfcInstall(spec) => self.control.add_mfc(spec)?,
            DataplaneOp::MfcRemove(spec) => self.control.del_mfc(spec)?,
            // Read by [`Executor::probe`], which the daemon calls for these.
            DataplaneOp::MfcProbe(_) => {}
            DataplaneOp::MfcRemoveLeftovers { parents } => {
                for line in procfs::read_cache() {
                    let Some(parent) = line.parent.filter(|p| parents.contains(p)) else {
                        continue;
                    };
                    let _ = self.control.del_mfc(&MfcSpec {
                        source: line.source,
                        group: line.group,
                        parent,
                        oifs: VifSet::EMPTY,
                    });
                }
            }
            DataplaneOp::DelVif(vif) => self.control.del_vif(*vif)?,
            DataplaneOp::MrtDone => {
                if let Some(s) = &self.mrt {
                    mroute::mrt_done(s)?;
                }
            }
            DataplaneOp::NetdevTable(batch) if batch.rewrite => {
                // The rewrite resets the table's counters: keep what the one it replaces
                // counted (once it is replaced; a failed write leaves it, and them, in place).
                // Element updates leave the counters alone, so only a rewrite reads them.
                let replaced = self.current_netdev_counters();
                self.nft(batch)?;
                self.netdev_written = true;
                if let Some(c) = replaced {
                    self.netdev_counted.add(&c);
                }
            }
            DataplaneOp::NetdevTable(batch) => self.nft(batch)?,
            DataplaneOp::DeleteNetdevTable => {
                self.nft_text(&format!("delete table netdev {}", netdev::TABLE))?;
            }
            DataplaneOp::Netdev6Table(batch) => self.nft(batch)?,
            DataplaneOp::DeleteNetdev6Table => {
                self.nft_text(&format!("delete table netdev {}", netdev6::TABLE))?;
            }
            DataplaneOp::Vip6Table(write) => {
                self.nft_keeping_pins6(&write.batch)?;
                self.pin.apply6(write);
            }
            DataplaneOp::DeleteVip6Table => {
                self.pin.remove();
                self.nft_text(&format!("delete table netdev {}", vip6::TABLE))?;
            }
            DataplaneOp::ControlTable(batch) => self.nft(batch)?,
            DataplaneOp::DeleteControlTable => {
                self.nft_text(&format!("delete table netdev {}", control::TABLE))?;
            }
            DataplaneOp::SetAllmulti { ifname, on } => nft::set_allmulti(ifname, *on)?,
            DataplaneOp::Vip(change) => self.apply_vip(change)?,
            DataplaneOp::Repoint { .. } => {}
            DataplaneOp::Announce { vip, on, protocol } => {
                if *on {
                    let ifindex = self.announce_device()?;
                    self.rtnl.announce_replace(*vip, *protocol, ifindex)?;
                } else {
                    self.rtnl.announce_del(*vip, *protocol)?;
                }
            }
            DataplaneOp::VipRemove { routes, rules } => {
                self.pin.remove();
                // The fast path's table exists only when the verifier serves interfaces.
                let _ = self.nft_text(&format!("delete table netdev {}", vip_netdev::TABLE));
                let table = self.nft_text(&format!("delete table ip {}", vip::TABLE));
                for r in routes {
                    let _ = self.rtnl.route_del(r);
                }
                for r in rules {
                    let _ = self.rtnl.rule_del(r);
                }
                table?;
            }
        }
        Ok(())
    }

    /// The announce device's index, created and brought up first if need be.
    fn announce_device(&mut self) -> Result<u32, KernelError> {
        if let Some(d) = &self.announce {
            return Ok(d.ifindex);
        }
        let d = AnnounceDevice::create()?;
        self.rtnl.link_up(d.ifindex)?;
        let ifindex = d.ifindex;
        self.announce = Some(d);
        Ok(ifindex)
    }

    /// The packet counters of (group, source) MFC entries (SIOCGETSGCNT, one lookup each).
    pub fn probe(&self, keys: &[(Ipv4Addr, Ipv4Addr)]) -> Vec<Probed> {
        keys.iter()
            .map(|&(group, source)| Probed {
                group,
                source,
                packets: self.control.packets(source, group).map_err(|e| {
                    debug!(error = %e, %group, %source, "SIOCGETSGCNT");
                }),
            })
            .collect()
    }

    /// One transaction: element updates straight over nfnetlink when [`ElementBatch`] can say
    /// them, the rest through the persistent libnftables context (no process).
    fn nft(&mut self, batch: &NftBatch) -> Result<(), NftError> {
        if batch.text.is_empty() {
            return Ok(());
        }
        if let Some(elements) = ElementBatch::parse(&batch.text).filter(|_| !batch.rewrite) {
            match self.nfnl.apply(&elements) {
                Ok(true) => {
                    self.nfnl_batches += 1;
                    return Ok(());
                }
                // Too large for one datagram: libnftables splits it.
                Ok(false) => {}
                Err(e) => return Err(NftError(format!("nfnetlink: {e}"))),
            }
        }
        self.nft_text(&batch.text)?;
        self.nft_rewrites += u64::from(batch.rewrite);
        Ok(())
    }

    fn nft_text(&self, text: &str) -> Result<String, NftError> {
        self.nft.borrow_mut().run(text)
    }

    fn current_netdev_counters(&self) -> Option<KernelCounters> {
        self.netdev_written
            .then(|| self.nft_text(&format!("list table netdev {}", netdev::TABLE)))
            .and_then(Result::ok)
            .map(|listing| parse_counters(&listing))
    }

    /// Routes and rules first, then the map in one transaction, then what is stale (best
    /// effort).
    fn apply_vip(&mut self, c: &VipChange) -> Result<(), KernelError> {
        for r in &c.routes {
            self.rtnl.route_replace(r)?;
        }
        for r in &c.rules {
            self.rtnl.rule_add(r)?;
        }
        self.nft_keeping_pins(&c.ruleset)?;
        self.pin.apply(c);
        for r in &c.stale_routes {
            let _ = self.rtnl.route_del(r);
        }
        for r in &c.stale_rules {
            let _ = self.rtnl.rule_del(r);
        }
        Ok(())
    }

    /// A VIP change; one that rewrites the fast path's table keeps its flow tables (the pins)
    /// when the kernel holds a table this version wrote ([`vip_netdev::keep_flow_tables`],
    /// from a listing of chain names, which reads no element). Should that transaction fail,
    /// the table is rewritten whole, so that the steering is never held back by the pins.
    fn nft_keeping_pins(&mut self, batch: &NftBatch) -> Result<(), NftError> {
        if batch.rewrite && batch.text.contains(vip_netdev::REWRITE_HEAD) {
            let kept = self
                .nft_text("list chains netdev")
                .ok()
                .and_then(|chains| vip_netdev::keep_flow_tables(&batch.text, &chains));
            if let Some(text) = kept {
                match self.nft(&NftBatch::rewrite(text)) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        warn!(error = %e, "VIP table rewrite keeping its pins refused; rewritten whole")
                    }
                }
            }
        }
        self.nft(batch)
    }

    /// The IPv6 VIPs' table, keeping its flow tables: a batch that replaces the table whole
    /// (the planner does not know what the kernel holds) is made to keep those of a table it
    /// finds ([`vip6::keep_flow_tables`]); should that fail, the table is replaced whole.
    fn nft_keeping_pins6(&mut self, batch: &NftBatch) -> Result<(), NftError> {
        if batch.text.starts_with(vip6::REWRITE_HEAD) {
            let kept = self
                .nft_text("list chains netdev")
                .ok()
                .and_then(|chains| vip6::keep_flow_tables(&batch.text, &chains));
            if let Some(text) = kept {
                match self.nft(&NftBatch::rewrite(text)) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        warn!(error = %e, "IPv6 VIP table rewrite keeping its pins refused; rewritten whole")
                    }
                }
            }
        }
        self.nft(batch)
    }

    /// The nft data plane's counters: the tables we replaced plus the current one.
    pub fn native_counters(&self) -> KernelCounters {
        let mut c = self.netdev_counted.clone();
        if let Some(now) = self.current_netdev_counters() {
            c.add(&now);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repoint_is_timed_from_its_marker_to_its_last_op() {
        let mut t = RepointTimes::default();
        assert_eq!(t.summary(), RepointSummary::default());
        // Ops outside a marked change (upcalls, probes, shutdown) are not timed.
        t.applied();
        assert_eq!(t.count, 0);
        t.begin(2);
        t.applied();
        assert_eq!(t.count, 0, "one op of two applied");
        t.applied();
        assert_eq!(t.count, 1);
        t.begin(0);
        t.applied();
        assert_eq!(t.count, 1, "an empty change is not a re-point");
        // The summary is over the most recent REPOINT_WINDOW.
        for us in 1..=REPOINT_WINDOW as u64 + 10 {
            t.record(Duration::from_micros(us));
        }
        let s = t.summary();
        assert_eq!(s.count, REPOINT_WINDOW as u64 + 11);
        assert_eq!(s.max_us, Some(REPOINT_WINDOW as u64 + 10));
        assert_eq!(s.p50_us, Some(523), "the middle of 11..=1034");
        assert!(s
            .p99_us
            .is_some_and(|p| p > 1000 && p < REPOINT_WINDOW as u64 + 10));
    }
}
