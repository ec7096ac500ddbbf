//! VIP pin mode's tc ingress program (`bpf/vip_pin.bpf.c`, SPEC.md §10.3): loads it with aya,
//! attaches it to the verifier's interfaces and keeps its maps in step with the planner's fast
//! path ([`FastVip`]: the pinned VIPs, their slice values and their members' hops). The flow
//! table is the program's own: the verifier never writes it. Maps are pinned by name under the
//! pin directory and the filters are attached through netlink (not a bpf link), so both
//! outlive the process: a restarted verifier finds the pins, and until it writes, the filter
//! the one before attached keeps forwarding them.

use crate::config::{PinDataplane, VipPinSection};
use crate::plan::vip_netdev::FastVip;
use crate::plan::VipChange;
use aya::maps::{HashMap as BpfHash, Map, MapData};
use aya::programs::tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use tracing::{debug, info, warn};

/// The program, compiled by `build.rs` (empty when clang was missing at build time).
/// (ELF parsing wants it 32-byte aligned, hence aya's macro.)
const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vip_pin.o"));

/// The tc filter's priority and handle on each interface's ingress.
pub const PRIORITY: u16 = 0x4d43;
pub const HANDLE: u32 = 0x4d43;

/// The program's maps, by the names they are pinned under.
pub const VIPS: &str = "mc_vips";
pub const SLICES: &str = "mc_slices";
pub const HOPS: &str = "mc_hops";
pub const FLOWS: &str = "mc_flows";
const MAPS: [&str; 4] = [VIPS, SLICES, HOPS, FLOWS];

/// Why the program is not running (the verifier then pins on nftables).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BpfError(String);

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> BpfError + '_ {
    move |e| BpfError(format!("{what}: {e}"))
}

/// A 32-bit field in the packet's byte order, as the program compares it.
fn wire(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// What the maps hold (besides the flows): VIP → mask, (VIP, masked source) → member,
/// member → (ifindex, next hop).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Content {
    vips: BTreeMap<u32, u32>,
    slices: BTreeMap<[u32; 2], u32>,
    hops: BTreeMap<u32, [u32; 2]>,
}

impl Content {
    fn of(vips: &[FastVip], ifindex: &dyn Fn(&str) -> Option<u32>) -> Content {
        let mut c = Content::default();
        for v in vips.iter().filter(|v| v.pin) {
            let vip = wire(v.address);
            c.vips.insert(vip, wire(Ipv4Addr::from(v.mask)));
            for &(value, member) in &v.elements {
                c.slices.insert([vip, wire(Ipv4Addr::from(value))], member);
            }
            for (&m, h) in &v.hops {
                if let Some(i) = ifindex(&h.device) {
                    c.hops.insert(m, [i, wire(h.via)]);
                }
            }
        }
        c
    }
}

/// The loaded program and what its maps were last given.
pub struct PinProgram {
    ebpf: Ebpf,
    dir: PathBuf,
    attached: BTreeSet<String>,
    written: Option<Content>,
}

impl std::fmt::Debug for PinProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinProgram")
            .field("dir", &self.dir)
            .field("attached", &self.attached)
            .field("written", &self.written)
            .finish()
    }
}

impl PinProgram {
    /// Loads the program, its maps pinned in `dir` (maps already pinned there, by an earlier
    /// verifier, are reused with what they hold). `dir` must be on a bpf filesystem.
    pub fn load(dir: &Path) -> Result<PinProgram, BpfError> {
        if OBJECT.is_empty() {
            return Err(BpfError(
                "this build has no tc program (clang was missing when it was built)".into(),
            ));
        }
        std::fs::create_dir_all(dir).map_err(err("creating the pin directory"))?;
        let mut ebpf = EbpfLoader::new()
            .map_pin_path(dir)
            .load(OBJECT)
            .map_err(err("loading the tc program"))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut("vip_pin")
            .ok_or_else(|| BpfError("the object has no vip_pin program".into()))?
            .try_into()
            .map_err(err("vip_pin"))?;
        prog.load()
            .map_err(err("the kernel refused the tc program"))?;
        Ok(PinProgram {
            ebpf,
            dir: dir.to_owned(),
            attached: BTreeSet::new(),
            written: None,
        })
    }

    /// Attaches to `devices` (replacing a filter an earlier verifier left) and brings the
    /// maps to `vips`' pinned VIPs: added entries before removed ones' dependents go, so a
    /// packet never finds a slice whose hop is missing for longer than the update.
    pub fn apply(&mut self, devices: &[String], vips: &[FastVip]) -> Result<(), BpfError> {
        for d in devices {
            if !self.attached.contains(d) {
                self.attach(d)?;
                self.attached.insert(d.clone());
            }
        }
        let gone: Vec<String> = self
            .attached
            .iter()
            .filter(|d| !devices.contains(d))
            .cloned()
            .collect();
        for d in gone {
            detach(&d);
            self.attached.remove(&d);
        }
        let want = Content::of(vips, &|d| nix::net::if_::if_nametoindex(d).ok());
        let have = match self.written.take() {
            Some(c) => c,
            None => self.read()?,
        };
        self.sync(&have, &want)?;
        self.written = Some(want);
        Ok(())
    }

