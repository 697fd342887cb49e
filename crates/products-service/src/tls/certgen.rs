//! `products-service gen-cert` (behind `make cert`): a local certificate
//! authority and a server certificate it signs, for local HTTPS / gRPC over
//! TLS and for tests. Nothing is downloaded; keys are ECDSA P-256 (ring) and
//! written readable by the owner only.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Names the server certificate is valid for by default.
pub const DEFAULT_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where [`generate`] wrote its files.
#[derive(Debug, Clone)]
pub struct GeneratedCerts {
    /// The CA certificate clients trust.
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// The server's chain (leaf then CA) and key, for `*.tls.cert_file` /
    /// `*.tls.key_file`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Writes `ca.crt`, `ca.key`, `server.crt` and `server.key` into `out_dir`
/// (created if missing, files replaced): a new CA valid `valid_days`, and a
/// server certificate for `hosts` (DNS names or IP addresses) signed by it.
pub fn generate(
    out_dir: &Path,
    hosts: &[String],
    valid_days: u32,
) -> Result<GeneratedCerts, CertGenError> {
    let now = OffsetDateTime::now_utc();
    let not_before = now - Duration::hours(1);
    let not_after = now + Duration::days(i64::from(valid_days.max(1)));

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "products-service local CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_cert_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut server_params = CertificateParams::new(hosts.to_vec())?;
    server_params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("localhost", String::as_str),
    );
    server_params.is_ca = IsCa::ExplicitNoCa;
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    server_params.not_before = not_before;
    server_params.not_after = not_after;
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    std::fs::create_dir_all(out_dir).map_err(|source| CertGenError::Write {
        path: out_dir.to_owned(),
        source,
    })?;
    let files = GeneratedCerts {
        ca_cert: out_dir.join("ca.crt"),
        ca_key: out_dir.join("ca.key"),
        server_cert: out_dir.join("server.crt"),
        server_key: out_dir.join("server.key"),
    };
    write_file(&files.ca_cert, ca_cert_pem.as_bytes(), false)?;
    write_file(&files.ca_key, ca_key_pem.as_bytes(), true)?;
    let chain = format!("{}{}", server_cert.pem(), ca_cert_pem);
    write_file(&files.server_cert, chain.as_bytes(), false)?;
    write_file(
        &files.server_key,
        server_key.serialize_pem().as_bytes(),
        true,
    )?;
    Ok(files)
}

fn write_file(path: &Path, content: &[u8], private: bool) -> Result<(), CertGenError> {
    let err = |source| CertGenError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(err)?;
    file.write_all(content).map_err(err)?;
    #[cfg(unix)]
    if private {
        // `mode` applies only to new files; tighten a file that existed.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::TlsSettings, tls::PemIdentity};

    #[test]
    fn generated_files_make_a_valid_server_identity() {
        let dir = tempfile::tempdir().unwrap();
        let hosts: Vec<String> = DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect();
        let files = generate(dir.path(), &hosts, 30).unwrap();
        let identity = PemIdentity::load(&TlsSettings {
            enabled: true,
            cert_file: files.server_cert.clone(),
            key_file: files.server_key.clone(),
        })
        .unwrap();
        assert!(identity.server_config(&[b"h2"]).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.server_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "private key readable by others");
        }
    }
}
