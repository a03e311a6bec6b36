//! Configuration comes from flags first, then environment variables, then
//! defaults, so a Kubernetes manifest can set anything with `env:` while a
//! developer uses flags. Every numeric setting has a documented valid range:
//! a malformed or out-of-range value is a start-up error (exit 2) that names
//! the flag and its variable, never a silent fallback, a panic or a runaway
//! (thousands of threads, a semaphore too large to build).
//!
//! Each binary declares its flags once, as a [`Command`]: a table giving each
//! [`Flag`]'s name, variable, default, range and help. The parser, the
//! variable fallback, the range checks and `--help` all read that table, so
//! none of them can disagree with another; the flags both binaries take are
//! declared here, once ([`admin_listen`], [`memory_limit`],
//! [`max_connections`], [`write_timeout_ms`], [`CHECK_CONFIG`], and in
//! [`crate::process`] the shutdown and thread flags). The parser
//! reads the command line as argh did, word for word (its messages, `help`
//! as the last word, `--` ending the flags), with argh's help layout.

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

/// A binary's command line: what `--help` says of it, and its flags.
#[derive(Debug)]
pub struct Command {
    /// The service's name in its log lines and `--check-config` report.
    pub name: &'static str,
    /// The paragraph under the usage line of `--help`.
    pub about: &'static str,
    pub flags: &'static [Flag],
}

/// One flag, all that is said of it anywhere.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// `--name`.
    pub name: &'static str,
    /// The environment variable read when the flag is not given; empty
    /// for a switch.
    pub env: &'static str,
    pub kind: Kind,
    pub default: Fallback,
    /// The valid range of a number, both ends included.
    pub range: Option<(u64, u64)>,
    /// What it does, for `--help`; the variable, range and default are
    /// added from the fields above.
    pub help: &'static str,
}

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `--name` alone.
    Switch,
    /// `--name VALUE`; the function is the value's parser (its error is
    /// the reason shown), run when the command line is read.
    Value(fn(&str) -> Result<(), String>),
}

/// What a flag given neither on the command line nor in its variable is.
#[derive(Debug, Clone, Copy)]
pub enum Fallback {
    /// This text, read as a given value would be.
    Value(&'static str),
    /// Worked out at start-up as this says (the flag reads as `None`).
    Derived(&'static str),
}

/// The parser of a value of type `T`, as [`Kind::Value`] holds it.
pub fn parses<T>(text: &str) -> Result<(), String>
where
    T: FromStr,
    T::Err: Display,
{
    text.parse::<T>().map(drop).map_err(|err| err.to_string())
}

impl Flag {
    /// A flag taking a value parsed by `parse` (`parses::<T>`); a default
    /// must follow ([`Flag::default`] or [`Flag::derived`]).
    pub const fn value(
        name: &'static str,
        env: &'static str,
        parse: fn(&str) -> Result<(), String>,
        help: &'static str,
    ) -> Self {
        Self {
            name,
            env,
            kind: Kind::Value(parse),
            default: Fallback::Derived(""),
            range: None,
            help,
        }
    }

    pub const fn switch(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            env: "",
            kind: Kind::Switch,
            default: Fallback::Derived(""),
            range: None,
            help,
        }
    }

    pub const fn default(self, value: &'static str) -> Self {
        Self {
            default: Fallback::Value(value),
            ..self
        }
    }

    pub const fn derived(self, how: &'static str) -> Self {
        Self {
            default: Fallback::Derived(how),
            ..self
        }
    }

    pub const fn range(self, min: u64, max: u64) -> Self {
        Self {
            range: Some((min, max)),
            ..self
        }
    }

    /// Its entry in `--help`: the help, then the variable, range and
    /// default in brackets.
    pub fn description(&self) -> String {
        if let Kind::Switch = self.kind {
            return self.help.to_owned();
        }
        let mut text = format!("{} [env {}", self.help, self.env);
        if let Some((min, max)) = self.range {
            text.push_str(&format!(", {min}..={max}"));
        }
        match self.default {
            Fallback::Value(value) => text.push_str(&format!(", default {value}]")),
            Fallback::Derived(how) => text.push_str(&format!(", default: {how}]")),
        }
        text
    }

    /// How it is named in errors: the flag and its variable.
    fn label(&self) -> String {
        format!("{} ({})", self.name, self.env)
    }
}

/// `--admin-listen`: every binary serves `/healthz`, `/readyz` and
/// `/metrics` on a port of its own.
pub const fn admin_listen(env: &'static str, default: &'static str) -> Flag {
    Flag::value(
        "--admin-listen",
        env,
        parses::<std::net::SocketAddr>,
        "admin HTTP address for /healthz, /readyz and /metrics",
    )
    .default(default)
}

/// `--memory-limit`: what the caps of every port are derived from.
pub const fn memory_limit(env: &'static str) -> Flag {
    Flag::value(
        "--memory-limit",
        env,
        parses::<ByteSize>,
        "memory the process may use, e.g. 64Mi; caps not set are derived from it",
    )
    .derived("the cgroup's limit, else none")
}

/// `--max-connections`: every service port caps its connections, and
/// evicts rather than queues at the cap; `derived` says what the cap is
/// when not set.
pub const fn max_connections(env: &'static str, derived: &'static str) -> Flag {
    Flag::value(
        "--max-connections",
        env,
        parses::<usize>,
        "most open connections on the service port; at the cap a new one takes the place of \
         the least useful (nothing asked yet, else idle, else least recently active)",
    )
    .range(1, 65536)
    .derived(derived)
}

/// `--write-timeout-ms`: every service port drops a client that stops
/// reading.
pub const fn write_timeout_ms(env: &'static str) -> Flag {
    Flag::value(
        "--write-timeout-ms",
        env,
        parses::<u64>,
        "a client that does not read what it is sent for this long is disconnected",
    )
    .range(100, 600_000)
    .default("5000")
}

/// `--check-config`: every binary can check its settings without serving.
pub const CHECK_CONFIG: Flag = Flag::switch(
    "--check-config",
    "check the configuration, print the memory budget and exit (0 if it fits)",
);

/// What the command line said: the text given for each flag of a
/// [`Command`], already known to parse.
#[derive(Debug, Clone)]
pub struct Args {
    flags: &'static [Flag],
    given: Vec<Option<String>>,
}

/// The command line asked for help, or was wrong: what to print, and
/// whether that is a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyExit {
    pub output: String,
    pub ok: bool,
}

