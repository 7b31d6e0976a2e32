//! Text that deflate cannot shrink, as a long note pasted from elsewhere reads to it: for tests
//! that need charts of a real size on the wire. (Also used by the end-to-end tests' crate.)

/// `chars` lowercase letters from a xorshift generator seeded with `seed`.
pub fn incompressible_text(chars: usize, seed: u64) -> String {
    let mut x = seed.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..chars)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}
