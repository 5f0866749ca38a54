//! TLS for the server and for every client of ours, on rustls.
//!
//! * [`server`]: the server's certificate, key and (for mTLS) client CA, read from PEM files and
//!   swapped in without a restart when the files change or on SIGHUP.
//! * [`client`]: what our clients trust (a CA bundle) and present (a client certificate), applied
//!   to a reqwest client.
//!
//! Files are named by the setting they came from in every error, and an error never quotes a
//! file's content (a key file's lines are key material).

pub mod client;
pub mod server;

use std::path::PathBuf;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A file named by a setting, so that whatever goes wrong with it names the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingFile {
    /// How the user set it: `S3LOCK_TLS_CERT (--tls-cert)`.
    pub setting: &'static str,
    pub path: PathBuf,
}

impl SettingFile {
    pub fn new(setting: &'static str, path: impl Into<PathBuf>) -> Self {
        Self {
            setting,
            path: path.into(),
        }
    }
}

/// A TLS file that cannot be used, naming its setting; never quoting its content.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid setting {setting}: {reason}")]
pub struct TlsError {
    pub setting: &'static str,
    pub reason: String,
}

impl TlsError {
    fn of(file: &SettingFile, reason: impl std::fmt::Display) -> Self {
        Self {
            setting: file.setting,
            reason: format!("{}: {reason}", file.path.display()),
        }
    }
}

/// The one crypto provider of our TLS, server and clients alike. rustls is built with both ring
/// (reqwest's choice) and aws-lc-rs (the AWS SDK's), so it cannot pick a default by itself;
/// ring keeps our TLS on the one library reqwest already uses.
pub fn provider() -> std::sync::Arc<CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a file whole. Certificates and keys are a few KiB; more than this is not one.
fn read(file: &SettingFile) -> Result<Vec<u8>, TlsError> {
    const MAX_PEM_BYTES: u64 = 1 << 20;
    let meta = std::fs::metadata(&file.path).map_err(|e| TlsError::of(file, e))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(TlsError::of(file, "larger than 1 MiB: not a PEM file"));
    }
    std::fs::read(&file.path).map_err(|e| TlsError::of(file, e))
}

/// Why a PEM file did not parse, in words that never quote its lines (pki-types' own messages
/// may: a key file's lines are secret).
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "no PEM item of the expected kind".into(),
        _ => "not a valid PEM file".into(),
    }
}

/// The certificates of a PEM file (a chain, leaf first, or a CA bundle); at least one.
fn certificates(
    file: &SettingFile,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::of(file, pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(TlsError::of(
            file,
            "holds no certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(file: &SettingFile, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::of(file, "holds no private key"),
        e => TlsError::of(file, pem_reason(&e)),
    })
}
