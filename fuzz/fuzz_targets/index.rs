//! Any bytes as the plaintext of an index node or a root (what a corrupt chunk would
//! decrypt to were its tag forged): decoding never panics, and what decodes encodes back
//! to a value that decodes the same. Also the packed-node decompressor, and the LZ4
//! block decoder of record plaintexts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mindcastle::format::node::{unpack, Node};
use mindcastle::format::root::Root;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = Node::decode(data) {
        let again = Node::decode(&n.encode()).expect("encoded node decodes");
        assert_eq!(again.encode(), n.encode());
    }
    if let Ok(r) = Root::decode(data) {
        let again = Root::decode(&r.encode()).expect("encoded root decodes");
        assert_eq!(again.encode(), r.encode());
    }
    let _ = unpack(data, 1 << 20);
    let mut block = [0u8; 4096];
    let _ = mindcastle::format::lz4::decompress_into(data, &mut block);
});
