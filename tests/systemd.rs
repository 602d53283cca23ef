//! weir as a systemd service: what it reports on `NOTIFY_SOCKET`, and TLS
//! files handed over as credentials (`LoadCredential=`). The real binary.

mod common;
mod proto_support;

use std::process::Command;

use common::*;
use proto_support::*;

/// `weir check -c path`, as the unit runs it before a reload, with `CREDENTIALS_DIRECTORY`
/// set to `credentials` or removed.
fn check(path: &std::path::Path, credentials: Option<&std::path::Path>) -> std::process::Output {
    let mut command = Command::new(WEIR);
    command.args(["check", "-c"]).arg(path);
    match credentials {
        Some(dir) => command.env("CREDENTIALS_DIRECTORY", dir),
        None => command.env_remove("CREDENTIALS_DIRECTORY"),
    };
    command.output().expect("run weir check")
}

/// Sends SIGHUP and returns what weir reports once the reload is over.
fn reload(weir: &Running, notify: &NotifySocket) -> String {
    weir.signal("HUP");
    let reloading = notify.next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    notify.next()
}

#[tokio::test]
async fn a_reload_weir_rejects_after_the_pre_check_is_reported_in_status() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let good = one_upstream("round_robin", &[server(a.addr)], "");
    let file = write_config(&good);
    let notify = NotifySocket::bind();
    let weir = Running::start_with(file.path(), &[notify.env()]);
    assert_eq!(notify.next(), "READY=1\nSTATUS=serving\n");
    let url = format!("http://{}/", weir.addr);
    const FAILED: &str =
        "READY=1\nSTATUS=reload failed, the previous configuration stays in force: ";

    // An access log in a folder that does not exist passes `weir check`, the
    // unit's pre-check; only the reload finds it cannot be opened.
    let logs = tempfile::tempdir().expect("temp dir");
    let access = logs.path().join("gone").join("access.log");
    let unopenable = one_upstream("round_robin", &[server(b.addr)], "")
        .replace("access = \"off\"", &format!("access = {:?}", access));
    rewrite_config(file.path(), &unopenable);
    assert!(check(file.path(), None).status.success());
    assert_eq!(
        reload(&weir, &notify),
        format!(
            "{FAILED}cannot open the access log {}: No such file or directory (os error 2)\n",
            access.display()
        )
    );
    assert_eq!(get(&url).await.1, "a");

    // A file broken after the pre-check: the status names the file, line and key.
    rewrite_config(
        file.path(),
        &with_server_keys(&good, "threads = 1\nthreads = 2"),
    );
    let status = reload(&weir, &notify);
    let expected = format!(
        "{FAILED}{}:5:1: server.threads: duplicate key\n",
        file.path().display()
    );
    assert_eq!(status, expected);
    assert_eq!(get(&url).await.1, "a");

    // A reload that works says so, replacing the failure.
    rewrite_config(
        file.path(),
        &one_upstream("round_robin", &[server(b.addr)], ""),
    );
    assert_eq!(
        reload(&weir, &notify),
        "READY=1\nSTATUS=serving; configuration reloaded\n"
    );
    assert_eq!(get(&url).await.1, "b");
}

#[tokio::test]
async fn tls_files_are_read_from_the_credentials_directory() {
    let backend = spawn_backend("app").await;
    // systemd copies each `LoadCredential=` file into a folder of the unit's
    // own, readable by its dynamic user, and names it in CREDENTIALS_DIRECTORY.
    let credentials = Pki::new();
    let leaf = credentials.issue("site", &["site.test"]);
    let listen = r#"{ addr = "127.0.0.1:0", tls = { cert = "${CREDENTIALS_DIRECTORY}/site.pem", key = "$CREDENTIALS_DIRECTORY/site.key" } }"#;
    let file = write_config(&config_with(listen, &[server(backend.addr)], "", ""));

    let outside = check(file.path(), None);
    assert_eq!(outside.status.code(), Some(1));
    let err = String::from_utf8_lossy(&outside.stderr);
    let expected = format!(
        "{}:3:50: server.listen[0].tls.cert: $CREDENTIALS_DIRECTORY is not set",
        file.path().display()
    );
    assert!(err.starts_with(&expected), "{err}");

    let inside = check(file.path(), Some(credentials.dir.path()));
    assert!(
        inside.status.success(),
        "{}",
        String::from_utf8_lossy(&inside.stderr)
    );
    let weir = Running::start_with(
        file.path(),
        &[("CREDENTIALS_DIRECTORY", credentials.dir.path().as_os_str())],
    );
    assert_eq!(cert_for(weir.addr, "site.test").await, leaf.der);
}
