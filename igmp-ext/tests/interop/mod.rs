mod bridge;
mod kernel;
mod mld;
mod mld_scapy;
mod scapy;
mod signed;
mod tshark;
