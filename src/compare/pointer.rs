//! RFC 6901 JSON pointers: parsing the configured `pointer` and `ignore` paths once,
//! resolving them against a parsed document, removing ignored parts, and escaping
//! tokens back into pointer text for reports.
//!
//! Must never panic on any document, never clone a document to resolve a pointer, and
//! never accept a pointer the RFC rejects (no leading '/', a '~' not followed by 0 or 1).

use serde_json::Value;

use super::SpecError;

/// A compiled pointer to the compared part; `*` is an ordinary key here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer {
    tokens: Vec<String>,
}

impl Pointer {
    /// The whole document (`""`).
    pub(crate) fn root() -> Pointer {
        Pointer { tokens: Vec::new() }
    }

    /// A pointer built from already unescaped tokens (used by presets).
    pub(crate) fn from_tokens(tokens: Vec<String>) -> Pointer {
        Pointer { tokens }
    }

    /// Parses `text`; `key` names the setting (`compare.pointer`) in errors.
    pub(crate) fn parse(text: &str, key: &str) -> Result<Pointer, SpecError> {
        let tokens = split(text, key)?;
        if tokens.iter().any(|t| t == "*") {
            // A user writing `/outputs/*/data` expects a wildcard; RFC 6901 would read it as
            // the literal key "*" and the pointer would silently never resolve.
            return Err(SpecError::PointerWildcard {
                key: key.to_owned(),
                got: text.to_owned(),
            });
        }
        Ok(Pointer { tokens })
    }

    /// Unescaped reference tokens, outermost first.
    pub(crate) fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The value the pointer designates, if the document has it.
    pub(crate) fn resolve<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        self.tokens
            .iter()
            .try_fold(doc, |node, token| child(node, token))
    }
}

/// One token of an ignore path: `*` matches every array index and every object key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Any,
    Name(String),
}

/// A compiled `ignore` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IgnorePath {
    tokens: Vec<Token>,
}

impl IgnorePath {
    /// Ignores one top-level member (used by presets).
    pub(crate) fn top_level(key: &str) -> IgnorePath {
        IgnorePath {
            tokens: vec![Token::Name(key.to_owned())],
        }
    }

    /// Parses `text`; `key` names the setting (`compare.ignore[2]`) in errors.
    pub(crate) fn parse(text: &str, key: &str) -> Result<IgnorePath, SpecError> {
        if text.is_empty() {
            return Err(SpecError::IgnoreEmpty {
                key: key.to_owned(),
            });
        }
        let tokens = split(text, key)?
            .into_iter()
            .map(|t| if t == "*" { Token::Any } else { Token::Name(t) })
            .collect();
        Ok(IgnorePath { tokens })
    }

    /// Removes the designated parts of `doc`. Object members are deleted; array elements
    /// are replaced by `null` instead of deleted, so that later elements keep their
    /// index and reported pointers still point into the document as the server sent it.
    pub(crate) fn remove_from(&self, doc: &mut Value) {
        remove_at(doc, &self.tokens);
    }
}

/// Where an ignore path reaches, seen from the compared target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reach {
    /// It parts from the target's path: nothing in or above the target is removed.
    Outside,
    /// It may remove the target itself or one of its ancestors.
    Target,
    /// It may remove parts inside the target: this path, relative to the target.
    Inside(IgnorePath),
}

impl IgnorePath {
    /// Where this path reaches relative to the target at `target` (tokens from the
    /// root). A `*` matches any target token; different tokens never designate the
    /// same node (keys are unique after parsing, and array indices have one spelling).
    pub(crate) fn reach(&self, target: &[String]) -> Reach {
        for (i, token) in self.tokens.iter().enumerate() {
            let Some(t) = target.get(i) else {
                let rest = self.tokens.get(i..).unwrap_or_default().to_vec();
                return Reach::Inside(IgnorePath { tokens: rest });
            };
            match token {
                Token::Any => {}
                Token::Name(name) if name == t => {}
                Token::Name(_) => return Reach::Outside,
            }
        }
        Reach::Target
    }
}

