//! Any bytes as TXT character-strings of a group record of either family (IPv4 or IPv6,
//! SPEC.md §8.1): no panic, and what parses re-emits to text that parses to the same record.
#![no_main]
use dns_keystore::record::{AnyGroupRecord, GroupRecord, GroupRecord6};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split at 0xff bytes into character-strings, as a TXT record carries several.
    let strings: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    let v4 = GroupRecord::parse_txt(&strings);
    let v6 = GroupRecord6::parse_txt_ipv6(&strings);
    let any = AnyGroupRecord::parse_txt(&strings);
    // The family-blind parser agrees with the family's own.
    match &any {
        Ok(AnyGroupRecord::V4(r)) => assert_eq!(v4.as_ref().ok(), Some(r)),
        Ok(AnyGroupRecord::V6(r)) => assert_eq!(v6.as_ref().ok(), Some(r)),
        Err(_) => assert!(v4.is_err() && v6.is_err()),
    }
    if let Ok(r) = any {
        let text = r.to_text().expect("a parsed record re-emits");
        assert_eq!(AnyGroupRecord::parse(&text).expect("emitted text parses"), r);
    }
});
