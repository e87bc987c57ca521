//! Fault 7, access: a non-loopback bind without a token is refused at start (clear message, non-zero exit, nothing
//! created, nothing listening); with a token, a missing or wrong `Authorization` gets 401 (JSON error, `WWW-Authenticate:
//! Bearer`) on every endpoint group and changes nothing, the right token works (server and CLI); the token never
//! appears in the server's output nor in any answer, and a bad token file is refused without printing its content.

mod support;

use std::path::Path;

use serde_json::json;
use support::{backset, free_port, s, tmp, Server};

const TOKEN: &str = "Zq7-very-secret-token-4f1c";

/// `backset serve` expected to exit at once: (exit code, stderr).
fn serve_refused(args: &[&str]) -> (Option<i32>, String) {
    let out = support::command().arg("serve").args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn non_loopback_bind_without_a_token_is_refused_at_start() {
    let dir = tmp();
    let data = dir.path().join("data");
    let cfg = dir.path().join("serve.toml");
    let port = free_port();
    std::fs::write(&cfg, format!("listen = \"0.0.0.0:{port}\"\n")).unwrap();
    for listen in [format!("0.0.0.0:{port}"), format!("[::]:{port}"), format!("192.0.2.1:{port}")] {
        let (code, err) = serve_refused(&["--listen", &listen, "--data-dir", &s(&data)]);
        assert_eq!(code, Some(1), "{listen}: {err}");
        assert!(err.contains("--auth-token-file") && err.contains("not a loopback address"), "{listen}: {err}");
        assert!(err.contains(&listen), "the message does not name {listen}: {err}");
    }
    // From the config file too.
    let (code, err) = serve_refused(&["--config", &s(&cfg), "--data-dir", &s(&data)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--auth-token-file"), "{err}");
    // Refused before anything was made or bound.
    assert!(!data.exists(), "a refused start created the data directory");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "something listens on {port}");
    // Loopback addresses need no token.
    for listen in [format!("127.0.0.1:{}", free_port()), format!("[::1]:{}", free_port())] {
        if listen.starts_with('[') && std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("skip {listen}: no IPv6 loopback on this machine");
            continue;
        }
        let srv = Server::start_at(&listen, &listen, &dir.path().join(format!("d-{}", listen.len())), &[], None);
        assert_eq!(srv.get("/processes").code, 200);
    }
}

#[test]
fn bad_token_files_are_refused_without_printing_their_content() {
    let dir = tmp();
    let listen = format!("0.0.0.0:{}", free_port());
    let data = s(&dir.path().join("data"));
    for (name, content, says) in [
        ("empty", "\n", "is empty"),
        ("spaces", "Zq7 very secret\n", "printable ASCII without spaces"),
        ("control", "Zq7\u{7}secret\n", "printable ASCII without spaces"),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, content).unwrap();
        let (code, err) = serve_refused(&["--listen", &listen, "--data-dir", &data, "--auth-token-file", &s(&f)]);
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains(says) && err.contains(&s(&f)), "{name}: {err}");
        assert!(!err.contains("secret"), "{name}: the token file's content was printed: {err}");
    }
    let missing = dir.path().join("missing");
    let (code, err) = serve_refused(&["--listen", &listen, "--data-dir", &data, "--auth-token-file", &s(&missing)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&s(&missing)), "{err}");
}

