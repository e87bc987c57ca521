//! How a client reaches a store: endpoint, region, credentials, plain-HTTP policy, retries. From the standard `AWS_*`
//! environment variables ([`S3Config::from_env`]) or given explicitly (what `serve --config` gives).
//!
//! The variables read, and nothing else:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` | the keys (both or neither) |
//! | `AWS_SESSION_TOKEN` | the session token of temporary keys |
//! | `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL` | an S3-compatible server (default: AWS S3 of the region) |
//! | `AWS_REGION`, else `AWS_DEFAULT_REGION` | the region (default `us-east-1`) |
//! | `AWS_ALLOW_HTTP` | `true`: allow a plain `http://` endpoint that is not a loopback address |
//! | `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`, `AWS_ROLE_SESSION_NAME`, `AWS_ENDPOINT_URL_STS` | web identity (Kubernetes) credentials, when no keys are set |
//! | `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, `AWS_CONTAINER_CREDENTIALS_FULL_URI`, `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` | container (ECS) credentials, when no keys are set |
//!
//! Instance-profile credentials (the EC2 metadata service) are not read: without keys, web identity or container
//! credentials, building a client fails with [`ObjStoreError::MissingCredentials`] before any request.

use std::fmt;
use std::time::Duration;

use crate::error::ObjStoreError;
use crate::limits::{RETRY_BACKOFF_INITIAL, RETRY_BACKOFF_MAX, RETRY_MAX, RETRY_TIMEOUT};

/// A secret (a secret access key, a session token): never shown. Its `Debug` prints `Secret(redacted)`; it has no
/// `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Static credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// The access key id (not a secret: stores log it).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// Retries of requests that fail in a way worth retrying (5xx such as 503 `SlowDown`, 429, 408, a connection
/// refused or reset), with exponential backoff and jitter: object_store's [`RetryConfig`](object_store::RetryConfig)
/// and [`BackoffConfig`](object_store::BackoffConfig). Defaults: the constants of [`crate::limits`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    /// Retries of one request ([`RETRY_MAX`]).
    pub max_retries: usize,
    /// No retry after this long from the first attempt ([`RETRY_TIMEOUT`]).
    pub timeout: Duration,
    /// First wait ([`RETRY_BACKOFF_INITIAL`]).
    pub backoff_initial: Duration,
    /// Longest wait ([`RETRY_BACKOFF_MAX`]).
    pub backoff_max: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_retries: RETRY_MAX,
            timeout: RETRY_TIMEOUT,
            backoff_initial: RETRY_BACKOFF_INITIAL,
            backoff_max: RETRY_BACKOFF_MAX,
        }
    }
}

/// Everything a client needs besides the location. `Debug` never shows a secret.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct S3Config {
    /// The server's URL (`https://...`, or `http://` to a loopback address); `None`: AWS S3 of the region.
    pub endpoint: Option<String>,
    /// The region; `None`: `us-east-1`.
    pub region: Option<String>,
    /// Static credentials; `None`: web identity or container credentials from `ambient`, else an error.
    pub credentials: Option<S3Credentials>,
    /// Allow a plain `http://` endpoint that is not a loopback address (`AWS_ALLOW_HTTP=true`).
    pub allow_http: bool,
    /// Retries and backoff.
    pub retry: RetrySettings,
    /// The web identity and container credential variables that were set (names and values; none is a secret:
    /// they are file paths, ARNs and URIs).
    pub ambient: Vec<(String, String)>,
}

/// Settings given explicitly (the `[s3]` table of `serve --config`), each winning over the environment variables
/// of the same meaning ([`S3Config::from_env_with`]). `Debug` never shows a secret.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct S3Overrides {
    /// The server's URL (`endpoint-url`).
    pub endpoint: Option<String>,
    /// The region (`region`).
    pub region: Option<String>,
    /// The access key id (`access-key-id`).
    pub access_key_id: Option<String>,
    /// The secret access key (`secret-access-key`).
    pub secret_access_key: Option<Secret>,
    /// The session token of temporary keys (`session-token`).
    pub session_token: Option<Secret>,
    /// Allow a plain `http://` endpoint that is not a loopback address (`allow-http`).
    pub allow_http: Option<bool>,
    /// Retries and backoff (`max-retries`, `retry-timeout`).
    pub retry: RetrySettings,
}

