//! Any bytes as TXT character-strings of a group record: no panic, and what parses re-emits to
//! text that parses to the same record.
#![no_main]
use dns_keystore::record::GroupRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split at 0xff bytes into character-strings, as a TXT record carries several.
    let strings: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    if let Ok(r) = GroupRecord::parse_txt(&strings) {
        let text = r.to_text().expect("a parsed record re-emits");
        assert_eq!(GroupRecord::parse(&text).expect("emitted text parses"), r);
    }
});
