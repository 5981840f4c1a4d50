//! Tests of the strict scanner against serde_json itself: which documents are JSON
//! (edge cases of every kind serde_json rejects), and the value of every number.
//!
//! Must compare with serde_json's own verdicts and values, never with expectations
//! written by hand.

use super::scan::Scanner;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn scan_ok(doc: &[u8]) -> bool {
    let mut sc = Scanner::new(doc);
    sc.skip().and_then(|()| sc.finish()).is_ok()
}

fn serde_ok(doc: &[u8]) -> bool {
    serde_json::from_slice::<Value>(doc).is_ok()
}

#[test]
fn validity_matches_serde_json_on_edge_documents() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep_obj = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    let mut docs: Vec<Vec<u8>> = [
        "",
        " ",
        "1",
        " 1 ",
        "-",
        "-0",
        "01",
        "-01",
        "1.",
        ".5",
        "1e",
        "1e+",
        "1E5",
        "1x",
        "+1",
        "0x1",
        "1e400",
        "-1e400",
        "1e-400",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        "0e99999999999999999999",
        "1e99999999999999999999",
        "0.0000001e315",
        "[1,]",
        "[,1]",
        "[1 2]",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{1:1}",
        "{\"a\":1,\"a\":2}",
        "[]",
        "{}",
        "[[]",
        "]",
        "tru",
        "true",
        "truex",
        "nul",
        "null",
        "\"\\u00e9\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud83d\"",
        "\"\\ude00\"",
        "\"\\ud83d\\n\"",
        "\"\\ud83d\\ud83d\"",
        "\"\\u12\"",
        "\"\\x\"",
        "\"a\tb\"",
        "\"a\u{7f}b\"",
        "\"abc",
        "\"\\\"",
        "\u{feff}1",
        "[1]\n",
        "[1] x",
        "\"caf\u{e9}\"",
        "[01]",
        "[-01]",
        "[0.5,01]",
        "[00.5]",
        "[0.5, 0 1]",
        "[0e1]",
        "[-0.0,-]",
        "[1.5e]",
        "[0.]",
    ]
    .iter()
    .map(|d| d.as_bytes().to_vec())
    .collect();
    docs.push(format!("1{}", "0".repeat(308)).into_bytes());
    docs.push(format!("1{}", "0".repeat(309)).into_bytes());
    docs.push(format!("0.{}1e400", "0".repeat(100)).into_bytes());
    for n in [126, 127, 128, 129] {
        docs.push(deep(n).into_bytes());
        docs.push(deep_obj(n).into_bytes());
    }
    docs.push(b"\"\xff\"".to_vec());
    docs.push(b"\"\xc3\"".to_vec());
    docs.push(b"\"\xc3\\n\xa9\"".to_vec());
    docs.push(b"\"\xed\xa0\x80\"".to_vec()); // a surrogate encoded in UTF-8
    docs.push(b"[1]\x00".to_vec());
    for doc in &docs {
        assert_eq!(
            scan_ok(doc),
            serde_ok(doc),
            "{:?}",
            String::from_utf8_lossy(doc)
        );
    }
}

/// A random number spelling: 1 to 25 digits, a fraction, an exponent.
fn spelling(rng: &mut StdRng) -> String {
    let digits = |rng: &mut StdRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect()
    };
    let mut s = String::new();
    if rng.random_bool(0.3) {
        s.push('-');
    }
    let n = rng.random_range(1..20);
    let int = digits(rng, n);
    s.push_str(int.trim_start_matches('0'));
    if s.is_empty() || s == "-" {
        s.push('0');
    }
    if rng.random_bool(0.7) {
        s.push('.');
        let n = rng.random_range(1..25);
        s.push_str(&digits(rng, n));
    }
    if rng.random_bool(0.4) {
        s.push_str(&format!("e{}", rng.random_range(-330..330)));
    }
    s
}

#[test]
fn converted_numbers_equal_serde_json_float_roundtrip() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..200_000 {
        let text = spelling(&mut rng);
        let serde = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.as_f64());
        let mut sc = Scanner::new(text.as_bytes());
        // The short reader hands every spelling it does not take to `number`.
        let ours = sc
            .short_number::<true>()
            .ok()
            .filter(|_| sc.finish().is_ok());
        match (serde, ours) {
            (Some(x), Some(n)) => assert_eq!(x.to_bits(), n.value.to_bits(), "{text}"),
            (None, None) => {}
            _ => panic!("{text}: serde_json {serde:?}, scanner {ours:?}"),
        }
    }
}
