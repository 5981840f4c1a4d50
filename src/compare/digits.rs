//! Reading the digits of a number: the hot loop's short-spelling reader (Clinger's
//! exact fast path) and the constants shared with the general reader in `scan`.
//!
//! Must never return a value that is not the correctly rounded value of the text, and
//! never accept a spelling JSON forbids: anything unusual is left to
//! `Scanner::number`.

use super::scan::{Num, SAFE_INT_DIGITS};

/// Digits (integer plus fraction) that surely fit a u64 accumulator: 10^19 < 2^64.
pub(crate) const MAX_EXACT_DIGITS: u32 = 19;

/// 2^52: floats in [2^52, 2^53) are exactly the integers there.
pub(crate) const TWO_52: f64 = 4_503_599_627_370_496.0;

/// Exact powers of ten for the fast conversion (10^22 is the largest exact in f64).
pub(crate) const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

#[inline(always)]
pub(crate) fn skip_ws(bytes: &[u8], mut p: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(p) {
        p += 1;
    }
    p
}

/// Appends the run of ASCII digits at `p` to `acc` (wrapping: callers bound the digit
/// count) and returns where the run ends. The first eight bytes are examined at once
/// (SWAR): a fraction (seven digits in typical float32 output) then costs a few
/// multiplies rather than a loop step per digit. Only the fraction: the integer part
/// before it is short and its loop exit well predicted, and making both data-dependent
/// chained every number's position to two of these computations (measured slower).
#[inline(always)]
fn frac_run(bytes: &[u8], mut p: usize, acc: &mut u64) -> usize {
    if let Some(Ok(chunk)) = bytes.get(p..p + 8).map(<[u8; 8]>::try_from) {
        let sub = u64::from_le_bytes(chunk).wrapping_sub(0x3030_3030_3030_3030);
        // A byte is a digit when it minus '0', and that plus 6, stay below 0x10;
        // borrows and carries only run towards later bytes, past the run's end.
        let stops = (sub | sub.wrapping_add(0x0606_0606_0606_0606)) & 0xF0F0_F0F0_F0F0_F0F0;
        let n = (stops.trailing_zeros() / 8) as usize;
        if n == 0 {
            return p;
        }
        // The n digits to the top bytes (first digit most significant), then combined
        // pairwise: 8 x 1 digit -> 4 x 2 -> 2 x 4 -> 1 x 8.
        let d = sub << (8 * (8 - n));
        let d = (d.wrapping_mul(10) + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
        let d = (d.wrapping_mul(100) + (d >> 16)) & 0x0000_FFFF_0000_FFFF;
        let d = (d.wrapping_mul(10_000) + (d >> 32)) & 0xFFFF_FFFF;
        let scale = POW10_U64.get(n).copied().unwrap_or(0);
        *acc = acc.wrapping_mul(scale).wrapping_add(d);
        p += n;
        if n < 8 {
            return p;
        }
    }
    while let Some(&d @ b'0'..=b'9') = bytes.get(p) {
        *acc = acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        p += 1;
    }
    p
}

/// 10^n for appending n <= 8 digits to an integer.
const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The number at `p` when it has the common spelling `-?digits(.digits)?` of at most
/// 19 digits with a mantissa below 2^52 and no exponent, and where it ends; `None`
/// for any other spelling, any error, and anything not a number, all of which
/// [`Scanner::number`] decides.
#[inline(always)]
pub(crate) fn short<const CONVERT: bool>(bytes: &[u8], mut p: usize) -> Option<(Num, usize)> {
    let negative = bytes.get(p) == Some(&b'-');
    p += usize::from(negative);
    let int_start = p;
    let mut mantissa = 0u64;
    while let Some(&d @ b'0'..=b'9') = bytes.get(p) {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        p += 1;
    }
    let int_digits = p - int_start;
    let mut frac_digits = 0;
    if bytes.get(p) == Some(&b'.') {
        p += 1;
        let frac_start = p;
        p = frac_run(bytes, p, &mut mantissa);
        frac_digits = p - frac_start;
        if frac_digits == 0 {
            return None;
        }
    }
    let plain = int_digits >= 1
        && (int_digits == 1 || bytes.get(int_start) != Some(&b'0'))
        && !matches!(bytes.get(p), Some(b'e' | b'E'))
        && int_digits + frac_digits <= MAX_EXACT_DIGITS as usize
        // Only the conversion needs the mantissa; skipping then computes none.
        && (!CONVERT || mantissa < 1 << 52);
    let pow = *POW10.get(frac_digits).filter(|_| plain)?;
    let value = if CONVERT {
        // Clinger's fast path, as in `Scanner::number`. The mantissa (< 2^52) becomes
        // a float by placing it in the significand of 2^52 and subtracting 2^52, both
        // exact; `as f64` compiles to cvtsi2sd, whose false dependency on its
        // destination would chain each conversion to the previous number's division.
        // The sign is or-ed in rather than branched on: embeddings are half negative,
        // in no predictable order.
        let m = f64::from_bits(TWO_52.to_bits() | mantissa) - TWO_52;
        let v = m / pow;
        f64::from_bits(v.to_bits() | (u64::from(negative) << 63))
    } else {
        0.0
    };
    let big_int = frac_digits == 0 && int_digits > SAFE_INT_DIGITS as usize;
    Some((Num { value, big_int }, p))
}
