//! `GET /`: the live rollout page, one self-contained HTML file
//! (`page.html`, inline CSS and JS, nothing fetched from elsewhere) that
//! polls `/status` and `/mismatches` and posts the rollout commands.
//!
//! Its content security policy allows the page's own inline `<style>` and
//! `<script>` by their SHA-256 hashes rather than with `'unsafe-inline'`:
//! the page shows model outputs, which are untrusted text, and with hashes
//! nothing but those two blocks can run or style it even if some text ever
//! reached the DOM as markup (no injected `<script>`, event handler
//! attribute or `style` attribute is honoured). The hashes are computed
//! from the embedded file once, so editing the page cannot leave them stale.

use std::sync::LazyLock;

use base64::Engine;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use http_body_util::Full;

const PAGE: &str = include_str!("page.html");

static POLICY: LazyLock<HeaderValue> =
    LazyLock::new(|| HeaderValue::from_str(&policy(PAGE)).expect("the policy is ASCII"));

/// The page with its security headers.
pub fn response() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert("content-security-policy", POLICY.clone());
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // The page is part of the binary: a cached copy from another version
    // would call an API it does not match.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Same-origin everything (the page only fetches the admin API it came
/// from); scripts and styles only the page's own inline blocks; images
/// also from `data:`, for the page's empty icon, which keeps the browser
/// from asking the admin API for a `/favicon.ico` it does not have; no
/// plugins, no `<base>`, no form posts, no framing.
fn policy(page: &str) -> String {
    format!(
        "default-src 'self'; script-src '{}'; style-src '{}'; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash_of_block(page, "script"),
        hash_of_block(page, "style"),
    )
}

/// `sha256-…` of the text inside the page's one `<tag>…</tag>` block, as
/// the browser hashes it. Panics if the page does not have exactly one:
/// the unit tests load the embedded page, so that cannot ship.
fn hash_of_block(page: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    assert_eq!(page.matches(&open).count(), 1, "one {open} in the page");
    let start = page.find(&open).expect("counted above") + open.len();
    let end = start + page[start..].find(&close).expect("a closed block");
    let digest = ring::digest::digest(&ring::digest::SHA256, &page.as_bytes()[start..end]);
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_hash_of_each_inline_block() {
        let page = "<style>b{}</style><script>x()</script>";
        // `printf 'x()' | openssl dgst -sha256 -binary | base64`
        let policy = policy(page);
        assert!(
            policy.contains("script-src 'sha256-D6IGS8VMvCoyaR/l0h9tERrBTATY01CoPS7l6xDv0kI='"),
            "{policy}"
        );
        assert!(policy.starts_with("default-src 'self'; "), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
    }

    #[test]
    fn the_embedded_page_has_one_script_and_one_style_and_no_markup_sinks() {
        let header = POLICY.to_str().unwrap();
        assert_eq!(header.matches("'sha256-").count(), 2, "{header}");
        // Untrusted text goes in with textContent; these would parse it.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!PAGE.contains(sink), "the page uses {sink}");
        }
        // Everything is inline: nothing to load from another origin.
        for external in ["src=\"http", "href=\"http", "@import", "url("] {
            assert!(!PAGE.contains(external), "the page loads {external}");
        }
    }
}
