mod bridge;
mod kernel;
mod scapy;
mod signed;
mod tshark;
