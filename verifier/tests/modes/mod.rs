//! One module per steering mode, and one for the refusals and the querier's election.

mod keystore;
mod mld;
mod native;
mod native6;
mod nft;
mod plain;
mod policy;
mod vip;
mod vip6;
