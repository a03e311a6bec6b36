//! Configuration comes from flags first, then environment variables, then
//! defaults, so a Kubernetes manifest can set anything with `env:` while a
//! developer uses flags. Every numeric setting has a documented valid range:
//! a malformed or out-of-range value is a start-up error (exit 2) that names
//! the flag and its variable, never a silent fallback, a panic or a runaway
//! (thousands of threads, a semaphore too large to build).

use std::{
    fmt::Display, io::Write, ops::RangeInclusive, process::ExitCode, str::FromStr, time::Duration,
};

/// A configuration value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        var: String,
        value: String,
        reason: String,
    },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
    #[error("{name} must be between {min} and {max}, got {value}")]
    OutOfRange {
        name: String,
        value: String,
        min: String,
        max: String,
    },
}

/// Parses the command line into `T`; `--help` prints and exits 0, and a
/// flag argh cannot parse exits 2 (a usage error), like a value out of range.
pub fn parse_args<T: argh::FromArgs>() -> Result<T, ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let command = args
        .first()
        .map_or("", |arg| arg.rsplit('/').next().unwrap_or(arg.as_str()));
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    T::from_args(&[command], &rest).map_err(|early| {
        // A closed pipe (`--help | head`) is not worth a panic.
        if early.status.is_ok() {
            let _ = writeln!(std::io::stdout(), "{}", early.output);
            ExitCode::SUCCESS
        } else {
            let _ = writeln!(
                std::io::stderr(),
                "{}\nRun {command} --help for the flags and their ranges.",
                early.output.trim_end()
            );
            ExitCode::from(2)
        }
    })
}

/// Returns the flag's value if given, else the parsed environment variable
/// `var` if set and non-empty, else `default`.
pub fn flag_or_env<T>(flag: Option<T>, var: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    if let Some(value) = flag {
        return Ok(value);
    }
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => {
            value
                .trim()
                .parse()
                .map_err(|err: T::Err| ConfigError::InvalidEnv {
                    var: var.to_owned(),
                    value,
                    reason: err.to_string(),
                })
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(raw)) => Err(ConfigError::InvalidEnv {
            var: var.to_owned(),
            value: raw.to_string_lossy().into_owned(),
            reason: "not valid UTF-8".into(),
        }),
    }
}

/// The flag's value if given, else the parsed environment variable `var`
/// if set and non-empty, else `None`: for settings whose absence means
/// "derive it".
pub fn optional<T>(flag: Option<T>, var: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    flag_or_env(flag.map(|value| Setting(Some(value))), var, Setting(None)).map(|setting| setting.0)
}

/// [`optional`], then a check that a given value lies in `range`.
pub fn optional_ranged<T>(
    flag_name: &str,
    flag: Option<T>,
    var: &str,
    range: RangeInclusive<T>,
) -> Result<Option<T>, ConfigError>
where
    T: FromStr + PartialOrd + Display,
    T::Err: Display,
{
    optional(flag, var)?
        .map(|value| check_range(&format!("{flag_name} ({var})"), value, range))
        .transpose()
}

/// An optional value that parses like the value itself.
struct Setting<T>(Option<T>);

impl<T: FromStr> FromStr for Setting<T> {
    type Err = T::Err;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(|value| Self(Some(value)))
    }
}

/// [`flag_or_env`], then a check that the value lies in `range`.
pub fn ranged<T>(
    flag_name: &str,
    flag: Option<T>,
    var: &str,
    default: T,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display,
    T::Err: Display,
{
    let value = flag_or_env(flag, var, default)?;
    check_range(&format!("{flag_name} ({var})"), value, range)
}

/// Like [`ranged`] for a duration given in whole milliseconds.
pub fn ranged_millis(
    flag_name: &str,
    flag: Option<u64>,
    var: &str,
    default: Duration,
    range_ms: RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    ranged(flag_name, flag, var, default_ms, range_ms).map(Duration::from_millis)
}

/// `value`, or an error naming `name` when it is outside `range`.
pub fn check_range<T: PartialOrd + Display>(
    name: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        return Ok(value);
    }
    Err(ConfigError::OutOfRange {
        name: name.to_owned(),
        value: value.to_string(),
        min: range.start().to_string(),
        max: range.end().to_string(),
    })
}

