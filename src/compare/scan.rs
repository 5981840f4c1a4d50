//! A strict, validating JSON scanner over raw bytes for the fast comparison path: it
//! accepts exactly the documents `serde_json::from_slice::<Value>` accepts (with this
//! crate's `float_roundtrip`), walks containers without building them, and reads
//! numbers straight into `f64`.
//!
//! Must never accept a document serde_json rejects or reject one it accepts: invalid
//! UTF-8 in strings, bad or lone-surrogate escapes, raw control characters, trailing
//! commas or bytes, numbers beyond f64 range (`1e400`), and nesting of 128 containers
//! are all errors there. Must never allocate (except growing the number buffer a
//! caller hands in) and never panic on any input.

use super::digits::{MAX_EXACT_DIGITS, POW10, short, skip_ws};

/// The document is not JSON as serde_json reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

pub(crate) type Res<T> = Result<T, Invalid>;

/// serde_json's recursion limit: its `remaining_depth` starts at 128 and entering the
/// 128th nested array or object fails (127 levels parse).
const MAX_DEPTH: u8 = 127;

/// Integer literals of at most this many digits are below 2^53, so their f64 is the
/// exact integer and f64 arithmetic on them equals serde_json's exact i128 path.
pub(crate) const SAFE_INT_DIGITS: u32 = 15;

/// A number just read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Num {
    /// Its value, correctly rounded (0.0 when not converted).
    pub(crate) value: f64,
    /// An integer literal (no fraction, no exponent) too long to be exact in f64.
    pub(crate) big_int: bool,
}

/// A string just read: its bytes including both quotes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Str<'b> {
    pub(crate) quoted: &'b [u8],
    /// Whether it contains a backslash escape (then the raw bytes are not the text).
    pub(crate) escaped: bool,
}

impl Str<'_> {
    /// Whether the string's text equals `text`.
    pub(crate) fn is(&self, text: &str) -> bool {
        if !self.escaped {
            return self.quoted.get(1..self.quoted.len() - 1) == Some(text.as_bytes());
        }
        // Rare: an escaped key on the target path. serde_json decodes it, so the
        // answer is serde_json's by construction.
        serde_json::from_slice::<String>(self.quoted).is_ok_and(|s| s == text)
    }
}

/// How [`Scanner::numbers`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Numbers {
    /// Every element was a number; the array is consumed.
    Closed,
    /// Element `.0` is not a number: the cursor is at it, and the caller finishes the
    /// array with [`Scanner::elements`].
    Stopped(usize),
}

/// The cursor over one body.
pub(crate) struct Scanner<'b> {
    bytes: &'b [u8],
    pos: usize,
    depth: u8,
}

impl<'b> Scanner<'b> {
    pub(crate) fn new(bytes: &'b [u8]) -> Scanner<'b> {
        Scanner {
            bytes,
            pos: 0,
            depth: 0,
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The bytes from `start` to the cursor.
    pub(crate) fn since(&self, start: usize) -> &'b [u8] {
        self.bytes.get(start..self.pos).unwrap_or_default()
    }

    /// Skips JSON whitespace (space, tab, newline, carriage return only).
    #[inline]
    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline]
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes.get(self.pos).copied()
    }

