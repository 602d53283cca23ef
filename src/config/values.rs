//! Checks of single values: addresses, durations, integer ranges, networks,
//! path prefixes and host patterns, each error pointing at the value.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::error::ConfigError;
use super::model::HostPattern;

/// `"10MB"`, `"512k"`, `"1 GiB"`, `"100"`: binary multiples, case-insensitive.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(multiplier)
}

/// How a certificate path names a file in systemd's credentials folder.
const CREDENTIALS_PREFIXES: [&str; 2] = ["${CREDENTIALS_DIRECTORY}/", "$CREDENTIALS_DIRECTORY/"];

const ADDR_HINT: &str = "expected IP:port such as 127.0.0.1:3000";

/// What every check needs to build an error, and the errors found so far.
pub(super) struct Cx<'a> {
    /// The whole document, to turn spans into lines and columns.
    pub(crate) source: &'a str,
    /// Names the file in errors.
    pub(crate) file: &'a Path,
    /// systemd's folder of this unit's credentials (`$CREDENTIALS_DIRECTORY`),
    /// where certificate paths written as `${CREDENTIALS_DIRECTORY}/name` point.
    credentials: Option<&'a Path>,
    /// Every mistake found so far: validation goes on past one, so a single
    /// `weir check` lists them all.
    errors: Vec<ConfigError>,
}

impl<'a> Cx<'a> {
    /// A context for validating `source`, read from `file`, with systemd's
    /// credentials folder when weir has one.
    pub(crate) fn new(source: &'a str, file: &'a Path, credentials: Option<&'a Path>) -> Self {
        Self {
            source,
            file,
            credentials,
            errors: Vec::new(),
        }
    }

    /// Notes a mistake and lets validation go on.
    pub(crate) fn record(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// The checked value, or `None` once its error is recorded.
    pub(crate) fn check<T>(&mut self, checked: Result<T, ConfigError>) -> Option<T> {
        checked.map_err(|e| self.record(e)).ok()
    }

    /// The checked value, or a stand-in once its error is recorded. The
    /// stand-in never leaves validation: a recorded error fails it.
    pub(crate) fn keep<T: Default>(&mut self, checked: Result<T, ConfigError>) -> T {
        self.check(checked).unwrap_or_default()
    }

    /// `value` when nothing was recorded, else every recorded error as one.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        let mut errors = self.errors.into_iter();
        match errors.next() {
            None => Ok(value),
            Some(first) => Err(ConfigError::many(first, errors.collect())),
        }
    }

    /// `first`, then every recorded error, as one.
    pub(crate) fn fail(self, first: ConfigError) -> ConfigError {
        ConfigError::many(first, self.errors)
    }

    /// A file named in the config: a relative path is relative to the config
    /// file's directory, not to wherever weir was started.
    pub(crate) fn config_relative(&self, path: &str) -> PathBuf {
        self.file
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(path)
    }

