//! TLS for the NBD server (`NBD_OPT_STARTTLS`): x509 certificates in the folder layout
//! qemu-nbd and nbdkit use (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`),
//! TLS 1.3 or 1.2 through rustls on aws-lc-rs, and optionally client certificates
//! signed by that CA (`--tls-verify-peer`); or pre-shared keys (`--tls-psk FILE`, the
//! `username:hexkey` lines of GnuTLS's psktool that qemu, nbdkit and libnbd share)
//! through OpenSSL, since rustls has no external PSK.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use openssl::ex_data::Index;
use openssl::ssl::{Ssl, SslContext, SslMethod, SslVersion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// How `serve` does TLS.
#[derive(Clone)]
pub enum Tls {
    /// Certificates (rustls); `verify_peer`: clients show one too.
    X509 {
        /// The acceptor of one connection's handshake.
        acceptor: TlsAcceptor,
        /// Client certificates are required and checked.
        verify_peer: bool,
    },
    /// Pre-shared keys (OpenSSL): the client's PSK identity is its username, kept on
    /// the session under the index.
    Psk(Arc<SslContext>, Index<Ssl, String>),
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
        Ok(Self::X509 {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            verify_peer,
        })
    }

    /// Loads pre-shared keys from `file`: one `username:hexkey` line each (blank lines
    /// and `#` comments skipped), as GnuTLS's `psktool -u NAME -p FILE` writes them.
    pub fn load_psk(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::io(format!("--tls-psk {}", file.display()), e))?;
        let mut keys: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| {
                Error::invalid(format!(
                    "--tls-psk {} line {}: {why} (expected USERNAME:HEXKEY, as psktool writes)",
                    file.display(),
                    n + 1
                ))
            };
            let (user, hexkey) = line.split_once(':').ok_or_else(|| bad("no ':'"))?;
            if user.is_empty() {
                return Err(bad("an empty username"));
            }
            let key = hex::decode(hexkey).map_err(|_| bad("the key is not hex"))?;
            if key.len() < 16 || key.len() > 256 {
                return Err(bad("the key must be 16 to 256 bytes"));
            }
            keys.insert(user.as_bytes().to_vec(), key);
        }
        if keys.is_empty() {
            return Err(Error::invalid(format!(
                "--tls-psk {}: no key in it",
                file.display()
            )));
        }
        let ssl = |e: openssl::error::ErrorStack| Error::internal(format!("OpenSSL: {e}"));
        let mut ctx = SslContext::builder(SslMethod::tls_server()).map_err(ssl)?;
        ctx.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(ssl)?;
        // TLS 1.2: key exchange with forward secrecy over the PSK; TLS 1.3 uses the
        // PSK with (EC)DHE by default.
        ctx.set_cipher_list("kECDHEPSK:kDHEPSK:!eNULL:!SHA1")
            .map_err(ssl)?;
        // OpenSSL keeps no PSK identity it can give back under TLS 1.3: the callback
        // notes the one it accepted on the session.
        let index = Ssl::new_ex_index::<String>().map_err(ssl)?;
        ctx.set_psk_server_callback(move |session, identity, out| {
            let Some(key) = identity.and_then(|id| keys.get(id)) else {
                tracing::info!(
                    identity = %String::from_utf8_lossy(identity.unwrap_or_default()),
                    "unknown PSK identity"
                );
                return Ok(0);
            };
            match out.get_mut(..key.len()) {
                Some(dst) => {
                    dst.copy_from_slice(key);
                    let who = String::from_utf8_lossy(identity.unwrap_or_default()).into_owned();
                    session.set_ex_data(index, who);
                    Ok(key.len())
                }
                None => Ok(0),
            }
        });
        Ok(Self::Psk(Arc::new(ctx.build()), index))
    }

    /// True when every client is identified (a checked client certificate, or a PSK
    /// username), so `--allow` rules can name them.
    pub fn identifies_clients(&self) -> bool {
        match self {
            Self::X509 { verify_peer, .. } => *verify_peer,
            Self::Psk(..) => true,
        }
    }
}
