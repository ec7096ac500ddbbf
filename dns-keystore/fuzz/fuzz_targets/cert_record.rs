//! Any bytes as TXT character-strings of a member certificate record (SPEC.md §8.7): no panic,
//! and what parses re-emits to strings that parse to the same record.
#![no_main]
use dns_keystore::cert_record::CertRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split at 0xff bytes into character-strings, as a TXT record carries several.
    let strings: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    if let Ok(r) = CertRecord::parse_txt(&strings) {
        let again = CertRecord::parse_txt(&r.to_txt_strings()).expect("emitted record parses");
        assert_eq!(again, r);
    }
});
