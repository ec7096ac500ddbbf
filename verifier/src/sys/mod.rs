//! Kernel interfaces: the multicast routing socket, `/proc/net/ip_mr_*`, and `nft`/`ip`.

pub mod mroute;
pub mod nft;
pub mod procfs;
