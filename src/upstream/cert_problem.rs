//! A peer's certificate that verification refused, said in words: what is
//! wrong with it and what to change, naming the config key and file
//! involved. rustls says `invalid peer certificate: UnknownIssuer`; the log
//! line says that the certificate is not signed by the CA in
//! `backends.stable.ca` and where to point that key instead, and keeps
//! rustls's words after it.

use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use rustls::CertificateError;
use rustls::pki_types::UnixTime;

use crate::box_error::BoxError;

/// Whose certificate it is and which keys configure its trust.
#[derive(Clone, Debug)]
pub struct Trust {
    /// `backend` or `webhook`.
    pub peer: &'static str,
    /// The key of the CA file, e.g. `backends.stable.ca`.
    pub ca_key: String,
    /// The key of the URL whose host the certificate must name.
    pub url_key: String,
    /// The CA file; `None` means Mozilla's roots.
    pub ca: Option<PathBuf>,
}

/// `source` with the sentence for the certificate problem in its chain
/// in front of it; unchanged when it holds none that has a sentence.
pub fn explain(source: BoxError, trust: &Trust) -> BoxError {
    match certificate_error(&*source).and_then(|problem| sentence(problem, trust)) {
        Some(sentence) => Box::new(Explained { sentence, source }),
        None => source,
    }
}

/// The sentence in front of the error it explains.
#[derive(Debug)]
struct Explained {
    sentence: String,
    source: BoxError,
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sentence)
    }
}

impl Error for Explained {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// The certificate error anywhere in `error`'s chain. An `io::Error`
/// (as tokio-rustls and hyper-rustls wrap the handshake's error) passes
/// on the source of the error it holds instead of that error, so it is
/// opened by hand.
fn certificate_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a CertificateError> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(rustls::Error::InvalidCertificate(problem)) = error.downcast_ref() {
            return Some(problem);
        }
        next = match error
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref())
        {
            Some(inner) => Some(inner),
            None => error.source(),
        };
    }
    None
}

/// What `problem` means for the peer of `trust`, and what to do.
pub fn sentence(problem: &CertificateError, trust: &Trust) -> Option<String> {
    let Trust {
        peer,
        ca_key,
        url_key,
        ca,
    } = trust;
    let in_ca = match ca {
        Some(path) => format!("the CA in {ca_key} ({})", path.display()),
        None => format!("Mozilla's roots (no {ca_key} is set)"),
    };
    let in_ca_file = match ca {
        Some(path) => format!("{ca_key} ({})", path.display()),
        None => format!("Mozilla's roots (no {ca_key} is set)"),
    };
    #[allow(deprecated)]
    let sentence = match problem {
        CertificateError::UnknownIssuer => format!(
            "the {peer}'s certificate is not signed by {in_ca}: point {ca_key} at the CA \
             that issued it, or at the certificate itself if it is self-signed"
        ),
        CertificateError::Other(other) if ca_used_as_end_entity(other) => format!(
            "the {peer}'s certificate is a CA certificate (CA:TRUE), which is trusted as a \
             server's own only when {ca_key} holds that very certificate: put it in \
             {ca_key}, or have the {peer} serve a certificate its CA issued for it"
        ),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "the {peer}'s certificate is not valid for {}, the host in {url_key} (it names \
             {}): put one of its names in {url_key}, or reissue it with that host in its \
             subjectAltName",
            expected.to_str(),
            names(presented)
        ),
        CertificateError::NotValidForName => format!(
            "the {peer}'s certificate does not name the host in {url_key}: put one of its \
             names in {url_key}, or reissue it with that host in its subjectAltName"
        ),
        CertificateError::ExpiredContext { not_after, .. } => format!(
            "the {peer}'s certificate expired at {}: renew it on the {peer}",
            timestamp(*not_after)
        ),
        CertificateError::Expired => {
            format!("the {peer}'s certificate has expired: renew it on the {peer}")
        }
        CertificateError::NotValidYetContext { not_before, .. } => format!(
            "the {peer}'s certificate is not valid before {}: check the clocks of this host \
             and of whoever issued it",
            timestamp(*not_before)
        ),
        CertificateError::NotValidYet => format!(
            "the {peer}'s certificate is not valid yet: check the clocks of this host and of \
             whoever issued it"
        ),
        CertificateError::BadSignature => format!(
            "a signature on the {peer}'s certificate does not verify with the key of the CA \
             named as its issuer in {in_ca_file}, as when a CA is made again under the same \
             name: point {ca_key} at the CA that issued it"
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!(
                "the {peer}'s certificate is not for TLS servers (its extended key usage \
                 lacks serverAuth): reissue it with serverAuth"
            )
        }
        CertificateError::UnsupportedSignatureAlgorithm
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => format!(
            "the {peer}'s certificate is signed with an algorithm rustls does not accept: \
             reissue it with an RSA, ECDSA (P-256, P-384) or Ed25519 signature over SHA-256 \
             or better"
        ),
        CertificateError::UnhandledCriticalExtension => format!(
            "the {peer}'s certificate has a critical extension rustls does not know: reissue \
             it without that extension"
        ),
        CertificateError::Revoked => {
            format!("the {peer}'s certificate is revoked: the {peer} needs a new one")
        }
        CertificateError::BadEncoding => format!(
            "the {peer} sent a certificate that is not valid DER: check the certificate file \
             it serves"
        ),
        _ => return None,
    };
    Some(sentence)
}