    /// Only whitespace may follow the top-level value.
    pub(crate) fn finish(&mut self) -> Res<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Invalid),
        }
    }

    fn eat(&mut self, byte: u8) -> Res<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    fn enter(&mut self) -> Res<()> {
        if self.depth >= MAX_DEPTH {
            return Err(Invalid);
        }
        self.depth += 1;
        self.pos += 1;
        Ok(())
    }

    /// Walks an object (cursor at `{`): `member` is called with each key and must
    /// consume the member's value.
    pub(crate) fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, Str<'b>) -> Res<()>,
    ) -> Res<()> {
        self.enter()?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(Invalid);
            }
            let key = self.string()?;
            self.eat(b':')?;
            member(self, key)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => break,
                _ => return Err(Invalid),
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    /// Walks an array (cursor at `[`): `element` is called with each index and must
    /// consume the element.
    pub(crate) fn array(&mut self, element: impl FnMut(&mut Self, usize) -> Res<()>) -> Res<()> {
        self.enter()?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        self.elements(0, element)
    }

    /// The rest of an open array, the cursor at element `index`: walks it and the
    /// following elements (see [`Scanner::array`]) and the closing `]`.
    pub(crate) fn elements(
        &mut self,
        mut index: usize,
        mut element: impl FnMut(&mut Self, usize) -> Res<()>,
    ) -> Res<()> {
        loop {
            element(self, index)?;
            index += 1;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => break,
                _ => return Err(Invalid),
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    /// Opens an array (cursor at `[`) and reads its leading elements while they are
    /// numbers, their values appended to `out` when `KEEP`; `big_int` is set when one
    /// is a long integer literal. This is the hot loop of the fast path: tensors and
    /// embeddings are arrays of numbers.
    pub(crate) fn numbers<const KEEP: bool>(
        &mut self,
        out: &mut Vec<f64>,
        big_int: &mut bool,
    ) -> Res<Numbers> {
        self.enter()?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Numbers::Closed);
        }
        // The cursor lives in a local for the loop (written back on every exit), so
        // that it stays in a register rather than going through `self` per byte.
        let bytes = self.bytes;
        let mut p = self.pos;
        let mut count = 0;
        loop {
            p = skip_ws(bytes, p);
            let n = match short::<KEEP>(bytes, p) {
                Some((n, end)) => {
                    p = end;
                    n
                }
                None => {
                    self.pos = p;
                    if !matches!(bytes.get(p), Some(b'-' | b'0'..=b'9')) {
                        return Ok(Numbers::Stopped(count));
                    }
                    let n = self.number::<KEEP>()?;
                    p = self.pos;
                    n
                }
            };
            if KEEP {
                out.push(n.value);
            }
            *big_int |= n.big_int;
            count += 1;
            if bytes.get(p) != Some(&b',') {
                p = skip_ws(bytes, p);
            }
            match bytes.get(p) {
                Some(b',') => p += 1,
                Some(b']') => {
                    self.pos = p + 1;
                    self.depth -= 1;
                    return Ok(Numbers::Closed);
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// Validates and skips one value of any kind.
    pub(crate) fn skip(&mut self) -> Res<()> {
        match self.peek() {
            Some(b'{') => self.object(|s, _| s.skip()),
            Some(b'[') => match self.numbers::<false>(&mut Vec::new(), &mut false)? {
                Numbers::Closed => Ok(()),
                Numbers::Stopped(n) => self.elements(n, |s, _| s.skip()),
            },
            Some(b'"') => self.string().map(drop),
            Some(b'-' | b'0'..=b'9') => self.number::<false>().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(Invalid),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Res<()> {
        let end = self.pos + word.len();
        if self.bytes.get(self.pos..end) == Some(word) {
            self.pos = end;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// Reads a string (cursor at its opening quote), validating escapes and UTF-8.
    pub(crate) fn string(&mut self) -> Res<Str<'b>> {
        let start = self.pos;
        self.pos += 1;
        let mut escaped = false;
        let mut high = 0u8;
        loop {
            let byte = *self.bytes.get(self.pos).ok_or(Invalid)?;
            self.pos += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0..=0x1f => return Err(Invalid),
                _ => high |= byte,
            }
        }
        let quoted = self.since(start);
        // Escapes decode to whole characters, so checking the raw bytes accepts
        // exactly what checking serde_json's decoded text accepts.
        if high >= 0x80 && std::str::from_utf8(quoted).is_err() {
            return Err(Invalid);
        }
        Ok(Str { quoted, escaped })
    }

    /// One escape after its backslash. serde_json decodes into UTF-8, so a low
    /// surrogate first, or a high surrogate not followed by `\u` + a low one, fails.
    fn escape(&mut self) -> Res<()> {
        let byte = *self.bytes.get(self.pos).ok_or(Invalid)?;
        self.pos += 1;
        match byte {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => match self.hex4()? {
                0xDC00..=0xDFFF => Err(Invalid),
                0xD800..=0xDBFF => {
                    if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                        return Err(Invalid);
                    }
                    self.pos += 2;
                    match self.hex4()? {
                        0xDC00..=0xDFFF => Ok(()),
                        _ => Err(Invalid),
                    }
                }
                _ => Ok(()),
            },
            _ => Err(Invalid),
        }
    }

    fn hex4(&mut self) -> Res<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(Invalid)?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + char::from(d).to_digit(16).ok_or(Invalid)?;
        }
        self.pos += 4;
        Ok(n)
    }

    #[inline]
    fn digits(&mut self, acc: &mut u64) -> u32 {
        let start = self.pos;
        while let Some(&d @ b'0'..=b'9') = self.bytes.get(self.pos) {
            *acc = acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.pos += 1;
        }
        (self.pos - start) as u32
    }

    /// [`Scanner::number`] through [`short`] first, as the hot loop reads numbers.
    #[cfg(test)]
    pub(crate) fn short_number<const CONVERT: bool>(&mut self) -> Res<Num> {
        match short::<CONVERT>(self.bytes, self.pos) {
            Some((n, end)) => {
                self.pos = end;
                Ok(n)
            }
            None => self.number::<CONVERT>(),
        }
    }

    /// Reads a number (cursor at its first byte). `CONVERT` computes its value;
    /// without it only validity is decided (which still needs the value of numbers
    /// that could exceed f64 range, as serde_json rejects those).
    #[inline]
    pub(crate) fn number<const CONVERT: bool>(&mut self) -> Res<Num> {
        let start = self.pos;
        let negative = self.bytes.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let mut mantissa = 0u64;
        let int_digits = match self.bytes.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.bytes.get(self.pos) {
                    return Err(Invalid); // leading zero
                }
                0
            }
            Some(b'1'..=b'9') => self.digits(&mut mantissa),
            _ => return Err(Invalid),
        };
        let mut frac_digits = 0;
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            frac_digits = self.digits(&mut mantissa);
            if frac_digits == 0 {
                return Err(Invalid);
            }
        }
        let mut exp: i64 = 0;
        let has_exp = matches!(self.bytes.get(self.pos), Some(b'e' | b'E'));
        if has_exp {
            self.pos += 1;
            let exp_negative = match self.bytes.get(self.pos) {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let digits_start = self.pos;
            while let Some(&d @ b'0'..=b'9') = self.bytes.get(self.pos) {
                // Saturate far beyond any exponent that matters (|exp| > 10^9 means
                // overflow or zero for any body that fits in memory).
                exp = (exp * 10 + i64::from(d - b'0')).min(1 << 40);
                self.pos += 1;
            }
            if self.pos == digits_start {
                return Err(Invalid);
            }
            if exp_negative {
                exp = -exp;
            }
        }
        let is_int = frac_digits == 0 && !has_exp;
        let big_int = is_int && int_digits > SAFE_INT_DIGITS;
        // |value| < 10^(int_digits + exp): below 10^309 it cannot round to infinity.
        let may_overflow = i64::from(int_digits) + exp >= 309;
        if !CONVERT && !may_overflow {
            return Ok(Num {
                value: 0.0,
                big_int,
            });
        }
        let digits = int_digits.max(1) + frac_digits;
        let e10 = exp - i64::from(frac_digits);
        let value =
            if digits <= MAX_EXACT_DIGITS && mantissa <= 1 << 53 && (-22..=22).contains(&e10) {
                // Clinger's fast path: mantissa and 10^|e10| are exact in f64, so one
                // correctly rounded multiply or divide gives the correctly rounded value.
                let m = mantissa as f64;
                let p = POW10
                    .get(e10.unsigned_abs() as usize)
                    .copied()
                    .unwrap_or(1.0);
                let v = if e10 < 0 { m / p } else { m * p };
                if negative { -v } else { v }
            } else {
                // Correctly rounded (Eisel-Lemire with a big-decimal fallback) on the
                // validated ASCII text.
                let text = std::str::from_utf8(self.since(start)).map_err(|_| Invalid)?;
                text.parse::<f64>().map_err(|_| Invalid)?
            };
        if value.is_infinite() {
            return Err(Invalid);
        }
        Ok(Num { value, big_int })
    }
}