fn remove_at(node: &mut Value, tokens: &[Token]) {
    let Some((first, rest)) = tokens.split_first() else {
        return;
    };
    match (node, first) {
        (Value::Object(map), Token::Any) if rest.is_empty() => map.clear(),
        (Value::Object(map), Token::Any) => map.values_mut().for_each(|v| remove_at(v, rest)),
        (Value::Object(map), Token::Name(key)) if rest.is_empty() => {
            map.remove(key);
        }
        (Value::Object(map), Token::Name(key)) => {
            if let Some(v) = map.get_mut(key) {
                remove_at(v, rest);
            }
        }
        (Value::Array(items), Token::Any) if rest.is_empty() => {
            items.iter_mut().for_each(|v| *v = Value::Null);
        }
        (Value::Array(items), Token::Any) => items.iter_mut().for_each(|v| remove_at(v, rest)),
        (Value::Array(items), Token::Name(key)) => {
            if let Some(v) = array_index(key).and_then(|i| items.get_mut(i)) {
                if rest.is_empty() {
                    *v = Value::Null;
                } else {
                    remove_at(v, rest);
                }
            }
        }
        _ => {}
    }
}

fn child<'v>(node: &'v Value, token: &str) -> Option<&'v Value> {
    match node {
        Value::Object(map) => map.get(token),
        Value::Array(items) => array_index(token).and_then(|i| items.get(i)),
        _ => None,
    }
}

/// RFC 6901 array index: `0` or a digit string without leading zeros (`-` never resolves).
pub(crate) fn array_index(token: &str) -> Option<usize> {
    let well_formed = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if well_formed {
        token.parse().ok()
    } else {
        None
    }
}

