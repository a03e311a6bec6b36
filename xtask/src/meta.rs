//! What the images are stamped with: the workspace version, the git revision
//! and a date. Dates come from `SOURCE_DATE_EPOCH` (default: the last
//! commit's time), so rebuilding a commit gives the same bytes.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `[workspace.package] version` of Cargo.toml.
    pub version: String,
    /// `[workspace.package] repository` of Cargo.toml.
    pub source_url: String,
    /// 12 hex digits of HEAD, `-dirty` if the tree differs from it;
    /// `unknown` outside a git checkout.
    pub revision: String,
    pub source_date_epoch: u64,
}

impl Meta {
    pub fn read(root: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Meta, Error> {
        let cargo_toml = std::fs::read_to_string(root.join("Cargo.toml"))
            .map_err(|e| Error::io("Cargo.toml", e))?;
        let field = |key: &str| {
            workspace_package_field(&cargo_toml, key).ok_or_else(|| {
                Error::Usage(format!("no {key} in [workspace.package] of Cargo.toml"))
            })
        };
        let (version, source_url) = (field("version")?, field("repository")?);
        let git = |args: &[&str]| -> Option<(bool, String)> {
            let out = Command::new("git")
                .args(args)
                .current_dir(root)
                .stderr(Stdio::null())
                .output()
                .ok()?;
            Some((
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            ))
        };
        let head = git(&["rev-parse", "--short=12", "HEAD"])
            .filter(|(ok, _)| *ok)
            .map(|(_, rev)| rev);
        let revision = match &head {
            Some(rev) => match git(&["diff", "--quiet", "HEAD", "--"]) {
                Some((true, _)) => rev.clone(),
                _ => format!("{rev}-dirty"),
            },
            None => "unknown".to_string(),
        };
        let source_date_epoch = match env("SOURCE_DATE_EPOCH").filter(|v| !v.is_empty()) {
            Some(value) => value.parse().map_err(|_| {
                Error::Usage(format!(
                    "SOURCE_DATE_EPOCH='{value}' is not a number of seconds"
                ))
            })?,
            None if head.is_some() => git(&["log", "-1", "--format=%ct"])
                .and_then(|(ok, out)| if ok { out.parse().ok() } else { None })
                .unwrap_or(0),
            None => 0,
        };
        Ok(Meta {
            version,
            source_url,
            revision,
            source_date_epoch,
        })
    }

    /// The image creation date, RFC 3339 in UTC.
    pub fn created(&self) -> String {
        rfc3339_utc(self.source_date_epoch)
    }
}

/// A `key = "value"` of Cargo.toml's `[workspace.package]` table.
pub fn workspace_package_field(cargo_toml: &str, key: &str) -> Option<String> {
    let mut in_table = false;
    for line in cargo_toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_table = line == "[workspace.package]";
            continue;
        }
        if !in_table {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if name.trim() == key {
            let value = value.trim();
            return value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_string);
        }
    }
    None
}

/// `1700000000` -> `2023-11-14T22:13:20Z` (the proleptic Gregorian calendar;
/// days-to-civil after Howard Hinnant).
pub fn rfc3339_utc(epoch: u64) -> String {
    let (days, secs) = (epoch / 86_400, epoch % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_gnu_date() {
        // date -u -d @N +%Y-%m-%dT%H:%M:%SZ
        for (epoch, expected) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
        ] {
            assert_eq!(rfc3339_utc(epoch), expected, "{epoch}");
        }
    }

    #[test]
    fn fields_come_from_the_workspace_package_table_only() {
        let toml = "[package]\nversion = \"9.9.9\"\n\n[workspace.package]\nversion = \"0.1.0\"\n\
                    repository = \"https://example.org/x\"\n[workspace.dependencies]\nversion = \"1\"\n";
        assert_eq!(
            workspace_package_field(toml, "version").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(
            workspace_package_field(toml, "repository").as_deref(),
            Some("https://example.org/x")
        );
        assert_eq!(workspace_package_field(toml, "edition"), None);
    }

    #[test]
    fn reads_this_workspace() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let meta = Meta::read(root, &|name| {
            (name == "SOURCE_DATE_EPOCH").then(|| "1700000000".into())
        })
        .unwrap();
        assert_eq!(meta.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(meta.source_url, env!("CARGO_PKG_REPOSITORY"));
        assert_eq!(meta.created(), "2023-11-14T22:13:20Z");
        let bad = Meta::read(root, &|name| {
            (name == "SOURCE_DATE_EPOCH").then(|| "yesterday".into())
        });
        assert!(matches!(bad, Err(Error::Usage(_))));
    }
}
