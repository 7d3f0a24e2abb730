//! Fuzzes every decoder of untrusted client bytes: request headers, option headers,
//! INFO/GO and META_CONTEXT option data. Decoding must never panic, and a request that
//! decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd_proto::{decode_info_request, decode_meta_context_request, decode_option_header, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(&r.encode()[..], data);
    }
    let _ = decode_option_header(data);
    let _ = decode_info_request(data);
    let _ = decode_meta_context_request(data);
});
