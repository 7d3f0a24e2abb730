//! Any bytes as a ref version object (what a remote serves): decoding returns a value
//! or an error, never panics; what decodes encodes back to the same bytes, and checking
//! its signature never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mindcastle::format::ref_version::RefVersion;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = RefVersion::decode(data, "fuzz") {
        assert_eq!(v.encode(), data);
        let _ = mindcastle::volume::signing::signature_holds(&v);
    }
});
