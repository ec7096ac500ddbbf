//! Kernel interfaces, the only code that touches the kernel: the multicast routing socket,
//! `/proc/net/ip_mr_*`, `nft`/`ip`, the start-time setup and the executor of the core's ops.

pub mod announce_dev;
pub mod beacon_socket;
pub mod bpf;
pub mod exec;
pub mod igmp_socket;
pub mod libnft;
pub mod mld_socket;
pub mod mroute;
pub mod nfnl;
pub mod nft;
pub mod priority;
pub mod procfs;
pub mod rtnl;
pub mod setup;
