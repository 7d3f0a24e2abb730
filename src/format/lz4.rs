//! Decoding of one LZ4 block (the format of a record's compressed plaintext) into a
//! buffer of the expected size.
//!
//! Block format (LZ4's, no frame): sequences of `token u8 | [literal length bytes] |
//! literals | offset u16 (little-endian) | [match length bytes]`. The token's high
//! nibble is the literal length and its low nibble the match length minus 4; a nibble
//! of 15 continues in bytes that are added while they equal 255. The last sequence has
//! literals only. A match copies `match length` bytes from `offset` bytes back, and may
//! overlap its own output (a period-`offset` pattern).
//!
//! Why not `lz4_flex::block::decompress_into`: its safe decoder copies an overlapping
//! match one byte at a time, and a half-compressible block's run of zeros is such a
//! match, so that loop was a fifth of a sequential read's CPU. Here an overlapping match
//! is copied in doubling pieces (a few `copy_within`s), and a match whose source is one
//! byte repeated is a fill (`lz4_flex` finds a run of zeroes at whatever offset its
//! hash table last saw four of them: 11 in a half-compressible block, so 8 copies
//! that each read back what the last wrote; 68 -> 42 ns a block, and the copies were
//! 12% of the server's samples in `nbdcopy` out). Safe code only; every index is
//! checked, and bad input is an error, never a panic. Records are authenticated before
//! they are decoded, so bad input here means a forged tag or a bug.

use crate::error::{Error, Result};

/// Decodes the LZ4 block `input` into `out`; returns the bytes written. Fails on input
/// that is malformed or would write past `out`.
pub fn decompress_into(input: &[u8], out: &mut [u8]) -> Result<usize> {
    let bad = |what: &str| Error::corrupt(format!("LZ4 block: {what}"));
    let mut i: usize = 0;
    let mut o: usize = 0;
    loop {
        let token = *input.get(i).ok_or_else(|| bad("ends before a token"))?;
        i += 1;
        let literals = extend_length(input, &mut i, usize::from(token >> 4))
            .ok_or_else(|| bad("literal length runs past the end"))?;
        let src = i
            .checked_add(literals)
            .and_then(|end| input.get(i..end))
            .ok_or_else(|| bad("literals run past the input"))?;
        o.checked_add(literals)
            .and_then(|end| out.get_mut(o..end))
            .ok_or_else(|| bad("literals run past the output"))?
            .copy_from_slice(src);
        i += literals;
        o += literals;
        if i == input.len() {
            return Ok(o);
        }
        let offset = match input.get(i..i + 2) {
            Some(&[a, b]) => usize::from(u16::from_le_bytes([a, b])),
            _ => return Err(bad("offset runs past the input")),
        };
        i += 2;
        if offset == 0 || offset > o {
            return Err(bad("match offset outside the output"));
        }
        let len = extend_length(input, &mut i, usize::from(token & 15))
            .and_then(|n| n.checked_add(4))
            .ok_or_else(|| bad("match length runs past the end"))?;
        copy_match(out, o, offset, len).ok_or_else(|| bad("match runs past the output"))?;
        o += len;
    }
}

/// A length nibble of 15 continues in bytes added while they are 255. None when the
/// input ends first (or the sum overflows).
fn extend_length(input: &[u8], i: &mut usize, nibble: usize) -> Option<usize> {
    let mut n = nibble;
    if nibble == 15 {
        loop {
            let b = *input.get(*i)?;
            *i += 1;
            n = n.checked_add(usize::from(b))?;
            if b != 255 {
                break;
            }
        }
    }
    Some(n)
}

