mod bridge;
mod kernel;
mod mld;
mod scapy;
mod signed;
mod tshark;
