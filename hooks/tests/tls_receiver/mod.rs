//! A TLS receiver on 127.0.0.1 for the tests of the webhook and of what
//! rides on it (alert targets): a certificate from rcgen under a CA of
//! the test's own, and a client config trusting only that CA.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// A CA and a leaf for `localhost` it signed.
pub struct Certs {
    pub ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

pub fn certs(ca_name: &str) -> Certs {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, ca_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Certs {
        ca: ca.der().clone(),
        leaf: leaf.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client settings trusting only `ca`.
pub fn trusting(ca: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// What the receiver saw: each connection's number with each request's
/// event id header and body.
pub type Seen = mpsc::UnboundedReceiver<(usize, String, String)>;

/// A TLS receiver answering 204 to every request; with `keep_alive` off
/// it closes the connection after each answer.
pub async fn receiver(certs: &Certs, keep_alive: bool) -> (u16, Seen) {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certs.leaf.clone()], certs.key.clone_key())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut connections = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            connections += 1;
            let (acceptor, tx, n) = (acceptor.clone(), tx.clone(), connections);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut tls = BufReader::new(tls);
                loop {
                    let (mut id, mut len) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if tls.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if lower.starts_with("x-reitunnel-event-id:") {
                            id = line.split_once(':').unwrap().1.trim().to_owned();
                        }
                    }
                    let mut body = vec![0u8; len];
                    tls.read_exact(&mut body).await.unwrap();
                    let _ = tx.send((n, id, String::from_utf8(body).unwrap()));
                    let close = if keep_alive {
                        ""
                    } else {
                        "connection: close\r\n"
                    };
                    let answer = format!("HTTP/1.1 204 No Content\r\n{close}\r\n");
                    tls.get_mut().write_all(answer.as_bytes()).await.unwrap();
                    if !keep_alive {
                        let _ = tls.get_mut().shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}