/// A number of bytes, written as Kubernetes writes memory quantities: plain
/// bytes (`67108864`), binary suffixes (`64Mi`, `1Gi`, `512Ki`) or decimal
/// ones (`64M`, `1G`, `500k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, suffix) = text.split_at(digits);
        let multiplier: u64 = match suffix {
            "" => 1,
            "k" => 1000,
            "M" => 1000 * 1000,
            "G" => 1000 * 1000 * 1000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => {
                return Err(format!(
                    "{text:?} is not a byte count (examples: 67108864, 64Mi, 1Gi, 64M)"
                ));
            }
        };
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a byte count (examples: 67108864, 64Mi, 1Gi)"))?;
        number
            .checked_mul(multiplier)
            .map(Self)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.0;
        if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
            write!(f, "{}Mi", bytes >> 20)
        } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
            write!(f, "{}Ki", bytes >> 10)
        } else {
            write!(f, "{bytes}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test uses its own variable name: tests run in parallel threads.
    #[test]
    fn flag_wins_over_env_and_default() {
        set_test_var("OPS_TEST_FLAG_WINS", "7");
        assert_eq!(flag_or_env(Some(3u32), "OPS_TEST_FLAG_WINS", 1).unwrap(), 3);
    }

    #[test]
    fn env_wins_over_default() {
        set_test_var("OPS_TEST_ENV_WINS", " 7 ");
        assert_eq!(flag_or_env(None, "OPS_TEST_ENV_WINS", 1u32).unwrap(), 7);
    }

    #[test]
    fn default_when_unset_or_empty() {
        assert_eq!(flag_or_env(None, "OPS_TEST_UNSET", 1u32).unwrap(), 1);
        set_test_var("OPS_TEST_EMPTY", "");
        assert_eq!(flag_or_env(None, "OPS_TEST_EMPTY", 1u32).unwrap(), 1);
    }

    #[test]
    fn bad_env_names_the_variable() {
        set_test_var("OPS_TEST_BAD", "lots");
        let err = flag_or_env(None, "OPS_TEST_BAD", 1u32).unwrap_err();
        assert!(err.to_string().contains("OPS_TEST_BAD=\"lots\""), "{err}");
    }

    #[test]
    fn values_outside_their_range_name_flag_variable_and_range() {
        let err = ranged(
            "--max-in-flight",
            Some(u64::MAX),
            "OPS_TEST_RANGE",
            512,
            1..=65536,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--max-in-flight (OPS_TEST_RANGE) must be between 1 and 65536, got 18446744073709551615"
        );
        assert!(ranged("--x", Some(0u64), "OPS_TEST_RANGE", 5, 1..=9).is_err());
        assert_eq!(
            ranged("--x", None, "OPS_TEST_RANGE_UNSET", 5u64, 1..=9).unwrap(),
            5
        );
        let millis = ranged_millis("--t", Some(250), "OPS_TEST_MS", Duration::ZERO, 1..=1000);
        assert_eq!(millis.unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn byte_sizes_read_like_kubernetes_quantities() {
        for (text, bytes) in [
            ("67108864", 67_108_864),
            ("64Mi", 64 << 20),
            ("1Gi", 1 << 30),
            ("512Ki", 512 << 10),
            ("64M", 64_000_000),
            ("500k", 500_000),
        ] {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in ["", "Mi", "64 Mi", "-1", "1.5Gi", "64MB", "99999999999Ti"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?}");
        }
        assert_eq!(ByteSize(64 << 20).to_string(), "64Mi");
        assert_eq!(ByteSize(24 << 10).to_string(), "24Ki");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    /// `set_var` is `unsafe` since edition 2024 because another thread may
    /// read the environment at the same time; every test here owns a
    /// distinct variable, and nothing else in this test binary reads them.
    fn set_test_var(var: &str, value: &str) {
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(var, value)
        }
    }
}
