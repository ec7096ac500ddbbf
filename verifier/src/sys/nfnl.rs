//! Map element updates straight over nfnetlink (NETLINK_NETFILTER), the messages libnftables
//! sends for `add element` and `delete element`, without its parser and its cache: libnftables
//! lists the tables, chains, sets and objects of the whole ruleset before every command (five
//! dumps) and parses each element through its grammar, which made a quarter of a 256-element
//! map re-pointed cost ~550 µs, two thirds of it in user space, on a quiet machine (issue 16).
//!
//! One change is one nfnetlink batch (`NFNL_MSG_BATCH_BEGIN` … `END`), which the kernel commits
//! as one transaction or not at all: the data plane never holds half a change. Only the element
//! commands the data planes write with verdict data (`jump`/`goto` a chain, the native planes'
//! maps, keyed by IPv4 or IPv6 addresses) are taken; anything else goes to libnftables as before ([`ElementBatch::parse`] says
//! no), so this is an accelerator, never the only way in.

use std::io;
use std::net::IpAddr;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
/// Larger batches go to libnftables, which splits them over as many buffers as it needs.
const MAX_BATCH: usize = 128 * 1024;

/// A verdict a map element carries: continue in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Jump(String),
    Goto(String),
}

/// One command of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Delete(Vec<IpAddr>),
    Add(Vec<(IpAddr, Verdict)>),
}

/// `add element` and `delete element` commands on verdict maps keyed by addresses (IPv4 or
/// IPv6), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementBatch {
    commands: Vec<(Target, Command)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    family: u8,
    table: String,
    set: String,
}

/// An nftables name as the data planes write them (and as the kernel stores them: NUL-free).
fn name(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() < 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| s.to_owned())
}

fn family(s: &str) -> Option<u8> {
    match s {
        "ip" => Some(libc::NFPROTO_IPV4 as u8),
        "inet" => Some(libc::NFPROTO_INET as u8),
        "netdev" => Some(libc::NFPROTO_NETDEV as u8),
        _ => None,
    }
}

impl ElementBatch {
    /// The batch `text` (what `nft -f` would read) asks for, when every line is an element
    /// command this module sends itself: `add element <family> <table> <map> { <address> :
    /// jump|goto <chain>, … }` or `delete element <family> <table> <map> { <address>, … }`
    /// (an IPv4 or IPv6 address; the key ends at ` : `, as IPv6 keys hold colons). `None` for
    /// anything else (libnftables takes it).
    pub fn parse(text: &str) -> Option<ElementBatch> {
        let mut commands = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (head, body) = line.split_once('{')?;
            let body = body.trim().strip_suffix('}')?;
            let words: Vec<&str> = head.split_whitespace().collect();
            let [verb, "element", fam, table, set] = words[..] else {
                return None;
            };
            let target = Target {
                family: family(fam)?,
                table: name(table)?,
                set: name(set)?,
            };
            let items = body.split(',').map(str::trim);
            let command = match verb {
                "delete" => Command::Delete(items.map(|k| k.parse().ok()).collect::<Option<_>>()?),
                "add" => Command::Add(
                    items
                        .map(|item| {
                            let (key, data) = item.split_once(" : ")?;
                            let verdict = match data.split_whitespace().collect::<Vec<_>>()[..] {
                                ["jump", chain] => Verdict::Jump(name(chain)?),
                                ["goto", chain] => Verdict::Goto(name(chain)?),
                                _ => return None,
                            };
                            Some((key.trim().parse().ok()?, verdict))
                        })
                        .collect::<Option<_>>()?,
                ),
                _ => return None,
            };
            commands.push((target, command));
        }
        (!commands.is_empty()).then_some(ElementBatch { commands })
    }

    /// The batch's datagram, its messages numbered from `seq` (begin and end included); and how
    /// many messages ask for an answer (each element command).
    fn encode(&self, seq: u32) -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let mut n = seq;
        message(&mut out, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, n, 0, |b| {
            // The subsystem the batch is for goes in res_id (network order).
            b[2..4].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        });
        for (t, c) in &self.commands {
            n = n.wrapping_add(1);
            let (kind, flags) = match c {
                Command::Delete(_) => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
                Command::Add(_) => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
            };
            let start = out.len();
            message(
                &mut out,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                flags,
                n,
                t.family,
                |_| {},
            );
            attr_str(&mut out, NFTA_SET_ELEM_LIST_TABLE, &t.table);
            attr_str(&mut out, NFTA_SET_ELEM_LIST_SET, &t.set);
            let list = nest_start(&mut out, NFTA_SET_ELEM_LIST_ELEMENTS);
            match c {
                Command::Delete(keys) => keys.iter().for_each(|k| element(&mut out, *k, None)),
                Command::Add(elems) => elems
                    .iter()
                    .for_each(|(k, v)| element(&mut out, *k, Some(v))),
            }
            nest_end(&mut out, list);
            finish(&mut out, start);
        }
        message(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            n.wrapping_add(1),
            0,
            |b| b[2..4].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes()),
        );
        (out, self.commands.len() as u32)
    }
}

