//! Client certificates as credentials (mTLS): the TLS layer has already checked
//! that a certificate chains to `tls.client_ca`, is within its validity period
//! and is meant for client authentication; this file only reads the fields
//! `auth.mtls` names and turns them into a [`Principal`].

use super::{AuthError, AuthMethod, Principal};
use crate::config::{CertField, MtlsConfig, TenantSource};
use rustls::pki_types::CertificateDer;
use serde_json::Map;
use std::fmt;
use std::sync::Arc;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;
use x509_parser::time::ASN1Time;

/// The verified end-entity certificate a client presented on its TLS
/// connection; the HTTPS listener puts it into every request's extensions.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCert(Arc<CertificateDer<'static>>);

impl ClientCert {
    pub fn new(der: CertificateDer<'static>) -> ClientCert {
        ClientCert(Arc::new(der))
    }

    /// The certificate's DER bytes.
    pub fn der(&self) -> &[u8] {
        self.0.as_ref()
    }
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientCert({} bytes)", self.0.len())
    }
}

/// Why a verified client certificate does not make a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertRejection {
    /// It passed the TLS checks but cannot be read as an X.509 certificate here.
    Unreadable,
    /// Its validity period ended (or has not begun) since the connection was
    /// opened: a long-lived connection does not outlive its certificate.
    OutsideValidity,
    /// It lacks the field the configuration takes the user or tenant from.
    MissingField(CertField),
}

impl fmt::Display for CertRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertRejection::Unreadable => f.write_str("the client certificate cannot be read"),
            CertRejection::OutsideValidity => {
                f.write_str("the client certificate is not valid at this time")
            }
            CertRejection::MissingField(field) => write!(
                f,
                "the client certificate has no {}, which names the caller here",
                field_name(*field)
            ),
        }
    }
}

fn field_name(field: CertField) -> &'static str {
    match field {
        CertField::SubjectCn => "subject common name (CN)",
        CertField::SubjectO => "subject organization (O)",
        CertField::SubjectOu => "subject organizational unit (OU)",
        CertField::SanEmail => "e-mail subject alternative name",
        CertField::SanUri => "URI subject alternative name",
        CertField::SanDns => "DNS subject alternative name",
    }
}

/// Maps certificates to principals as `auth.mtls` says.
pub(crate) struct CertMapper {
    config: MtlsConfig,
}

impl CertMapper {
    pub(crate) fn new(config: MtlsConfig) -> CertMapper {
        CertMapper { config }
    }

    /// The principal `cert` names. The user (and a tenant taken from a field)
    /// is the field's first value in certificate order; a missing one is
    /// refused, never replaced by a default, so two differently issued
    /// certificates cannot collapse into one principal.
    pub(crate) fn principal(&self, cert: &ClientCert) -> Result<Principal, AuthError> {
        let reject = |r: CertRejection| AuthError::InvalidCertificate(r);
        let Ok((_, x509)) = X509Certificate::from_der(cert.der()) else {
            return Err(reject(CertRejection::Unreadable));
        };
        if !x509.validity().is_valid_at(ASN1Time::now()) {
            return Err(reject(CertRejection::OutsideValidity));
        }
        let first = |field: CertField| -> Result<String, AuthError> {
            field_values(&x509, field)
                .map_err(reject)?
                .into_iter()
                .next()
                .ok_or(reject(CertRejection::MissingField(field)))
        };
        let user = first(self.config.user)?;
        let tenant = match &self.config.tenant {
            None => None,
            Some(TenantSource::Fixed(t)) => Some(t.clone()),
            Some(TenantSource::Field(field)) => Some(first(*field)?),
        };
        let groups = match self.config.groups {
            Some(field) => field_values(&x509, field).map_err(reject)?,
            None => Vec::new(),
        };
        Ok(Principal {
            user,
            agent: None,
            tenant,
            groups,
            scopes: Vec::new(),
            attrs: Map::new(),
            method: AuthMethod::Mtls,
            recorded: Default::default(),
        })
    }
}

