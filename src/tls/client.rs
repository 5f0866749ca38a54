//! What our clients (the CLI, `check`, `bench`, `healthcheck`, peers' hints) trust and present
//! over https, applied to a reqwest client.

use reqwest::ClientBuilder;
use secrecy::{ExposeSecret, SecretSlice};

use super::{certificates, private_key, read, SettingFile, TlsError};

/// The files a client's TLS is made of; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// CA certificates to trust instead of the built-in public roots (a private CA).
    pub ca_cert: Option<SettingFile>,
    /// A certificate chain to present to a server that asks for one (mTLS), with its key.
    pub client_cert: Option<SettingFile>,
    pub client_key: Option<SettingFile>,
}

/// A client's TLS, read and checked once; applied to as many reqwest clients as needed.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// `None`: the built-in public roots (webpki-roots).
    roots: Option<Vec<reqwest::Certificate>>,
    /// The client certificate chain and its key as one PEM document, as reqwest takes it.
    identity: Option<SecretSlice<u8>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("private_ca", &self.roots.is_some())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Reads and checks the files; an error names the setting at fault and never quotes a key.
    pub fn load(files: &ClientTlsFiles) -> Result<Self, TlsError> {
        let roots = match &files.ca_cert {
            None => None,
            Some(ca) => Some(
                certificates(ca, &read(ca)?)?
                    .iter()
                    .map(|c| {
                        reqwest::Certificate::from_der(c)
                            .map_err(|_| TlsError::of(ca, "not a usable CA certificate"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let identity = match (&files.client_cert, &files.client_key) {
            (None, None) => None,
            (Some(cert), None) => {
                return Err(TlsError::of(cert, "a client certificate needs its key too"))
            }
            (None, Some(key)) => {
                return Err(TlsError::of(key, "a client key needs its certificate too"))
            }
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                certificates(cert, &pem)?;
                let key_pem = read(key)?;
                private_key(key, &key_pem)?;
                pem.push(b'\n');
                pem.extend_from_slice(&key_pem);
                let pem = SecretSlice::from(pem);
                // The same check reqwest makes when the client is built, made here so that a
                // bad pair names its setting at start rather than failing every request.
                reqwest::Identity::from_pem(pem.expose_secret())
                    .map_err(|_| TlsError::of(key, "not a usable key for this certificate"))?;
                Some(pem)
            }
        };
        Ok(Self { roots, identity })
    }

    /// `builder` trusting and presenting what this says.
    pub fn apply(&self, mut builder: ClientBuilder) -> ClientBuilder {
        if let Some(roots) = &self.roots {
            // A private CA replaces the public roots, as curl's --cacert does: a deployment
            // that runs its own CA does not want any public CA able to stand in for its server.
            builder = builder.tls_built_in_root_certs(false);
            for root in roots {
                builder = builder.add_root_certificate(root.clone());
            }
        }
        if let Some(pem) = &self.identity {
            let identity =
                reqwest::Identity::from_pem(pem.expose_secret()).expect("checked when loaded");
            builder = builder.identity(identity);
        }
        builder.use_rustls_tls()
    }
}
