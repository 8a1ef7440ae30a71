//! The contract between the HTTP transport (`http.rs`) and each receiver's protocol
//! (`webhook.rs`, `hec.rs`, `elastic.rs`, `loki.rs`): the request a protocol builds
//! and how a response is read into "acknowledged", "retry (after N s)" or "rejected".
//! A leaf: the transport and the protocols import it, it imports neither.

use std::time::Duration;

use reqwest::{header::HeaderValue, StatusCode};

use crate::output::{host::HostInfo, record::Record, sink::SendError, spec::Format};

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
