//! Configuration comes from flags first, then environment variables, then
//! defaults, so a Kubernetes manifest can set anything with `env:` while a
//! developer uses flags. A malformed value is a start-up error that names the
//! flag or variable, never a silent fallback.

use std::{fmt::Display, str::FromStr, time::Duration};

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
    Invalid { name: &'static str, reason: String },
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

/// Like [`flag_or_env`] for a duration given in whole milliseconds.
pub fn millis_flag_or_env(
    flag: Option<u64>,
    var: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    flag_or_env(flag, var, default_ms).map(Duration::from_millis)
}

/// Rejects a zero where zero would disable a safety limit.
pub fn non_zero<T: Default + PartialEq>(name: &'static str, value: T) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(ConfigError::Invalid {
            name,
            reason: "must be greater than zero".into(),
        });
    }
    Ok(value)
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
    fn zero_is_rejected_where_it_disables_a_limit() {
        assert!(non_zero("--max-in-flight", 0usize).is_err());
        assert_eq!(non_zero("--max-in-flight", 5usize).unwrap(), 5);
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
