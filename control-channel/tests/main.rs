//! control-channel integration tests: one binary (simulator scenarios, bad input, and the tokio
//! driver over network namespaces).

mod sim;
