//! Integration tests: the real `dns-keystore` binary on loopback, queried by `dig`, `kdig` and
//! `delv`, updated through our TSIG client and `nsupdate`, read back by our validating client.

mod keystore_tests;
