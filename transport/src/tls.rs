//! TLS for the control connection: rustls with the ring provider, TLS 1.3
//! only (rustls is built without TLS 1.2 support at all), PEM files in,
//! plain-word errors out.
//!
//! The yamux session runs inside TLS, so one handshake covers every tunnel
//! and stream of a client. Three ways for a client to trust a server: a CA
//! file (`--ca`), the system roots, or a pinned SHA-256 fingerprint of the
//! server's certificate (for self-signed servers, like chisel's
//! `--fingerprint`). Servers may require client certificates (mTLS); the
//! certificate's identity then becomes the client's name.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
pub use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, RootCertStore};
use thiserror::Error;
pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A problem with the TLS settings, found before any connection is made.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing of the expected kind.
    #[error("{what} file {path}: {message}")]
    Pem {
        /// "certificate", "private key" or "CA certificate".
        what: &'static str,
        /// The file named in the settings.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificates or key (a key that does not match the certificate, say).
    #[error("TLS settings: {0}")]
    Config(#[from] rustls::Error),
    /// The system has no trusted roots and no `--ca` was given.
    #[error("no trusted CA certificates found on this system; give a CA file or a fingerprint")]
    NoRoots,
    /// The name to check the server's certificate against is not a DNS name or IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// A client certificate without its key, or the other way round.
    #[error("a client certificate needs both a certificate file and a key file")]
    HalfIdentity,
}

/// How a server offers TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// Certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// If set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// How a client checks the server and, for mTLS, proves itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// Trusted CA certificates, PEM; the system roots when `None`.
    pub ca: Option<PathBuf>,
    /// Accept exactly the server certificate with this fingerprint instead
    /// of checking a chain and a name.
    pub fingerprint: Option<Fingerprint>,
    /// Client certificate chain for mTLS, PEM.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM.
    pub key: Option<PathBuf>,
}

/// A SHA-256 certificate fingerprint, written `AB:CD:…` (colons and case optional).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(cert: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

/// A fingerprint that is not 32 hex bytes.
#[derive(Debug, Error)]
#[error("bad fingerprint {0:?}: expected a SHA-256 as 64 hex digits, colons allowed")]
pub struct FingerprintError(String);

impl FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FingerprintError(s.to_owned());
        let hex: Vec<u8> = s
            .trim()
            .trim_start_matches("sha256:")
            .bytes()
            .filter(|&c| c != b':')
            .collect();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(provider::default_provider())
}

fn pem_error(what: &'static str, path: &Path, e: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, "no CERTIFICATE section found"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error("private key", path, e))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("CA certificate", path)? {
        roots
            .add(cert)
            .map_err(|e| pem_error("CA certificate", path, e))?;
    }
    Ok(roots)
}

/// Builds the server's acceptor; also returns the certificate's fingerprint,
/// which the server logs so clients can pin it.
pub fn server_acceptor(tls: &ServerTls) -> Result<(TlsAcceptor, Fingerprint), TlsError> {
    let certs = load_certs("certificate", &tls.cert)?;
    let fingerprint = Fingerprint::of(&certs[0]);
    let key = load_key(&tls.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
                    .build()
                    .map_err(|e| pem_error("CA certificate", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key)?;
    Ok((TlsAcceptor::from(Arc::new(config)), fingerprint))
}

/// Builds the client's connector.
pub fn client_connector(tls: &ClientTls) -> Result<TlsConnector, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match (&tls.fingerprint, &tls.ca) {
        (Some(pin), _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: *pin,
                provider: provider(),
            })),
        (None, Some(ca)) => builder.with_root_certificates(load_roots(ca)?),
        (None, None) => builder.with_root_certificates(system_roots()?),
    };
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(load_certs("certificate", cert)?, load_key(key)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfIdentity),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// TLS client settings that trust only the CA certificates in `ca` (PEM),
/// TLS 1.2 or 1.3: for HTTPS to a receiver under a private CA (webhooks).
pub fn https_client(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(ca)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        return Err(TlsError::NoRoots);
    }
    Ok(roots)
}

