//! Integration tests: the real `manycast-verifier` binary in a router namespace, with client and
//! server namespaces around it, signed joins from raw sockets, and real traffic. Need root.

mod harness;
mod modes;