/// Every non-empty value of `field`, in certificate order.
fn field_values(
    cert: &X509Certificate<'_>,
    field: CertField,
) -> Result<Vec<String>, CertRejection> {
    let subject = cert.subject();
    let attrs: Vec<_> = match field {
        CertField::SubjectCn => subject.iter_common_name().collect(),
        CertField::SubjectO => subject.iter_organization().collect(),
        CertField::SubjectOu => subject.iter_organizational_unit().collect(),
        CertField::SanEmail | CertField::SanUri | CertField::SanDns => {
            // A malformed or repeated SAN extension is unreadable, not absent:
            // guessing which copy counts is how impersonation starts.
            let san = cert
                .subject_alternative_name()
                .map_err(|_| CertRejection::Unreadable)?;
            let Some(san) = san else {
                return Ok(Vec::new());
            };
            return Ok(san
                .value
                .general_names
                .iter()
                .filter_map(|n| match (field, n) {
                    (CertField::SanEmail, GeneralName::RFC822Name(v))
                    | (CertField::SanUri, GeneralName::URI(v))
                    | (CertField::SanDns, GeneralName::DNSName(v)) => Some(v.trim()),
                    _ => None,
                })
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect());
        }
    };
    // A value that is not a string (or not valid UTF-8) is skipped rather than
    // decoded lossily: a principal must never be a guess.
    Ok(attrs
        .iter()
        .filter_map(|a| a.as_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(build: impl FnOnce(&mut CertificateParams)) -> ClientCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        build(&mut params);
        let c = params.self_signed(&key).unwrap();
        ClientCert::new(c.der().clone())
    }

    fn mapper(json: serde_json::Value) -> CertMapper {
        CertMapper::new(serde_json::from_value(json).unwrap())
    }

    fn alice() -> ClientCert {
        cert(|p| {
            p.distinguished_name.push(DnType::CommonName, "alice");
            p.distinguished_name.push(DnType::OrganizationName, "acme");
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, "finance");
            // rcgen keeps one value per type; the OU's own OID as a custom
            // type makes a second OU attribute.
            p.distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 11]), "ops");
            p.subject_alt_names = vec![
                SanType::Rfc822Name("alice@acme.test".try_into().unwrap()),
                SanType::URI("spiffe://acme.test/alice".try_into().unwrap()),
                SanType::DnsName("alice.acme.test".try_into().unwrap()),
            ];
        })
    }

    #[test]
    fn each_field_can_name_the_user() {
        let cases = [
            ("subject_cn", "alice"),
            ("subject_o", "acme"),
            ("subject_ou", "finance"),
            ("san_email", "alice@acme.test"),
            ("san_uri", "spiffe://acme.test/alice"),
            ("san_dns", "alice.acme.test"),
        ];
        for (field, user) in cases {
            let p = mapper(serde_json::json!({ "user": field }))
                .principal(&alice())
                .unwrap();
            assert_eq!(p.user, user, "{field}");
            assert_eq!(p.method, AuthMethod::Mtls);
            assert_eq!(p.tenant, None);
            assert!(p.groups.is_empty());
        }
    }

    #[test]
    fn tenant_and_groups_come_from_fields_or_config() {
        let p = mapper(serde_json::json!({
            "tenant": { "field": "subject_o" }, "groups": "subject_ou",
        }))
        .principal(&alice())
        .unwrap();
        assert_eq!(p.user, "alice");
        assert_eq!(p.tenant.as_deref(), Some("acme"));
        assert_eq!(p.groups, ["finance", "ops"]);
        assert_eq!(p.key(), "acme/alice");
        let p = mapper(serde_json::json!({ "tenant": { "fixed": "globex" } }))
            .principal(&alice())
            .unwrap();
        assert_eq!(p.tenant.as_deref(), Some("globex"));
    }

    #[test]
    fn a_missing_field_is_refused_not_defaulted() {
        let bare = cert(|p| p.distinguished_name.push(DnType::CommonName, "svc"));
        let e = mapper(serde_json::json!({ "user": "san_email" }))
            .principal(&bare)
            .unwrap_err();
        assert_eq!(
            e,
            AuthError::InvalidCertificate(CertRejection::MissingField(CertField::SanEmail))
        );
        assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED);
        assert!(e.to_string().contains("e-mail"), "{e}");
        let e = mapper(serde_json::json!({ "tenant": { "field": "subject_o" } }))
            .principal(&bare)
            .unwrap_err();
        assert_eq!(
            e,
            AuthError::InvalidCertificate(CertRejection::MissingField(CertField::SubjectO))
        );
        // Groups are optional: none is an empty list.
        let p = mapper(serde_json::json!({ "groups": "subject_ou" }))
            .principal(&bare)
            .unwrap();
        assert!(p.groups.is_empty());
        // An empty CN is no CN.
        let empty = cert(|p| p.distinguished_name.push(DnType::CommonName, " "));
        assert!(mapper(serde_json::json!({})).principal(&empty).is_err());
    }

    #[test]
    fn an_expired_certificate_makes_no_principal() {
        let old = cert(|p| {
            p.distinguished_name.push(DnType::CommonName, "alice");
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        });
        let e = mapper(serde_json::json!({})).principal(&old).unwrap_err();
        assert_eq!(
            e,
            AuthError::InvalidCertificate(CertRejection::OutsideValidity)
        );
        let garbage = ClientCert::new(CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]));
        let e = mapper(serde_json::json!({}))
            .principal(&garbage)
            .unwrap_err();
        assert_eq!(e, AuthError::InvalidCertificate(CertRejection::Unreadable));
    }
}
