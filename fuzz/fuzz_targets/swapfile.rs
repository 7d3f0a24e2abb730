//! Any text as a `.swap` file: parsing returns a value or an error naming the line,
//! never panics; what parses renders and parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mindcastle::format::swapfile::SwapFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(swap) = SwapFile::parse(text, "fuzz.swap") {
        let again = SwapFile::parse(&swap.render(), "fuzz.swap").expect("rendered .swap parses");
        assert_eq!(again.render(), swap.render());
    }
});