    fn attach(&mut self, device: &str) -> Result<(), BpfError> {
        // An existing clsact qdisc is fine.
        let _ = tc::qdisc_add_clsact(device);
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut("vip_pin")
            .ok_or_else(|| BpfError("vip_pin".into()))?
            .try_into()
            .map_err(err("vip_pin"))?;
        let existing =
            SchedClassifierLink::attached(device, TcAttachType::Ingress, PRIORITY, HANDLE)
                .map_err(err(device))?;
        // Replace in place (one netlink request: no packet misses the program); a fresh
        // interface has no filter to replace.
        let id = match prog.attach_to_link(existing) {
            Ok(id) => id,
            Err(_) => prog
                .attach_with_options(
                    device,
                    TcAttachType::Ingress,
                    TcAttachOptions::Netlink(NlOptions {
                        priority: PRIORITY,
                        handle: HANDLE,
                    }),
                )
                .map_err(err(device))?,
        };
        // A netlink filter stays in the kernel without a file descriptor; the link object would
        // detach it when dropped, so it is forgotten: the filter outlives the process, and
        // [`detach`] names it to remove it.
        let link = prog.take_link(id).map_err(err(device))?;
        std::mem::forget(link);
        info!(%device, "VIP pin tc program attached");
        Ok(())
    }

    fn map(&mut self, name: &str) -> Result<&mut Map, BpfError> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| BpfError(format!("the object has no map {name}")))
    }

    /// What the maps hold now (those of an earlier verifier, or empty).
    fn read(&mut self) -> Result<Content, BpfError> {
        let mut c = Content::default();
        let m: BpfHash<_, u32, u32> = BpfHash::try_from(self.map(VIPS)?).map_err(err(VIPS))?;
        c.vips = m.iter().filter_map(Result::ok).collect();
        let m: BpfHash<_, [u32; 2], u32> =
            BpfHash::try_from(self.map(SLICES)?).map_err(err(SLICES))?;
        c.slices = m.iter().filter_map(Result::ok).collect();
        let m: BpfHash<_, u32, [u32; 4]> = BpfHash::try_from(self.map(HOPS)?).map_err(err(HOPS))?;
        c.hops = m
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, [v[0], v[1]]))
            .collect();
        Ok(c)
    }

    fn sync(&mut self, have: &Content, want: &Content) -> Result<(), BpfError> {
        {
            let mut hops: BpfHash<_, u32, [u32; 4]> =
                BpfHash::try_from(self.map(HOPS)?).map_err(err(HOPS))?;
            for (k, v) in &want.hops {
                if have.hops.get(k) != Some(v) {
                    hops.insert(k, [v[0], v[1], 0, 0], 0).map_err(err(HOPS))?;
                }
            }
        }
        {
            let mut slices: BpfHash<_, [u32; 2], u32> =
                BpfHash::try_from(self.map(SLICES)?).map_err(err(SLICES))?;
            for (k, v) in &want.slices {
                if have.slices.get(k) != Some(v) {
                    slices.insert(k, v, 0).map_err(err(SLICES))?;
                }
            }
        }
        let mut vips: BpfHash<_, u32, u32> =
            BpfHash::try_from(self.map(VIPS)?).map_err(err(VIPS))?;
        for (k, v) in &want.vips {
            if have.vips.get(k) != Some(v) {
                vips.insert(k, v, 0).map_err(err(VIPS))?;
            }
        }
        for k in have.vips.keys().filter(|k| !want.vips.contains_key(k)) {
            let _ = vips.remove(k);
        }
        let mut slices: BpfHash<_, [u32; 2], u32> =
            BpfHash::try_from(self.map(SLICES)?).map_err(err(SLICES))?;
        for k in have.slices.keys().filter(|k| !want.slices.contains_key(*k)) {
            let _ = slices.remove(k);
        }
        let mut hops: BpfHash<_, u32, [u32; 4]> =
            BpfHash::try_from(self.map(HOPS)?).map_err(err(HOPS))?;
        for k in have.hops.keys().filter(|k| !want.hops.contains_key(k)) {
            let _ = hops.remove(k);
        }
        debug!(
            vips = want.vips.len(),
            slices = want.slices.len(),
            hops = want.hops.len(),
            "VIP pin maps written"
        );
        Ok(())
    }

    /// Detaches the program from every interface and unpins its maps (the pins are gone).
    pub fn remove(self) {
        for d in &self.attached {
            detach(d);
        }
        remove_pins(&self.dir);
    }
}

/// Removes the filter this program attaches on `device`'s ingress (a link named by priority
/// and handle detaches when dropped).
pub fn detach(device: &str) {
    if let Ok(link) = SchedClassifierLink::attached(device, TcAttachType::Ingress, PRIORITY, HANDLE)
    {
        drop(link);
    }
}

