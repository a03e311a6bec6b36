//! Why a task failed, one variant per kind of failure, each with a message
//! that says what to do. (Std only: no `thiserror` here.)

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum Error {
    /// A bad flag or environment value: exit 2.
    Usage(String),
    /// `--route auto` and no route has all it needs; says what each lacks.
    NoRoute {
        cross: Vec<String>,
        daemonless: Vec<String>,
    },
    /// The route asked for lacks tools.
    Missing { route: String, missing: String },
    /// A file or directory operation failed.
    Io { what: String, source: io::Error },
    /// A command could not be started.
    Spawn { program: String, source: io::Error },
    /// A command ran and failed.
    Command {
        command: String,
        status: String,
        hint: Option<String>,
    },
    /// A file the next step needs is not there.
    MissingFile { path: String, hint: String },
}

impl Error {
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => write!(f, "{message}"),
            Error::NoRoute { cross, daemonless } => {
                writeln!(f, "no build route fits this machine.")?;
                writeln!(f, "  route 'cross' needs:")?;
                for item in cross {
                    writeln!(f, "    - {item}")?;
                }
                writeln!(f, "  route 'daemonless' needs:")?;
                for item in daemonless {
                    writeln!(f, "    - {item}")?;
                }
                write!(
                    f,
                    "  On a laptop: install Docker (Docker Desktop or colima) and `cargo install cross`.\n  \
                     On Debian 12 as root, scripts/install-deps.sh installs the daemonless route."
                )
            }
            Error::Missing { route, missing } => write!(
                f,
                "route {route} needs: {missing}{}",
                if route == "daemonless" {
                    " (scripts/install-deps.sh installs them on Debian 12)"
                } else {
                    ""
                }
            ),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Spawn { program, source } => write!(f, "cannot run {program}: {source}"),
            Error::Command {
                command,
                status,
                hint,
            } => {
                write!(f, "{command}\n  failed ({status})")?;
                if let Some(hint) = hint {
                    write!(f, "\n  {hint}")?;
                }
                Ok(())
            }
            Error::MissingFile { path, hint } => write!(f, "{path} is missing: {hint}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}
