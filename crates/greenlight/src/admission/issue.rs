//! Making the webhook's certificates: a CA, and serving certificates it signs (rcgen).

use jiff::Timestamp;

/// How long a generated certificate is valid, and how long before its end it is renewed.
pub const CERTIFICATE_DAYS: i64 = 365;
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// A certificate and its key, as PEM, and when it should be renewed.
pub struct Issued {
    pub cert: String,
    pub key: String,
    pub renew_at: Timestamp,
}

/// Valid from a day before `now` (clocks differ) for `days`; returns the end.
fn set_validity(params: &mut rcgen::CertificateParams, now: Timestamp, days: i64) -> Timestamp {
    let day = |t: Timestamp| {
        let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    let end = now + jiff::SignedDuration::from_hours(24 * days);
    params.not_before = day(now - jiff::SignedDuration::from_hours(24));
    params.not_after = day(end);
    end
}

/// The parameters of the webhook CA. A CA kept in a Secret signs again with its stored key
/// and these same parameters, so what it signs names the CA certificate as its issuer.
fn ca_params(now: Timestamp, days: i64) -> Result<rcgen::CertificateParams, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "greenlight webhook CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, now, days);
    Ok(params)
}

/// A new CA valid for `days`, renewed `renew_before_days` before it ends.
pub fn new_ca(now: Timestamp, days: i64, renew_before_days: i64) -> Result<Issued, rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let cert = ca_params(now, days)?.self_signed(&key)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
        renew_at: now + jiff::SignedDuration::from_hours(24 * (days - renew_before_days)),
    })
}

/// A serving certificate for `hosts`, valid a year, signed by the CA whose key is `ca_key`.
pub fn sign_leaf(ca_key: &str, hosts: &[String], now: Timestamp) -> Result<Issued, rcgen::Error> {
    use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
    let ca_key = KeyPair::from_pem(ca_key)?;
    let issuer = Issuer::new(ca_params(now, CERTIFICATE_DAYS)?, ca_key);
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "greenlight webhook");
    let expires = set_validity(&mut params, now, CERTIFICATE_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
        renew_at: expires - jiff::SignedDuration::from_hours(24 * RENEW_BEFORE_DAYS),
    })
}
