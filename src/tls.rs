//! The site's CA: a PEM bundle trusted besides the system's roots (and the bundled
//! public ones), for IMS (through ureq's rustls) and checked once for S3 (whose
//! client takes the PEM itself, beside the system's roots).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{0}")]
    Read(std::io::Error),
    #[error("not PEM certificates: {0}")]
    NotPem(String),
    #[error("a certificate rustls refuses: {0}")]
    Refused(String),
    #[error("no certificate in it")]
    Empty,
    #[error("{0}")]
    Config(String),
}

/// The PEM bundle at `ca_file`, checked: it holds at least one certificate, and
/// rustls takes every one as a root.
pub fn load_pem(ca_file: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = std::fs::read(ca_file).map_err(TlsError::Read)?;
    add_roots(&mut rustls::RootCertStore::empty(), &pem)?;
    Ok(pem)
}

/// Add every certificate of `pem` to `roots`; none is an error.
fn add_roots(roots: &mut rustls::RootCertStore, pem: &[u8]) -> Result<(), TlsError> {
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError::NotPem(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::Refused(e.to_string()))?;
        added += 1;
    }
    match added {
        0 => Err(TlsError::Empty),
        _ => Ok(()),
    }
}

/// A rustls configuration trusting the system's roots, the bundled public ones and
/// the certificates of `ca_file` (a PEM bundle).
pub fn with_ca(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let pem = std::fs::read(ca_file).map_err(TlsError::Read)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // The system's store too (a site may have put its CA there already); one it
    // cannot parse is skipped, as the system's own tools would.
    let (_, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    add_roots(&mut roots, &pem)?;
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