/// `out[o + k] = out[o + k - offset]` for `k` in `0..len`; None when that reaches
/// outside `out`. An overlapping match is a pattern of period `offset`: once `offset +
/// done` bytes from `o - offset` hold it (with `done` a multiple of `offset`), they are
/// the next piece, so each copy doubles what is done.
fn copy_match(out: &mut [u8], o: usize, offset: usize, len: usize) -> Option<()> {
    // The region from the match's source to its end; indices below are relative to it
    // and stay inside it by construction.
    let region = out.get_mut(o.checked_sub(offset)?..o.checked_add(len)?)?;
    // An overlapping match over a run of one byte (a block's zeroes, at whatever
    // offset the encoder found them) is a fill: one memset instead of copies that read
    // back what they just wrote. (A match that does not overlap is one copy anyway.)
    if offset < len {
        let (first, rest) = region.split_first_mut()?;
        let b = *first;
        if rest.get(..offset - 1)?.iter().all(|&x| x == b) {
            rest.fill(b);
            return Some(());
        }
    }
    let mut done = 0;
    while done < len {
        let n = (offset + done).min(len - done);
        region.copy_within(0..n, offset + done);
        done += n;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Blocks like the ones disks hold: random runs, zero runs, short repeats (periods
    /// 1-17, overlapping matches), text-like bytes.
    fn block() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec((0u8..4, 1usize..1500, any::<u64>()), 1..12).prop_map(|parts| {
            let mut b = Vec::new();
            for (kind, len, seed) in parts {
                let mut x = seed | 1;
                let period = (seed % 17 + 1) as usize;
                for k in 0..len {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b.push(match kind {
                        0 => x as u8,
                        1 => 0,
                        2 => (k % period) as u8,
                        _ => b"the quick brown fox "[k % 20],
                    });
                }
            }
            b.truncate(4096);
            b
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// What lz4_flex compresses decodes to the original bytes, as lz4_flex decodes it.
        #[test]
        fn decodes_what_lz4_flex_encodes(b in block()) {
            let packed = lz4_flex::block::compress(&b);
            let mut out = vec![0u8; b.len()];
            prop_assert_eq!(decompress_into(&packed, &mut out).ok(), Some(b.len()));
            prop_assert_eq!(&out, &b);
        }

        /// Any bytes: never a panic, and where both decoders accept them into a 4 KiB
        /// buffer, the same output.
        #[test]
        fn any_input_is_an_error_or_what_lz4_flex_gives(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut ours = vec![0u8; 4096];
            let mut theirs = vec![0u8; 4096];
            let a = decompress_into(&input, &mut ours);
            let b = lz4_flex::block::decompress_into(&input, &mut theirs);
            if let (Ok(n), Ok(m)) = (&a, &b) {
                prop_assert_eq!(n, m);
                prop_assert_eq!(&ours[..*n], &theirs[..*m]);
            }
        }
    }

    #[test]
    fn overlapping_matches_of_every_short_period() -> Result<()> {
        for period in 1..40usize {
            let b: Vec<u8> = (0..4096).map(|k| (k % period) as u8 ^ 0x5a).collect();
            let packed = lz4_flex::block::compress(&b);
            let mut out = vec![0u8; 4096];
            assert_eq!(decompress_into(&packed, &mut out)?, 4096);
            assert_eq!(out, b, "period {period}");
        }
        Ok(())
    }

    /// Hand-made blocks: a match at offset 11 over a run of one byte (the fill), one
    /// whose source only starts like a run (a copy), and one that does not overlap.
    #[test]
    fn a_match_over_a_run_is_a_fill_and_others_are_copies() -> Result<()> {
        // token: 11 literals, match length 15 + 255 + 255 + 7 + 4 = 536; offset 11.
        let block = |lits: &[u8; 11]| {
            let mut b = vec![0xbf];
            b.extend_from_slice(lits);
            b.extend_from_slice(&[11, 0, 255, 255, 7]);
            b.push(0x10);
            b.push(0xee);
            b
        };
        let mut out = vec![0u8; 11 + 536 + 1];
        let n = decompress_into(&block(&[9; 11]), &mut out)?;
        assert_eq!(n, out.len());
        assert!(out[..547].iter().all(|&x| x == 9));
        assert_eq!(out[547], 0xee);
        let mut lits = [9u8; 11];
        lits[10] = 3;
        let n = decompress_into(&block(&lits), &mut out)?;
        assert_eq!(n, out.len());
        let want: Vec<u8> = (0..547).map(|k| lits[k % 11]).collect();
        assert_eq!(&out[..547], &want[..]);
        // Offset 11, length 4: no overlap; the literals are a run.
        let mut b = vec![0xb0];
        b.extend_from_slice(&[4; 11]);
        b.extend_from_slice(&[11, 0, 0x10, 0xee]);
        let mut out = vec![0u8; 16];
        assert_eq!(decompress_into(&b, &mut out)?, 16);
        assert_eq!(
            &out[..],
            &[4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0xee]
        );
        Ok(())
    }

    #[test]
    fn output_too_small_and_truncated_input_are_errors() {
        let b = vec![7u8; 4096];
        let packed = lz4_flex::block::compress(&b);
        let mut small = vec![0u8; 4095];
        assert!(decompress_into(&packed, &mut small).is_err());
        let mut out = vec![0u8; 4096];
        for cut in 0..packed.len() {
            let r = decompress_into(&packed[..cut], &mut out);
            assert!(r.map_or(true, |n| n < 4096), "cut at {cut}");
        }
    }
}
