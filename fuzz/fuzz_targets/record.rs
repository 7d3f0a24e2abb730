//! Any bytes as a block a client writes: sealing compresses it with LZ4's encoder (the
//! crate's pointer code) and opening gives back exactly the block; the LZ4 form, when
//! shorter, decodes to the block with the record decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mindcastle::format::crypto::{DiskKey, Keys};
use mindcastle::format::record::{open_record, seal_block};
use mindcastle::format::BLOCK_SIZE;

fuzz_target!(|data: &[u8]| {
    // The input, repeated or cut to one block: short inputs make runs and matches.
    let block: Vec<u8> = if data.is_empty() {
        vec![0; BLOCK_SIZE]
    } else {
        data.iter().copied().cycle().take(BLOCK_SIZE).collect()
    };
    let Ok(keys) = Keys::new(&DiskKey([3; 32])) else {
        return;
    };
    let rec = seal_block(&keys, &block).expect("any block seals");
    let mut out = vec![0u8; BLOCK_SIZE];
    open_record(&keys, &rec.bytes, &rec.tag, &mut out).expect("a sealed block opens");
    assert_eq!(out, block);
    // The whole input as one LZ4 block (any length, like an index node).
    let packed = lz4_flex::block::compress(data);
    assert_eq!(
        lz4_flex::block::decompress(&packed, data.len()).expect("decodes"),
        data
    );
});
