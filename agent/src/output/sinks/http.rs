//! The HTTP transport the HTTPS sinks share: one reqwest client on our rustls config,
//! the credentials (read from a file or the environment at start-up), posting a
//! batch. Each receiver's protocol (body, path, per-item status) lives in its own
//! file behind [`Protocol`](super::http_protocol::Protocol); `sinks/mod.rs` picks it.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use futures::future::BoxFuture;
use reqwest::header::HeaderValue;

use super::http_protocol::{retry_after, Protocol};
use crate::output::{
    host::HostInfo,
    record::Record,
    sink::{SendError, Sink},
    spec::{HttpKind, RemoteSpec},
};

const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct HttpSink {
    label: String,
    spec: RemoteSpec,
    url_base: String,
    client: reqwest::Client,
    auth: Option<HeaderValue>,
    host: Arc<HostInfo>,
    proto: Box<dyn Protocol>,
}

impl HttpSink {
    pub fn new(kind: &HttpKind, spec: &RemoteSpec, label: String, host: Arc<HostInfo>) -> Result<Self> {
        let proto = super::protocol(kind);
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("mcpwatch/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if let Some(tls) = &spec.tls {
            let config =
                crate::output::tls::client_config(tls).with_context(|| format!("output {}", spec.raw))?;
            builder = builder.tls_backend_preconfigured(config);
        }
        let client = builder.build().context("building the HTTP client")?;
        let auth = match (&spec.token, &spec.user, &spec.password) {
            (Some(token), _, _) => {
                let t = token
                    .read()
                    .with_context(|| format!("output {}: token", spec.raw))?;
                Some(format!("{} {t}", proto.token_scheme()))
            }
            (None, Some(user), Some(pw)) => {
                use base64::Engine as _;
                let p = pw
                    .read()
                    .with_context(|| format!("output {}: password", spec.raw))?;
                let cred = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{p}"));
                Some(format!("Basic {cred}"))
            }
            _ => None,
        };
        let auth = auth
            .map(|a| {
                let mut v = HeaderValue::from_str(&a).context("credential is not a valid header value")?;
                v.set_sensitive(true);
                anyhow::Ok(v)
            })
            .transpose()?;
        let scheme = if spec.tls.is_some() { "https" } else { "http" };
        let host_part = if spec.host.contains(':') {
            format!("[{}]", spec.host)
        } else {
            spec.host.clone()
        };
        Ok(Self {
            label,
            url_base: format!("{scheme}://{host_part}:{}", spec.port),
            spec: spec.clone(),
            client,
            auth,
            host,
            proto,
        })
    }

    async fn post(&self, batch: &[Record]) -> Result<(), SendError> {
        let req = self.proto.build(batch, self.spec.format, &self.host);
        let path = if self.spec.path.is_empty() || self.spec.path == "/" {
            req.path.clone()
        } else {
            self.spec.path.clone()
        };
        let mut rb = self
            .client
            .post(format!("{}{path}", self.url_base))
            .header(reqwest::header::CONTENT_TYPE, req.content_type)
            .body(req.body);
        for (k, v) in req.headers {
            rb = rb.header(k, v);
        }
        if let Some(auth) = &self.auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let resp = rb.send().await.map_err(|e| {
            let mut chain = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                src = s.source();
            }
            SendError::retry(format!("POST {}: {chain}", self.label))
        })?;
        let status = resp.status();
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(retry_after);
        let body = resp
            .bytes()
            .await
            .map_err(|e| SendError::retry(format!("reading response of {}: {e}", self.label)))?;
        self.proto
            .interpret(status, &body, batch.len(), after)
            .map_err(|mut e| {
                if !status.is_success() {
                    let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    e.reason = format!("{}: {snippet}", e.reason);
                }
                e
            })
    }
}

impl Sink for HttpSink {
    fn label(&self) -> &str {
        &self.label
    }

    fn max_batch(&self) -> usize {
        self.spec.batch
    }

    fn send<'a>(&'a mut self, batch: &'a [Record]) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(self.post(batch))
    }
}