/// webpki's refusal of a certificate with `CA:TRUE` as the server's own,
/// which rustls passes on as an `Other` error.
pub(super) fn ca_used_as_end_entity(other: &rustls::OtherError) -> bool {
    matches!(
        other.0.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::CaUsedAsEndEntity)
    )
}

/// The names a certificate presents as webpki lists them
/// (`DnsName("localhost")`, `IpAddress(127.0.0.1)`), as plain names.
fn names(presented: &[String]) -> String {
    if presented.is_empty() {
        return "no DNS name or IP address".to_owned();
    }
    presented
        .iter()
        .map(|name| {
            let inner = name
                .split_once('(')
                .and_then(|(_, rest)| rest.strip_suffix(')'))
                .unwrap_or(name);
            inner.trim_matches('"').to_owned()
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn timestamp(time: UnixTime) -> String {
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(time.as_secs());
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::pki_types::ServerName;

    use super::*;

    fn stable(ca: Option<&str>) -> Trust {
        Trust {
            peer: "backend",
            ca_key: "backends.stable.ca".into(),
            url_key: "backends.stable.url".into(),
            ca: ca.map(PathBuf::from),
        }
    }

    fn said(problem: CertificateError, trust: &Trust) -> String {
        sentence(&problem, trust).expect("a sentence")
    }

    #[test]
    fn an_unknown_issuer_names_the_ca_file_or_the_default_roots() {
        let text = said(
            CertificateError::UnknownIssuer,
            &stable(Some("/etc/ca.pem")),
        );
        assert!(
            text.starts_with(
                "the backend's certificate is not signed by the CA in backends.stable.ca \
                 (/etc/ca.pem): point backends.stable.ca at the CA that issued it"
            ),
            "{text}"
        );
        assert!(text.ends_with("or at the certificate itself if it is self-signed"));
        let text = said(CertificateError::UnknownIssuer, &stable(None));
        assert!(
            text.contains("not signed by Mozilla's roots (no backends.stable.ca is set)"),
            "{text}"
        );
    }

    #[test]
    fn a_wrong_name_says_which_names_the_certificate_has() {
        let problem = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("127.0.0.1").unwrap(),
            presented: vec![
                "DnsName(\"localhost\")".into(),
                "IpAddress(10.0.0.1)".into(),
            ],
        };
        let text = said(problem, &stable(None));
        assert!(
            text.starts_with(
                "the backend's certificate is not valid for 127.0.0.1, the host in \
                 backends.stable.url (it names localhost, 10.0.0.1)"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_expired_certificate_says_when() {
        let problem = CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_709_164_800)),
        };
        assert_eq!(
            said(problem, &stable(None)),
            "the backend's certificate expired at 2024-02-29T00:00:00Z: renew it on the backend"
        );
    }

    #[test]
    fn a_ca_certificate_served_as_the_server_s_own_says_to_pin_it() {
        let problem = CertificateError::Other(rustls::OtherError(Arc::new(
            webpki::Error::CaUsedAsEndEntity,
        )));
        let text = said(problem, &stable(Some("ca.pem")));
        assert!(text.contains("CA certificate (CA:TRUE)"), "{text}");
        assert!(
            text.contains("only when backends.stable.ca holds that very certificate"),
            "{text}"
        );
        let other = CertificateError::Other(rustls::OtherError(Arc::new(
            webpki::Error::UnsupportedCriticalExtension,
        )));
        assert_eq!(sentence(&other, &stable(None)), None);
    }

    #[test]
    fn the_sentence_goes_in_front_of_the_error_deep_in_a_chain() {
        // As hyper-rustls hands it back: an io::Error around tokio-rustls's
        // io::Error around rustls's error.
        let rustls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let outer: BoxError = Box::new(std::io::Error::other(inner));
        let explained = explain(outer, &stable(Some("ca.pem")));
        assert!(
            explained
                .to_string()
                .starts_with("the backend's certificate is not signed by the CA in"),
            "{explained}"
        );
        let below = explained.source().expect("the error it explains");
        assert_eq!(below.to_string(), "invalid peer certificate: UnknownIssuer");

        let refused: BoxError =
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let text = explain(refused, &stable(None)).to_string();
        assert_eq!(text, "connection refused");
    }
}