fn split(text: &str, key: &str) -> Result<Vec<String>, SpecError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = text.strip_prefix('/') else {
        return Err(SpecError::PointerStart {
            key: key.to_owned(),
            got: text.to_owned(),
        });
    };
    body.split('/')
        .map(|raw| {
            unescape(raw).ok_or_else(|| SpecError::PointerEscape {
                key: key.to_owned(),
                got: text.to_owned(),
            })
        })
        .collect()
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Appends `/token` to `out`, escaping `~` and `/` as RFC 6901 requires.
pub(crate) fn push_token(out: &mut String, token: &str) {
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ptr(text: &str) -> Pointer {
        Pointer::parse(text, "compare.pointer").expect("valid pointer")
    }

    fn ignore(text: &str, doc: &mut Value) {
        IgnorePath::parse(text, "compare.ignore[0]")
            .expect("valid ignore")
            .remove_from(doc);
    }

    #[test]
    fn empty_pointer_is_the_whole_document() {
        let doc = json!({"a": 1});
        assert_eq!(ptr("").resolve(&doc), Some(&doc));
    }

    #[test]
    fn pointer_resolves_keys_and_indices() {
        let doc = json!({"outputs": [{"data": [1, 2]}, {"data": [3]}]});
        assert_eq!(ptr("/outputs/1/data/0").resolve(&doc), Some(&json!(3)));
        assert_eq!(ptr("/outputs/2").resolve(&doc), None);
        assert_eq!(ptr("/outputs/x").resolve(&doc), None);
    }

    #[test]
    fn pointer_unescapes_tilde_and_slash() {
        let doc = json!({"a/b": {"m~n": true}});
        assert_eq!(ptr("/a~1b/m~0n").resolve(&doc), Some(&json!(true)));
        // ~01 is "~1" literally, not "/": order of unescaping matters.
        let doc = json!({"~1": 5});
        assert_eq!(ptr("/~01").resolve(&doc), Some(&json!(5)));
    }

    #[test]
    fn array_index_rejects_leading_zero_sign_and_dash() {
        let doc = json!([10, 11]);
        assert_eq!(ptr("/01").resolve(&doc), None);
        assert_eq!(ptr("/-").resolve(&doc), None);
        assert_eq!(ptr("/+1").resolve(&doc), None);
        assert_eq!(ptr("/1").resolve(&doc), Some(&json!(11)));
        assert_eq!(ptr("/99999999999999999999999").resolve(&doc), None);
    }

    #[test]
    fn pointer_without_leading_slash_is_rejected_with_key_and_value() {
        let err = Pointer::parse("predictions", "compare.pointer").unwrap_err();
        assert_eq!(
            err.to_string(),
            "compare.pointer must start with '/' (RFC 6901 JSON pointer), got \"predictions\""
        );
    }

    #[test]
    fn bad_tilde_escape_is_rejected() {
        for bad in ["/a~2", "/a~", "/~x/b"] {
            let err = IgnorePath::parse(bad, "compare.ignore[3]").unwrap_err();
            assert!(
                matches!(&err, SpecError::PointerEscape { key, got } if key == "compare.ignore[3]" && got == bad),
                "{err:?}"
            );
        }
    }

    #[test]
    fn wildcard_in_compare_pointer_is_rejected() {
        let err = Pointer::parse("/outputs/*/data", "compare.pointer").unwrap_err();
        assert!(matches!(err, SpecError::PointerWildcard { .. }));
    }

    #[test]
    fn empty_ignore_is_rejected() {
        let err = IgnorePath::parse("", "compare.ignore[1]").unwrap_err();
        assert_eq!(
            err,
            SpecError::IgnoreEmpty {
                key: "compare.ignore[1]".into()
            }
        );
    }

    #[test]
    fn ignore_removes_object_member() {
        let mut doc = json!({"id": "x", "model_version": "v1", "keep": 1});
        ignore("/id", &mut doc);
        ignore("/model_version", &mut doc);
        assert_eq!(doc, json!({"keep": 1}));
    }

    #[test]
    fn ignore_wildcard_matches_every_index_and_key() {
        let mut doc = json!({"outputs": [
            {"name": "a", "parameters": {"x": 1}},
            {"name": "b", "parameters": {"x": 2}}
        ], "meta": {"p": {"t": 1, "u": 2}, "q": {"t": 3}}});
        ignore("/outputs/*/parameters", &mut doc);
        ignore("/meta/*/t", &mut doc);
        assert_eq!(
            doc,
            json!({"outputs": [{"name": "a"}, {"name": "b"}], "meta": {"p": {"u": 2}, "q": {}}})
        );
    }

    #[test]
    fn ignore_array_element_becomes_null_keeping_indices() {
        let mut doc = json!({"rows": [1, 2, 3]});
        ignore("/rows/0", &mut doc);
        assert_eq!(doc, json!({"rows": [null, 2, 3]}));
        ignore("/rows/*", &mut doc);
        assert_eq!(doc, json!({"rows": [null, null, null]}));
    }

    #[test]
    fn ignore_trailing_wildcard_on_object_clears_it() {
        let mut doc = json!({"usage": {"prompt_tokens": 5, "total_tokens": 5}});
        ignore("/usage/*", &mut doc);
        assert_eq!(doc, json!({"usage": {}}));
    }

    #[test]
    fn ignore_escaped_segments_remove_the_right_key() {
        let mut doc = json!({"a/b": 1, "c~d": 2, "a": {"b": 3}});
        ignore("/a~1b", &mut doc);
        ignore("/c~0d", &mut doc);
        assert_eq!(doc, json!({"a": {"b": 3}}));
    }

    #[test]
    fn ignore_of_missing_path_leaves_document_alone() {
        let mut doc = json!({"a": [1, {"b": 2}], "s": "x"});
        let before = doc.clone();
        for p in ["/nope", "/a/5/b", "/a/0/b", "/s/x", "/a/*/c", "/a/01"] {
            ignore(p, &mut doc);
        }
        assert_eq!(doc, before);
    }

    #[test]
    fn push_token_escapes_tilde_and_slash() {
        let mut out = String::new();
        push_token(&mut out, "a/b");
        push_token(&mut out, "m~n");
        push_token(&mut out, "");
        assert_eq!(out, "/a~1b/m~0n/");
    }
}