impl EarlyExit {
    fn usage(output: String) -> Self {
        Self { output, ok: false }
    }
}

impl Args {
    /// Nothing given: every flag at its variable or default.
    pub fn new(command: &Command) -> Self {
        Self {
            flags: command.flags,
            given: vec![None; command.flags.len()],
        }
    }

    /// The flags of `command` from `args` (the words after the program's
    /// name, which is `program` in the usage line).
    pub fn parse(command: &Command, program: &str, args: &[&str]) -> Result<Self, EarlyExit> {
        let mut parsed = Self::new(command);
        let mut help = false;
        let mut flags_ended = false;
        let mut rest = args.iter();
        while let Some(&arg) = rest.next() {
            if !flags_ended && (arg == "--help" || arg == "help") {
                help = true;
                continue;
            }
            if flags_ended || !arg.starts_with('-') {
                return Err(EarlyExit::usage(format!("Unrecognized argument: {arg}\n")));
            }
            if arg == "--" {
                flags_ended = true;
                continue;
            }
            if help {
                return Err(EarlyExit::usage(
                    "Trailing arguments are not allowed after `help`.".into(),
                ));
            }
            let Some(index) = command.flags.iter().position(|flag| flag.name == arg) else {
                return Err(EarlyExit::usage(format!("Unrecognized argument: {arg}\n")));
            };
            let value = match command.flags[index].kind {
                Kind::Switch => String::new(),
                Kind::Value(parse) => {
                    let value = rest.next().ok_or_else(|| {
                        EarlyExit::usage(format!("No value provided for option '{arg}'.\n"))
                    })?;
                    let bad = |reason: String| {
                        EarlyExit::usage(format!(
                            "Error parsing option '{arg}' with value '{value}': {reason}\n"
                        ))
                    };
                    if parsed.given[index].is_some() {
                        return Err(bad("duplicate values provided".into()));
                    }
                    parse(value).map_err(bad)?;
                    (*value).to_owned()
                }
            };
            parsed.given[index] = Some(value);
        }
        if help {
            return Err(EarlyExit {
                output: help_text(command, program),
                ok: true,
            });
        }
        Ok(parsed)
    }

