//! Any bytes as a write-ahead log: the header check and the op decoder never panic,
//! the valid prefix is within the input, and the decoded ops re-encode to exactly it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mindcastle::format::wal::{decode_header, decode_ops, encode_op, header_len, LogEnd};

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(data);
    let decoded = decode_ops(data);
    let (ops, valid) = (decoded.ops, decoded.valid);
    assert!(valid <= data.len());
    if let LogEnd::Corrupt { bad, next } = decoded.end {
        assert!(bad == valid && next > bad && next < data.len());
    }
    let header = header_len(data);
    if data.len() >= header {
        let mut again = data[..header].to_vec();
        for op in &ops {
            encode_op(op, &mut again);
        }
        assert_eq!(&again[..], &data[..valid]);
    }
});
