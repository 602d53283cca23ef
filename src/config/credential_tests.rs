//! Certificate paths in systemd's credentials folder (`LoadCredential=`).

use std::path::{Path, PathBuf};

use super::{parse_with, Config, ConfigError};

/// A TLS listener with `cert` and `key` as written, on line 2.
fn tls(cert: &str, key: &str) -> String {
    format!(
        "[server]\nlisten = {{ addr = \"127.0.0.1:8443\", tls = {{ cert = \"{cert}\", key = \"{key}\" }} }}\n\
         [[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:3000\"]\n[[route]]\nupstream = \"a\"\n"
    )
}

fn parse(src: &str, credentials: Option<&str>) -> Result<Config, ConfigError> {
    parse_with(
        src,
        Path::new("/etc/weir/weir.toml"),
        credentials.map(Path::new),
    )
}

/// The certificate and key paths of the one listener.
fn files(config: &Config) -> (PathBuf, PathBuf) {
    let tls = config.server.listen[0]
        .tls
        .as_ref()
        .expect("a TLS listener");
    (tls.certs[0].cert.clone(), tls.certs[0].key.clone())
}

#[test]
fn both_spellings_name_a_file_in_the_credentials_folder() {
    let src = tls(
        "${CREDENTIALS_DIRECTORY}/site.pem",
        "$CREDENTIALS_DIRECTORY/site.key",
    );
    let config = parse(&src, Some("/run/credentials/weir.service")).expect("valid");
    assert_eq!(
        files(&config),
        (
            PathBuf::from("/run/credentials/weir.service/site.pem"),
            PathBuf::from("/run/credentials/weir.service/site.key"),
        )
    );
}

#[test]
fn other_paths_are_unchanged_by_the_credentials_folder() {
    let src = tls("site.pem", "/etc/weir/tls/site.key");
    let config = parse(&src, Some("/run/credentials/weir.service")).expect("valid");
    assert_eq!(
        files(&config),
        (
            PathBuf::from("/etc/weir/site.pem"),
            PathBuf::from("/etc/weir/tls/site.key"),
        )
    );
}

#[test]
fn without_the_variable_the_error_names_the_line_and_key() {
    let src = tls("${CREDENTIALS_DIRECTORY}/site.pem", "/etc/weir/site.key");
    let e = parse(&src, None).expect_err("no credentials folder");
    assert_eq!(
        (e.line, e.key.as_str()),
        (2, "server.listen.tls.cert"),
        "{e}"
    );
    assert!(
        e.to_string().starts_with(
            "/etc/weir/weir.toml:2:52: server.listen.tls.cert: $CREDENTIALS_DIRECTORY is not set"
        ),
        "{e}"
    );
    assert_eq!(e.each().count(), 1, "{e}");
}

#[test]
fn the_variable_only_starts_a_path_and_names_a_credential() {
    for (cert, message) in [
        (
            "/etc/${CREDENTIALS_DIRECTORY}/site.pem",
            "must start the path",
        ),
        ("tls/$CREDENTIALS_DIRECTORY/site.pem", "must start the path"),
        ("${CREDENTIALS_DIRECTORY}", "must start the path"),
        ("${CREDENTIALS_DIRECTORY}/", "must name a credential"),
    ] {
        let e = parse(&tls(cert, "k.pem"), Some("/run/credentials/weir.service")).expect_err(cert);
        assert_eq!(
            (e.line, e.key.as_str()),
            (2, "server.listen.tls.cert"),
            "{e}"
        );
        assert!(e.message.contains(message), "{cert}: {e}");
    }
}
