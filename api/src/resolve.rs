//! Where gcd replicas are. In Kubernetes `gcd-service` is a headless
//! Service, so DNS answers with one address per ready pod; resolving it
//! again picks up pods that appeared or vanished.

use std::{fmt, future::Future, io, net::SocketAddr, pin::Pin, str::FromStr};

/// One `host:port` from `--gcd`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("no gcd address given")]
    Empty,
    #[error("{0:?} is not host:port")]
    Malformed(String),
}

impl FromStr for Target {
    type Err = TargetError;

    /// `name:port`, `1.2.3.4:port` or `[v6]:port`, where a name is what DNS
    /// allows (letters, digits, `-` and `_` in dot-separated labels).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || TargetError::Malformed(text.to_owned());
        let (host, port) = text.trim().rsplit_once(':').ok_or_else(malformed)?;
        let host = match host.strip_prefix('[') {
            Some(bracketed) => {
                let inner = bracketed.strip_suffix(']').ok_or_else(malformed)?;
                inner
                    .parse::<std::net::Ipv6Addr>()
                    .map_err(|_| malformed())?;
                inner
            }
            None if valid_name(host) => host,
            None => return Err(malformed()),
        };
        let port = port.parse().map_err(|_| malformed())?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// A DNS name or dotted IPv4 address: 1 to 253 bytes of labels of 1 to 63
/// letters, digits, `-` or `_`, not starting or ending with `-`.
fn valid_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The comma-separated `--gcd` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets(pub Vec<Target>);

impl FromStr for Targets {
    type Err = TargetError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let targets = list
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Target>, _>>()?;
        if targets.is_empty() {
            return Err(TargetError::Empty);
        }
        Ok(Self(targets))
    }
}

pub type Resolution<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Resolves a target to every address it currently stands for.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, target: &'a Target) -> Resolution<'a>;
}

/// The system resolver (`/etc/hosts`, then DNS), as a pod sees it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, target: &'a Target) -> Resolution<'a> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((target.host.as_str(), target.port)).await?;
            Ok(addrs.collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_ipv4_and_ipv6() {
        let Targets(targets) =
            " gcd-service:3000, 10.0.0.7:3001,[::1]:3002,gcd.pi-gcd.svc.cluster.local.:3000 "
                .parse()
                .unwrap();
        let shown: Vec<String> = targets.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "gcd-service:3000",
                "10.0.0.7:3001",
                "[::1]:3002",
                "gcd.pi-gcd.svc.cluster.local.:3000"
            ]
        );
        assert_eq!(targets[2].host, "::1");
    }

    #[test]
    fn rejects_what_is_not_host_port() {
        for bad in [
            "gcd-service",
            ":3000",
            "gcd:",
            "gcd:99999",
            "gcd:x",
            "http://gcd:3000",
            "[::1:3000",
            "::1:3000",
            "[::1]x:3000",
            "[nonsense]:3000",
            "gcd service:3000",
            "-gcd:3000",
            "gcd..svc:3000",
            "gcd/x:3000",
        ] {
            assert_eq!(
                bad.parse::<Targets>(),
                Err(TargetError::Malformed(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(" , ".parse::<Targets>(), Err(TargetError::Empty));
    }
}
