//! TLS and basic auth for the HTTP listener, configured with the Prometheus
//! exporter-toolkit web config file (`--web-config-file`), so SOCs reuse the files and
//! tooling they have for node_exporter:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default), VerifyClientCertIfGiven
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12             # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$…           # bcrypt (htpasswd -nBC 10)
//! ```
//!
//! The file is read at start-up (a bad file is a configuration error, exit 78).

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{bail, Context as _, Result};
use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use serde::Deserialize;
use sha2::Digest as _;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    /// exporter-toolkit keys the agent accepts but does not act on.
    #[serde(default)]
    http_server_config: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: Option<String>,
}

#[derive(Clone)]
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    pub users: Option<Arc<BasicAuth>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("basic_auth", &self.users.is_some())
            .finish()
    }
}

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Digests of credentials that verified: bcrypt is slow by design, Prometheus
    /// scrapes often.
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl BasicAuth {
    fn check(&self, header: Option<&str>) -> bool {
        use base64::Engine as _;
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(pair) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, pass)) = pair.split_once(':') else {
            return false;
        };
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key: [u8; 32] = sha2::Sha256::digest(format!("{hash}\u{0}{pair}")).into();
        if self.verified.lock().expect("auth cache").contains(&key) {
            return true;
        }
        let ok = bcrypt::verify(pass, hash).unwrap_or(false);
        if ok {
            self.verified.lock().expect("auth cache").insert(key);
        }
        ok
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading web config {}", path.display()))?;
        let file: File = serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("web config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let _ = file.http_server_config;
        let tls = match file.tls_server_config {
            None => None,
            Some(t) => Some(Arc::new(
                Self::tls(base, &t).with_context(|| format!("web config {}", path.display()))?,
            )),
        };
        for (user, hash) in &file.basic_auth_users {
            if !hash.starts_with("$2") {
                bail!(
                    "web config {}: basic_auth_users.{user} is not a bcrypt hash",
                    path.display()
                );
            }
        }
        let users = (!file.basic_auth_users.is_empty()).then(|| {
            Arc::new(BasicAuth {
                users: file.basic_auth_users,
                verified: Mutex::new(HashSet::new()),
            })
        });
        Ok(Self { tls, users })
    }

    fn tls(base: &Path, t: &TlsFile) -> Result<ServerConfig> {
        let chain = certs(&resolve(base, &t.cert_file))?;
        let key_path = resolve(base, &t.key_file);
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
            None | Some("TLS12") => rustls::ALL_VERSIONS,
            Some("TLS13") => &[&rustls::version::TLS13],
            Some(v) => bail!("min_version {v:?}: TLS12 or TLS13"),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .context("TLS versions")?;
        let client_roots = || -> Result<Arc<RootCertStore>> {
            let ca = t
                .client_ca_file
                .as_ref()
                .context("client_auth_type needs client_ca_file")?;
            let mut roots = RootCertStore::empty();
            for c in certs(&resolve(base, ca))? {
                roots.add(c).context("client CA")?;
            }
            Ok(Arc::new(roots))
        };
        let builder = match t.client_auth_type.as_deref() {
            None | Some("NoClientCert") => builder.with_no_client_auth(),
            Some("RequireAndVerifyClientCert") => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(client_roots()?, provider)
                    .build()
                    .context("client verifier")?,
            ),
            Some("VerifyClientCertIfGiven") => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(client_roots()?, provider)
                    .allow_unauthenticated()
                    .build()
                    .context("client verifier")?,
            ),
            Some(other) => bail!(
                "client_auth_type {other:?}: NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .context("certificate and key do not match")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Middleware: 401 with a challenge unless the request carries valid credentials.
pub async fn require_basic_auth(State(auth): State<Arc<BasicAuth>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth.check(header) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"mcpwatch\"")],
            "unauthorized\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_checks_bcrypt_and_caches() {
        use base64::Engine as _;
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth {
            users: BTreeMap::from([("prom".to_string(), hash)]),
            verified: Mutex::new(HashSet::new()),
        };
        let h = |pair: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
        assert!(auth.check(Some(&h("prom:s3cret"))));
        assert!(auth.check(Some(&h("prom:s3cret"))), "cached");
        assert!(!auth.check(Some(&h("prom:wrong"))));
        assert!(!auth.check(Some(&h("other:s3cret"))));
        assert!(!auth.check(Some("Bearer x")));
        assert!(!auth.check(None));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, "basic_auth_users: {u: plaintext}\n").unwrap();
        assert!(format!("{:#}", WebConfig::load(&p).unwrap_err()).contains("bcrypt"));
        std::fs::write(
            &p,
            "tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n",
        )
        .unwrap();
        assert!(format!("{:#}", WebConfig::load(&p).unwrap_err()).contains("nope.crt"));
        std::fs::write(&p, "tls_config: {}\n").unwrap();
        assert!(WebConfig::load(&p).is_err());
    }
}
