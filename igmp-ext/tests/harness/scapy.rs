//! Scapy as an independent IGMP and MLD implementation: `scapy_igmp.py` and `scapy_mld.py` build
//! messages with scapy's layers and decode our bytes with them. Runs the system python, which is where Debian's
//! python3-scapy lives (a pyenv python on PATH would not have it).

use super::cmd;
use serde_json::Value;
use std::collections::BTreeMap;

pub const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/harness/scapy_igmp.py");
const MLD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/harness/scapy_mld.py");

fn python(args: &[&str]) -> Value {
    python_script(SCRIPT, args)
}

fn python_script(script: &str, args: &[&str]) -> Value {
    let mut full = vec![script];
    full.extend_from_slice(args);
    let out = cmd::run_with_timeout(PYTHON, &full, cmd::DEFAULT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scapy helper failed ({}); is python3-scapy installed for {PYTHON}?\n{stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("scapy helper printed no JSON: {e}\n{stderr}"))
}

/// The datagrams scapy built, by name (see `build()` in the script).
pub fn build() -> BTreeMap<String, Vec<u8>> {
    built(python(&["build"]))
}

/// The IPv6 packets scapy built with its MLD layers, by name (`build()` in `scapy_mld.py`).
pub fn build_mld() -> BTreeMap<String, Vec<u8>> {
    built(python_script(MLD_SCRIPT, &["build"]))
}

fn built(v: Value) -> BTreeMap<String, Vec<u8>> {
    v.as_object()
        .expect("build prints an object")
        .iter()
        .map(|(name, hex)| {
            let hex = hex.as_str().expect("hex string");
            (
                name.clone(),
                hex::decode(hex).expect("valid hex from scapy"),
            )
        })
        .collect()
}

/// Scapy's decoding of each datagram (`IP(bytes)`), one JSON object each with `ip` and `igmp`.
pub fn decode(datagrams: &[Vec<u8>]) -> Vec<Value> {
    decode_with(SCRIPT, datagrams)
}

/// Scapy's decoding of each IPv6 packet (`IPv6(bytes)`), one JSON object each with `ipv6` and
/// `mld` (see `decode_one()` in `scapy_mld.py`).
pub fn decode_mld(packets: &[Vec<u8>]) -> Vec<Value> {
    decode_with(MLD_SCRIPT, packets)
}

fn decode_with(script: &str, datagrams: &[Vec<u8>]) -> Vec<Value> {
    let hexes: Vec<String> = datagrams.iter().map(hex::encode).collect();
    let mut args = vec!["decode"];
    args.extend(hexes.iter().map(String::as_str));
    let v = python_script(script, &args);
    let list = v.as_array().expect("decode prints a list").clone();
    assert_eq!(list.len(), datagrams.len());
    list
}
