//! How two generated texts (an LLM's message content, completion text or
//! tool-call arguments) are judged: `compare.text` and `compare.min_similarity`.
//!
//! Must never cost more than a bounded amount per pair, whatever the texts'
//! length: the similarity measure is quadratic only up to [`MAX_CELLS`].

use std::collections::HashMap;

/// `compare.text`: how generated texts are compared (the `openai` preset's
/// chat and completions answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextMode {
    /// Byte for byte (so a composed "é" and "e" + U+0301 differ).
    #[default]
    Exact,
    /// After [`normalize`]: Unicode whitespace runs collapsed to one space,
    /// ends trimmed, lowercased with `str::to_lowercase`.
    Normalized,
    /// ROUGE-L F1 over word tokens (see [`similarity`]) at least
    /// `compare.min_similarity`.
    Similarity,
    /// Both texts parsed as JSON and compared as values, with the numeric
    /// tolerances; text that is JSON on one side only differs, text that is
    /// JSON on neither side is compared exactly.
    Json,
}

impl TextMode {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TextMode::Exact => "exact",
            TextMode::Normalized => "normalized",
            TextMode::Similarity => "similarity",
            TextMode::Json => "json",
        }
    }
}

/// Whitespace runs (`char::is_whitespace`, Unicode's White_Space property:
/// also no-break and ideographic spaces) become one ASCII space, both ends are
/// trimmed, and letters are lowercased with `str::to_lowercase`. That is
/// Unicode's default lowercase mapping, not full case folding: "ẞ" becomes
/// "ß" but "ß" never becomes "ss", so "STRASSE" and "straße" differ. No
/// Unicode normalization (NFC) is applied: composed and decomposed accents
/// differ.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.to_lowercase()
}

/// Most dynamic-programming cells one similarity may cost: about 4,000 by
/// 4,000 differing tokens, tens of milliseconds on one core.
pub const MAX_CELLS: usize = 1 << 24;

/// ROUGE-L F1 of two texts: 2·LCS / (tokens of a + tokens of b), where LCS is
/// the longest common subsequence of their tokens. 1 for two empty texts, 0
/// when only one is empty.
///
/// Tokens are runs of non-whitespace, except that each CJK ideograph, kana
/// and CJK punctuation character is a token of its own (those scripts put no
/// spaces between words). Tokens compare exactly (case and accents count).
///
/// Word tokens rather than characters: a paraphrase that swaps one word for
/// another costs one token, whatever the words' lengths, and the cost grows
/// with tokens, five or so times fewer than characters. The common prefix and
/// suffix are stripped first (they are in every LCS), so texts that diverge
/// late cost little. When the rest exceeds [`MAX_CELLS`], its LCS is replaced
/// by an upper bound, the tokens the two rests share counted with
/// multiplicity: the score can then only be higher than ROUGE-L's.
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (tokens(a), tokens(b));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let total = a.len() + b.len();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (a_rest, b_rest) = (&a[prefix..], &b[prefix..]);
    let suffix = a_rest
        .iter()
        .rev()
        .zip(b_rest.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let a_mid = &a_rest[..a_rest.len() - suffix];
    let b_mid = &b_rest[..b_rest.len() - suffix];
    let middle = if a_mid.len().saturating_mul(b_mid.len()) <= MAX_CELLS {
        lcs(a_mid, b_mid)
    } else {
        shared(a_mid, b_mid)
    };
    let lcs = prefix + suffix + middle;
    2.0 * lcs as f64 / total as f64
}

fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3000}'..='\u{303F}' // CJK symbols and punctuation
        | '\u{3040}'..='\u{30FF}' // hiragana, katakana
        | '\u{3400}'..='\u{4DBF}' // CJK extension A
        | '\u{4E00}'..='\u{9FFF}' // CJK unified ideographs
        | '\u{F900}'..='\u{FAFF}' // CJK compatibility ideographs
        | '\u{FF00}'..='\u{FFEF}' // half- and full-width forms
        | '\u{20000}'..='\u{2FA1F}' // CJK extensions B to F, compatibility supplement
    )
}

/// The tokens of `text`, in order (see [`similarity`]).
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let mut start = 0;
        for (at, c) in word.char_indices() {
            if is_cjk(c) {
                if start < at {
                    out.push(&word[start..at]);
                }
                let end = at + c.len_utf8();
                out.push(&word[at..end]);
                start = end;
            }
        }
        if start < word.len() {
            out.push(&word[start..]);
        }
    }
    out
}

