//! What the HTTPS sinks share: one reqwest client on our rustls config, the
//! credentials (read from a file or the environment at start-up), and the reading of
//! a response into "acknowledged", "retry (after N s)" or "rejected". Each receiver's
//! protocol (body, path, per-item status) lives in its own file.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use futures::future::BoxFuture;
use reqwest::{header::HeaderValue, StatusCode};

use crate::output::{
    host::HostInfo,
    record::Record,
    sink::{SendError, Sink},
    spec::{Format, HttpKind, RemoteSpec},
};

const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Request {
    pub path: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// A receiver's protocol.
pub trait Protocol: Send + Sync {
    /// Path used when the output URL has none.
    fn default_path(&self) -> &'static str;
    /// `Authorization` scheme for a token.
    fn token_scheme(&self) -> &'static str {
        "Bearer"
    }
    fn build(&self, batch: &[Record], format: Format, host: &HostInfo) -> Request;
    /// Reads a response; the default accepts any 2xx for the whole batch.
    fn interpret(
        &self,
        status: StatusCode,
        _body: &[u8],
        n: usize,
        retry_after: Option<Duration>,
    ) -> Result<(), SendError> {
        classify(status, n, retry_after)
    }
}

/// 2xx: acknowledged. 408, 429, 5xx (and 401/403/404, which an operator fixes while
/// the spool waits): retry. Other 4xx refuse the content: the one record of a batch
/// of one is rejected; a larger batch is split to find it.
pub fn classify(status: StatusCode, n: usize, retry_after: Option<Duration>) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let mut e = SendError::retry(format!("HTTP {status}"));
    e.retry_after = retry_after;
    let code = status.as_u16();
    let content_refused =
        status.is_client_error() && !matches!(code, 401 | 403 | 404 | 408 | 409 | 425 | 429);
    if content_refused {
        if n == 1 {
            e.rejected = true;
        } else {
            e.shrink = true;
        }
    }
    Err(e)
}

/// `Retry-After`: delta seconds or an HTTP date.
pub fn retry_after(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(s).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

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
    pub fn new(kind: HttpKind, spec: &RemoteSpec, label: String, host: Arc<HostInfo>) -> Result<Self> {
        let proto: Box<dyn Protocol> = match kind {
            HttpKind::Webhook => Box::new(super::webhook::Webhook),
            HttpKind::Hec => Box::new(super::hec::Hec {
                index: spec.index.clone(),
            }),
            HttpKind::Elastic => Box::new(super::elastic::Elastic {
                index: spec.index.clone(),
            }),
            HttpKind::Loki => Box::new(super::loki::Loki {
                tenant: spec.tenant.clone(),
            }),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_classify_into_ack_retry_and_reject() {
        assert!(classify(StatusCode::NO_CONTENT, 3, None).is_ok());
        let e = classify(StatusCode::TOO_MANY_REQUESTS, 3, Some(Duration::from_secs(2))).unwrap_err();
        assert!(!e.rejected && !e.shrink && e.retry_after == Some(Duration::from_secs(2)));
        assert!(
            !classify(StatusCode::INTERNAL_SERVER_ERROR, 1, None)
                .unwrap_err()
                .rejected
        );
        assert!(!classify(StatusCode::UNAUTHORIZED, 1, None).unwrap_err().rejected);
        assert!(classify(StatusCode::BAD_REQUEST, 1, None).unwrap_err().rejected);
        assert!(classify(StatusCode::BAD_REQUEST, 5, None).unwrap_err().shrink);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            retry_after(&HeaderValue::from_static("3")),
            Some(Duration::from_secs(3))
        );
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        let d = retry_after(&HeaderValue::from_str(&later).unwrap()).unwrap();
        assert!(
            d > Duration::from_secs(50) && d <= Duration::from_secs(60),
            "{d:?}"
        );
        assert_eq!(retry_after(&HeaderValue::from_static("soon")), None);
    }
}
