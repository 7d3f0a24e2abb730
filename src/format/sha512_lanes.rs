//! SHA-512 (FIPS 180-4) of several messages at once: one message per 64-bit lane of the
//! vector registers, so one core hashes several chunks in the time OpenSSL hashes one
//! or two (its one-message code cannot go faster: every round depends on the last).
//! With AVX-512, eight lanes (about 3.4x OpenSSL's bytes per second); with AVX2 only,
//! groups of four (about 1.6x: no rotate instruction, half the width). Where the CPU
//! has neither, or fewer than [`MIN_LANES`] messages come together, each message is
//! hashed by OpenSSL as before. Digests are byte for byte SHA-512's: chunk names do not
//! change (tests check every path against OpenSSL at every length around the block
//! size, and for unequal messages together).

/// Messages hashed together at most.
pub const LANES: usize = 8;

/// Fewer messages than this are hashed one by one: eight lanes cost the same whether
/// or not each holds a message, and three filled run at about OpenSSL's speed.
pub const MIN_LANES: usize = 4;

/// SHA-512 of each of `msgs`, in order.
pub fn sha512_each(msgs: &[&[u8]]) -> Vec<[u8; 64]> {
    let mut out = Vec::with_capacity(msgs.len());
    for group in msgs.chunks(LANES) {
        if group.len() >= MIN_LANES && lanes::available() {
            out.extend(lanes::hash(group));
        } else {
            out.extend(group.iter().map(|m| openssl::sha::sha512(m)));
        }
    }
    out
}

/// Whether [`sha512_each`] hashes messages in lanes on this CPU.
pub fn lanes_available() -> bool {
    lanes::available()
}

/// Messages one call of the lanes hashes in the time of one: 8 with AVX-512, 4 with
/// AVX2, 1 without lanes. Groups of this many can be hashed on different threads
/// without leaving lanes empty.
pub fn width() -> usize {
    lanes::width()
}

/// Round constants: the first 64 bits of the fractional parts of the cube roots of the
/// first 80 primes.
#[rustfmt::skip]
const K: [u64; 80] = [
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
];

/// Initial hash value: the first 64 bits of the fractional parts of the square roots of
/// the first 8 primes.
#[rustfmt::skip]
const IV: [u64; 8] = [
    0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
    0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
];

/// Bytes in one SHA-512 block.
const BLOCK: usize = 128;

/// One message's blocks: its whole blocks in place, then the padded tail (the last
/// bytes, 0x80, zeros, and the length in bits as a 128-bit big-endian number).
struct Blocks<'a> {
    whole: &'a [u8],
    tail: [u8; 2 * BLOCK],
    tail_len: usize,
}

impl<'a> Blocks<'a> {
    fn new(msg: &'a [u8]) -> Self {
        let split = msg.len() - msg.len() % BLOCK;
        let (whole, rest) = msg.split_at(split);
        let mut tail = [0u8; 2 * BLOCK];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        // The 0x80 and the 16-byte length must fit after the rest.
        let tail_len = if rest.len() + 1 + 16 <= BLOCK {
            BLOCK
        } else {
            2 * BLOCK
        };
        let bits = (msg.len() as u128).wrapping_mul(8);
        tail[tail_len - 16..tail_len].copy_from_slice(&bits.to_be_bytes());
        Self {
            whole,
            tail,
            tail_len,
        }
    }

    fn count(&self) -> usize {
        (self.whole.len() + self.tail_len) / BLOCK
    }

    /// Block `i` (< `count`).
    fn block(&self, i: usize) -> &[u8] {
        let whole = self.whole.len() / BLOCK;
        if i < whole {
            &self.whole[i * BLOCK..(i + 1) * BLOCK]
        } else {
            let t = (i - whole) * BLOCK;
            &self.tail[t..t + BLOCK]
        }
    }
}

/// Every lane's state at SHA-512's initial hash value.
#[cfg(target_arch = "x86_64")]
fn initial_state<const N: usize>() -> [[u64; N]; 8] {
    IV.map(|word| [word; N])
}

