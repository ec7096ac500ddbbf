//! What the verifier's fuzz targets share: the router they drive (one members' link, one
//! clients' link) and how an input is cut into datagrams.
use igmp_ext::fixtures::NOW;
use igmp_ext::verify::LinkTable;
use igmp_ext::{Slice, Slice6, VerifierConfig};
use manycast_verifier::admission::AdmissionConfig;
use manycast_verifier::core::{KernelSetup, NativeDataplane, Request, Router, RouterConfig};
use manycast_verifier::plan::{GapPolicy, Interface};
use manycast_verifier::querier::QuerierConfig;
use std::net::Ipv4Addr;
use std::time::Duration;

pub const MEMBERS: u32 = 1;
pub const CLIENTS: u32 = 2;

/// A router on `dataplane` protecting `protected6`, with `prepare` run before it starts.
pub fn router(
    dataplane: NativeDataplane,
    protected6: Vec<Slice6>,
    prepare: impl FnOnce(&mut Router),
) -> Router {
    let config = RouterConfig {
        verifier: VerifierConfig::default(),
        querier: QuerierConfig::default(),
        admission: AdmissionConfig {
            verify_per_second: 1_000,
            backlog: 64,
            ..AdmissionConfig::default()
        },
        gap: GapPolicy::Drop,
        route_plain_groups: true,
        idle_timeout: Duration::from_secs(60),
        adopt_grace: Duration::from_secs(3),
        keep_kernel_state: false,
        vips: Vec::new(),
        vips6: Vec::new(),
        liveness: Default::default(),
        announce: Default::default(),
        control_groups: Vec::new(),
        protected6,
    };
    let mut links = LinkTable::new();
    links.add(MEMBERS, Slice::prefix(Ipv4Addr::new(10, 0, 0, 0), 24));
    links.add(CLIENTS, Slice::prefix(Ipv4Addr::new(10, 1, 0, 0), 24));
    let iface = |name: &str, ifindex, addr, vif| Interface {
        name: name.into(),
        ifindex,
        addr,
        vif,
    };
    let setup = KernelSetup {
        dataplane,
        interfaces: vec![
            iface("s1", MEMBERS, Ipv4Addr::new(10, 0, 0, 200), 0),
            iface("c0", CLIENTS, Ipv4Addr::new(10, 1, 0, 1), 1),
        ],
        links,
        adopted_vifs: Vec::new(),
        mfc_entries: Vec::new(),
        netdev_table_left: false,
        control_table_left: false,
        netdev6_table_left: false,
        vip6_table_left: false,
        vip_table_left: false,
        allmulti: Vec::new(),
    };
    let mut r = Router::new(NOW, config, setup);
    prepare(&mut r);
    r.handle_request(NOW, Request::Start);
    r
}

/// Big-endian u16 lengths, each followed by its datagram; bytes that do not make a whole
/// length-prefixed datagram are one last datagram.
pub fn datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = data
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        match len {
            Some(len) if data.len() >= 2 + len => {
                out.push(&data[2..2 + len]);
                data = &data[2 + len..];
            }
            _ => {
                out.push(data);
                break;
            }
        }
    }
    out
}
