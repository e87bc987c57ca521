//! The client verbs' options as nuocmd users expect them: `NUOCMD_API_SERVER` names the admin server when
//! `--api-server` does not (the flag wins, before the command as nuocmd takes it or after it); the client-only options
//! appear in the help of the client verbs only; `backset completion bash|zsh|fish` prints a completion script.

mod support;

use std::process::Output;

use support::{free_port, stdout, text, tmp, Server};

/// `backset args...` with `NUOCMD_API_SERVER` set to `env` (or unset).
fn run(args: &[&str], env: Option<&str>) -> Output {
    let mut cmd = support::command();
    cmd.args(args);
    if let Some(v) = env {
        cmd.env("NUOCMD_API_SERVER", v);
    }
    cmd.output().unwrap()
}

#[test]
fn nuocmd_api_server_is_honoured_and_the_flag_wins() {
    let dir = tmp();
    let srv = Server::start(&dir.path().join("data"), &[]);
    let nobody = format!("127.0.0.1:{}", free_port());
    // The variable alone (host:port, and as a URL).
    for v in [srv.addr.clone(), format!("http://{}", srv.addr)] {
        let out = run(&["get", "processes"], Some(&v));
        assert_eq!(out.status.code(), Some(0), "NUOCMD_API_SERVER={v}: {}", text(&out));
        assert!(stdout(&out).contains("start_id=1"), "{}", text(&out));
    }
    // The flag wins over the variable, after the command and before it (nuocmd's place).
    for args in [&["get", "processes", "--api-server", &srv.addr][..], &["--api-server", &srv.addr, "get", "processes"]]
    {
        let out = run(args, Some(&nobody));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    let out = run(&["get", "processes", "--api-server", &nobody], Some(&srv.addr));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&nobody) && err.contains("NUOCMD_API_SERVER"), "{err}");
    // An empty variable is no server name: the default is tried.
    let out = run(&["get", "processes"], Some(""));
    assert!(String::from_utf8_lossy(&out.stderr).contains("localhost:8888") || out.status.success(), "{}", text(&out));
}

#[test]
fn client_options_are_in_the_client_verbs_help_only() {
    let client = ["--api-server", "--show-json", "--api-token-file"];
    for verb in [
        &["get", "hotcopy-status"][..],
        &["get", "hotcopy-info"],
        &["get", "processes"],
        &["show", "hotcopy-info"],
        &["hotcopy", "database"],
        &["cancel", "hotcopy"],
    ] {
        let out = run(&[verb, &["--help"]].concat(), None);
        assert_eq!(out.status.code(), Some(0), "{verb:?}: {}", text(&out));
        for o in client {
            assert!(stdout(&out).contains(o), "{verb:?} --help does not list {o}: {}", stdout(&out));
        }
        assert!(stdout(&out).contains("NUOCMD_API_SERVER"), "{verb:?} --help: {}", stdout(&out));
    }
    for verb in [
        &["restore"][..],
        &["check"],
        &["archive", "info"],
        &["serve"],
        &["demo"],
        &["completion"],
        &["bench", "copy"],
        &[],
    ] {
        let out = run(&[verb, &["--help"]].concat(), None);
        assert_eq!(out.status.code(), Some(0), "{verb:?}: {}", text(&out));
        for o in client {
            assert!(!stdout(&out).contains(o), "{verb:?} --help lists {o}: {}", stdout(&out));
        }
    }
    // Given before a command that talks to no server, they are a usage error saying so.
    let out = run(&["--api-server", "127.0.0.1:1", "check", "/nonexistent"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`backset check` does not talk to the admin server"));
}

#[test]
fn completion_scripts_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completion", shell], None);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out));
        let script = stdout(&out);
        for word in ["backset", "hotcopy", "hotcopy-status", "restore", "serve", "--api-server", "--backup-dirs"] {
            assert!(script.contains(word), "the {shell} script does not name {word}");
        }
    }
    let out = run(&["completion", "powershell-not"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