    /// A certificate or key file: `${CREDENTIALS_DIRECTORY}/name` (or
    /// `$CREDENTIALS_DIRECTORY/name`) is credential `name` that systemd copied
    /// for the unit (`LoadCredential=`), so a key only root may read still
    /// reaches a `DynamicUser=` service; any other path is [`Self::config_relative`].
    pub(crate) fn credential_path(
        &self,
        value: &Spanned<String>,
        key: &str,
    ) -> Result<PathBuf, ConfigError> {
        let text = value.get_ref();
        let name = CREDENTIALS_PREFIXES
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix));
        let Some(name) = name else {
            if CREDENTIALS_PREFIXES
                .iter()
                .any(|prefix| text.contains(prefix.trim_end_matches('/')))
            {
                return Err(self.err(
                    value.span(),
                    key,
                    "$CREDENTIALS_DIRECTORY must start the path: \"${CREDENTIALS_DIRECTORY}/site.key\"",
                ));
            }
            return Ok(self.config_relative(text));
        };
        let Some(folder) = self.credentials else {
            return Err(self.err(
                value.span(),
                key,
                "$CREDENTIALS_DIRECTORY is not set: systemd sets it for a unit with \
                 LoadCredential=; elsewhere set it to the folder holding the files",
            ));
        };
        if name.is_empty() {
            return Err(self.err(
                value.span(),
                key,
                "must name a credential after $CREDENTIALS_DIRECTORY/",
            ));
        }
        Ok(folder.join(name))
    }
    /// An error at `span` of the document, for `key` (`route[3].path`). Checks
    /// take keys as `Display` so that a valid file, the common case, formats
    /// none: callers pass `&format_args!(…)` where a key is built.
    pub(crate) fn err(
        &self,
        span: Range<usize>,
        key: &(impl Display + ?Sized),
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::at(self.file, self.source, span, key.to_string(), message)
    }

    /// An `ip:port` address.
    pub(crate) fn addr(
        &self,
        value: &Spanned<String>,
        key: &(impl Display + ?Sized),
    ) -> Result<SocketAddr, ConfigError> {
        value
            .get_ref()
            .trim()
            .parse()
            .map_err(|_| self.err(value.span(), key, invalid_addr(value.get_ref())))
    }

    /// A duration string, `default` when absent; zero is rejected because every
    /// duration in the file is a timeout or an interval.
    pub(crate) fn duration(
        &self,
        value: Option<&Spanned<String>>,
        default: Duration,
        key: &(impl Display + ?Sized),
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let text = value.get_ref().trim();
        let d = humantime::parse_duration(text).map_err(|e| {
            self.err(
                value.span(),
                key,
                format!(
                    "invalid duration \"{text}\": {e}; expected e.g. \"500ms\", \"2s\" or \"1m\""
                ),
            )
        })?;
        if d.is_zero() {
            return Err(self.err(value.span(), key, "must be greater than zero"));
        }
        Ok(d)
    }

    /// An optional duration: absent means no bound; zero is rejected.
    pub(crate) fn optional_duration(
        &self,
        value: Option<&Spanned<String>>,
        key: &(impl Display + ?Sized),
    ) -> Result<Option<Duration>, ConfigError> {
        value
            .map(|v| self.duration(Some(v), Duration::ZERO, key))
            .transpose()
    }

    /// A byte size: a positive integer or a string such as `"512KiB"`, `"10MB"`, `"1g"`
    /// (k/m/g are binary multiples, as nginx reads them).
    pub(crate) fn size(
        &self,
        value: Option<&Spanned<super::raw::RawSize>>,
        key: &(impl Display + ?Sized),
    ) -> Result<Option<u64>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let parsed = match value.get_ref() {
            super::raw::RawSize::Bytes(n) => u64::try_from(*n).ok(),
            super::raw::RawSize::Text(text) => parse_size(text),
        };
        match parsed {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(self.err(
                value.span(),
                key,
                "expected a positive size such as 1048576, \"512KiB\" or \"10MB\"",
            )),
        }
    }

    /// An integer in `min..=max`, `default` when absent.
    pub(crate) fn int<T: TryFrom<i64>>(
        &self,
        value: Option<&Spanned<i64>>,
        default: T,
        (min, max): (i64, Option<i64>),
        key: &(impl Display + ?Sized),
    ) -> Result<T, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let n = *value.get_ref();
        let expected = match max {
            Some(max) => format!("must be between {min} and {max}, got {n}"),
            None => format!("must be at least {min}, got {n}"),
        };
        if n < min || max.is_some_and(|max| n > max) {
            return Err(self.err(value.span(), key, expected));
        }
        T::try_from(n).map_err(|_| self.err(value.span(), key, format!("{n} is too large")))
    }
}

/// The message for a string that is not an `ip:port` address.
pub(super) fn invalid_addr(text: &str) -> String {
    format!("invalid address \"{text}\": {ADDR_HINT}")
}

/// A network in CIDR notation, or a bare address meaning just that host.
pub(super) fn cidr(
    cx: &Cx<'_>,
    value: &Spanned<String>,
    key: &(impl Display + ?Sized),
) -> Result<IpNet, ConfigError> {
    let text = value.get_ref().trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        cx.err(
            value.span(),
            key,
            format!("invalid CIDR \"{text}\": expected a network such as 10.0.0.0/8 or an address"),
        )
    })
}

/// A request path prefix: starts with `/`, no query, fragment, spaces or control characters.
pub(super) fn path(
    cx: &Cx<'_>,
    value: &Spanned<String>,
    key: &(impl Display + ?Sized),
) -> Result<String, ConfigError> {
    let p = value.get_ref();
    if !p.starts_with('/') {
        return Err(cx.err(
            value.span(),
            key,
            format!("invalid path \"{p}\": must start with /"),
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '?' || *c == '#')
    {
        return Err(cx.err(
            value.span(),
            key,
            format!(
                "invalid path \"{}\": {:?} is not allowed",
                p.escape_debug(),
                c
            ),
        ));
    }
    Ok(p.clone())
}

/// Normalises `example.com` / `*.example.com`: lower case, no trailing dot,
/// no port, `*` only as the whole first label.
pub(super) fn host_pattern(text: &str) -> Result<HostPattern, String> {
    let bad = |why: &str| format!("invalid host \"{text}\": {why}");
    let lower = text.trim().to_ascii_lowercase();
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    if host.contains(':') {
        return Err(bad("a port is not allowed"));
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if name.is_empty() {
        return Err(bad("expected a name such as example.com or *.example.com"));
    }
    if name.contains('*') {
        return Err(bad(
            "`*` is only allowed as the whole first label, as in *.example.com",
        ));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in name.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ok_chars {
            return Err(bad("expected a name such as example.com or *.example.com"));
        }
    }
    Ok(if wildcard {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_are_normalised() {
        let exact = |s: &str| Ok(HostPattern::Exact(s.to_owned()));
        let wild = |s: &str| Ok(HostPattern::Wildcard(s.to_owned()));
        assert_eq!(host_pattern("Example.COM."), exact("example.com"));
        assert_eq!(host_pattern("*.Example.com"), wild(".example.com"));
        assert_eq!(host_pattern("localhost"), exact("localhost"));
    }

    #[test]
    fn bad_host_patterns_are_rejected() {
        for bad in [
            "",
            "*",
            "*.",
            "example.com:80",
            "a.*.example.com",
            "*example.com",
            "**.example.com",
            "exa mple.com",
            "a..b",
            "[::1]",
        ] {
            assert!(host_pattern(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
