//! The verifier's own decisions, without a handshake: a pinned certificate
//! is checked for its validity period and name, and a self-signed `CA:TRUE`
//! certificate that is not pinned is an unknown issuer. (Handshakes through
//! the proxy are in `tests/tls_upstream.rs`.)

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, date_time_ymd};

use super::*;

/// A self-signed `CA:TRUE` certificate for `localhost`, valid from
/// 2020-01-01 to 2030-01-01.
fn self_signed_ca(name: &str) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2030, 1, 1);
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().clone()
}

/// A verifier trusting exactly `ca`, as a `ca` file holding it would.
fn verifier(ca: &CertificateDer<'static>) -> Verifier {
    tls::install_crypto_provider();
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    Verifier {
        webpki: WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .unwrap(),
        pins: vec![ca.clone()],
        trust: Trust {
            peer: "backend",
            ca_key: "backends.stable.ca".into(),
            url_key: "backends.stable.url".into(),
            ca: None,
        },
    }
}

/// Midnight UTC of the given date.
fn at(year: i32, month: u8, day: u8) -> UnixTime {
    let seconds = date_time_ymd(year, month, day).unix_timestamp();
    UnixTime::since_unix_epoch(Duration::from_secs(seconds as u64))
}

fn verify(
    verifier: &Verifier,
    cert: &CertificateDer<'_>,
    name: &str,
    now: UnixTime,
) -> Result<ServerCertVerified, rustls::Error> {
    let name = ServerName::try_from(name).unwrap();
    verifier.verify(cert, &[], &name, &[], now)
}

fn certificate_error(result: Result<ServerCertVerified, rustls::Error>) -> CertificateError {
    match result {
        Err(rustls::Error::InvalidCertificate(problem)) => problem,
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

#[test]
fn a_pinned_certificate_is_trusted_only_while_valid_and_for_its_names() {
    let cert = self_signed_ca("pinned");
    let verifier = verifier(&cert);
    assert!(verify(&verifier, &cert, "localhost", at(2025, 6, 1)).is_ok());
    assert!(matches!(
        certificate_error(verify(&verifier, &cert, "localhost", at(2019, 6, 1))),
        CertificateError::NotValidYetContext { .. }
    ));
    match certificate_error(verify(&verifier, &cert, "localhost", at(2031, 6, 1))) {
        CertificateError::ExpiredContext { not_after, .. } => {
            assert_eq!(not_after, at(2030, 1, 1))
        }
        other => panic!("expected expired, got {other:?}"),
    }
    assert!(matches!(
        certificate_error(verify(&verifier, &cert, "model.internal", at(2025, 6, 1))),
        CertificateError::NotValidForNameContext { .. }
    ));
    assert!(matches!(
        certificate_error(verify(&verifier, &cert, "127.0.0.1", at(2025, 6, 1))),
        CertificateError::NotValidForNameContext { .. }
    ));
}

#[test]
fn a_self_signed_ca_certificate_that_is_not_pinned_has_an_unknown_issuer() {
    let trusted = self_signed_ca("trusted");
    let presented = self_signed_ca("presented");
    let verifier = verifier(&trusted);
    assert!(matches!(
        certificate_error(verify(&verifier, &presented, "localhost", at(2025, 6, 1))),
        CertificateError::UnknownIssuer
    ));
}

#[test]
fn a_ca_certificate_issued_by_another_stays_a_ca_used_as_an_end_entity() {
    // An intermediate CA served as the server's own certificate: not
    // self-issued, so webpki's reason stands.
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name.push(DnType::CommonName, "root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_der = root.self_signed(&root_key).unwrap().der().clone();
    let issuer = rcgen::Issuer::new(root, root_key);
    let mut intermediate = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    intermediate
        .distinguished_name
        .push(DnType::CommonName, "intermediate");
    intermediate.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let presented = intermediate
        .signed_by(&KeyPair::generate().unwrap(), &issuer)
        .unwrap()
        .der()
        .clone();
    let verifier = verifier(&root_der);
    match certificate_error(verify(&verifier, &presented, "localhost", UnixTime::now())) {
        CertificateError::Other(other) => assert!(cert_problem::ca_used_as_end_entity(&other)),
        other => panic!("expected CaUsedAsEndEntity, got {other:?}"),
    }
}
