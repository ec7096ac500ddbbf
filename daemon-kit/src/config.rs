//! Loading a daemon's TOML config file: read, deserialize, then the daemon's own checks; every
//! error is one line that names the file and, for syntax and type errors, the line at fault.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads `path`, parses it with [`parse`] and then `check`s the result.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |message| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let config = parse(&text).map_err(invalid)?;
    check(&config).map_err(invalid)?;
    Ok(config)
}

/// Deserializes TOML text; the error is one line: `line N (the line): what is wrong`.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| {
        // toml's own message spans several lines (a source excerpt); keep the explanation and
        // name the line, so the one line is enough to fix the file.
        let message = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let line_no = text[..start].matches('\n').count() + 1;
                let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
                format!("line {line_no} ({line}): {message}")
            }
            None => message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        port: u16,
    }

    #[test]
    fn errors_are_one_line_and_name_the_line() {
        let e = parse::<Sample>("# comment\nport = \"x\"\n").unwrap_err();
        assert!(e.starts_with("line 2 (port = \"x\"): "), "{e}");
        assert!(!e.contains('\n'));
        let e = parse::<Sample>("port = 1\nextra = 2\n").unwrap_err();
        assert!(e.starts_with("line 2 (extra = 2): "), "{e}");
    }

    #[test]
    fn load_reads_parses_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "port = 0\n").unwrap();
        let e = load::<Sample>(&path, |s| match s.port {
            0 => Err("port must be non-zero".into()),
            _ => Ok(()),
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("config {}: port must be non-zero", path.display())
        );
        let e = load::<Sample>(&dir.path().join("missing.toml"), |_| Ok(())).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        std::fs::write(&path, "port = 53\n").unwrap();
        assert_eq!(load::<Sample>(&path, |_| Ok(())).unwrap().port, 53);
    }
}
