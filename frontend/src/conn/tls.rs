//! HTTPS: the TLS settings (rustls), certificates chosen by SNI, and the handshake.
//!
//! The certificates and keys are read when the configuration is loaded, so `khttpd-ctl reload`
//! (or SIGHUP) swaps them like any other setting: connections already open keep the handshake
//! they made, new ones get the new certificate, and a file that does not parse refuses the whole
//! reload (the old certificate keeps serving). Every main daemon uses the same `ServerConfig`, so
//! they share its session cache and ticket keys: a client resumes on whichever daemon the kernel
//! hands its next connection to.
//!
//! rustls speaks TLS 1.2 and 1.3 only, with its default suites (AES-GCM and ChaCha20-Poly1305,
//! forward secrecy only): there is nothing older to switch off. The crypto provider is *ring*, which
//! builds with a C compiler alone on a fresh machine.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The protocols offered by ALPN, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS listener's settings, as loaded.
#[derive(Debug)]
pub struct Tls {
    /// Where the TLS listener binds (`--bind` with `--tls-port`).
    pub addr: SocketAddr,
    /// The rustls settings every handshake uses.
    pub server: Arc<rustls::ServerConfig>,
    /// The certificate files, for `status` and the log.
    pub certs: Vec<PathBuf>,
    /// What the operator should hear about once logging runs (loose key permissions).
    pub warnings: Vec<String>,
}

/// The certificate and key pairs of a `--cert-dir`, in name order: certbot's layout
/// (`NAME/fullchain.pem` with `NAME/privkey.pem`) and `NAME.pem` or `NAME.crt` with `NAME.key`.
/// Entries that are neither (certbot's `README`, a half-written pair) are skipped; a directory
/// with no pair at all is refused.
pub(crate) fn cert_dir(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, TlsError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| TlsError(format!("--cert-dir {}: {e}", dir.display())))?;
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let mut pairs = Vec::new();
    for path in names {
        if path.is_dir() {
            let (cert, key) = (path.join("fullchain.pem"), path.join("privkey.pem"));
            if cert.is_file() && key.is_file() {
                pairs.push((cert, key));
            }
            continue;
        }
        let is_cert = path.extension().is_some_and(|x| x == "pem" || x == "crt");
        let key = path.with_extension("key");
        if is_cert && key.is_file() {
            pairs.push((path, key));
        }
    }
    if pairs.is_empty() {
        return Err(TlsError(format!(
            "--cert-dir {}: no certificate found (NAME/fullchain.pem with NAME/privkey.pem, or NAME.pem with NAME.key)",
            dir.display()
        )));
    }
    Ok(pairs)
}

/// A certificate or key that cannot be used, phrased for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl Tls {
    /// Reads every `certs[i]` (a PEM chain, leaf first) with its `keys[i]` (a PEM private key)
    /// and builds the settings. The first pair is the default for clients that send no SNI name
    /// or one no certificate covers.
    pub fn load(
        addr: SocketAddr,
        certs: &[PathBuf],
        keys: &[PathBuf],
        ocsp: &[PathBuf],
    ) -> Result<Tls, TlsError> {
        if certs.is_empty() {
            return Err(TlsError(
                "--tls-port needs a certificate: --cert FILE --key FILE".into(),
            ));
        }
        if certs.len() != keys.len() {
            return Err(TlsError(format!(
                "{} --cert and {} --key: give one key per certificate, in the same order",
                certs.len(),
                keys.len()
            )));
        }
        if ocsp.len() > certs.len() {
            return Err(TlsError(format!(
                "{} --ocsp for {} --cert: one response per certificate at most, in the same order",
                ocsp.len(),
                certs.len()
            )));
        }
        let provider = Arc::new(provider::default_provider());
        let mut pairs = Vec::with_capacity(certs.len());
        let mut warnings = Vec::new();
        for (i, (cert, key)) in certs.iter().zip(keys).enumerate() {
            let mut pair = load_pair(cert, key, &provider)?;
            if let Some(path) = ocsp.get(i) {
                let response = std::fs::read(path)
                    .map_err(|e| TlsError(format!("--ocsp {}: {e}", path.display())))?;
                // A DER OCSPResponse is a SEQUENCE; anything else (PEM, text) would be stapled as
                // garbage that clients reject.
                if response.first() != Some(&0x30) {
                    return Err(TlsError(format!(
                        "--ocsp {}: not a DER OCSP response (openssl ocsp -respout writes one)",
                        path.display()
                    )));
                }
                let mut with = (*pair.key).clone();
                with.ocsp = Some(response);
                pair.key = Arc::new(with);
            }
            pairs.push(pair);
            warnings.extend(loose(key));
        }
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("TLS settings: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni { pairs }));
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        // The server's order of suites, not the client's (testssl.sh rates a client-chosen order
        // HIGH): every suite on offer is strong, the first ones are the fastest with AES-NI.
        server.ignore_client_order = true;
        // Stateless resumption (TLS 1.3 tickets, TLS 1.2 tickets) with keys that rotate; the
        // default stateful cache (shared by the daemons through this one config) stays too.
        server.ticketer =
            provider::Ticketer::new().map_err(|e| TlsError(format!("TLS session tickets: {e}")))?;
        server.send_tls13_tickets = 2;
        Ok(Tls {
            addr,
            server: Arc::new(server),
            certs: certs.to_vec(),
            warnings,
        })
    }
}

/// One certificate chain with its key, and the leaf in DER to match SNI names against.
#[derive(Debug)]
struct Pair {
    key: Arc<CertifiedKey>,
    leaf: CertificateDer<'static>,
}

fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Pair, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError(format!("--cert {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("--cert {}: {e}", cert.display())))?;
    let Some(leaf) = chain.first().cloned() else {
        return Err(TlsError(format!(
            "--cert {}: no certificate in the file (expected PEM, -----BEGIN CERTIFICATE-----)",
            cert.display()
        )));
    };
    webpki::EndEntityCert::try_from(&leaf).map_err(|e| {
        TlsError(format!(
            "--cert {}: not a usable certificate: {e}",
            cert.display()
        ))
    })?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("--key {}: {e}", key.display())))?;
    let certified = CertifiedKey::from_der(chain, der, provider).map_err(|e| {
        TlsError(format!(
            "--key {} does not fit --cert {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(Pair {
        key: Arc::new(certified),
        leaf,
    })
}

/// A private key others may read is one others may have copied: say so (nginx and Apache do
/// not, but sshd does, for the same reason).
fn loose(key: &Path) -> Option<String> {
    let mode = std::fs::metadata(key).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "--key {}: private key readable by other users (mode {mode:o}); chmod 600 it",
            key.display()
        )
    })
}

impl Tls {
    /// Logs what loading found worth a warning.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!("{w}");
        }
    }
}

/// Picks the first certificate valid for the client's SNI name, else the first one.
#[derive(Debug)]
struct BySni {
    pairs: Vec<Pair>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // One certificate (most sites): nothing to choose, no certificate to parse per handshake.
        if let [only] = self.pairs.as_slice() {
            return Some(Arc::clone(&only.key));
        }
        let wanted = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok());
        let matching = wanted.and_then(|name| {
            self.pairs.iter().find(|p| {
                webpki::EndEntityCert::try_from(&p.leaf)
                    .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
            })
        });
        matching.or(self.pairs.first()).map(|p| Arc::clone(&p.key))
    }
}
