//! VIP pin mode's tc ingress program (`bpf/vip_pin.bpf.c`, SPEC.md §10.3, §10.3.1): loads it
//! with aya, attaches it to the verifier's interfaces and keeps its maps in step with the
//! planners' fast paths ([`FastVip`], [`FastVip6`]: the pinned VIPs, their slice values and
//! their members' hops; each family in maps of its own). The flow tables are the program's
//! own: the verifier never writes them. Maps are pinned by name under the
//! pin directory and the filters are attached through netlink (not a bpf link), so both
//! outlive the process: a restarted verifier finds the pins, and until it writes, the filter
//! the one before attached keeps forwarding them.

use crate::config::{PinDataplane, VipPinSection};
use crate::plan::vip6::{FastVip6, Vip6Write};
use crate::plan::vip_netdev::FastVip;
use crate::plan::VipChange;
use aya::maps::{HashMap as BpfHash, Map, MapData};
use aya::programs::tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
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
/// IPv6's, apart so that an IPv4-only deployment's maps keep their layout.
pub const VIPS6: &str = "mc_vips6";
pub const SLICES6: &str = "mc_slices6";
pub const HOPS6: &str = "mc_hops6";
pub const FLOWS6: &str = "mc_flows6";
const MAPS: [&str; 8] = [VIPS, SLICES, HOPS, FLOWS, VIPS6, SLICES6, HOPS6, FLOWS6];

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

/// An IPv6 address as four such fields.
fn wire6(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    core::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// What the maps hold (besides the flows): VIP → mask, (VIP, masked source) → member,
/// member → its hop as the map stores it (interface index, next hop, the packet counter
/// zeroed: written as zero, read as zero); IPv4's and IPv6's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Content {
    vips: BTreeMap<u32, u32>,
    slices: BTreeMap<[u32; 2], u32>,
    /// ifindex, next hop, packets (two halves).
    hops: BTreeMap<u32, [u32; 4]>,
    vips6: BTreeMap<[u32; 4], [u32; 4]>,
    slices6: BTreeMap<[u32; 8], u32>,
    /// ifindex, padding, next hop (four), packets (two halves).
    hops6: BTreeMap<u32, [u32; 8]>,
}

impl Content {
    #[cfg(test)]
    fn of(vips: &[FastVip], ifindex: &dyn Fn(&str) -> Option<u32>) -> Content {
        let mut c = Content::default();
        c.set4(vips, ifindex);
        c
    }

    fn set4(&mut self, vips: &[FastVip], ifindex: &dyn Fn(&str) -> Option<u32>) {
        let c = self;
        (c.vips, c.slices, c.hops) = Default::default();
        for v in vips.iter().filter(|v| v.pin) {
            let vip = wire(v.address);
            c.vips.insert(vip, wire(Ipv4Addr::from(v.mask)));
            for &(value, member) in &v.elements {
                c.slices.insert([vip, wire(Ipv4Addr::from(value))], member);
            }
            for (&m, h) in &v.hops {
                if let Some(i) = ifindex(&h.device) {
                    c.hops.insert(m, [i, wire(h.via), 0, 0]);
                }
            }
        }
    }

    /// The IPv6 half from the pinned IPv6 VIPs.
    fn set6(&mut self, vips: &[FastVip6], ifindex: &dyn Fn(&str) -> Option<u32>) {
        let c = self;
        (c.vips6, c.slices6, c.hops6) = Default::default();
        for v in vips {
            let vip = wire6(v.address);
            c.vips6.insert(vip, wire6(Ipv6Addr::from(v.mask)));
            for &(value, member) in &v.elements {
                let mut key = [0; 8];
                key[..4].copy_from_slice(&vip);
                key[4..].copy_from_slice(&wire6(Ipv6Addr::from(value)));
                c.slices6.insert(key, member);
            }
            for (&m, h) in &v.hops {
                if let Some(i) = ifindex(&h.device) {
                    let mut hop = [0; 8];
                    hop[0] = i;
                    hop[2..6].copy_from_slice(&wire6(h.via));
                    c.hops6.insert(m, hop);
                }
            }
        }
    }
}

