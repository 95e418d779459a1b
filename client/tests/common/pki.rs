//! Certificates made at run time (rcgen) for the TLS tests: a CA, leaves it
//! signs (valid, expired, for any names), and self-signed ones, written as
//! PEM files the server and client load like an operator's.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    IsCa, KeyPair, SanType,
};
use tempfile::TempDir;

/// A certificate and key on disk, and the certificate's DER.
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

/// A CA that signs leaves into its own temporary directory.
pub struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, for `--ca` / `--client-ca`.
    pub ca_file: PathBuf,
}

fn params(names: &[&str], expired: bool) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("params");
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, first);
    }
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    params
}

fn write(dir: &Path, file: &str, cert_pem: String, key: &KeyPair, der: &[u8]) -> Pem {
    let cert = dir.join(format!("{file}.crt"));
    let key_file = dir.join(format!("{file}.key"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    Pem {
        cert,
        key: key_file,
        der: der.to_vec(),
    }
}

impl Pki {
    pub fn new(ca_name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = params(&[], false);
        params.distinguished_name.push(DnType::CommonName, ca_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Pki { dir, ca, ca_file }
    }

    /// A leaf for `names` (DNS names or IPs; the first is also the CN).
    pub fn leaf(&self, file: &str, names: &[&str], expired: bool) -> Pem {
        let key = KeyPair::generate().unwrap();
        let cert = params(names, expired).signed_by(&key, &self.ca).unwrap();
        write(self.dir.path(), file, cert.pem(), &key, cert.der())
    }

    /// A leaf naming only `uri` (a URI subject alternative name, as SPIFFE
    /// issues them): no DNS name, no common name.
    pub fn leaf_uri(&self, file: &str, uri: &str) -> Pem {
        let key = KeyPair::generate().unwrap();
        let mut params = params(&[], false);
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        write(self.dir.path(), file, cert.pem(), &key, cert.der())
    }

    /// A self-signed certificate, as a server without a CA would use.
    pub fn self_signed(&self, file: &str, names: &[&str]) -> Pem {
        let key = KeyPair::generate().unwrap();
        let cert = params(names, false).self_signed(&key).unwrap();
        write(self.dir.path(), file, cert.pem(), &key, cert.der())
    }
}
