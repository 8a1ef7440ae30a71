//! Client TLS for the remote sinks (rustls with the aws-lc-rs provider). The
//! certificate is always verified: against the system trust store plus an optional CA
//! file. A client certificate is sent when configured. The key exchange prefers the
//! post-quantum hybrid X25519MLKEM768 and falls back to X25519 when the peer lacks it.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    ClientConfig, RootCertStore,
};

use super::spec::TlsOptions;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn client_config(opts: &TlsOptions) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "system trust store entry skipped");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(ca) = &opts.ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading CA file {}", ca.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing CA file {}", ca.display()))?;
        anyhow::ensure!(!certs.is_empty(), "CA file {} holds no certificate", ca.display());
        for c in certs {
            roots
                .add(c)
                .with_context(|| format!("CA file {}: unusable certificate", ca.display()))?;
        }
    } else if added == 0 {
        anyhow::bail!("no trusted CA certificates: the system store is empty and no ca= was given");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading client certificate {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing client certificate {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading client key {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("client certificate and key do not match")?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_quantum_hybrid_is_offered_first() {
        let p = provider();
        assert_eq!(p.kx_groups[0].name(), rustls::NamedGroup::X25519MLKEM768);
        assert!(p.kx_groups.iter().any(|g| g.name() == rustls::NamedGroup::X25519));
    }

    #[test]
    fn bad_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = client_config(&TlsOptions {
            ca: Some(ca),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("ca.pem"), "{err:#}");
    }
}