/// The `serve --config` key of an `AWS_*` credential variable, for messages about the `[s3]` table.
fn config_key(var: &'static str) -> &'static str {
    match var {
        "AWS_ACCESS_KEY_ID" => "access-key-id",
        "AWS_SECRET_ACCESS_KEY" => "secret-access-key",
        other => other,
    }
}

/// The web identity and container variables passed through to object_store (see the [module docs](self)).
const AMBIENT_VARS: [&str; 7] = [
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

impl S3Config {
    /// From the process's environment (see the [module docs](self)).
    pub fn from_env() -> Result<Self, ObjStoreError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From the process's environment with `given` winning over it (what `serve --config` gives; see
    /// [`S3Overrides`]).
    pub fn from_env_with(given: &S3Overrides) -> Result<Self, ObjStoreError> {
        Self::from_vars_with(|name| std::env::var(name).ok(), given)
    }

    /// From the variables `var` gives, each setting of `given` winning over its variables: the endpoint over
    /// `AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL`, the region over `AWS_REGION` and `AWS_DEFAULT_REGION`,
    /// `allow_http` over `AWS_ALLOW_HTTP`; the keys as a whole (when `given` has an access key id or a secret, none
    /// of `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` is read: a key id of one source and
    /// a secret of the other never meet). The retries are `given`'s.
    pub fn from_vars_with(var: impl Fn(&str) -> Option<String>, given: &S3Overrides) -> Result<Self, ObjStoreError> {
        let keys_given = given.access_key_id.is_some() || given.secret_access_key.is_some();
        let mut config = Self::from_vars(|name| match name {
            "AWS_ENDPOINT_URL_S3" | "AWS_ENDPOINT_URL" if given.endpoint.is_some() => given.endpoint.clone(),
            "AWS_REGION" | "AWS_DEFAULT_REGION" if given.region.is_some() => given.region.clone(),
            "AWS_ALLOW_HTTP" if given.allow_http.is_some() => given.allow_http.map(|a| a.to_string()),
            "AWS_ACCESS_KEY_ID" if keys_given => given.access_key_id.clone(),
            "AWS_SECRET_ACCESS_KEY" if keys_given => given.secret_access_key.as_ref().map(|s| s.expose().to_owned()),
            "AWS_SESSION_TOKEN" if keys_given => given.session_token.as_ref().map(|s| s.expose().to_owned()),
            _ => var(name),
        })
        .map_err(|e| match e {
            ObjStoreError::HalfCredentials { given: g, missing, .. } if keys_given => ObjStoreError::HalfCredentials {
                url: "object storage (serve --config, [s3])".into(),
                given: config_key(g),
                missing: config_key(missing),
            },
            e => e,
        })?;
        config.retry = given.retry;
        Ok(config)
    }

    /// From the variables `var` gives (the process's environment in [`from_env`](Self::from_env)); empty values
    /// count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ObjStoreError> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let credentials = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret)) => Some(S3Credentials {
                access_key_id,
                secret_access_key: Secret::new(secret),
                session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ObjStoreError::HalfCredentials {
                    url: "object storage".into(),
                    given: "AWS_ACCESS_KEY_ID",
                    missing: "AWS_SECRET_ACCESS_KEY",
                })
            }
            (None, Some(_)) => {
                return Err(ObjStoreError::HalfCredentials {
                    url: "object storage".into(),
                    given: "AWS_SECRET_ACCESS_KEY",
                    missing: "AWS_ACCESS_KEY_ID",
                })
            }
        };
        let allow_http = match var("AWS_ALLOW_HTTP") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => {
                return Err(ObjStoreError::InvalidEndpoint {
                    endpoint: format!("AWS_ALLOW_HTTP={v}"),
                    why: "AWS_ALLOW_HTTP must be true or false".into(),
                })
            }
        };
        Ok(Self {
            endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            credentials,
            allow_http,
            retry: RetrySettings::default(),
            ambient: AMBIENT_VARS.iter().filter_map(|&name| var(name).map(|v| (name.to_owned(), v))).collect(),
        })
    }

    /// The endpoint, checked: `https://`, or `http://` to a loopback address (`localhost`, `127.0.0.0/8`, `::1`)
    /// or with [`allow_http`](Self::allow_http); no credentials, query or fragment in it.
    pub fn checked_endpoint(&self) -> Result<Option<String>, ObjStoreError> {
        let Some(endpoint) = &self.endpoint else { return Ok(None) };
        let invalid = |why: &str| ObjStoreError::InvalidEndpoint { endpoint: endpoint.clone(), why: why.to_owned() };
        let url = url::Url::parse(endpoint).map_err(|e| invalid(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials do not go in the endpoint; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("an endpoint has no query or fragment"));
        }
        let Some(loopback) = is_loopback(&url) else { return Err(invalid("it has no host")) };
        match url.scheme() {
            "https" => {}
            "http" if loopback || self.allow_http => {}
            "http" => return Err(ObjStoreError::InsecureEndpoint { endpoint: endpoint.clone() }),
            other => return Err(invalid(&format!("the scheme {other}:// is neither http:// nor https://"))),
        }
        Ok(Some(endpoint.trim_end_matches('/').to_owned()))
    }

    /// Whether request bodies are signed (their SHA-256 in each request's signature, which the server checks
    /// against the body): only over plain HTTP to a host that is not a loopback address ([`allow_http`]), where
    /// nothing else keeps a body from being altered on its way. Over HTTPS, TLS does, and a loopback endpoint has
    /// nothing on the way: there requests say `UNSIGNED-PAYLOAD` (SigV4's option for this), where a SHA-256 would
    /// cost the client and the server a hash of every byte for nothing.
    ///
    /// [`allow_http`]: Self::allow_http
    pub fn signs_payloads(&self) -> bool {
        let url = self.endpoint.as_deref().and_then(|e| url::Url::parse(e).ok());
        url.is_some_and(|u| u.scheme() == "http" && is_loopback(&u) != Some(true))
    }
}

