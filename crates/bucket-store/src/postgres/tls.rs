//! TLS to PostgreSQL: the `sslmode` the URL asks for, and a rustls connector that honours it.
//!
//! tokio-postgres (diesel-async's driver) understands only `disable`, `prefer` and `require`, and leaves certificate
//! checks to the connector. So the URL's `sslmode` is read here, the driver gets the nearest mode it knows, and the
//! certificate policy lives in the rustls configuration:
//!
//! | `sslmode` | TLS | certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (libpq's default, and ours when `tls_ca_file` is unset) | when the server offers it, else plain text | not checked (libpq's `prefer` neither) |
//! | `require`, `verify-full` (ours when `tls_ca_file` is set) | always: a server without TLS is refused | chains to `tls_ca_file` (or the system roots) and names the host |
//! | `verify-ca` | always | chains to `tls_ca_file` (or the system roots); the name is not checked |
//!
//! `require` checks as much as `verify-full`, which is stricter than libpq (whose `require` checks nothing without a
//! root certificate): a mode that asks for TLS should not accept whoever answers. A TLS failure (refused
//! certificate, server without TLS) is a configuration error, never a reason to retry or to continue in plain text.

use std::path::Path;
use std::sync::Arc;

use diesel::{ConnectionError, ConnectionResult};
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::errors;
use crate::StoreError;

/// Starts the message of every connection error that TLS caused, so that `errors::connection` can tell a refused
/// certificate (permanent) from a dropped socket (transient) after diesel has flattened the error into a string.
pub(super) const TLS_REFUSED: &str = "TLS to PostgreSQL failed (check sslmode and tls_ca_file): ";

/// What the URL's `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, StoreError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" | "verify-full" => Ok(Self::VerifyFull),
            "verify-ca" => Ok(Self::VerifyCa),
            other => Err(errors::backend(format!(
                "unsupported sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
            ))),
        }
    }

    /// The mode tokio-postgres is given: it only decides whether TLS is attempted and whether it is mandatory.
    fn for_driver(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::VerifyCa | Self::VerifyFull => "require",
        }
    }
}

/// How every session of one store connects: the URL as the driver reads it and the TLS connector, built once.
pub(super) struct Tls {
    driver_url: String,
    connector: Option<MakeRustlsConnect>,
}

