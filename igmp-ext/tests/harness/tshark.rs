//! Decoding datagrams with tshark (Wireshark's dissectors), to check our bytes against a parser
//! we did not write. Reusable: give it any IPv4 datagrams, read back every field tshark decoded,
//! the IGMPv3 group records it saw, and whether it found anything malformed or wrong.

use super::{cmd, pcap};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

/// Wireshark's expert severities (epan/proto.h, PI_SEVERITY_MASK values).
pub const SEVERITY_WARN: u32 = 0x0060_0000;
pub const SEVERITY_ERROR: u32 = 0x0080_0000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expert {
    pub severity: u32,
    pub group: u32,
    pub message: String,
}

/// One IGMPv3 group record as tshark decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsharkRecord {
    pub record_type: u8,
    pub aux_data_len: u8,
    pub num_src: usize,
    pub maddr: Ipv4Addr,
    pub sources: Vec<Ipv4Addr>,
}

/// One packet as tshark decoded it.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// `_source.layers` of `tshark -T json`, for questions the helpers below do not answer.
    pub layers: Value,
    /// Every field (`igmp.type`, `ip.ttl`, …) with all its occurrences in document order.
    pub fields: BTreeMap<String, Vec<String>>,
    /// `_ws.malformed` appeared: a dissector ran past the data or hit an impossible value.
    pub malformed: bool,
    pub expert: Vec<Expert>,
}

impl Decoded {
    /// The first occurrence of a field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    pub fn all(&self, name: &str) -> &[String] {
        self.fields.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Malformed, or any expert item of warning severity or worse (bad checksum, for example).
    pub fn has_problem(&self) -> bool {
        self.malformed || self.expert.iter().any(|e| e.severity >= SEVERITY_WARN)
    }

    /// The IGMPv3 group records, in order: every object under the `igmp` layer(s) that has an
    /// `igmp.record_type`.
    pub fn igmp_records(&self) -> Vec<TsharkRecord> {
        let mut objects = Vec::new();
        for layer in as_list(self.layers.get("igmp")) {
            collect_objects_with(layer, "igmp.record_type", &mut objects);
        }
        objects
            .into_iter()
            .map(|o| {
                let one = |k: &str| {
                    o.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                TsharkRecord {
                    record_type: one("igmp.record_type")
                        .parse()
                        .expect("igmp.record_type is a number"),
                    aux_data_len: one("igmp.aux_data_len")
                        .parse()
                        .expect("igmp.aux_data_len is a number"),
                    num_src: one("igmp.num_src")
                        .parse()
                        .expect("igmp.num_src is a number"),
                    maddr: one("igmp.maddr").parse().expect("igmp.maddr is an address"),
                    sources: as_list(o.get("igmp.saddr"))
                        .filter_map(Value::as_str)
                        .map(|s| s.parse().expect("igmp.saddr is an address"))
                        .collect(),
                }
            })
            .collect()
    }
}

/// A JSON value that `--no-duplicate-keys` turned into an array when repeated, as a list.
fn as_list(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    let items: Vec<&Value> = match v {
        None => vec![],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(other) => vec![other],
    };
    items.into_iter()
}

fn collect_objects_with<'a>(
    v: &'a Value,
    key: &str,
    out: &mut Vec<&'a serde_json::Map<String, Value>>,
) {
    match v {
        Value::Object(m) => {
            if m.contains_key(key) {
                out.push(m);
            }
            for child in m.values() {
                collect_objects_with(child, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_objects_with(c, key, out)),
        _ => {}
    }
}

fn flatten(v: &Value, decoded: &mut Decoded) {
    let Value::Object(m) = v else { return };
    for (k, child) in m {
        if k == "_ws.malformed" {
            decoded.malformed = true;
        }
        if k == "_ws.expert" {
            for e in as_list(Some(child)) {
                let num = |f: &str| {
                    e.get(f)
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0)
                };
                decoded.expert.push(Expert {
                    severity: num("_ws.expert.severity"),
                    group: num("_ws.expert.group"),
                    message: e
                        .get("_ws.expert.message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
        }
        for item in as_list(Some(child)) {
            match item {
                Value::String(s) => decoded.fields.entry(k.clone()).or_default().push(s.clone()),
                Value::Object(_) => flatten(item, decoded),
                _ => {}
            }
        }
    }
}

/// Decodes a pcap file. IP header checksums are verified too (tshark skips them by default).
pub fn decode_pcap(path: &Path) -> Vec<Decoded> {
    let path = path.to_str().expect("pcap path is UTF-8");
    let json = cmd::run(
        "tshark",
        &[
            "-n",
            "-r",
            path,
            "-T",
            "json",
            "--no-duplicate-keys",
            "-o",
            "ip.check_checksum:TRUE",
        ],
    );
    let packets: Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("tshark JSON: {e}\n{json}"));
    let packets = packets.as_array().expect("tshark -T json prints an array");
    packets
        .iter()
        .map(|p| {
            let layers = p
                .pointer("/_source/layers")
                .cloned()
                .expect("tshark packet without _source.layers");
            let mut d = Decoded {
                layers,
                fields: BTreeMap::new(),
                malformed: false,
                expert: Vec::new(),
            };
            let layers = d.layers.clone();
            flatten(&layers, &mut d);
            d
        })
        .collect()
}

/// Writes `datagrams` (complete IPv4 packets) to a temporary LINKTYPE_RAW pcap and decodes it.
pub fn decode(datagrams: &[Vec<u8>]) -> Vec<Decoded> {
    let file = pcap::TempFile::new("tshark", "pcap");
    pcap::write(&file.path, pcap::LINKTYPE_RAW, datagrams).expect("writing pcap");
    let decoded = decode_pcap(&file.path);
    assert_eq!(
        decoded.len(),
        datagrams.len(),
        "tshark decoded a different number of packets"
    );
    decoded
}
