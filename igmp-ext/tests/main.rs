//! Interop tests: our IGMP and MLD wire code against implementations we did not write — the Linux
//! kernel's IGMPv3 and MLDv2 host side, the Linux bridge's IGMP snooping, scapy, and Wireshark's
//! dissectors.
//!
//! The netns tests need root; they fail (they never pass silently) without it. Python tests use
//! the system `/usr/bin/python3` with Debian's python3-scapy; tshark must be on PATH.

mod harness;
mod interop;