/// Appends one element: its key (4 or 16 bytes, network order), and its verdict (none when
/// deleted).
fn element(out: &mut Vec<u8>, key: IpAddr, verdict: Option<&Verdict>) {
    let e = nest_start(out, NFTA_LIST_ELEM);
    let k = nest_start(out, NFTA_SET_ELEM_KEY);
    match key {
        IpAddr::V4(a) => attr(out, NFTA_DATA_VALUE, &a.octets()),
        IpAddr::V6(a) => attr(out, NFTA_DATA_VALUE, &a.octets()),
    }
    nest_end(out, k);
    if let Some(v) = verdict {
        let d = nest_start(out, NFTA_SET_ELEM_DATA);
        let vd = nest_start(out, NFTA_DATA_VERDICT);
        let (code, chain) = match v {
            Verdict::Jump(c) => (NFT_JUMP, c),
            Verdict::Goto(c) => (NFT_GOTO, c),
        };
        attr(out, NFTA_VERDICT_CODE, &code.to_be_bytes());
        attr_str(out, NFTA_VERDICT_CHAIN, chain);
        nest_end(out, vd);
        nest_end(out, d);
    }
    nest_end(out, e);
}

/// Appends a netlink header and an nfgenmsg (`family`, version 0, res_id 0, which `extra` may
/// change); a message without attributes is finished here, one with them by [`finish`].
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    extra: impl Fn(&mut [u8]),
) {
    let start = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    let mut nfgen = [family, 0, 0, 0];
    extra(&mut nfgen);
    out.extend_from_slice(&nfgen);
    finish(out, start);
}

/// Writes the length of the message that starts at `start`.
fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn attr_str(out: &mut Vec<u8>, kind: u16, s: &str) {
    let mut z = Vec::with_capacity(s.len() + 1);
    z.extend_from_slice(s.as_bytes());
    z.push(0);
    attr(out, kind, &z);
}

fn nest_start(out: &mut Vec<u8>, kind: u16) -> usize {
    let at = out.len();
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    at
}

