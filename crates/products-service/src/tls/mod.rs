//! TLS with one stack and one crypto provider: rustls on ring (the MongoDB
//! driver already uses it). Loads the PEM identity of a listener into a
//! rustls server configuration, and [`certgen`] writes the local CA and
//! server certificate of `make cert`.

pub mod certgen;

use std::{path::PathBuf, sync::Arc};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretSlice};

use crate::config::TlsSettings;

/// Makes ring the process-wide rustls provider, so every client and server
/// config built with `builder()` agrees. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: ours or the same one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no valid PEM {what} in {path}")]
    Pem { what: &'static str, path: PathBuf },
    #[error("the certificate and key do not make a usable TLS server identity: {0}")]
    Identity(#[from] rustls::Error),
}

/// A listener's certificate chain and private key, as PEM text (the key a
/// secret: `Debug` shows `[REDACTED]`).
#[derive(Debug, Clone)]
pub struct PemIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: SecretSlice<u8>,
}

impl PemIdentity {
    /// Reads both files and checks that they parse and belong together.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        let read = |what, path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.clone(),
                source,
            })
        };
        let identity = Self {
            cert_pem: read("certificate", &settings.cert_file)?,
            key_pem: read("key", &settings.key_file)?.into(),
        };
        identity.server_config(&[]).map_err(|err| match err {
            TlsError::Pem { what, .. } => TlsError::Pem {
                what,
                path: if what == "key" {
                    settings.key_file.clone()
                } else {
                    settings.cert_file.clone()
                },
            },
            other => other,
        })?;
        Ok(identity)
    }

    /// A rustls server configuration offering `alpn` protocols (in order of
    /// preference).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or(TlsError::Pem {
                what: "certificate",
                path: PathBuf::new(),
            })?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.expose_secret()).map_err(|_| {
            TlsError::Pem {
                what: "key",
                path: PathBuf::new(),
            }
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