/// The name to check the server certificate against: a DNS name or an IP.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.to_owned()))
}

/// The identity a certificate vouches for: its first DNS subject alternative
/// name, else its subject's common name. Used as the client's name under mTLS.
pub fn identity(cert: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = parsed.subject_alternative_name().ok().flatten();
    let dns = san.and_then(|san| {
        san.value.general_names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
    });
    dns.or_else(|| {
        let cn = parsed.subject().iter_common_name().next()?;
        cn.as_str().ok().map(str::to_owned)
    })
}

/// The identity of the first certificate in a PEM file (see [`identity`]):
/// a client with a certificate logs in under this name by default.
pub fn file_identity(path: &Path) -> Result<String, TlsError> {
    let certs = load_certs("certificate", path)?;
    identity(&certs[0])
        .ok_or_else(|| pem_error("certificate", path, "names no DNS name or common name"))
}

/// Whose certificate a handshake error is about, for the wording of [`explain`].
#[derive(Debug, Clone, Copy)]
pub enum Side {
    /// We are the client: certificate problems are the server's.
    Client,
    /// We are the server: certificate problems are the client's.
    Server,
}

/// Says in plain words why a TLS handshake failed, naming the certificate
/// problem (expired, unknown CA, wrong name, fingerprint) or the peer's
/// alert. `None` if `e` is not a TLS error.
pub fn explain(e: &io::Error, side: Side) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(describe(tls, side))
}

fn describe(tls: &rustls::Error, side: Side) -> String {
    let theirs = match side {
        Side::Client => "the server's certificate",
        Side::Server => "the client's certificate",
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => format!("{theirs} {}", certificate_problem(c)),
        rustls::Error::NoCertificatesPresented => {
            "the client presented no certificate, and this server requires one".to_owned()
        }
        rustls::Error::AlertReceived(alert) => peer_alert(*alert, side),
        rustls::Error::InvalidMessage(_) => {
            "the peer does not speak TLS (is one side missing its TLS settings?)".to_owned()
        }
        other => other.to_string(),
    }
}

fn certificate_problem(c: &CertificateError) -> String {
    match c {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "has expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "is not valid yet".to_owned()
        }
        CertificateError::UnknownIssuer => "is not signed by a trusted CA".to_owned(),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "is not valid for the name {:?} (it names {})",
            expected.to_str(),
            presented.join(", ")
        ),
        CertificateError::NotValidForName => "is not valid for the expected name".to_owned(),
        CertificateError::BadSignature => "has a bad signature".to_owned(),
        CertificateError::Other(other) => other.to_string(),
        other => format!("was refused: {other:?}"),
    }
}

fn peer_alert(alert: AlertDescription, side: Side) -> String {
    match (side, alert) {
        (Side::Client, AlertDescription::CertificateRequired) => {
            "the server requires a client certificate (give a certificate and key)".to_owned()
        }
        (
            Side::Client,
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::DecryptError,
        ) => format!("the server refused our client certificate ({alert:?})"),
        (Side::Server, _) => format!("the client aborted the handshake ({alert:?}); it does not trust this server's certificate"),
        (Side::Client, _) => format!("the server aborted the handshake ({alert:?})"),
    }
}

/// Trusts exactly one server certificate, by fingerprint, whatever its
/// chain and names; the handshake signature is still verified, so only the
/// holder of that certificate's key passes.
#[derive(Debug)]
struct Pinned {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

/// The pinned fingerprint did not match; its text reaches the user through [`explain`].
#[derive(Debug, Error)]
#[error("has fingerprint {got}, not the pinned {want}")]
struct FingerprintMismatch {
    got: Fingerprint,
    want: Fingerprint,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity);
        if got == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = FingerprintMismatch {
            got,
            want: self.pin,
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
