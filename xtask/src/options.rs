//! The command line and environment of `build-arm`, parsed into [`Options`].
//! Everything the build reads from outside (but the machine's tools) comes
//! through here, so the rest is pure functions of `Options`.

use std::path::{Path, PathBuf};

use crate::Error;

/// Rust targets, in the order they are built and reported.
pub const TARGETS: [&str; 3] = [
    "armv7-unknown-linux-musleabihf",
    "aarch64-unknown-linux-musl",
    "x86_64-unknown-linux-musl",
];
/// Image platforms, one per target in the same order.
pub const PLATFORMS: [&str; 3] = ["linux/arm/v7", "linux/arm64", "linux/amd64"];
pub const SERVICES: [&str; 2] = ["gcd", "api"];
/// Where the archived images are named, and what k8s/ runs: `localhost` is
/// a registry host no node can pull from by accident, unlike a short name
/// (`pi-gcd/gcd` means `docker.io/pi-gcd/gcd`, a stranger's namespace).
pub const LOCAL_NAMESPACE: &str = "localhost/pi-gcd";

pub const HELP: &str = "\
Builds gcd and api for the Raspberry Pi and packs them into images.

Usage: scripts/build-arm.sh [options]      (or: cargo xtask build-arm [options])

  1. static, stripped musl binaries for the three targets, into
       dist/armv7-unknown-linux-musleabihf/{gcd,api}   (32-bit Pi OS: Pi 2/3/4)
       dist/aarch64-unknown-linux-musl/{gcd,api}       (64-bit Pi OS: Pi 3/4/5)
       dist/x86_64-unknown-linux-musl/{gcd,api}        (PCs, CI)
  2. one multi-arch FROM scratch image per service (linux/arm/v7,
     linux/arm64, linux/amd64) from docker/gcd.Dockerfile and
     docker/api.Dockerfile:
       with a registry: pushed as REGISTRY/gcd:VERSION and
         REGISTRY/gcd:VERSION-REV (likewise api);
         and dist/images/{gcd,api}.pushed recording the digest pushed,
         which `scripts/render-manifests.sh --registry REGISTRY` pins;
       without one: written to dist/images/gcd.oci.tar and
         dist/images/api.oci.tar, named localhost/pi-gcd/gcd:VERSION and
         localhost/pi-gcd/api:VERSION, the names k8s/ uses, ready for
         `k3s ctr images import FILE`. `localhost/` is no public
         registry: a node that lacks the import fails to pull (and shows
         ErrImagePull) instead of pulling someone else's image.

Options:
  --registry REG   push to REG, a host with an optional port and path
                   (registry.lan:5000, ghcr.io/me, docker.io/me); env
                   REGISTRY
  --insecure       the registry speaks plain HTTP (a LAN registry without
                   TLS): buildah pushes with --tls-verify=false; docker
                   buildx builds on a builder of its own, pi-gcd-http,
                   whose BuildKit config says `http = true` for it
  --route ROUTE    auto (default), cross (cross + docker buildx) or
                   daemonless (Debian rustc-web + zig + buildah); env
                   PI_GCD_ROUTE
  --binaries-only  stop after step 1
  --images-only    skip step 1, use the binaries already in dist/
  --dry-run        print the route, why, and every command; run nothing
  -h, --help       this text

Routes, picked from what the machine has unless --route says:
  cross       `cross build` for each target, then `docker buildx build`
              (a laptop with Docker: Linux, or macOS with Docker Desktop
              or colima).
  daemonless  no container engine needed: Debian's rustc-web, cargo-web
              and rust-web-src build std for each target (-Z build-std),
              zig (PyPI ziglang) links against its bundled musl; buildah
              builds each platform from the same Dockerfiles and joins them.
              scripts/install-deps.sh installs all of it on Debian 12.
The images are built with docker buildx wherever it works (a running
daemon), otherwise with buildah.

