//! TLS for the NBD server (`NBD_OPT_STARTTLS`): x509 certificates in the folder layout
//! qemu-nbd and nbdkit use (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`),
//! TLS 1.3 or 1.2 through rustls on aws-lc-rs, and optionally client certificates
//! signed by that CA (`--tls-verify-peer`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// How `serve` does TLS.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect())
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\")",
            path.display()
        )));
    }
    Ok(certs)
}

fn need(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::invalid(format!(
            "--tls-certificates {}: {name} is missing (the folder holds ca-cert.pem, \
             server-cert.pem and server-key.pem, as for qemu-nbd and nbdkit; see \
             docs/REFERENCE.md, \"Serving over a network\")",
            dir.display()
        )))
    }
}

impl Tls {
    /// Loads the server's certificate and key from `dir`; with `verify_peer`, clients
    /// must present a certificate that `dir/ca-cert.pem` signed.
    pub fn load(dir: &Path, verify_peer: bool) -> Result<Self> {
        let chain = certs(&need(dir, "server-cert.pem")?)?;
        let key_path = need(dir, "server-key.pem")?;
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| Error::invalid(format!("{}: {e}", key_path.display())))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::invalid(format!("TLS versions: {e}")))?;
        let builder = if verify_peer {
            let ca = need(dir, "ca-cert.pem")?;
            let mut roots = RootCertStore::empty();
            for c in certs(&ca)? {
                roots
                    .add(c)
                    .map_err(|e| Error::invalid(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::invalid(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(chain, key).map_err(|e| {
            Error::invalid(format!(
                "{}: the key does not go with server-cert.pem, or is not usable: {e}",
                key_path.display()
            ))
        })?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor for one connection's TLS handshake.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}