impl Tls {
    /// Reads `sslmode` from `url` and loads the roots certificates are checked against (`ca_file`, else the
    /// system's); fails on a mode or CA file that cannot work, so a misconfiguration is reported once, at start.
    pub(super) fn prepare(url: &str, ca_file: Option<&Path>) -> Result<Self, StoreError> {
        let (driver_url, requested) = rewrite_sslmode(url)?;
        let mode = match (requested, ca_file) {
            (Some(mode), None) => mode,
            // A CA file says the operator wants the server checked: the default becomes verify-full, and a mode
            // that would ignore the file is refused rather than silently weaker than configured.
            (None, Some(_)) => SslMode::VerifyFull,
            (Some(mode @ (SslMode::VerifyCa | SslMode::VerifyFull)), Some(_)) => mode,
            (Some(mode @ (SslMode::Disable | SslMode::Prefer)), Some(_)) => {
                return Err(errors::backend(format!(
                    "tls_ca_file is set but sslmode={} does not check certificates; use require, verify-ca or \
                     verify-full (or drop sslmode)",
                    mode.for_driver()
                )))
            }
            (None, None) => SslMode::Prefer,
        };
        let driver_url = match requested {
            Some(_) => driver_url,
            None => append_param(&driver_url, "sslmode", mode.for_driver()),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable => return Ok(Self { driver_url, connector: None }),
            SslMode::Prefer => Arc::new(Verifier { provider: provider.clone(), chain: None, check_name: false }),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(roots(ca_file)?);
                let chain = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| errors::backend(format!("cannot build the certificate verifier: {e}")))?;
                Arc::new(Verifier {
                    provider: provider.clone(),
                    chain: Some(chain),
                    check_name: mode == SslMode::VerifyFull,
                })
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| errors::backend(format!("cannot configure TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self { driver_url, connector: Some(MakeRustlsConnect::new(config)) })
    }

    /// The rustls connector, `None` when `sslmode=disable`.
    pub(super) fn connector(&self) -> Option<&MakeRustlsConnect> {
        self.connector.as_ref()
    }

    /// The URL handed to tokio-postgres (`sslmode` rewritten to a value it knows).
    pub(super) fn driver_url(&self) -> &str {
        &self.driver_url
    }

    /// Opens one session: TCP, TLS as the mode says, startup and authentication.
    pub(super) async fn connect(&self) -> ConnectionResult<AsyncPgConnection> {
        match &self.connector {
            None => {
                let (client, connection) =
                    tokio_postgres::connect(&self.driver_url, tokio_postgres::NoTls).await.map_err(refused)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(connector) => {
                let (client, connection) =
                    tokio_postgres::connect(&self.driver_url, connector.clone()).await.map_err(refused)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

/// The driver's error as diesel carries it, marked with [`TLS_REFUSED`] when TLS itself said no.
fn refused(error: tokio_postgres::Error) -> ConnectionError {
    // tokio-postgres prints only its error's kind; the cause (the certificate problem, the refused login) is in
    // the source chain.
    let mut detail = error.to_string();
    let mut tls = detail.contains("server does not support TLS");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        // rustls errors reach here wrapped in an io::Error, whose `source` skips the wrapped error.
        let inner = cause.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        tls |= cause.is::<rustls::Error>() || inner.is_some_and(|e| e.is::<rustls::Error>());
        tls |= cause.to_string().contains("server does not support TLS");
        source = cause.source();
    }
    if tls {
        ConnectionError::BadConnection(format!("{TLS_REFUSED}{detail}"))
    } else {
        ConnectionError::BadConnection(detail)
    }
}

/// The roots a server certificate must chain to: the PEM file, or the operating system's store.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| errors::backend(format!("cannot read tls_ca_file {}: {e}", path.display())))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| errors::backend(format!("tls_ca_file {} is not PEM: {e}", path.display())))?;
                roots.add(cert).map_err(|e| {
                    errors::backend(format!("tls_ca_file {}: unusable certificate: {e}", path.display()))
                })?;
            }
        }
        None => {
            // Unreadable entries are skipped as every TLS client does; only an empty store is an error.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    if roots.is_empty() {
        let from = ca_file.map_or("the system store".to_owned(), |p| p.display().to_string());
        return Err(errors::backend(format!(
            "no CA certificates found in {from}: set tls_ca_file to verify the PostgreSQL server"
        )));
    }
    Ok(roots)
}

/// Checks the server certificate as the mode says; the handshake signature is always checked, so a peer without
/// the certificate's private key is refused even when the certificate itself is not checked (`prefer`).
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    /// `None`: the certificate is not checked (`prefer`).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// `false` (`verify-ca`): a certificate for another host name is accepted if it chains to the roots.
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name only after the chain, so a name error means the chain was good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `url` with every `sslmode` replaced by the value tokio-postgres understands, and the last one (libpq: the last
/// setting wins) parsed. Both connection-string forms are read: `postgres://…?sslmode=x` and `key=value` pairs.
fn rewrite_sslmode(url: &str) -> Result<(String, Option<SslMode>), StoreError> {
    let mut mode = None;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), None)) };
        let mut params = Vec::new();
        for param in query.split('&') {
            match param.split_once('=') {
                Some(("sslmode", value)) => {
                    let parsed = SslMode::parse(value)?;
                    mode = Some(parsed);
                    params.push(format!("sslmode={}", parsed.for_driver()));
                }
                _ => params.push(param.to_owned()),
            }
        }
        return Ok((format!("{base}?{}", params.join("&")), mode));
    }
    // key=value form: values may be quoted ('a b', with \' and \\ escapes). A string this scanner cannot read is
    // passed on unchanged, and the driver reports what is wrong with it.
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    loop {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        if rest.is_empty() {
            return Ok((out, mode));
        }
        let Some(eq) = rest.find('=') else { return Ok((url.to_owned(), None)) };
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let value_start = after.len() - after.trim_start().len();
        let value_part = &after[value_start..];
        let (raw_len, value) = if let Some(quoted) = value_part.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '\'' => {
                        end = Some(i + 2);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let Some(end) = end else { return Ok((url.to_owned(), None)) };
            (end, value)
        } else {
            let end = value_part.find(char::is_whitespace).unwrap_or(value_part.len());
            (end, value_part[..end].to_owned())
        };
        let consumed = eq + 1 + value_start + raw_len;
        if key == "sslmode" {
            let parsed = SslMode::parse(&value)?;
            mode = Some(parsed);
            out.push_str(&format!("sslmode={}", parsed.for_driver()));
        } else {
            out.push_str(&rest[..consumed]);
        }
        rest = &rest[consumed..];
    }
}

/// `url` with `key=value` added in its own form.
fn append_param(url: &str, key: &str, value: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}{key}={value}")
    } else {
        format!("{url} {key}={value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_and_rewritten_in_both_forms() {
        let (url, mode) = rewrite_sslmode("postgres://u@h/db?application_name=x&sslmode=verify-full").unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=x&sslmode=require");
        assert_eq!(mode, Some(SslMode::VerifyFull));
        let (url, mode) = rewrite_sslmode("host=h sslmode = 'verify-ca' password='a b\\'c'").unwrap();
        assert_eq!(url, "host=h sslmode=require password='a b\\'c'");
        assert_eq!(mode, Some(SslMode::VerifyCa));
        assert_eq!(rewrite_sslmode("postgres://u@h/db").unwrap(), ("postgres://u@h/db".to_owned(), None));
        assert_eq!(rewrite_sslmode("host=h sslmode=disable").unwrap().1, Some(SslMode::Disable));
        assert!(rewrite_sslmode("postgres://h/db?sslmode=allow").is_err());
        assert!(rewrite_sslmode("host=h sslmode=bogus").is_err());
    }

    #[test]
    fn a_ca_file_means_verification_and_never_a_weaker_mode() {
        let ca = Path::new("/nonexistent/ca.pem");
        // Without a CA file the libpq default applies and the driver is told so explicitly.
        let tls = Tls::prepare("postgres://u@h/db", None).unwrap();
        assert!(tls.connector.is_some());
        assert_eq!(tls.driver_url(), "postgres://u@h/db?sslmode=prefer");
        assert!(Tls::prepare("host=h sslmode=disable", None).unwrap().connector.is_none());
        // With one, verification is the default (here the unreadable file is the error), and `prefer` is refused.
        let err = Tls::prepare("postgres://u@h/db", Some(ca)).err().unwrap().to_string();
        assert!(err.contains("cannot read tls_ca_file"), "{err}");
        let err = Tls::prepare("postgres://u@h/db?sslmode=prefer", Some(ca)).err().unwrap().to_string();
        assert!(err.contains("does not check certificates"), "{err}");
        assert!(Tls::prepare("postgres://u@h/db?sslmode=disable", Some(ca)).is_err());
    }
}
