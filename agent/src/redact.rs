//! Secrets that must never leave the host: the values a tool call, a command line or
//! a URL can carry, recognised by their shape, and the keys whose values are secret
//! whatever they look like. Masking keeps a short, non-secret prefix (the provider's
//! marker, `ghp_`, `sk-ant-`) so an analyst can tell which kind of credential was
//! passed, and replaces the rest with `[REDACTED]`.
//!
//! The list (documented in docs/audit.md):
//! - private keys: PEM blocks `-----BEGIN … PRIVATE KEY-----`;
//! - JSON Web Tokens: `eyJ….eyJ….…`;
//! - URLs with credentials: `scheme://user:password@host` (the password is masked);
//! - provider tokens: OpenAI/Anthropic `sk-…`, GitHub `ghp_ gho_ ghu_ ghs_ ghr_ github_pat_`,
//!   GitLab `glpat-`, AWS access key ids `AKIA…`/`ASIA…`, Slack `xox[abposr]-`,
//!   Google API keys `AIza…`, Stripe `sk_live_`/`rk_live_`, Hugging Face `hf_`,
//!   npm `npm_`, PyPI `pypi-`;
//! - `Bearer …`/`Basic …` authorization values;
//! - any value under a key that names a secret (`password`, `passwd`, `secret`,
//!   `token`, `api_key`, `apikey`, `access_key`, `private_key`, `credential`,
//!   `authorization`, `cookie`, `session`), case-insensitive, as a substring of the
//!   key, and the keys `auth`, `pass` and `pwd`.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

pub const MASK: &str = "[REDACTED]";

/// Key name fragments whose values are secrets whatever they look like.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "private_key",
    "credential",
    "authorization",
    "cookie",
    "session",
];
/// Whole key names that name a secret (as fragments they would match `author`).
const SECRET_KEYS_EXACT: &[&str] = &["auth", "pass", "pwd"];

/// (pattern, how many leading characters of a match stay visible).
static PATTERNS: LazyLock<Vec<(Regex, usize)>> = LazyLock::new(|| {
    [
        (
            r"-----BEGIN [A-Z ]*PRIVATE KEY( BLOCK)?-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY( BLOCK)?-----|$)",
            0,
        ),
        (r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", 3),
        (r"\bsk-ant-[A-Za-z0-9_-]{16,}", 7),
        (r"\bsk-(proj-|live-|test-)?[A-Za-z0-9_-]{16,}", 3),
        (r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}", 4),
        (r"\bgithub_pat_[A-Za-z0-9_]{20,}", 11),
        (r"\bglpat-[A-Za-z0-9_-]{16,}", 6),
        (r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", 4),
        (r"\bxox[abposr]-[A-Za-z0-9-]{10,}", 5),
        (r"\bAIza[0-9A-Za-z_-]{30,}", 4),
        (r"\b(sk|rk)_live_[0-9A-Za-z]{16,}", 8),
        (r"\bhf_[A-Za-z0-9]{20,}", 3),
        (r"\bnpm_[A-Za-z0-9]{30,}", 4),
        (r"\bpypi-[A-Za-z0-9_-]{30,}", 5),
        (r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}", 0),
    ]
    .into_iter()
    .map(|(p, keep)| (Regex::new(p).expect("secret pattern compiles"), keep))
    .collect()
});

/// `scheme://user:password@`: the password part.
static URL_CREDENTIALS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):([^/\s@]+)@").expect("compiles"));

/// Whether a key (argument name, environment variable, query parameter, flag) names
/// a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| k.contains(s)) || SECRET_KEYS_EXACT.contains(&k.as_str())
}

/// The text with every secret-looking value masked; borrowed when there is none.
pub fn text(s: &str) -> std::borrow::Cow<'_, str> {
    let mut out = std::borrow::Cow::Borrowed(s);
    if out.contains("://") && URL_CREDENTIALS.is_match(&out) {
        out = URL_CREDENTIALS
            .replace_all(&out, format!("$1:{MASK}@").as_str())
            .into_owned()
            .into();
    }
    for (re, keep) in PATTERNS.iter() {
        if !re.is_match(&out) {
            continue;
        }
        out = re
            .replace_all(&out, |c: &regex::Captures| {
                let m = &c[0];
                let kept: String = m.chars().take(*keep).collect();
                format!("{kept}{MASK}")
            })
            .into_owned()
            .into();
    }
    out
}

/// Whether `s` holds anything [`text`] would mask.
#[cfg(test)]
pub fn contains_secret(s: &str) -> bool {
    matches!(text(s), std::borrow::Cow::Owned(_))
}

/// A JSON value with secrets masked: every string by shape, and every value under a
/// secret-naming key entirely (a string) or member by member (an object or array).
pub fn json(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(text(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(json).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let masked = match v {
                        Value::String(_) | Value::Number(_) if is_secret_key(k) => Value::String(MASK.into()),
                        other => json(other),
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn provider_tokens_keep_only_their_marker() {
        for (secret, shown) in [
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "ghp_"),
            ("sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "sk-ant-"),
            ("sk-proj-abcdefghijklmnopqrstuvwx", "sk-"),
            ("AKIAIOSFODNN7EXAMPLE", "AKIA"),
            ("xoxb-123456789012-abcdefghij", "xoxb-"),
            ("glpat-abcdefghij0123456789", "glpat-"),
            ("AIzaSyA0123456789abcdefghijklmnopqrstu", "AIza"),
        ] {
            let masked = text(&format!("--token {secret} --x")).into_owned();
            assert_eq!(masked, format!("--token {shown}{MASK} --x"), "{secret}");
            assert!(contains_secret(secret));
        }
    }

    #[test]
    fn urls_jwts_keys_and_authorization_values() {
        assert_eq!(
            text("postgres://app:hunter2@db.internal:5432/x"),
            format!("postgres://app:{MASK}@db.internal:5432/x")
        );
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(text(jwt), format!("eyJ{MASK}"));
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert_eq!(text(pem), format!("{MASK}\n"));
        assert_eq!(
            text("Authorization: Bearer abcdefgh12345678"),
            format!("Authorization: {MASK}")
        );
    }

    #[test]
    fn ordinary_text_is_borrowed_untouched() {
        for s in [
            "/home/dev/projects/notes.md",
            "https://example.com/path?q=1",
            "a skeleton key",
            "git@github.com:org/repo.git",
        ] {
            assert!(matches!(text(s), std::borrow::Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn json_masks_by_key_and_by_shape() {
        let v = json!({
            "path": "/tmp/x",
            "api_key": "plain-looking",
            "headers": {"Authorization": "whatever", "Accept": "json"},
            "list": ["ghp_0123456789abcdefghijABCDEFGHIJ012345", 3],
            "DB_PASSWORD": 1234
        });
        let m = json(&v);
        assert_eq!(m["path"], "/tmp/x");
        assert_eq!(m["api_key"], MASK);
        assert_eq!(m["headers"]["Authorization"], MASK);
        assert_eq!(m["headers"]["Accept"], "json");
        assert_eq!(m["list"][0], format!("ghp_{MASK}"));
        assert_eq!(m["list"][1], 3);
        assert_eq!(m["DB_PASSWORD"], MASK);
    }
}