Image tags come from the workspace version and the git revision; file
times and image dates come from SOURCE_DATE_EPOCH (default: the time of
the last commit), so a rebuild of the same commit gives the same images.
Slow things are cached in ${PI_GCD_CACHE:-${XDG_CACHE_HOME:-~/.cache}/pi-gcd},
cargo's target directory in clones/<folder>-<checksum> there, one per clone.
The binaries name no path of this machine (--remap-path-prefix).

For size experiments (scripts/size-report.py), binaries only:
  PI_GCD_TARGETS      a subset of the targets, space-separated
  PI_GCD_CARGO_ARGS   extra cargo arguments, space-separated
  PI_GCD_DIST         another output directory than dist
  PI_GCD_TARGET_DIR   cargo's target directory
  PI_GCD_RUSTFLAGS    extra rustflags (daemonless route)
  PI_GCD_STD_FEATURES std features for -Z build-std (daemonless route)
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRequest {
    Auto,
    Cross,
    Daemonless,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Push here instead of writing OCI archives; no trailing slash.
    pub registry: Option<String>,
    pub tls_verify: bool,
    pub route: RouteRequest,
    pub binaries: bool,
    pub images: bool,
    pub dry_run: bool,
    pub targets: Vec<String>,
    pub extra_cargo_args: Vec<String>,
    /// Where binaries go, relative to the workspace root unless absolute.
    pub dist: PathBuf,
    /// cargo's target directory, if set; otherwise each route picks one.
    pub target_dir: Option<PathBuf>,
    pub rustflags: String,
    pub std_features: String,
    pub image_namespace: String,
    pub cache: PathBuf,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Box<Options>),
    Help,
}

pub(crate) fn usage(message: impl Into<String>) -> Error {
    Error::Usage(format!("{} (see --help)", message.into()))
}

/// A registry as `--registry` takes it: `host[:port][/path]`, without the
/// trailing slash. The host must look like one (a dot, a port or
/// `localhost`): `me/gcd` would silently mean Docker Hub's `docker.io/me/gcd`.
pub fn check_registry(value: &str) -> Result<String, Error> {
    let registry = value.trim_end_matches('/');
    let (host, path) = registry.split_once('/').unwrap_or((registry, ""));
    let (name, port) = host.split_once(':').unwrap_or((host, ""));
    let host_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && (port.is_empty() || port.parse::<u16>().is_ok_and(|p| p > 0))
        && (host.contains(':') || host.contains('.') || name == "localhost");
    let component_ok = |c: &str| {
        let edge =
            |ch: Option<char>| ch.is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit());
        edge(c.chars().next())
            && edge(c.chars().last())
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
    };
    let path_ok = path.is_empty() || path.split('/').all(component_ok);
    if host_ok && path_ok {
        Ok(registry.to_string())
    } else if !host.contains(['.', ':']) && host_ok_chars(host) {
        Err(usage(format!(
            "--registry '{value}' names no registry host, so it would mean Docker Hub: \
             write docker.io/{registry} for that, or host[:port][/path]"
        )))
    } else {
        Err(usage(format!(
            "--registry '{value}' is not a registry: host[:port][/path], e.g. registry.lan:5000"
        )))
    }
}

