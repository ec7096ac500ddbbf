//! control-channel integration tests, one binary: simulator scenarios, bad input, and the tokio
//! driver over network namespaces.

mod attack;
mod bad_input;
mod group_size;
mod harness;
mod ipv6_group;
mod netns;
mod requests;
mod scope;
mod sim;
mod sites;
mod swim;