    /// This process's command line; `--help` prints and exits 0, and a
    /// command line that cannot be read exits 2 (a usage error), like a
    /// value out of range.
    pub fn from_command_line(command: &Command) -> Result<Self, ExitCode> {
        let args: Vec<String> = std::env::args().collect();
        let program = args
            .first()
            .map_or("", |arg| arg.rsplit('/').next().unwrap_or(arg.as_str()));
        let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
        Self::parse(command, program, &rest).map_err(|early| {
            // A closed pipe (`--help | head`) is not worth a panic.
            if early.ok {
                let _ = writeln!(std::io::stdout(), "{}", early.output);
                ExitCode::SUCCESS
            } else {
                let _ = writeln!(
                    std::io::stderr(),
                    "{}\nRun {program} --help for the flags and their ranges.",
                    early.output.trim_end()
                );
                ExitCode::from(2)
            }
        })
    }

    /// Whether the switch `name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.find(name)
            .is_ok_and(|(index, _)| self.given[index].is_some())
    }

    /// The value of flag `name`: given, else its variable if set and not
    /// empty, else its default; a number must lie in the flag's range.
    /// `None` only for a flag whose default is worked out at start-up.
    pub fn optional<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr + Display + Copy + TryInto<u64>,
        T::Err: Display,
    {
        let (flag, value) = self.read::<T>(name)?;
        match (flag.range, value) {
            (Some((min, max)), Some(value)) => {
                let wide = value.try_into().unwrap_or(u64::MAX);
                check_range(&flag.label(), wide, min..=max).map(|_| Some(value))
            }
            (_, value) => Ok(value),
        }
    }

    /// [`Args::optional`] for a flag with a default.
    pub fn number<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: FromStr + Display + Copy + TryInto<u64>,
        T::Err: Display,
    {
        self.optional(name)?.ok_or_else(|| no_default(name))
    }

    /// [`Args::number`] for a duration given in whole milliseconds.
    pub fn millis(&self, name: &str) -> Result<Duration, ConfigError> {
        self.number(name).map(Duration::from_millis)
    }

    /// The value of flag `name`, a flag without a range: given, else its
    /// variable, else its default (`None` if that is worked out at start-up).
    pub fn text<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.read(name).map(|(_, value)| value)
    }

    /// [`Args::text`] for a flag with a default.
    pub fn value<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.text(name)?.ok_or_else(|| no_default(name))
    }

    /// An error saying that flag `name`'s value, read, cannot be used.
    pub fn invalid(&self, name: &str, reason: impl Display) -> ConfigError {
        let name = match self.find(name) {
            Ok((_, flag)) => flag.label(),
            Err(_) => name.to_owned(),
        };
        ConfigError::Invalid {
            name,
            reason: reason.to_string(),
        }
    }

    fn find(&self, name: &str) -> Result<(usize, &'static Flag), ConfigError> {
        self.flags
            .iter()
            .enumerate()
            .find(|(_, flag)| flag.name == name)
            .ok_or_else(|| ConfigError::Invalid {
                name: name.to_owned(),
                reason: "not a flag of this command".into(),
            })
    }

    fn read<T>(&self, name: &str) -> Result<(&'static Flag, Option<T>), ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let (index, flag) = self.find(name)?;
        let invalid = |reason: T::Err| ConfigError::Invalid {
            name: flag.label(),
            reason: reason.to_string(),
        };
        let value = match &self.given[index] {
            Some(text) => Some(text.parse().map_err(invalid)?),
            None => from_env(flag.env)?,
        };
        let value = match (value, flag.default) {
            (Some(value), _) => Some(value),
            (None, Fallback::Value(text)) => Some(text.parse().map_err(invalid)?),
            (None, Fallback::Derived(_)) => None,
        };
        Ok((flag, value))
    }
}

fn no_default(name: &str) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        reason: "has no default".into(),
    }
}

/// The parsed environment variable `var` if set and non-empty.
fn from_env<T>(var: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => {
            value
                .trim()
                .parse()
                .map(Some)
                .map_err(|err: T::Err| ConfigError::InvalidEnv {
                    var: var.to_owned(),
                    value,
                    reason: err.to_string(),
                })
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(raw)) => Err(ConfigError::InvalidEnv {
            var: var.to_owned(),
            value: raw.to_string_lossy().into_owned(),
            reason: "not valid UTF-8".into(),
        }),
    }
}

/// `--help`, laid out as argh lays it out: a usage line, the command's
/// paragraph, then each flag with its description wrapped at 80 columns
/// from column 20.
pub fn help_text(command: &Command, program: &str) -> String {
    let mut out = format!("Usage: {program}");
    for flag in command.flags {
        match flag.kind {
            Kind::Switch => out.push_str(&format!(" [{}]", flag.name)),
            Kind::Value(_) => {
                let value = flag.name.trim_start_matches('-');
                out.push_str(&format!(" [{} <{value}>]", flag.name));
            }
        }
    }
    out.push_str("\n\n");
    out.push_str(command.about);
    out.push_str("\n\nOptions:");
    for flag in command.flags {
        describe(&mut out, flag.name, &flag.description());
    }
    describe(&mut out, "--help, help", "display usage information");
    out.push('\n');
    out
}