/// Unpins the program's maps in `dir` and removes `dir` if that left it empty.
pub fn remove_pins(dir: &Path) {
    for m in MAPS {
        let _ = std::fs::remove_file(dir.join(m));
    }
    let _ = std::fs::remove_dir(dir);
}

/// A pinned map's entries, read from its pin (the tests' and the status's view).
pub fn pinned_entries<K: aya::Pod + Ord, V: aya::Pod>(
    path: &Path,
) -> Result<BTreeMap<K, V>, BpfError> {
    let data = MapData::from_pin(path).map_err(err("opening the pinned map"))?;
    let map = if path.ends_with(FLOWS) {
        Map::LruHashMap(data)
    } else {
        Map::HashMap(data)
    };
    let m: BpfHash<_, K, V> = BpfHash::try_from(&map).map_err(err("the pinned map"))?;
    Ok(m.iter().filter_map(Result::ok).collect())
}

/// The executor's side of the switch `[vip_pin] dataplane`: loads the program at the first VIP
/// change with a pinned VIP on served interfaces, falls back to nftables (one warning) where it
/// cannot, and with `nft` chosen removes what an earlier verifier's program left.
#[derive(Debug)]
pub struct PinPlane {
    cfg: VipPinSection,
    prog: Option<PinProgram>,
    /// The program could not be loaded or written: pin mode stays on nftables.
    failed: bool,
    /// With `nft`: an earlier verifier's filters and pins were removed.
    cleared: bool,
}

impl PinPlane {
    pub fn new(cfg: VipPinSection) -> PinPlane {
        PinPlane {
            cfg,
            prog: None,
            failed: false,
            cleared: false,
        }
    }

    /// Whether the tc program carries the pinned flows.
    pub fn active(&self) -> bool {
        self.prog.is_some()
    }

    /// What carries pinned flows, for status: "tc" (the program), "nft" (configured so, or
    /// fallen back to after a failure), or "" before any pinned VIP was planned.
    pub fn path(&self) -> &'static str {
        if self.prog.is_some() {
            "tc"
        } else if self.failed || self.cfg.dataplane == PinDataplane::Nft {
            "nft"
        } else {
            ""
        }
    }

    /// Brings the program in step with a VIP change (after its nft batch was applied, so that
    /// what the program passes on meets the new table).
    pub fn apply(&mut self, change: &VipChange) {
        let pinned = change.fast.iter().any(|v| v.pin) && !change.devices.is_empty();
        if self.cfg.dataplane == PinDataplane::Nft {
            if !self.cleared && !change.devices.is_empty() {
                self.cleared = true;
                for d in &change.devices {
                    detach(d);
                }
                remove_pins(&self.cfg.pin_dir());
            }
            return;
        }
        if self.failed || (self.prog.is_none() && !pinned) {
            return;
        }
        if self.prog.is_none() {
            match PinProgram::load(&self.cfg.pin_dir()) {
                Ok(p) => self.prog = Some(p),
                Err(e) => {
                    warn!(error = %e, "VIP pin mode runs on nftables: the tc program could not be loaded");
                    self.failed = true;
                    return;
                }
            }
        }
        let Some(p) = self.prog.as_mut() else {
            return;
        };
        if let Err(e) = p.apply(&change.devices, &change.fast) {
            warn!(error = %e, "VIP pin mode runs on nftables: the tc program's maps could not be written");
            self.failed = true;
            if let Some(p) = self.prog.take() {
                p.remove();
            }
        }
    }

    /// The VIPs are withdrawn (a shutdown that keeps no kernel state): the program and its pins go.
    pub fn remove(&mut self) {
        if let Some(p) = self.prog.take() {
            p.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::netdev::Hop;

    /// The maps get the pinned VIPs only, every field in the packet's byte order (what the
    /// program compares with the header's bytes), and no hop for a member whose interface the
    /// kernel does not know.
    #[test]
    fn the_maps_hold_pinned_vips_in_packet_byte_order() {
        let hop = |m: u32, dev: &str| Hop {
            member: m,
            via: Ipv4Addr::new(10, 0, m as u8, 2),
            device: dev.into(),
        };
        let vip = |last: u8, pin: bool| FastVip {
            address: Ipv4Addr::new(10, 200, 0, last),
            pin,
            mask: 1,
            elements: vec![(0, 1), (1, 2)],
            hops: [(1, hop(1, "s1")), (2, hop(2, "gone"))].into(),
        };
        let c = Content::of(&[vip(1, true), vip(2, false)], &|d| {
            (d == "s1").then_some(7)
        });
        let be = |a: [u8; 4]| u32::from_ne_bytes(a);
        assert_eq!(
            c.vips,
            BTreeMap::from([(be([10, 200, 0, 1]), be([0, 0, 0, 1]))])
        );
        assert_eq!(
            c.slices,
            BTreeMap::from([
                ([be([10, 200, 0, 1]), be([0, 0, 0, 0])], 1),
                ([be([10, 200, 0, 1]), be([0, 0, 0, 1])], 2),
            ])
        );
        assert_eq!(c.hops, BTreeMap::from([(1, [7, be([10, 0, 1, 2])])]));
    }
}