/// Whether `url`'s host is a loopback address (`localhost`, `127.0.0.0/8`, `::1`); `None` when it has no host.
fn is_loopback(url: &url::Url) -> Option<bool> {
    Some(match url.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn payloads_are_signed_only_over_plain_http_beyond_loopback() {
        let signs = |endpoint: Option<&str>| {
            let c = S3Config { endpoint: endpoint.map(str::to_owned), allow_http: true, ..S3Config::default() };
            c.signs_payloads()
        };
        assert!(signs(Some("http://minio.internal:9000")));
        assert!(signs(Some("http://10.0.0.5:9000")));
        assert!(!signs(Some("https://minio.internal:9000")));
        assert!(!signs(Some("http://127.0.0.1:9000")));
        assert!(!signs(Some("http://localhost:9000")));
        assert!(!signs(Some("http://[::1]:9000")));
        assert!(!signs(None), "AWS S3 itself, over HTTPS");
    }

    #[test]
    fn standard_variables_are_read() {
        let c = S3Config::from_vars(vars(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-example-secret"),
            ("AWS_SESSION_TOKEN", "session-token-example"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ROLE_ARN", "arn:aws:iam::123:role/backup"),
        ]))
        .unwrap();
        let creds = c.credentials.as_ref().unwrap();
        assert_eq!(creds.access_key_id, "AKIDEXAMPLE");
        assert_eq!(creds.secret_access_key.expose(), "wJalrXUtnFEMI-example-secret");
        assert_eq!(creds.session_token.as_ref().unwrap().expose(), "session-token-example");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.ambient, vec![("AWS_ROLE_ARN".to_owned(), "arn:aws:iam::123:role/backup".to_owned())]);
        assert!(!c.allow_http);
    }

    #[test]
    fn specific_variables_win() {
        let c = S3Config::from_vars(vars(&[
            ("AWS_ENDPOINT_URL", "https://general.example"),
            ("AWS_ENDPOINT_URL_S3", "https://s3.example"),
            ("AWS_REGION", "us-west-2"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]))
        .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("https://s3.example"));
        assert_eq!(c.region.as_deref(), Some("us-west-2"));
        assert!(c.allow_http);
    }

    #[test]
    fn half_credentials_are_refused() {
        let e = S3Config::from_vars(vars(&[("AWS_ACCESS_KEY_ID", "AKID")])).unwrap_err().to_string();
        assert!(e.contains("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"), "{e}");
        let e = S3Config::from_vars(vars(&[("AWS_SECRET_ACCESS_KEY", "s")])).unwrap_err().to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"), "{e}");
        assert!(S3Config::from_vars(vars(&[("AWS_ALLOW_HTTP", "yes")])).is_err());
    }

    fn endpoint(url: &str, allow_http: bool) -> Result<Option<String>, String> {
        S3Config { endpoint: Some(url.into()), allow_http, ..Default::default() }
            .checked_endpoint()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        for ok in ["http://127.0.0.1:9000", "http://127.8.9.10:1", "http://localhost:9000/", "http://[::1]:9000"] {
            assert!(endpoint(ok, false).is_ok(), "{ok}");
        }
        assert_eq!(endpoint("http://localhost:9000/", false).unwrap().as_deref(), Some("http://localhost:9000"));
        assert!(endpoint("https://s3.example.com", false).is_ok());
        for remote in ["http://10.0.0.5:9000", "http://minio.internal:9000", "http://[fd00::1]:9000"] {
            let e = endpoint(remote, false).unwrap_err();
            assert!(e.contains("plain http:// is refused") && e.contains("AWS_ALLOW_HTTP=true"), "{e}");
            assert!(endpoint(remote, true).is_ok(), "{remote} with allow_http");
        }
        assert!(endpoint("ftp://127.0.0.1", false).unwrap_err().contains("neither http:// nor https://"));
        assert!(endpoint("127.0.0.1:9000", false).is_err());
        assert!(endpoint("http://key:secret@127.0.0.1:9000", false).unwrap_err().contains("credentials do not go"));
    }

    #[test]
    fn given_settings_win_over_the_variables_and_keys_come_from_one_source() {
        let env = vars(&[
            ("AWS_ACCESS_KEY_ID", "ENV-KEY"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
            ("AWS_ENDPOINT_URL_S3", "https://env.example"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]);
        let given = S3Overrides {
            endpoint: Some("http://10.0.0.5:9000".into()),
            region: Some("ap-south-1".into()),
            access_key_id: Some("FILE-KEY".into()),
            secret_access_key: Some(Secret::new("file-secret")),
            allow_http: Some(false),
            retry: RetrySettings { max_retries: 2, ..RetrySettings::default() },
            ..S3Overrides::default()
        };
        let c = S3Config::from_vars_with(&env, &given).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://10.0.0.5:9000"));
        assert_eq!(c.region.as_deref(), Some("ap-south-1"));
        let creds = c.credentials.as_ref().unwrap();
        assert_eq!((creds.access_key_id.as_str(), creds.secret_access_key.expose()), ("FILE-KEY", "file-secret"));
        assert_eq!(creds.session_token, None, "the environment's token does not go with the file's keys");
        assert!(!c.allow_http);
        assert_eq!(c.retry.max_retries, 2);
        assert!(c.checked_endpoint().unwrap_err().to_string().contains("plain http:// is refused"));
        // Nothing given: the environment's.
        let c = S3Config::from_vars_with(&env, &S3Overrides::default()).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("https://env.example"));
        assert_eq!(c.credentials.unwrap().session_token.unwrap().expose(), "env-token");
        // Half the keys in the file: an error naming the file's keys, not completed from the environment.
        let half = S3Overrides { access_key_id: Some("FILE-KEY".into()), ..S3Overrides::default() };
        let e = S3Config::from_vars_with(&env, &half).unwrap_err().to_string();
        assert!(e.contains("access-key-id is set but secret-access-key is not") && e.contains("serve --config"), "{e}");
        assert!(!e.contains("env-secret"), "{e}");
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let c = S3Config::from_vars(vars(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-example-secret"),
            ("AWS_SESSION_TOKEN", "session-token-example"),
        ]))
        .unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("wJalrXUtnFEMI-example-secret") && !shown.contains("session-token-example"), "{shown}");
        assert!(shown.contains("AKIDEXAMPLE") && shown.contains("Secret(redacted)"), "{shown}");
    }
}