/// Length of the longest common subsequence, two rows of the classic table
/// over interned token ids.
fn lcs<'t>(a: &[&'t str], b: &[&'t str]) -> usize {
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    let mut ids: HashMap<&'t str, u32> = HashMap::new();
    let mut intern = |t: &'t str| {
        let next = ids.len() as u32;
        *ids.entry(t).or_insert(next)
    };
    let a: Vec<u32> = a.iter().map(|t| intern(t)).collect();
    let b: Vec<u32> = b.iter().map(|t| intern(t)).collect();
    let mut prev = vec![0u32; b.len() + 1];
    let mut row = vec![0u32; b.len() + 1];
    for &x in &a {
        for (j, &y) in b.iter().enumerate() {
            row[j + 1] = if x == y {
                prev[j] + 1
            } else {
                row[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()] as usize
}

/// Tokens both sides hold, counted with multiplicity: an upper bound of the LCS.
fn shared(a: &[&str], b: &[&str]) -> usize {
    let mut counts: HashMap<&str, isize> = HashMap::new();
    for t in a {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0;
    for t in b {
        if let Some(n) = counts.get_mut(t)
            && *n > 0
        {
            *n -= 1;
            common += 1;
        }
    }
    common
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_collapses_unicode_whitespace_and_lowercases() {
        assert_eq!(
            normalize("  Hello,\u{00A0}\u{3000}WORLD\n\t!  "),
            "hello, world !"
        );
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \n "), "");
        // Default lowercase mapping: capital sharp s lowers to ß, ß stays ß.
        assert_eq!(normalize("STRAẞE"), "straße");
        assert_ne!(normalize("STRASSE"), normalize("straße"));
        assert_eq!(normalize("ΣΊΣΥΦΟΣ"), "σίσυφος");
        // No NFC: composed and decomposed é stay different.
        assert_ne!(normalize("caf\u{e9}"), normalize("cafe\u{301}"));
        // CJK and emoji have no case and pass through.
        assert_eq!(normalize("模型 😀 OK"), "模型 😀 ok");
    }

    #[test]
    fn tokens_split_on_whitespace_and_around_each_cjk_character() {
        assert_eq!(tokens("a  b\u{2003}c"), ["a", "b", "c"]);
        assert_eq!(
            tokens("我喜欢Rust语言。"),
            ["我", "喜", "欢", "Rust", "语", "言", "。"]
        );
        assert_eq!(tokens("はい、そう"), ["は", "い", "、", "そ", "う"]);
        assert_eq!(tokens("👍🏽 cafe\u{301}"), ["👍🏽", "cafe\u{301}"]);
    }

    #[test]
    fn similarity_is_rouge_l_f1() {
        assert_eq!(similarity("", ""), 1.0);
        assert_eq!(similarity("a", ""), 0.0);
        assert_eq!(similarity("the cat sat", "the cat sat"), 1.0);
        // LCS "the cat" of 3 + 3 tokens: 4/6.
        assert!((similarity("the cat sat", "the cat ran") - 4.0 / 6.0).abs() < 1e-12);
        // Word order matters: LCS of "a b c" and "c b a" is 1.
        assert!((similarity("a b c", "c b a") - 2.0 / 6.0).abs() < 1e-12);
        // One differing ideograph in six.
        assert!((similarity("我喜欢猫咪。", "我喜欢狗咪。") - 10.0 / 12.0).abs() < 1e-12);
        // Whitespace does not count, case does.
        assert_eq!(similarity("a  b", "a\nb"), 1.0);
        assert!(similarity("Hello", "hello") < 1.0);
    }

    #[test]
    fn similarity_of_long_texts_is_bounded_and_strips_common_ends() {
        let words: Vec<String> = (0..50_000).map(|i| format!("w{i}")).collect();
        let a = words.join(" ");
        let mut b_words = words.clone();
        b_words[25_000] = "changed".into();
        let b = b_words.join(" ");
        // Only one token differs after stripping the common prefix and suffix.
        assert!((similarity(&a, &b) - 99_998.0 / 100_000.0).abs() < 1e-12);
        // Reversed: no common ends, 50,000² cells: the shared-token bound.
        let reversed: Vec<&str> = words.iter().rev().map(String::as_str).collect();
        let started = std::time::Instant::now();
        assert_eq!(similarity(&a, &reversed.join(" ")), 1.0);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn lcs_matches_a_hand_count() {
        assert_eq!(
            lcs(&["a", "b", "c", "b", "d"], &["b", "d", "c", "a", "b"]),
            3
        );
        assert_eq!(lcs(&[], &["a"]), 0);
        assert_eq!(shared(&["a", "a", "b"], &["a", "b", "b"]), 2);
    }
}