fn nest_end(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u16;
    out[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// A NETLINK_NETFILTER socket kept for the life of the executor.
#[derive(Debug)]
pub struct Nfnl {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl Nfnl {
    pub fn new() -> io::Result<Nfnl> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        // An error answer carries the failed message's header only, not the whole message.
        socket.set_cap_ack(true)?;
        Ok(Nfnl { socket, seq: 0 })
    }

    /// Sends `batch` as one transaction and checks the kernel's answer to each command: `Ok`
    /// only if the kernel committed all of it. `Ok(false)`: too large for one datagram, not
    /// sent (libnftables takes it).
    pub fn apply(&mut self, batch: &ElementBatch) -> io::Result<bool> {
        let first = self.seq.wrapping_add(1);
        let (datagram, asked) = batch.encode(first);
        if datagram.len() > MAX_BATCH {
            return Ok(false);
        }
        self.seq = first.wrapping_add(asked).wrapping_add(1);
        self.socket.send(&datagram, 0)?;
        // The kernel processes the batch inside `send` and has queued every answer when it
        // returns: an ACK per command, or the errors (then nothing was committed).
        let mut answered = 0;
        let mut failure = None;
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        while answered < asked {
            buf.clear();
            match self.socket.recv(&mut buf, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
            for (seq, code) in answers(&buf) {
                // An answer to an earlier batch is not this one's.
                if seq.wrapping_sub(first) > asked {
                    continue;
                }
                answered += 1;
                if code != 0 && failure.is_none() {
                    failure = Some(io::Error::from_raw_os_error(code.saturating_neg()));
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None if answered < asked => Err(io::Error::other(format!(
                "the kernel answered {answered} of {asked} commands"
            ))),
            None => Ok(true),
        }
    }
}

/// The (sequence number, error code) of each NLMSG_ERROR message in `buf` (0: an ACK).
fn answers(buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 16 || len > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if kind == NLMSG_ERROR && len >= 20 {
            out.push((
                seq,
                i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]),
            ));
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const NATIVE: &str = "delete element netdev manycast_native group_232_1_1_1 { 0.0.0.4, 0.0.0.8 }\n\
         add element netdev manycast_native group_232_1_1_1 { 0.0.0.4 : jump m2_10_0_2_2, 0.0.0.8 : goto m3_10_0_3_2 }\n";

    #[test]
    fn parses_the_element_commands_of_a_verdict_map() {
        let b = ElementBatch::parse(NATIVE).expect("element commands");
        assert_eq!(b.commands.len(), 2);
        let target = Target {
            family: 5,
            table: "manycast_native".into(),
            set: "group_232_1_1_1".into(),
        };
        assert_eq!(
            b.commands[0],
            (
                target.clone(),
                Command::Delete(vec![
                    Ipv4Addr::new(0, 0, 0, 4).into(),
                    Ipv4Addr::new(0, 0, 0, 8).into()
                ])
            )
        );
        assert_eq!(
            b.commands[1],
            (
                target,
                Command::Add(vec![
                    (
                        Ipv4Addr::new(0, 0, 0, 4).into(),
                        Verdict::Jump("m2_10_0_2_2".into())
                    ),
                    (
                        Ipv4Addr::new(0, 0, 0, 8).into(),
                        Verdict::Goto("m3_10_0_3_2".into())
                    ),
                ])
            )
        );
    }

    /// The IPv6 native table's maps (issue 15): IPv6 keys, whose text holds colons, and
    /// `::` itself, a key before ` : `.
    #[test]
    fn parses_and_encodes_ipv6_keys() {
        let b = ElementBatch::parse(
            "delete element netdev manycast6 group6_ff3e_0_0_0_0_0_8000_1 { 0:0:0:100:: }\n\
             add element netdev manycast6 group6_ff3e_0_0_0_0_0_8000_1 { :: : jump m1_fe80_0_0_0_0_0_0_1, 0:0:0:100:: : jump m2_fe80_0_0_0_0_0_0_2 }\n",
        )
        .expect("element commands");
        let v = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
        assert_eq!(b.commands[0].1, Command::Delete(vec![v("0:0:0:100::")]));
        assert_eq!(
            b.commands[1].1,
            Command::Add(vec![
                (v("::"), Verdict::Jump("m1_fe80_0_0_0_0_0_0_1".into())),
                (
                    v("0:0:0:100::"),
                    Verdict::Jump("m2_fe80_0_0_0_0_0_0_2".into())
                ),
            ])
        );
        // The key is the address's 16 bytes: NFTA_DATA_VALUE of length 20.
        let (bytes, _) = ElementBatch::parse("delete element netdev t m { 0:0:0:100:: }\n")
            .unwrap()
            .encode(1);
        let mut key = vec![20, 0, 1, 0];
        key.extend_from_slice(&"0:0:0:100::".parse::<Ipv6Addr>().unwrap().octets());
        assert!(bytes.windows(key.len()).any(|w| w == key), "{bytes:?}");
        // An address with a prefix length, or a key glued to its colon, is not ours.
        for text in [
            "delete element netdev t m { ::/64 }\n",
            "add element netdev t m { ::: jump c }\n",
        ] {
            assert_eq!(ElementBatch::parse(text), None, "{text:?}");
        }
    }

    /// What this module does not send itself goes to libnftables: other commands, other data
    /// (a mark map's integers, whose byte order the text does not say), odd names.
    #[test]
    fn leaves_everything_else_to_libnftables() {
        for text in [
            "",
            "add chain netdev manycast_native m2_10_0_2_2\n",
            "add element ip manycast_verifier vip_10_200_0_1 { 0.0.0.2 : 0x4d430001 }\n",
            "add element netdev t m { 0.0.0.1 : accept }\n",
            "add element netdev t m { 0.0.0.1 : jump a b }\n",
            "add element netdev t m { 0.0.0.1 : jump \"x\" }\n",
            "add element bridge t m { 0.0.0.1 : jump c }\n",
            "delete element netdev t m { 0.0.0.1/24 }\n",
            "delete element netdev t m 0.0.0.1\n",
            "flush set netdev t m { }\n",
            "delete element netdev t m { 0.0.0.1 }\nadd rule netdev t c accept\n",
            // The control table's `iifname . ip saddr` keys (plan/control.rs).
            "add element netdev manycast_ctl from_239_77_0_1 { \"s2\" . 10.0.2.3 : jump c_239_77_0_1_if3 }\n",
            "delete element netdev manycast_ctl from_239_77_0_1 { \"s2\" . 10.0.2.3 }\n",
        ] {
            assert_eq!(ElementBatch::parse(text), None, "{text:?}");
        }
    }

    /// The bytes libnftables 1.0.6 sends for the same commands (`strace -e write=3` of
    /// `nft -f`), but for the sequence numbers, NLM_F_ACK (it reads errors only; an ACK per
    /// command here confirms the commit) and NFTA_SET_ELEM_LIST_SET_ID (its name for a set
    /// made in the same batch; none is here).
    #[test]
    fn encodes_one_transaction_with_an_answer_asked_per_command() {
        let b = ElementBatch::parse(
            "delete element netdev t m { 10.0.0.1 }\nadd element netdev t m { 10.0.0.1 : jump c }\n",
        )
        .unwrap();
        let (bytes, asked) = b.encode(7);
        assert_eq!(asked, 2);
        let mut expected: Vec<u8> = Vec::new();
        let hdr =
            |expected: &mut Vec<u8>, len: u32, kind: u16, flags: u16, seq: u32, nfgen: [u8; 4]| {
                expected.extend_from_slice(&len.to_ne_bytes());
                expected.extend_from_slice(&kind.to_ne_bytes());
                expected.extend_from_slice(&flags.to_ne_bytes());
                expected.extend_from_slice(&seq.to_ne_bytes());
                expected.extend_from_slice(&0u32.to_ne_bytes());
                expected.extend_from_slice(&nfgen);
            };
        hdr(&mut expected, 20, 0x10, 0x1, 7, [0, 0, 0, 10]);
        // table "t", set "m", one element with key 10.0.0.1.
        let del_attrs: &[u8] = &[
            6, 0, 1, 0, b't', 0, 0, 0, // NFTA_SET_ELEM_LIST_TABLE
            6, 0, 2, 0, b'm', 0, 0, 0, // NFTA_SET_ELEM_LIST_SET
            20, 0, 3, 0x80, // ELEMENTS (nested)
            16, 0, 1, 0x80, // LIST_ELEM
            12, 0, 1, 0x80, // KEY
            8, 0, 1, 0, 10, 0, 0, 1, // DATA_VALUE
        ];
        hdr(
            &mut expected,
            20 + del_attrs.len() as u32,
            0x0a0e,
            0x5,
            8,
            [5, 0, 0, 0],
        );
        expected.extend_from_slice(del_attrs);
        let add_attrs: &[u8] = &[
            6, 0, 1, 0, b't', 0, 0, 0, //
            6, 0, 2, 0, b'm', 0, 0, 0, //
            44, 0, 3, 0x80, //
            40, 0, 1, 0x80, //
            12, 0, 1, 0x80, //
            8, 0, 1, 0, 10, 0, 0, 1, //
            24, 0, 2, 0x80, // ELEM_DATA
            20, 0, 2, 0x80, // DATA_VERDICT
            8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfd, // VERDICT_CODE: NFT_JUMP, network order
            6, 0, 2, 0, b'c', 0, 0, 0, // VERDICT_CHAIN
        ];
        hdr(
            &mut expected,
            20 + add_attrs.len() as u32,
            0x0a0c,
            0x405,
            9,
            [5, 0, 0, 0],
        );
        expected.extend_from_slice(add_attrs);
        hdr(&mut expected, 20, 0x11, 0x1, 10, [0, 0, 0, 10]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn reads_acks_and_errors_and_ignores_the_rest() {
        let mut buf = Vec::new();
        for (seq, code) in [(3u32, 0i32), (4, -17)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&code.to_ne_bytes());
            buf.extend_from_slice(&[0; 16]);
        }
        // A truncated message ends the walk without a panic.
        buf.extend_from_slice(&[40, 0, 0, 0, 2, 0]);
        assert_eq!(answers(&buf), vec![(3, 0), (4, -17)]);
        assert_eq!(answers(&[0xff; 3]), vec![]);
    }
}