/// One entry of `--help` (argh's `write_description`).
fn describe(out: &mut String, name: &str, description: &str) {
    const INDENT: usize = 20;
    const WIDTH: usize = 80;
    let pad = |line: &mut String| {
        let len = line.chars().count();
        if len < INDENT {
            line.extend(std::iter::repeat_n(' ', INDENT - len));
        }
        len < INDENT
    };
    let mut line = format!("  {name}");
    if !pad(&mut line) {
        out.push('\n');
        out.push_str(&line);
        line.clear();
    }
    let mut words = description.split(' ').peekable();
    while let Some(first) = words.next() {
        pad(&mut line);
        line.push_str(first);
        while let Some(&word) = words.peek() {
            if line.chars().count() + word.chars().count() + 1 > WIDTH {
                out.push('\n');
                out.push_str(&line);
                line.clear();
                break;
            }
            words.next();
            line.push(' ');
            line.push_str(word);
        }
    }
    out.push('\n');
    out.push_str(&line);
}

/// Checks a command's table: names and variables unique, every value
/// flag with a default, every default read as a given value would be and
/// within its range.
pub fn check_table(command: &Command) -> Result<(), String> {
    let flags = command.flags;
    for (index, flag) in flags.iter().enumerate() {
        let again = |same: &dyn Fn(&Flag) -> bool| flags[..index].iter().any(same);
        if !flag.name.starts_with("--") || again(&|other| other.name == flag.name) {
            return Err(format!("{}: not a new --name", flag.name));
        }
        let Kind::Value(parse) = flag.kind else {
            continue;
        };
        if flag.env.is_empty() || again(&|other| other.env == flag.env) {
            return Err(format!("{}: no variable of its own", flag.name));
        }
        match flag.default {
            Fallback::Derived("") => return Err(format!("{}: no default", flag.name)),
            Fallback::Derived(_) => {}
            Fallback::Value(text) => {
                parse(text).map_err(|err| format!("{}: default {text:?}: {err}", flag.name))?;
                if let Some((min, max)) = flag.range {
                    let fits = text.parse::<u64>().is_ok_and(|n| (min..=max).contains(&n));
                    if !fits {
                        return Err(format!(
                            "{}: default {text} not in {min}..={max}",
                            flag.name
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// [`check_table`], then [`check_ranges_are_read`]: what each binary's
/// tests check of its table and of `configure`, its reading of it.
pub fn check_command(
    command: &Command,
    configure: impl Fn(&Args) -> Result<(), ConfigError>,
) -> Result<(), String> {
    check_table(command)?;
    check_ranges_are_read(command, configure)
}

/// Checks that `configure` reads every flag of `command` that has a range,
/// and checks it: each, given one past its maximum, must be refused in its
/// own name.
pub fn check_ranges_are_read(
    command: &Command,
    configure: impl Fn(&Args) -> Result<(), ConfigError>,
) -> Result<(), String> {
    for flag in command.flags {
        let Some((_, max)) = flag.range else {
            continue;
        };
        let past = (max + 1).to_string();
        let args = Args::parse(command, command.name, &[flag.name, &past])
            .map_err(|early| early.output)?;
        match configure(&args) {
            Err(ConfigError::OutOfRange { name, .. }) if name == flag.label() => {}
            other => return Err(format!("{} {past}: {other:?}", flag.name)),
        }
    }
    Ok(())
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

    const COMMAND: Command = Command {
        name: "test",
        about: "A command to test the parser on.",
        flags: &[
            Flag::value("--count", "OPS_TEST_COUNT", parses::<u32>, "how many")
                .range(1, 9)
                .default("5"),
            Flag::value("--cap", "OPS_TEST_CAP", parses::<usize>, "a cap")
                .range(1, 65536)
                .derived("what the memory limit allows"),
            memory_limit("OPS_TEST_MEMORY_LIMIT"),
            Flag::value("--wait-ms", "OPS_TEST_WAIT_MS", parses::<u64>, "how long")
                .range(0, 1000)
                .default("250"),
            CHECK_CONFIG,
        ],
    };

    fn parse(args: &[&str]) -> Result<Args, EarlyExit> {
        Args::parse(&COMMAND, "test", args)
    }

    #[test]
    fn the_table_is_whole() {
        check_table(&COMMAND).unwrap();
        let mut broken = COMMAND.flags.to_vec();
        broken[0] = broken[0].default("10");
        let flags: &'static [Flag] = broken.leak();
        let err = check_table(&Command { flags, ..COMMAND }).unwrap_err();
        assert_eq!(err, "--count: default 10 not in 1..=9");
    }

    // Each test uses its own variable name: tests run in parallel threads.
    #[test]
    fn flag_wins_over_env_and_default() {
        set_test_var("OPS_TEST_COUNT", "7");
        let args = parse(&["--count", "3"]).unwrap();
        assert_eq!(args.number::<u32>("--count").unwrap(), 3);
        assert_eq!(Args::new(&COMMAND).number::<u32>("--count").unwrap(), 7);
    }

    #[test]
    fn default_when_unset_or_empty() {
        assert_eq!(
            Args::new(&COMMAND).millis("--wait-ms").unwrap(),
            Duration::from_millis(250)
        );
        set_test_var("OPS_TEST_MEMORY_LIMIT", " ");
        assert_eq!(
            Args::new(&COMMAND)
                .text::<ByteSize>("--memory-limit")
                .unwrap(),
            None
        );
    }

    #[test]
    fn bad_env_names_the_variable() {
        set_test_var("OPS_TEST_CAP", "lots");
        let err = Args::new(&COMMAND).optional::<usize>("--cap").unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable OPS_TEST_CAP=\"lots\" is invalid: invalid digit found in string"
        );
    }

    #[test]
    fn values_outside_their_range_name_flag_variable_and_range() {
        let err = parse(&["--cap", "0"])
            .unwrap()
            .optional::<usize>("--cap")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--cap (OPS_TEST_CAP) must be between 1 and 65536, got 0"
        );
        let err = parse(&["--wait-ms", "18446744073709551615"])
            .unwrap()
            .millis("--wait-ms");
        assert_eq!(
            err.unwrap_err().to_string(),
            "--wait-ms (OPS_TEST_WAIT_MS) must be between 0 and 1000, got 18446744073709551615"
        );
    }

    #[test]
    fn the_command_line_is_read_as_argh_reads_it() {
        let usage = |args: &[&str]| parse(args).unwrap_err().output;
        assert_eq!(usage(&["--bogus"]), "Unrecognized argument: --bogus\n");
        assert_eq!(usage(&["extra"]), "Unrecognized argument: extra\n");
        assert_eq!(
            usage(&["--", "--count"]),
            "Unrecognized argument: --count\n"
        );
        assert_eq!(
            usage(&["--count"]),
            "No value provided for option '--count'.\n"
        );
        assert_eq!(
            usage(&["--count", "x"]),
            "Error parsing option '--count' with value 'x': invalid digit found in string\n"
        );
        assert_eq!(
            usage(&["--count", "1", "--count", "2"]),
            "Error parsing option '--count' with value '2': duplicate values provided\n"
        );
        assert_eq!(
            usage(&["--help", "--count", "2"]),
            "Trailing arguments are not allowed after `help`."
        );
        assert!(parse(&["--check-config", "help"]).unwrap_err().ok);
        let args = parse(&["--check-config", "--check-config"]).unwrap();
        assert!(args.switch("--check-config"));
        assert!(!Args::new(&COMMAND).switch("--check-config"));
    }

    #[test]
    fn help_lays_out_every_flag_like_argh() {
        let help = parse(&["--help"]).unwrap_err();
        assert!(help.ok);
        assert_eq!(
            help.output,
            "Usage: test [--count <count>] [--cap <cap>] [--memory-limit <memory-limit>] \
             [--wait-ms <wait-ms>] [--check-config]\n\n\
             A command to test the parser on.\n\n\
             Options:\n  \
             --count           how many [env OPS_TEST_COUNT, 1..=9, default 5]\n  \
             --cap             a cap [env OPS_TEST_CAP, 1..=65536, default: what the memory\n                    \
             limit allows]\n  \
             --memory-limit    memory the process may use, e.g. 64Mi; caps not set are\n                    \
             derived from it [env OPS_TEST_MEMORY_LIMIT, default: the\n                    \
             cgroup's limit, else none]\n  \
             --wait-ms         how long [env OPS_TEST_WAIT_MS, 0..=1000, default 250]\n  \
             --check-config    check the configuration, print the memory budget and exit (0\n                    \
             if it fits)\n  \
             --help, help      display usage information\n"
        );
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