#[test]
fn regression_a_token_shorter_than_16_bytes_was_accepted() {
    let dir = tmp();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    // 15 characters: a usage error (exit 2) naming the file and the minimum, without the token; nothing created.
    let short = dir.path().join("short");
    std::fs::write(&short, "Zq7secret-short\n").unwrap();
    let (code, err) = serve_refused(&["--listen", &listen, "--data-dir", &s(&data), "--auth-token-file", &s(&short)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("fewer than 16") && err.contains(&s(&short)), "{err}");
    assert!(!err.contains("Zq7secret"), "the token file's content was printed: {err}");
    assert!(!data.exists(), "a refused start created the data directory");
    // 16 characters, at the edge: accepted.
    let edge = dir.path().join("edge");
    std::fs::write(&edge, "Zq7secret-edge16\n").unwrap();
    let mut srv =
        Server::start_at(&listen, &listen, &data, &["--auth-token-file", &s(&edge)], Some("Zq7secret-edge16"));
    srv.assert_healthy();
    // Any other length of the same prefix is refused alike (the comparison hashes both tokens).
    for wrong in ["Zq7secret-edge1", "Zq7secret-edge16x", "", "Zq7secret-edge16Zq7secret-edge16"] {
        assert_eq!(srv.raw("GET", "/processes", None, Some(wrong)).code, 401, "{wrong:?}");
    }
}

/// One request per endpoint group (every route, and an unknown path).
fn endpoints(dir: &Path) -> Vec<(&'static str, String, Option<String>)> {
    let id = "00000000-0000-0000-0000-000000000000";
    vec![
        (
            "POST",
            "/databases/demo/hotCopy".into(),
            Some(json!({"type": "full", "backupSetDirs": {"0": s(&dir.join("set"))}, "timeoutSec": 60}).to_string()),
        ),
        (
            "POST",
            "/databases/demo/hotCopySimple".into(),
            Some(
                json!({"backupLocations": {"0": {"copyArchiveDir": s(&dir.join("simple"))}}, "timeoutSec": 60})
                    .to_string(),
            ),
        ),
        ("GET", "/databases/demo/hotCopyStatus".into(), None),
        ("GET", "/databases/hotCopyStatus?coordinatorStartId=1".into(), None),
        ("POST", format!("/databases/cancelHotCopy?coordinatorStartId=1&hotCopyId={id}"), None),
        ("GET", "/processes".into(), None),
        ("POST", "/databases/demo/transactions".into(), Some(json!({"put": {"k": "v"}}).to_string())),
        ("GET", "/databases/demo/keys/k".into(), None),
        ("GET", "/no/such/endpoint".into(), None),
    ]
}

#[test]
fn missing_or_wrong_token_gets_401_on_every_endpoint_and_the_right_one_works() {
    let dir = tmp();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    // Listening on every interface (it needs the token), reached through loopback.
    let mut srv = Server::start_at(
        &format!("0.0.0.0:{port}"),
        &format!("127.0.0.1:{port}"),
        &dir.path().join("data"),
        &["--auth-token-file", &s(&token_file)],
        Some(TOKEN),
    );
    let mut last = TOKEN.as_bytes().to_vec();
    *last.last_mut().unwrap() ^= 1;
    let last = String::from_utf8(last).unwrap();
    let bad: Vec<Option<String>> = vec![
        None,
        Some("Bearer ".into()),
        Some("Bearer wrong".into()),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {last}")),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
        Some(TOKEN.to_string()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {TOKEN} {TOKEN}")),
    ];
    let mut refused = 0;
    for (method, path, body) in endpoints(dir.path()) {
        for auth in &bad {
            let a = srv.with_authorization(method, &path, body.as_deref().map(str::as_bytes), auth.as_deref());
            assert_eq!(a.code, 401, "{method} {path} with {auth:?}: {}", a.text);
            assert_eq!(a.json["code"], 401, "{}", a.text);
            assert!(a.json["message"].as_str().is_some_and(|m| m.contains("bearer token")), "{}", a.text);
            assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"), "{method} {path}");
            assert!(!a.text.contains(TOKEN), "the token is in an answer: {}", a.text);
            refused += 1;
        }
        // The token sent in the query string instead of the header does not count either.
        let sep = if path.contains('?') { '&' } else { '?' };
        let a = srv.with_authorization(
            method,
            &format!("{path}{sep}token={TOKEN}"),
            body.as_deref().map(str::as_bytes),
            None,
        );
        assert_eq!(a.code, 401, "{method} {path} with the token in the query: {}", a.text);
        refused += 1;
    }
    srv.assert_alive();
    // Nothing a refused request asked for happened.
    assert_eq!(srv.get("/databases/demo/keys/k").code, 404);
    assert!(!dir.path().join("set").exists() && !dir.path().join("simple").exists());
    let a = srv.get("/databases/demo/hotCopyStatus");
    assert_eq!((a.code, &a.json["hotCopyStatuses"]["1"]), (200, &json!([])), "{}", a.text);
    // The scheme name is case-insensitive (RFC 9110, 11.1): `bearer` and `BEARER` work too.
    for scheme in ["bearer", "BEARER"] {
        let a = srv.with_authorization("GET", "/processes", None, Some(&format!("{scheme} {TOKEN}")));
        assert_eq!(a.code, 200, "{scheme}: {}", a.text);
    }
    // The right token works on every group.
    let a = srv.post_json("/databases/demo/transactions", &json!({"put": {"k": "v"}}));
    assert_eq!((a.code, &a.json["txnId"]), (200, &json!(1)), "the first accepted transaction is not 1: {}", a.text);
    for (method, path, body) in endpoints(dir.path()) {
        let a = srv.request(method, &path, body.as_deref().map(str::as_bytes));
        let want: &[u16] = if path.contains("cancelHotCopy") || path.starts_with("/no/") { &[404] } else { &[200] };
        assert!(want.contains(&a.code), "{method} {path} with the token: {}", a.text);
        if path.contains("/hotCopy") && method == "POST" {
            assert_eq!(a.json["status"], "completed", "{}", a.text);
        }
    }
    // The CLI: the token from --api-token-file and from BACKSET_AUTH_TOKEN works; a wrong one is refused.
    let api = format!("127.0.0.1:{port}");
    let out = backset(&["--api-server", &api, "--api-token-file", &s(&token_file), "get", "processes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = support::command()
        .args(["--api-server", &api, "get", "processes"])
        .env("BACKSET_AUTH_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for wrong in [None, Some("wrong-token-value")] {
        let mut cmd = support::command();
        cmd.args(["--api-server", &api, "get", "processes"]);
        if let Some(w) = wrong {
            cmd.env("BACKSET_AUTH_TOKEN", w);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{wrong:?}: {err}");
        assert!(err.contains("bearer token"), "{wrong:?}: {err}");
        assert!(!err.contains(TOKEN) && !err.contains("wrong-token-value"), "a token is in the CLI's message: {err}");
    }
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    eprintln!("{refused} requests refused with 401");
}

#[test]
fn the_token_never_appears_in_the_server_output() {
    let dir = tmp();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("  {TOKEN}  \n")).unwrap();
    let port = free_port();
    let srv = Server::start_at(
        &format!("0.0.0.0:{port}"),
        &format!("127.0.0.1:{port}"),
        &dir.path().join("data"),
        &["--auth-token-file", &s(&token_file)],
        Some(TOKEN),
    );
    // Requests that make the server talk: errors, a failed and a completed hot copy, wrong tokens that share most
    // of the token's text, a shutdown that cancels a running copy.
    for i in 0..50 {
        srv.post_json("/databases/demo/transactions", &json!({"put": {format!("key-{i}"): "x".repeat(1000)}}));
    }
    let set = dir.path().join("set");
    let a = srv.post_json(
        "/databases/demo/hotCopy",
        &json!({"type": "full", "backupSetDirs": {"0": s(&set)}, "timeoutSec": 60}),
    );
    assert_eq!(a.json["status"], "completed", "{}", a.text);
    let a = srv.post_json("/databases/demo/hotCopy", &json!({"type": "full", "backupSetDirs": {"0": s(&set)}}));
    assert_eq!(a.code, 409);
    for auth in [format!("Bearer {}", &TOKEN[..10]), format!("Bearer {TOKEN}{TOKEN}"), format!("Token {TOKEN}")] {
        let a = srv.with_authorization("GET", "/processes", None, Some(&auth));
        assert_eq!(a.code, 401);
        assert!(!a.text.contains(&TOKEN[..10]), "{}", a.text);
    }
    let a = srv.post_json(
        "/databases/demo/hotCopy",
        &json!({"type": "full", "backupSetDirs": {"0": s(&dir.path().join("slow"))}, "maxRate": 1000}),
    );
    assert_eq!(a.code, 200, "{}", a.text);
    assert!(a.json["hotCopyId"].is_string(), "{}", a.text);
    let (code, out) = srv.terminate();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("bearer token required"), "the start line does not say a token is required: {out}");
    assert!(out.contains("SIGTERM"), "{out}");
    assert!(!out.contains(TOKEN) && !out.contains(&TOKEN[..10]), "the token is in the server's output: {out}");
}
