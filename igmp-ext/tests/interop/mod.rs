mod bridge;
mod kernel;
mod scapy;
mod tshark;