/// Puts word `i` of each lane's block `step` in `w[i][lane]` (lanes side by side, as
/// the vector loads take them); true for the lanes whose message has that block.
#[cfg(target_arch = "x86_64")]
fn gather_words<const N: usize>(
    blocks: &[Blocks<'_>],
    step: usize,
    w: &mut [[u64; N]; 16],
) -> [bool; N] {
    let mut active = [false; N];
    for ((lane, b), on) in blocks.iter().enumerate().zip(active.iter_mut()) {
        if step >= b.count() {
            continue;
        }
        *on = true;
        for (words, bytes) in w.iter_mut().zip(b.block(step).chunks_exact(8)) {
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            words[lane] = u64::from_be_bytes(be);
        }
    }
    active
}

/// The digests of the first `count` lanes of `state`.
#[cfg(target_arch = "x86_64")]
fn digests<const N: usize>(state: &[[u64; N]; 8], count: usize) -> Vec<[u8; 64]> {
    (0..count.min(N))
        .map(|lane| {
            let mut d = [0u8; 64];
            for (out, words) in d.chunks_exact_mut(8).zip(state.iter()) {
                out.copy_from_slice(&words[lane].to_be_bytes());
            }
            d
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::*;

    use super::{avx2, digests, gather_words, initial_state, Blocks, K, LANES};

    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("avx512f") || avx2::available()
    }

    pub(super) fn width() -> usize {
        if std::is_x86_feature_detected!("avx512f") {
            LANES
        } else if avx2::available() {
            avx2::LANES
        } else {
            1
        }
    }

    /// Digests of `msgs` (up to [`LANES`] of them): eight lanes of AVX-512, else groups
    /// of four lanes of AVX2, else OpenSSL's one at a time.
    pub(super) fn hash(msgs: &[&[u8]]) -> Vec<[u8; 64]> {
        if !std::is_x86_feature_detected!("avx512f") || msgs.len() > LANES {
            return msgs
                .chunks(avx2::LANES)
                .flat_map(|group| {
                    if group.len() >= avx2::MIN_LANES && avx2::available() {
                        avx2::hash(group)
                    } else {
                        group.iter().map(|m| openssl::sha::sha512(m)).collect()
                    }
                })
                .collect();
        }
        let blocks: Vec<Blocks<'_>> = msgs.iter().map(|m| Blocks::new(m)).collect();
        let mut state = initial_state::<LANES>();
        #[allow(unsafe_code)]
        // SAFETY: `available()` found AVX-512F on this CPU just above.
        unsafe {
            compress_all(&blocks, &mut state)
        };
        digests(&state, msgs.len())
    }

    /// Runs every block of every lane through the compression function; a lane whose
    /// message has no block left at a step keeps its state (masked).
    #[target_feature(enable = "avx512f")]
    fn compress_all(blocks: &[Blocks<'_>], state: &mut [[u64; LANES]; 8]) {
        let steps = blocks.iter().map(Blocks::count).max().unwrap_or(0);
        let mut s: [__m512i; 8] = [_mm512_setzero_si512(); 8];
        for (v, words) in s.iter_mut().zip(state.iter()) {
            *v = load(words);
        }
        // Word i of every lane's block, lanes side by side.
        let mut w = [[0u64; LANES]; 16];
        for step in 0..steps {
            let active = gather_words(blocks, step, &mut w)
                .iter()
                .enumerate()
                .fold(0 as __mmask8, |m, (lane, on)| m | (u8::from(*on) << lane));
            compress(&mut s, &w, active);
        }
        for (v, words) in s.iter().zip(state.iter_mut()) {
            store(*v, words);
        }
    }

    #[target_feature(enable = "avx512f")]
    fn load(words: &[u64; LANES]) -> __m512i {
        #[allow(unsafe_code)]
        // SAFETY: `words` is 64 readable bytes; the load takes any alignment.
        unsafe {
            _mm512_loadu_si512(words.as_ptr().cast())
        }
    }

    #[target_feature(enable = "avx512f")]
    fn store(v: __m512i, words: &mut [u64; LANES]) {
        #[allow(unsafe_code)]
        // SAFETY: `words` is 64 writable bytes; the store takes any alignment.
        unsafe {
            _mm512_storeu_si512(words.as_mut_ptr().cast(), v)
        }
    }

    /// a ^ b ^ c.
    const XOR3: i32 = 0x96;
    /// e ? f : g.
    const CH: i32 = 0xca;
    /// Majority of a, b, c.
    const MAJ: i32 = 0xe8;

    #[target_feature(enable = "avx512f")]
    fn big_sigma0(a: __m512i) -> __m512i {
        _mm512_ternarylogic_epi64::<XOR3>(
            _mm512_ror_epi64::<28>(a),
            _mm512_ror_epi64::<34>(a),
            _mm512_ror_epi64::<39>(a),
        )
    }

    #[target_feature(enable = "avx512f")]
    fn big_sigma1(e: __m512i) -> __m512i {
        _mm512_ternarylogic_epi64::<XOR3>(
            _mm512_ror_epi64::<14>(e),
            _mm512_ror_epi64::<18>(e),
            _mm512_ror_epi64::<41>(e),
        )
    }

    #[target_feature(enable = "avx512f")]
    fn small_sigma0(x: __m512i) -> __m512i {
        _mm512_ternarylogic_epi64::<XOR3>(
            _mm512_ror_epi64::<1>(x),
            _mm512_ror_epi64::<8>(x),
            _mm512_srli_epi64::<7>(x),
        )
    }

    #[target_feature(enable = "avx512f")]
    fn small_sigma1(x: __m512i) -> __m512i {
        _mm512_ternarylogic_epi64::<XOR3>(
            _mm512_ror_epi64::<19>(x),
            _mm512_ror_epi64::<61>(x),
            _mm512_srli_epi64::<6>(x),
        )
    }

    /// One block per lane; lanes outside `active` keep their state.
    #[target_feature(enable = "avx512f")]
    fn compress(s: &mut [__m512i; 8], block: &[[u64; LANES]; 16], active: __mmask8) {
        let mut w: [__m512i; 16] = [_mm512_setzero_si512(); 16];
        for (v, words) in w.iter_mut().zip(block.iter()) {
            *v = load(words);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *s;
        for (t, k) in K.iter().enumerate() {
            let i = t % 16;
            if t >= 16 {
                w[i] = _mm512_add_epi64(
                    _mm512_add_epi64(small_sigma1(w[(i + 14) % 16]), w[(i + 9) % 16]),
                    _mm512_add_epi64(small_sigma0(w[(i + 1) % 16]), w[i]),
                );
            }
            let kw = _mm512_add_epi64(w[i], _mm512_set1_epi64(*k as i64));
            let t1 = _mm512_add_epi64(
                _mm512_add_epi64(h, big_sigma1(e)),
                _mm512_add_epi64(_mm512_ternarylogic_epi64::<CH>(e, f, g), kw),
            );
            let t2 = _mm512_add_epi64(big_sigma0(a), _mm512_ternarylogic_epi64::<MAJ>(a, b, c));
            h = g;
            g = f;
            f = e;
            e = _mm512_add_epi64(d, t1);
            d = c;
            c = b;
            b = a;
            a = _mm512_add_epi64(t1, t2);
        }
        for (v, x) in s.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *v = _mm512_mask_add_epi64(*v, active, *v, x);
        }
    }
}

/// Four lanes of AVX2: 256-bit registers, without AVX-512's rotate and three-input
/// logic (a rotate is two shifts and an or), so a round costs about twice the
/// instructions of AVX-512's and four lanes hash about twice OpenSSL's bytes per second
/// on a core (`examples/bench_sha512.rs`).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{digests, gather_words, initial_state, Blocks, K};

    /// Messages hashed together at most.
    pub(super) const LANES: usize = 4;

    /// Fewer messages than this in a group of four are hashed one by one by OpenSSL:
    /// four lanes cost the same however many hold a message, and two filled run at
    /// about 0.8 of OpenSSL's speed.
    pub(super) const MIN_LANES: usize = 3;

    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    /// Digests of `msgs` (up to [`LANES`] of them; OpenSSL's without AVX2).
    pub(super) fn hash(msgs: &[&[u8]]) -> Vec<[u8; 64]> {
        if !available() || msgs.len() > LANES {
            return msgs.iter().map(|m| openssl::sha::sha512(m)).collect();
        }
        let blocks: Vec<Blocks<'_>> = msgs.iter().map(|m| Blocks::new(m)).collect();
        let mut state = initial_state::<LANES>();
        #[allow(unsafe_code)]
        // SAFETY: `available()` found AVX2 on this CPU just above.
        unsafe {
            compress_all(&blocks, &mut state)
        };
        digests(&state, msgs.len())
    }

    /// Runs every block of every lane through the compression function; a lane whose
    /// message has no block left at a step keeps its state (blended back).
    #[target_feature(enable = "avx2")]
    fn compress_all(blocks: &[Blocks<'_>], state: &mut [[u64; LANES]; 8]) {
        let steps = blocks.iter().map(Blocks::count).max().unwrap_or(0);
        let mut s: [__m256i; 8] = [_mm256_setzero_si256(); 8];
        for (v, words) in s.iter_mut().zip(state.iter()) {
            *v = load(words);
        }
        // Word i of every lane's block, lanes side by side.
        let mut w = [[0u64; LANES]; 16];
        for step in 0..steps {
            let active = gather_words(blocks, step, &mut w).map(|on| if on { u64::MAX } else { 0 });
            compress(&mut s, &w, load(&active));
        }
        for (v, words) in s.iter().zip(state.iter_mut()) {
            store(*v, words);
        }
    }

    #[target_feature(enable = "avx2")]
    fn load(words: &[u64; LANES]) -> __m256i {
        #[allow(unsafe_code)]
        // SAFETY: `words` is 32 readable bytes; the load takes any alignment.
        unsafe {
            _mm256_loadu_si256(words.as_ptr().cast())
        }
    }

    #[target_feature(enable = "avx2")]
    fn store(v: __m256i, words: &mut [u64; LANES]) {
        #[allow(unsafe_code)]
        // SAFETY: `words` is 32 writable bytes; the store takes any alignment.
        unsafe {
            _mm256_storeu_si256(words.as_mut_ptr().cast(), v)
        }
    }

    /// Each lane of `x` rotated right by `N` bits.
    macro_rules! ror {
        ($x:expr, $n:literal) => {
            _mm256_or_si256(
                _mm256_srli_epi64::<$n>($x),
                _mm256_slli_epi64::<{ 64 - $n }>($x),
            )
        };
    }

    #[target_feature(enable = "avx2")]
    fn xor3(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
        _mm256_xor_si256(_mm256_xor_si256(a, b), c)
    }

    #[target_feature(enable = "avx2")]
    fn big_sigma0(a: __m256i) -> __m256i {
        xor3(ror!(a, 28), ror!(a, 34), ror!(a, 39))
    }

    #[target_feature(enable = "avx2")]
    fn big_sigma1(e: __m256i) -> __m256i {
        xor3(ror!(e, 14), ror!(e, 18), ror!(e, 41))
    }

    #[target_feature(enable = "avx2")]
    fn small_sigma0(x: __m256i) -> __m256i {
        xor3(ror!(x, 1), ror!(x, 8), _mm256_srli_epi64::<7>(x))
    }

    #[target_feature(enable = "avx2")]
    fn small_sigma1(x: __m256i) -> __m256i {
        xor3(ror!(x, 19), ror!(x, 61), _mm256_srli_epi64::<6>(x))
    }

    /// One block per lane; lanes whose `active` word is zero keep their state.
    #[target_feature(enable = "avx2")]
    fn compress(s: &mut [__m256i; 8], block: &[[u64; LANES]; 16], active: __m256i) {
        let mut w: [__m256i; 16] = [_mm256_setzero_si256(); 16];
        for (v, words) in w.iter_mut().zip(block.iter()) {
            *v = load(words);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *s;
        for (t, k) in K.iter().enumerate() {
            let i = t % 16;
            if t >= 16 {
                w[i] = _mm256_add_epi64(
                    _mm256_add_epi64(small_sigma1(w[(i + 14) % 16]), w[(i + 9) % 16]),
                    _mm256_add_epi64(small_sigma0(w[(i + 1) % 16]), w[i]),
                );
            }
            let kw = _mm256_add_epi64(w[i], _mm256_set1_epi64x(*k as i64));
            // Ch(e, f, g) = (e & f) ^ (!e & g).
            let ch = _mm256_xor_si256(_mm256_and_si256(e, f), _mm256_andnot_si256(e, g));
            // Maj(a, b, c) = (a & b) ^ ((a ^ b) & c).
            let maj = _mm256_xor_si256(
                _mm256_and_si256(a, b),
                _mm256_and_si256(_mm256_xor_si256(a, b), c),
            );
            let t1 = _mm256_add_epi64(_mm256_add_epi64(h, big_sigma1(e)), _mm256_add_epi64(ch, kw));
            let t2 = _mm256_add_epi64(big_sigma0(a), maj);
            h = g;
            g = f;
            f = e;
            e = _mm256_add_epi64(d, t1);
            d = c;
            c = b;
            b = a;
            a = _mm256_add_epi64(t1, t2);
        }
        for (v, x) in s.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *v = _mm256_blendv_epi8(*v, _mm256_add_epi64(*v, x), active);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod lanes {
    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn width() -> usize {
        1
    }

    pub(super) fn hash(msgs: &[&[u8]]) -> Vec<[u8; 64]> {
        msgs.iter().map(|m| openssl::sha::sha512(m)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::format::test_noise as bytes;

    #[test]
    fn eight_messages_of_every_length_around_the_padding_boundaries_match_openssl() {
        if !lanes_available() {
            eprintln!(
                "SKIPPED: neither AVX-512 nor AVX2 on this CPU; only the OpenSSL path was checked"
            );
        }
        for base in [0usize, 100, 128, 4096, 65536] {
            for delta in 0..=140 {
                let msgs: Vec<Vec<u8>> = (0..LANES)
                    .map(|j| bytes(base + (delta + 17 * j) % 260, (base + delta + j) as u64))
                    .collect();
                let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                let got = sha512_each(&refs);
                for (m, d) in msgs.iter().zip(&got) {
                    assert_eq!(
                        d,
                        &openssl::sha::sha512(m),
                        "length {} among lengths {:?}",
                        m.len(),
                        msgs.iter().map(Vec::len).collect::<Vec<_>>()
                    );
                }
            }
        }
    }

    #[test]
    fn any_count_of_messages_of_unequal_lengths_match_openssl_in_order() {
        let msgs: Vec<Vec<u8>> = (0..21)
            .map(|j| {
                bytes(
                    [0, 1, 111, 112, 127, 128, 239, 240, 1 << 20][j % 9] + j,
                    j as u64,
                )
            })
            .collect();
        for n in 0..=msgs.len() {
            let refs: Vec<&[u8]> = msgs[..n].iter().map(Vec::as_slice).collect();
            let got = sha512_each(&refs);
            assert_eq!(got.len(), n);
            for (m, d) in msgs[..n].iter().zip(&got) {
                assert_eq!(
                    d,
                    &openssl::sha::sha512(m),
                    "{n} messages, length {}",
                    m.len()
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn lanes_alone_match_openssl_for_one_to_eight_messages() {
        if !lanes_available() {
            eprintln!("SKIPPED: neither AVX-512 nor AVX2 on this CPU");
            return;
        }
        let msgs: Vec<Vec<u8>> = (0..LANES).map(|j| bytes(1000 * j + 3, j as u64)).collect();
        for n in 1..=LANES {
            let refs: Vec<&[u8]> = msgs[..n].iter().map(Vec::as_slice).collect();
            for (m, d) in msgs[..n].iter().zip(lanes::hash(&refs)) {
                assert_eq!(d, openssl::sha::sha512(m));
            }
        }
    }

    /// The four-lane kernel on its own (an AVX-512 machine hashes eight together
    /// through `sha512_each`, so this is where it checks the AVX2 path).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_lanes_alone_match_openssl_at_every_length_around_the_padding_boundaries() {
        if !avx2::available() {
            eprintln!("SKIPPED: no AVX2 on this CPU");
            return;
        }
        for base in [0usize, 128, 4096] {
            for delta in 0..=260 {
                for n in 1..=avx2::LANES {
                    let msgs: Vec<Vec<u8>> = (0..n)
                        .map(|j| bytes(base + (delta + 37 * j) % 300, (base + delta + j) as u64))
                        .collect();
                    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                    for (m, d) in msgs.iter().zip(avx2::hash(&refs)) {
                        assert_eq!(d, openssl::sha::sha512(m), "length {} of {n}", m.len());
                    }
                }
            }
        }
    }
}
