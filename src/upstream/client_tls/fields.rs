//! The few fields of an X.509 certificate that a pinned certificate is
//! checked by and that webpki does not expose: issuer, subject and the
//! validity period, read straight from the DER.
//!
//! Only certificates webpki has already parsed are read here, so this
//! reader needs no more than to walk the `TBSCertificate` up to `subject`;
//! anything it does not expect makes it return `None`.

use std::time::Duration;

use rustls::pki_types::UnixTime;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version`, absent from version 1 certificates.
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// What [`read`] finds in a certificate.
#[derive(Debug, PartialEq)]
pub struct Fields<'a> {
    /// The issuer's distinguished name, as DER.
    pub issuer: &'a [u8],
    /// The subject's distinguished name, as DER.
    pub subject: &'a [u8],
    pub not_before: UnixTime,
    pub not_after: UnixTime,
}

impl Fields<'_> {
    /// Issued by itself: the issuer and subject names are the same.
    pub fn self_issued(&self) -> bool {
        self.issuer == self.subject
    }
}

/// Issuer, subject and validity of the DER certificate `der`.
pub fn read(der: &[u8]) -> Option<Fields<'_>> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, rest) = expect(rest, SEQUENCE)?;
    let (subject, _) = expect(rest, SEQUENCE)?;
    let (not_before, validity) = time(validity)?;
    let (not_after, validity) = time(validity)?;
    if !validity.is_empty() {
        return None;
    }
    Some(Fields {
        issuer,
        subject,
        not_before,
        not_after,
    })
}

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits count the length's bytes; a certificate
        // never needs more than four.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (contents, rest) = rest.split_at(length);
    Some((tag, contents, rest))
}

/// The contents of an element that must have `tag`, and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match element(input)? {
        (found, contents, rest) if found == tag => Some((contents, rest)),
        _ => None,
    }
}

/// A `Time` (RFC 5280 4.1.2.5: UTCTime `YYMMDDHHMMSSZ` up to 2049,
/// GeneralizedTime `YYYYMMDDHHMMSSZ` after), and what follows it. Times
/// before 1970 read as the epoch.
fn time(input: &[u8]) -> Option<(UnixTime, &[u8])> {
    let (tag, contents, rest) = element(input)?;
    let (year, digits) = match tag {
        UTC_TIME if contents.len() == 13 => {
            let year = number(&contents[..2])?;
            (
                if year >= 50 { 1900 + year } else { 2000 + year },
                &contents[2..],
            )
        }
        GENERALIZED_TIME if contents.len() == 15 => (number(&contents[..4])?, &contents[4..]),
        _ => return None,
    };
    if digits[10] != b'Z' {
        return None;
    }
    let month = number(&digits[0..2])?;
    let day = number(&digits[2..4])?;
    let hour = number(&digits[4..6])?;
    let minute = number(&digits[6..8])?;
    let second = number(&digits[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_since_epoch(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    let seconds = u64::try_from(seconds).unwrap_or(0);
    Some((
        UnixTime::since_unix_epoch(Duration::from_secs(seconds)),
        rest,
    ))
}

/// ASCII decimal digits as a number.
fn number(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0i64, |n, &digit| {
        digit
            .is_ascii_digit()
            .then(|| n * 10 + i64::from(digit - b'0'))
    })
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian
/// calendar (Howard Hinnant's `days_from_civil`).
fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, date_time_ymd};

    /// A self-signed certificate for `name`, valid between the two dates
    /// (midnight UTC).
    fn certificate(name: &str, from: (i32, u8, u8), until: (i32, u8, u8)) -> Vec<u8> {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = date_time_ymd(from.0, from.1, from.2);
        params.not_after = date_time_ymd(until.0, until.1, until.2);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn secs(time: UnixTime) -> u64 {
        time.as_secs()
    }

    #[test]
    fn reads_the_validity_in_both_time_encodings() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 on,
        // as RFC 5280 requires.
        let der = certificate("localhost", (2024, 2, 29), (2061, 3, 1));
        let fields = read(&der).expect("a certificate rcgen made");
        assert_eq!(secs(fields.not_before), 1_709_164_800, "2024-02-29");
        assert_eq!(secs(fields.not_after), 2_876_860_800, "2061-03-01");
        let der = certificate("localhost", (1999, 12, 31), (2049, 12, 31));
        let fields = read(&der).unwrap();
        assert_eq!(secs(fields.not_before), 946_598_400, "1999-12-31");
        assert_eq!(secs(fields.not_after), 2_524_521_600, "2049-12-31");
    }

    #[test]
    fn a_self_signed_certificate_is_self_issued_and_an_issued_one_is_not() {
        let der = certificate("localhost", (2024, 1, 1), (2030, 1, 1));
        assert!(read(&der).unwrap().self_issued());

        let issuer_key = KeyPair::generate().unwrap();
        let mut issuer_params = CertificateParams::default();
        issuer_params
            .distinguished_name
            .push(DnType::CommonName, "issuer");
        issuer_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(issuer_params, issuer_key);
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        let leaf = params
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        assert!(!read(leaf.der().as_ref()).unwrap().self_issued());
    }

    #[test]
    fn anything_but_a_certificate_reads_as_none() {
        let der = certificate("localhost", (2024, 1, 1), (2030, 1, 1));
        assert_eq!(read(&der[..der.len() / 2]), None, "truncated");
        assert_eq!(read(b""), None);
        assert_eq!(read(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }

    #[test]
    fn days_since_epoch_counts_leap_years() {
        assert_eq!(days_since_epoch(1970, 1, 1), 0);
        assert_eq!(days_since_epoch(2000, 3, 1), 11_017);
        assert_eq!(days_since_epoch(1969, 12, 31), -1);
    }
}
