//! SHA-512 throughput of one core: OpenSSL one message at a time against
//! `format::sha512_lanes` with 1 to 8 messages together (eight AVX-512 lanes, or groups
//! of four AVX2 lanes on a CPU without AVX-512).
//! Usage: cargo run --release --example bench_sha512 [MESSAGE_KIB] [MIB_PER_CASE]

use std::time::Instant;

use mindcastle::format::sha512_lanes::{lanes_available, sha512_each, LANES};

fn main() {
    let mut args = std::env::args().skip(1);
    let kib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let msgs: Vec<Vec<u8>> = (0..LANES)
        .map(|j| (0..kib << 10).map(|i| (i * 31 + j * 7) as u8).collect())
        .collect();
    let total = mib << 20;
    let start = Instant::now();
    let mut done = 0;
    let mut sink = 0u8;
    while done < total {
        for m in &msgs {
            sink ^= openssl::sha::sha512(m)[0];
            done += m.len();
        }
    }
    let base = done as f64 / start.elapsed().as_secs_f64() / 1e6;
    println!("openssl, one at a time: {base:.0} MB/s");
    println!("lanes available: {}", lanes_available());
    for n in 1..=LANES {
        let refs: Vec<&[u8]> = msgs[..n].iter().map(Vec::as_slice).collect();
        let start = Instant::now();
        let mut done = 0;
        while done < total {
            for d in sha512_each(&refs) {
                sink ^= d[0];
            }
            done += n * (kib << 10);
        }
        let rate = done as f64 / start.elapsed().as_secs_f64() / 1e6;
        println!("{n} together: {rate:.0} MB/s ({:.2}x)", rate / base);
    }
    std::hint::black_box(sink);
}