/// The pinned VIPs of each family the maps are to hold; `None`: not known yet (the maps keep
/// what they hold of that family, so a restarted verifier's first IPv6 write does not clear
/// the IPv4 pins before its first IPv4 write, and the other way round).
#[derive(Debug, Clone, Default)]
pub struct Wanted<'a> {
    pub v4: Option<&'a [FastVip]>,
    pub v6: Option<&'a [FastVip6]>,
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
    /// maps to the pinned VIPs wanted: added entries before removed ones' dependents go, so a
    /// packet never finds a slice whose hop is missing for longer than the update.
    pub fn apply(&mut self, devices: &[String], vips: Wanted) -> Result<(), BpfError> {
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
        let have = match self.written.take() {
            Some(c) => c,
            None => self.read()?,
        };
        let ifindex = |d: &str| nix::net::if_::if_nametoindex(d).ok();
        let mut want = have.clone();
        if let Some(v4) = vips.v4 {
            want.set4(v4, &ifindex);
        }
        if let Some(v6) = vips.v6 {
            want.set6(v6, &ifindex);
        }
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

    /// What the maps hold now (those of an earlier verifier, or empty), hop counters zeroed.
    fn read(&mut self) -> Result<Content, BpfError> {
        Ok(Content {
            vips: self.entries(VIPS)?,
            slices: self.entries(SLICES)?,
            hops: self.hop_entries(HOPS)?,
            vips6: self.entries(VIPS6)?,
            slices6: self.entries(SLICES6)?,
            hops6: self.hop_entries(HOPS6)?,
        })
    }

    /// A hop map's entries with their packet counters (a hop's last two u32 words) zeroed.
    fn hop_entries<const N: usize>(
        &mut self,
        name: &str,
    ) -> Result<BTreeMap<u32, [u32; N]>, BpfError>
    where
        [u32; N]: aya::Pod,
    {
        let mut hops: BTreeMap<u32, [u32; N]> = self.entries(name)?;
        for h in hops.values_mut() {
            h[N - 2..].fill(0);
        }
        Ok(hops)
    }

    fn entries<K: aya::Pod + Ord, V: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<BTreeMap<K, V>, BpfError> {
        let m: BpfHash<_, K, V> = BpfHash::try_from(self.map(name)?).map_err(err(name))?;
        Ok(m.iter().filter_map(Result::ok).collect())
    }

    /// Writes the entries of `want` that `have` lacks or holds otherwise.
    fn put<K: aya::Pod + Ord, V: aya::Pod + PartialEq>(
        &mut self,
        name: &str,
        have: &BTreeMap<K, V>,
        want: &BTreeMap<K, V>,
    ) -> Result<(), BpfError> {
        let mut m: BpfHash<_, K, V> = BpfHash::try_from(self.map(name)?).map_err(err(name))?;
        for (k, v) in want.iter().filter(|(k, v)| have.get(k) != Some(v)) {
            m.insert(k, v, 0).map_err(err(name))?;
        }
        Ok(())
    }

    /// Removes the entries of `have` that `want` lacks.
    fn prune<K: aya::Pod + Ord, V: aya::Pod>(
        &mut self,
        name: &str,
        have: &BTreeMap<K, V>,
        want: &BTreeMap<K, V>,
    ) -> Result<(), BpfError> {
        let mut m: BpfHash<_, K, V> = BpfHash::try_from(self.map(name)?).map_err(err(name))?;
        for k in have.keys().filter(|k| !want.contains_key(k)) {
            let _ = m.remove(k);
        }
        Ok(())
    }

    /// Hops first, then slices, then VIPs; removals in the opposite order.
    fn sync(&mut self, have: &Content, want: &Content) -> Result<(), BpfError> {
        self.put(HOPS, &have.hops, &want.hops)?;
        self.put(HOPS6, &have.hops6, &want.hops6)?;
        self.put(SLICES, &have.slices, &want.slices)?;
        self.put(SLICES6, &have.slices6, &want.slices6)?;
        self.put(VIPS, &have.vips, &want.vips)?;
        self.put(VIPS6, &have.vips6, &want.vips6)?;
        self.prune(VIPS, &have.vips, &want.vips)?;
        self.prune(VIPS6, &have.vips6, &want.vips6)?;
        self.prune(SLICES, &have.slices, &want.slices)?;
        self.prune(SLICES6, &have.slices6, &want.slices6)?;
        self.prune(HOPS, &have.hops, &want.hops)?;
        self.prune(HOPS6, &have.hops6, &want.hops6)?;
        debug!(
            vips = want.vips.len(),
            slices = want.slices.len(),
            hops = want.hops.len(),
            vips6 = want.vips6.len(),
            slices6 = want.slices6.len(),
            hops6 = want.hops6.len(),
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
    let map = if path.ends_with(FLOWS) || path.ends_with(FLOWS6) {
        Map::LruHashMap(data)
    } else {
        Map::HashMap(data)
    };
    let m: BpfHash<_, K, V> = BpfHash::try_from(&map).map_err(err("the pinned map"))?;
    Ok(m.iter().filter_map(Result::ok).collect())
}

/// The executor's side of the switch `[vip_pin] dataplane`: loads the program at the first VIP
/// change (of either family) with a pinned VIP on served interfaces, falls back to nftables
/// (one warning) where it cannot, and with `nft` chosen removes what an earlier verifier's
/// program left.
#[derive(Debug)]
pub struct PinPlane {
    cfg: VipPinSection,
    prog: Option<PinProgram>,
    /// The program could not be loaded or written: pin mode stays on nftables.
    failed: bool,
    /// With `nft`: an earlier verifier's filters and pins were removed.
    cleared: bool,
    /// Each family's last change: the interfaces and its VIPs' fast paths (none: no change of
    /// that family yet, see [`Wanted`]).
    v4: Option<(Vec<String>, Vec<FastVip>)>,
    v6: Option<(Vec<String>, Vec<FastVip6>)>,
}

impl PinPlane {
    /// `families`: whether IPv4 and IPv6 VIPs are configured (a family without any has no
    /// change to wait for: its entries an earlier verifier left go at the first write).
    pub fn new(cfg: VipPinSection, families: [bool; 2]) -> PinPlane {
        PinPlane {
            cfg,
            prog: None,
            failed: false,
            cleared: false,
            v4: (!families[0]).then(Default::default),
            v6: (!families[1]).then(Default::default),
        }
    }

    /// Whether the tc program carries the pinned flows.
    pub fn active(&self) -> bool {
        self.prog.is_some()
    }

    fn pinned4(&self) -> bool {
        self.v4
            .as_ref()
            .is_some_and(|(d, f)| !d.is_empty() && f.iter().any(|v| v.pin))
    }

    fn pinned6(&self) -> bool {
        self.v6
            .as_ref()
            .is_some_and(|(d, f)| !d.is_empty() && !f.is_empty())
    }

    /// What carries pin mode's pinned IPv4 flows, for status: "tc" (the program), "nft"
    /// (configured so, or fallen back to after a failure), or "" before any pinned VIP was
    /// planned.
    pub fn path(&self) -> &'static str {
        if self.prog.is_some() && self.pinned4() {
            "tc"
        } else if self.failed || self.cfg.dataplane == PinDataplane::Nft {
            "nft"
        } else {
            ""
        }
    }

    /// Whether the program carries pinned IPv6 flows.
    pub fn carries6(&self) -> bool {
        self.prog.is_some() && self.pinned6()
    }

    /// Brings the program in step with an IPv4 VIP change (after its nft batch was applied, so
    /// that what the program passes on meets the new table).
    pub fn apply(&mut self, change: &VipChange) {
        self.v4 = Some((change.devices.clone(), change.fast.clone()));
        self.sync();
    }

    /// The same for a write of the IPv6 VIPs' table.
    pub fn apply6(&mut self, write: &Vip6Write) {
        self.v6 = Some((write.devices.clone(), write.fast.clone()));
        self.sync();
    }

    fn sync(&mut self) {
        let v4 = self.v4.iter().flat_map(|(d, _)| d);
        let v6 = self.v6.iter().flat_map(|(d, _)| d);
        let mut devices: Vec<String> = v4.chain(v6).cloned().collect();
        devices.sort();
        devices.dedup();
        if self.cfg.dataplane == PinDataplane::Nft {
            if !self.cleared && !devices.is_empty() {
                self.cleared = true;
                for d in &devices {
                    detach(d);
                }
                remove_pins(&self.cfg.pin_dir());
            }
            return;
        }
        let pinned = self.pinned4() || self.pinned6();
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
        let wanted = Wanted {
            v4: self.v4.as_ref().map(|(_, f)| f.as_slice()),
            v6: self.v6.as_ref().map(|(_, f)| f.as_slice()),
        };
        if let Err(e) = p.apply(&devices, wanted) {
            warn!(error = %e, "VIP pin mode runs on nftables: the tc program's maps could not be written");
            self.failed = true;
            if let Some(p) = self.prog.take() {
                p.remove();
            }
        }
    }

    /// The VIPs are withdrawn (a shutdown that keeps no kernel state): the program and its pins
    /// go, both families'.
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
        assert_eq!(c.hops, BTreeMap::from([(1, [7, be([10, 0, 1, 2]), 0, 0])]));
    }

    /// The IPv6 maps: every address as four fields in the packet's byte order (what the
    /// program compares with the header's words), the slice key VIP then masked source, the hop
    /// with its padding and zero counter; the IPv4 half is left as it was.
    #[test]
    fn the_ipv6_maps_hold_pinned_vips_in_packet_byte_order() {
        let vip: Ipv6Addr = "2001:db8:ffff::80".parse().unwrap();
        let via: Ipv6Addr = "fe80::1".parse().unwrap();
        let hop = |m: u32, dev: &str| crate::plan::netdev6::Hop6 {
            member: m,
            via,
            device: dev.into(),
        };
        let fast = FastVip6 {
            address: vip,
            mask: 0x300 << 64,
            elements: vec![(0, 1), (0x100 << 64, 2)],
            hops: [(1, hop(1, "s1")), (2, hop(2, "gone"))].into(),
        };
        let mut c = Content::default();
        c.vips.insert(1, 2);
        c.set6(&[fast], &|d| (d == "s1").then_some(7));
        assert_eq!(c.vips, BTreeMap::from([(1, 2)]), "IPv4's untouched");
        let words = |a: Ipv6Addr| -> [u32; 4] {
            let o = a.octets();
            core::array::from_fn(|i| u32::from_ne_bytes(o[4 * i..4 * i + 4].try_into().unwrap()))
        };
        let mask: Ipv6Addr = "0:0:0:300::".parse().unwrap();
        assert_eq!(c.vips6, BTreeMap::from([(words(vip), words(mask))]));
        let key = |value: &str| {
            let mut k = [0; 8];
            k[..4].copy_from_slice(&words(vip));
            k[4..].copy_from_slice(&words(value.parse().unwrap()));
            k
        };
        assert_eq!(
            c.slices6,
            BTreeMap::from([(key("::"), 1), (key("0:0:0:100::"), 2)])
        );
        let v = words(via);
        assert_eq!(
            c.hops6,
            BTreeMap::from([(1, [7, 0, v[0], v[1], v[2], v[3], 0, 0])])
        );
    }
}
