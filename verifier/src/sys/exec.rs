//! The executor: applies the core's [`DataplaneOp`]s to the kernel (the mroute control socket,
//! `nft` and `ip`, procfs) and logs what the kernel refused. With `sys`'s other modules, the only
//! code that changes the kernel.

use super::mroute::{self, MrouteControl};
use super::{nft, procfs};
use crate::plan::mfc::Probed;
use crate::plan::netdev::{parse_counters, KernelCounters};
use crate::plan::{DataplaneOp, VipChange};
use crate::plan::{MfcSpec, VifSet};
use daemon_kit::CommandError;
use socket2::Socket;
use std::net::Ipv4Addr;
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
}

/// Applies ops; holds the nft data plane's counters across table rewrites.
#[derive(Debug)]
pub struct Executor {
    control: MrouteControl,
    /// The MRT socket (a duplicate of the daemon's), for MRT_DONE.
    mrt: Option<Socket>,
    /// Whether the kernel holds a native nft table this process wrote.
    netdev_written: bool,
    /// The counters of the native tables we replaced (a rewrite starts at zero).
    netdev_counted: KernelCounters,
}

impl Executor {
    pub fn new(control: MrouteControl, mrt: Option<Socket>) -> Self {
        Executor {
            control,
            mrt,
            netdev_written: false,
            netdev_counted: KernelCounters::default(),
        }
    }

    /// Applies `op`, logs a failure; returns whether it was applied (for the core).
    pub fn run(&mut self, op: &DataplaneOp) -> bool {
        let Err(e) = self.apply(op) else {
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
            DataplaneOp::VipRemove { .. } => warn!(error = %e, "removing VIP steering"),
            DataplaneOp::MfcProbe(_)
            | DataplaneOp::MfcRemoveLeftovers { .. }
            | DataplaneOp::DelVif(_)
            | DataplaneOp::MrtDone
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
            DataplaneOp::NetdevTable(text) => {
                // The rewrite resets the table's counters: keep what the one it replaces
                // counted (once it is replaced; a failed write leaves it, and them, in place).
                let replaced = self.current_netdev_counters();
                nft::apply(text)?;
                self.netdev_written = true;
                if let Some(c) = replaced {
                    self.netdev_counted.add(&c);
                }
            }
            DataplaneOp::DeleteNetdevTable => nft::delete_netdev_table()?,
            DataplaneOp::SetAllmulti { ifname, on } => nft::set_allmulti(ifname, *on)?,
            DataplaneOp::Vip(change) => apply_vip(change)?,
            DataplaneOp::VipRemove { routes, rules } => {
                let table = nft::delete_table();
                for r in routes {
                    let _ = nft::route_del(r);
                }
                for r in rules {
                    let _ = nft::rule_del(r);
                }
                table?;
            }
        }
        Ok(())
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

    fn current_netdev_counters(&self) -> Option<KernelCounters> {
        self.netdev_written
            .then(nft::list_netdev_table)
            .and_then(Result::ok)
            .map(|listing| parse_counters(&listing))
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

/// Routes and rules first, then the map in one transaction, then what is stale (best effort).
fn apply_vip(c: &VipChange) -> Result<(), KernelError> {
    for r in &c.routes {
        nft::route_replace(r)?;
    }
    for r in &c.rules {
        nft::rule_add(r)?;
    }
    nft::apply(&c.ruleset)?;
    for r in &c.stale_routes {
        let _ = nft::route_del(r);
    }
    for r in &c.stale_rules {
        let _ = nft::rule_del(r);
    }
    Ok(())
}