fn host_ok_chars(host: &str) -> bool {
    !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn parse_route(value: &str) -> Result<RouteRequest, Error> {
    match value {
        "auto" => Ok(RouteRequest::Auto),
        "cross" => Ok(RouteRequest::Cross),
        "daemonless" => Ok(RouteRequest::Daemonless),
        other => Err(usage(format!(
            "unknown route '{other}': auto, cross or daemonless"
        ))),
    }
}

/// Parses `build-arm`'s arguments; `env` reads the environment (a closure so
/// tests need not touch the process's own).
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, Error> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let mut registry = set("REGISTRY");
    let mut route = parse_route(set("PI_GCD_ROUTE").as_deref().unwrap_or("auto"))?;
    let mut tls_verify = true;
    let (mut binaries_only, mut images_only, mut dry_run) = (false, false, false);

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &str| match inline.clone() {
            Some(v) => Ok(v),
            None => args
                .next()
                .ok_or_else(|| usage(format!("{flag} needs a value"))),
        };
        match flag.as_str() {
            "--registry" => registry = Some(value("--registry")?),
            "--route" => route = parse_route(&value("--route")?)?,
            "--insecure" | "--binaries-only" | "--images-only" | "--dry-run" | "-h" | "--help"
                if inline.is_some() =>
            {
                return Err(usage(format!("{flag} takes no value")));
            }
            "--insecure" => tls_verify = false,
            "--binaries-only" => binaries_only = true,
            "--images-only" => images_only = true,
            "--dry-run" => dry_run = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            _ => return Err(usage(format!("unknown argument: {arg}"))),
        }
    }
    if binaries_only && images_only {
        return Err(usage(
            "--binaries-only and --images-only exclude each other",
        ));
    }
    let registry = registry.map(|r| check_registry(&r)).transpose()?;

    let targets: Vec<String> = match set("PI_GCD_TARGETS") {
        Some(list) => list.split_whitespace().map(str::to_string).collect(),
        None => TARGETS.iter().map(|t| t.to_string()).collect(),
    };
    if let Some(unknown) = targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
        return Err(usage(format!(
            "PI_GCD_TARGETS: unknown target '{unknown}' (one of {})",
            TARGETS.join(", ")
        )));
    }
    let dist = PathBuf::from(set("PI_GCD_DIST").unwrap_or_else(|| "dist".into()));
    let images = !binaries_only;
    if images && (dist != Path::new("dist") || targets.len() != TARGETS.len()) {
        return Err(usage(
            "images are built from dist/ with all three targets: PI_GCD_DIST and PI_GCD_TARGETS need --binaries-only",
        ));
    }
    let cache = match (set("PI_GCD_CACHE"), set("XDG_CACHE_HOME"), set("HOME")) {
        (Some(cache), _, _) => PathBuf::from(cache),
        (None, Some(xdg), _) => PathBuf::from(xdg).join("pi-gcd"),
        (None, None, Some(home)) => PathBuf::from(home).join(".cache").join("pi-gcd"),
        (None, None, None) => {
            return Err(usage(
                "neither PI_GCD_CACHE nor HOME is set: no place for the build cache",
            ));
        }
    };

    Ok(Parsed::Run(Box::new(Options {
        registry,
        tls_verify,
        route,
        binaries: !images_only,
        images,
        dry_run,
        targets,
        extra_cargo_args: set("PI_GCD_CARGO_ARGS")
            .map(|a| a.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        dist,
        target_dir: set("PI_GCD_TARGET_DIR").map(PathBuf::from),
        rustflags: set("PI_GCD_RUSTFLAGS").unwrap_or_default(),
        std_features: set("PI_GCD_STD_FEATURES").unwrap_or_default(),
        image_namespace: set("IMAGE_NAMESPACE").unwrap_or_else(|| LOCAL_NAMESPACE.into()),
        cache,
    })))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    pub(crate) fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, Error> {
        parse(args.iter().map(|a| a.to_string()), &env_of(env))
    }

    pub(crate) fn options(args: &[&str], env: &[(&str, &str)]) -> Options {
        match parse_with(args, env) {
            Ok(Parsed::Run(opts)) => *opts,
            other => panic!("expected options, got {other:?}"),
        }
    }

    #[test]
    fn defaults_build_everything_into_dist_with_the_home_cache() {
        let opts = options(&[], &[("HOME", "/home/pi")]);
        assert_eq!(opts.route, RouteRequest::Auto);
        assert!(opts.binaries && opts.images && !opts.dry_run && opts.tls_verify);
        assert_eq!(opts.targets, TARGETS);
        assert_eq!(opts.dist, PathBuf::from("dist"));
        assert_eq!(opts.cache, PathBuf::from("/home/pi/.cache/pi-gcd"));
        assert_eq!(opts.registry, None);
        assert_eq!(opts.image_namespace, "localhost/pi-gcd");
    }

    #[test]
    fn flags_and_environment() {
        let env = [
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("REGISTRY", "env.lan"),
        ];
        let opts = options(
            &[
                "--registry=registry.lan:5000/",
                "--route",
                "cross",
                "--insecure",
                "--dry-run",
            ],
            &env,
        );
        assert_eq!(opts.registry.as_deref(), Some("registry.lan:5000"));
        assert_eq!(opts.route, RouteRequest::Cross);
        assert!(!opts.tls_verify && opts.dry_run);
        assert_eq!(opts.cache, PathBuf::from("/xdg/pi-gcd"));
        assert_eq!(options(&[], &env).registry.as_deref(), Some("env.lan"));
        let opts = options(
            &["--binaries-only"],
            &[("PI_GCD_CACHE", "/c"), ("PI_GCD_ROUTE", "daemonless")],
        );
        assert_eq!(
            (opts.binaries, opts.images, opts.route),
            (true, false, RouteRequest::Daemonless)
        );
        assert_eq!(opts.cache, PathBuf::from("/c"));
    }

    #[test]
    fn size_experiments_take_a_subset_of_targets_and_extra_cargo_arguments() {
        let env = [
            ("HOME", "/h"),
            ("PI_GCD_TARGETS", "armv7-unknown-linux-musleabihf"),
            (
                "PI_GCD_CARGO_ARGS",
                "--config profile.release.opt-level=\"z\"",
            ),
            ("PI_GCD_DIST", "/tmp/out"),
        ];
        let opts = options(&["--binaries-only"], &env);
        assert_eq!(opts.targets, ["armv7-unknown-linux-musleabihf"]);
        assert_eq!(
            opts.extra_cargo_args,
            ["--config", "profile.release.opt-level=\"z\""]
        );
        assert_eq!(opts.dist, PathBuf::from("/tmp/out"));
        // Images need all of dist/.
        assert!(matches!(parse_with(&[], &env), Err(Error::Usage(_))));
    }

    #[test]
    fn a_registry_names_its_host() {
        for good in [
            "registry.lan:5000",
            "registry.lan:5000/",
            "localhost:5000/pi-gcd",
            "localhost",
            "ghcr.io/me",
            "docker.io/me/pi-gcd",
            "127.0.0.1:5000/a.b_c-d",
        ] {
            assert_eq!(
                check_registry(good).unwrap(),
                good.trim_end_matches('/'),
                "{good}"
            );
        }
        let hub = check_registry("me").unwrap_err().to_string();
        assert!(hub.contains("docker.io/me"), "{hub}");
        for bad in [
            "", "a b", "-x.lan", "x.lan:0", "x.lan/UP", "x.lan//y", "x.lan/y-",
        ] {
            assert!(check_registry(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn bad_usage_is_a_usage_error() {
        let home = [("HOME", "/h")];
        for args in [
            &["--route", "docker"][..],
            &["--route"],
            &["--registry"],
            &["--registry", ""],
            &["--registry", "bad registry"],
            &["--registry", "me"],
            &["--registry", "registry.lan:http"],
            &["--registry", "registry.lan/Me"],
            &["--frobnicate"],
            &["--dry-run=yes"],
            &["--binaries-only", "--images-only"],
        ] {
            let error = parse_with(args, &home).expect_err(&format!("{args:?} must be refused"));
            assert!(matches!(error, Error::Usage(_)), "{args:?}: {error}");
            assert_eq!(error.exit_code(), 2);
        }
        let error = parse_with(
            &[],
            &[
                ("HOME", "/h"),
                ("PI_GCD_TARGETS", "riscv64gc-unknown-linux-musl"),
            ],
        )
        .unwrap_err();
        assert!(error.to_string().contains("riscv64gc"), "{error}");
        assert!(matches!(parse_with(&[], &[]), Err(Error::Usage(_))));
        assert_eq!(
            parse_with(&["--images-only", "--help"], &home).unwrap(),
            Parsed::Help
        );
    }
}
