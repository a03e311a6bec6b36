//! Which route builds here, and why. A route is how binaries are built; the
//! image tool follows (docker buildx where it works, else buildah).

use std::fmt;

use crate::Error;
use crate::machine::Machine;
use crate::options::{Options, RouteRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `cross build` per target, then `docker buildx build`.
    Cross,
    /// Debian's rustc-web with `-Z build-std`, zig as linker, then buildah
    /// (or buildx if it works).
    Daemonless,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageTool {
    Buildx,
    Buildah,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::Cross => "cross",
            Route::Daemonless => "daemonless",
        })
    }
}

impl fmt::Display for ImageTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageTool::Buildx => "docker buildx",
            ImageTool::Buildah => "buildah",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub route: Route,
    pub image_tool: ImageTool,
    /// One line for the log: why this route.
    pub why: String,
    /// What the route lacks; only ever non-empty for a route asked for by
    /// name (a real run refuses it, a dry run warns).
    pub missing: Vec<String>,
}

/// The first thing docker lacks for `docker buildx build` of several
/// platforms, if any.
fn docker_missing(machine: &Machine, need_buildx: bool) -> Option<String> {
    let docker = &machine.docker;
    if !docker.installed {
        Some("docker (Docker Desktop, colima or Docker Engine)".into())
    } else if need_buildx && !docker.buildx {
        Some("the docker buildx plugin".into())
    } else if !docker.daemon {
        Some("a running docker daemon (`docker info` fails)".into())
    } else {
        None
    }
}

/// What every route lacks for the images' SBOMs, written on this machine.
fn sbom_missing(machine: &Machine, opts: &Options) -> Option<String> {
    (opts.images && machine.cargo_cyclonedx.is_none())
        .then(|| "cargo-cyclonedx (cargo install --locked cargo-cyclonedx)".into())
}

/// What route cross lacks for the steps asked for. cargo-auditable is not
/// among them: it runs inside cross's containers (Cross.toml installs it).
pub fn cross_missing(machine: &Machine, opts: &Options) -> Vec<String> {
    let mut missing = Vec::new();
    if opts.binaries && !machine.cross {
        missing.push("cross (cargo install cross)".into());
    }
    missing.extend(docker_missing(machine, opts.images));
    missing.extend(sbom_missing(machine, opts));
    missing
}

/// What route daemonless lacks for the steps asked for.
pub fn daemonless_missing(machine: &Machine, opts: &Options) -> Vec<String> {
    let mut missing = Vec::new();
    if opts.binaries {
        if machine.debian_rustc.is_none() {
            missing.push("rustc-web (apt) providing /usr/bin/rustc".into());
        }
        if !machine.rust_src {
            missing.push(format!(
                "rust-web-src (apt) providing {}",
                crate::machine::RUST_SRC
            ));
        }
        if machine.build_std_cargo.is_none() {
            missing.push("cargo-web (apt)".into());
        }
        if machine.zig.is_none() {
            missing.push("zig (pip install ziglang into the project venv, or zig on PATH)".into());
        }
        if machine.cargo_auditable.is_none() {
            missing.push("cargo-auditable (cargo install --locked cargo-auditable)".into());
        }
    }
    missing.extend(sbom_missing(machine, opts));
    if opts.images && image_tool(machine, opts) == ImageTool::Buildah {
        if !machine.buildah {
            missing.push("buildah (apt) or docker buildx".into());
        }
        if opts.registry.is_none() && !machine.python3 {
            missing.push("python3".into());
        }
    }
    missing
}

fn image_tool(machine: &Machine, opts: &Options) -> ImageTool {
    match docker_missing(machine, opts.images) {
        None => ImageTool::Buildx,
        Some(_) => ImageTool::Buildah,
    }
}

/// Picks the route: the one asked for, or with `auto` cross where it has
/// all it needs (the user's laptop), else daemonless.
pub fn choose(opts: &Options, machine: &Machine) -> Result<Choice, Error> {
    let (cross, daemonless) = (
        cross_missing(machine, opts),
        daemonless_missing(machine, opts),
    );
    let choice = |route, why: String, missing| {
        let image_tool = if route == Route::Cross {
            ImageTool::Buildx
        } else {
            image_tool(machine, opts)
        };
        Ok(Choice {
            route,
            image_tool,
            why,
            missing,
        })
    };
    match opts.route {
        RouteRequest::Cross => choice(Route::Cross, "asked for (--route cross)".into(), cross),
        RouteRequest::Daemonless => choice(
            Route::Daemonless,
            "asked for (--route daemonless)".into(),
            daemonless,
        ),
        RouteRequest::Auto if cross.is_empty() => choice(
            Route::Cross,
            "cross and docker buildx with a running daemon are here".into(),
            vec![],
        ),
        RouteRequest::Auto if daemonless.is_empty() => choice(
            Route::Daemonless,
            format!(
                "route cross lacks {}; the daemonless tools are all here",
                cross.join(", ")
            ),
            vec![],
        ),
        RouteRequest::Auto => Err(Error::NoRoute { cross, daemonless }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::machine::Docker;
    use crate::options::tests::options;

    pub(crate) fn laptop() -> Machine {
        Machine {
            cross: true,
            docker: Docker::ready(),
            cargo_cyclonedx: Some("/h/.cargo/bin/cargo-cyclonedx".into()),
            python3: true,
            cargo_home: Some("/h/.cargo".into()),
            ..Machine::default()
        }
    }

    pub(crate) fn debian() -> Machine {
        Machine {
            debian_rustc: Some("/usr/bin/rustc".into()),
            build_std_cargo: Some("/usr/bin/cargo".into()),
            rust_src: true,
            zig: Some(PathBuf::from("/venv/zig")),
            cargo_auditable: Some("/cache/tools/bin/cargo-auditable".into()),
            cargo_cyclonedx: Some("/cache/tools/bin/cargo-cyclonedx".into()),
            python3: true,
            buildah: true,
            cargo_home: Some("/home/pi/.cargo".into()),
            std_source: Some((
                "/usr/lib/rustlib/src/rust".into(),
                "ac68faa20c58cbccd01ee7208bf3b6e93a7d7f96".into(),
            )),
            ..Machine::default()
        }
    }

    const HOME: [(&str, &str); 1] = [("HOME", "/h")];

    #[test]
    fn auto_prefers_cross_where_docker_works() {
        let choice = choose(&options(&[], &HOME), &laptop()).unwrap();
        assert_eq!(
            (choice.route, choice.image_tool),
            (Route::Cross, ImageTool::Buildx)
        );
        // A machine with both.
        let both = Machine {
            cross: true,
            docker: Docker::ready(),
            ..debian()
        };
        assert_eq!(
            choose(&options(&[], &HOME), &both).unwrap().route,
            Route::Cross
        );
    }

    #[test]
    fn auto_falls_back_to_daemonless_and_says_why() {
        let no_daemon = Machine {
            cross: true,
            docker: Docker {
                daemon: false,
                ..Docker::ready()
            },
            ..debian()
        };
        let choice = choose(&options(&[], &HOME), &no_daemon).unwrap();
        assert_eq!(
            (choice.route, choice.image_tool),
            (Route::Daemonless, ImageTool::Buildah)
        );
        assert!(
            choice.why.contains("running docker daemon"),
            "{}",
            choice.why
        );
        assert!(choice.missing.is_empty());
    }

    #[test]
    fn daemonless_uses_buildx_for_images_where_it_works() {
        let machine = Machine {
            docker: Docker::ready(),
            buildah: false,
            ..debian()
        };
        let choice = choose(&options(&[], &HOME), &machine).unwrap();
        assert_eq!(
            (choice.route, choice.image_tool),
            (Route::Daemonless, ImageTool::Buildx)
        );
    }

    #[test]
    fn nothing_fits_lists_what_each_route_lacks() {
        let mac_without_docker = Machine {
            cross: true,
            cargo_cyclonedx: Some("/h/.cargo/bin/cargo-cyclonedx".into()),
            python3: true,
            ..Machine::default()
        };
        let error = choose(&options(&[], &HOME), &mac_without_docker).unwrap_err();
        let Error::NoRoute { cross, daemonless } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(cross, &["docker (Docker Desktop, colima or Docker Engine)"]);
        // rustc-web, rust-web-src, cargo-web, zig, cargo-auditable, buildah
        assert_eq!(daemonless.len(), 6, "{daemonless:?}");
        let message = error.to_string();
        assert!(
            message.contains("cargo install cross") || message.contains("colima"),
            "{message}"
        );
    }

    #[test]
    fn a_route_asked_for_reports_what_it_lacks() {
        let choice = choose(&options(&["--route", "cross"], &HOME), &debian()).unwrap();
        assert_eq!(choice.route, Route::Cross);
        assert_eq!(
            choice.missing,
            [
                "cross (cargo install cross)",
                "docker (Docker Desktop, colima or Docker Engine)"
            ]
        );
        let choice = choose(&options(&["--route", "daemonless"], &HOME), &laptop()).unwrap();
        assert_eq!(choice.route, Route::Daemonless);
        assert_eq!(choice.image_tool, ImageTool::Buildx);
        assert_eq!(choice.missing.len(), 5, "{:?}", choice.missing);
    }

    #[test]
    fn every_route_needs_cargo_cyclonedx_for_images_and_daemonless_cargo_auditable() {
        let sbom = "cargo-cyclonedx (cargo install --locked cargo-cyclonedx)";
        let auditable = "cargo-auditable (cargo install --locked cargo-auditable)";
        let no_sbom_tool = |machine: Machine| Machine {
            cargo_cyclonedx: None,
            ..machine
        };
        let choice = choose(
            &options(&["--route", "cross"], &HOME),
            &no_sbom_tool(laptop()),
        )
        .unwrap();
        assert_eq!(choice.missing, [sbom]);
        let choice = choose(&options(&[], &HOME), &no_sbom_tool(debian())).unwrap_err();
        assert!(choice.to_string().contains(sbom), "{choice}");
        // Binaries alone need no SBOM tool; the daemonless build needs
        // cargo-auditable (cross runs its own, inside its containers).
        let binaries = options(&["--binaries-only"], &HOME);
        assert!(choose(&binaries, &no_sbom_tool(laptop())).is_ok());
        let no_auditable = Machine {
            cargo_auditable: None,
            ..no_sbom_tool(debian())
        };
        let error = choose(&binaries, &no_auditable).unwrap_err();
        let Error::NoRoute { daemonless, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(daemonless, &[auditable]);
    }

    #[test]
    fn only_the_steps_asked_for_need_their_tools() {
        // Images only: cross itself is not needed, buildx is.
        let docker_only = Machine {
            docker: Docker::ready(),
            cargo_cyclonedx: Some("/usr/local/bin/cargo-cyclonedx".into()),
            ..Machine::default()
        };
        let choice = choose(&options(&["--images-only"], &HOME), &docker_only).unwrap();
        assert_eq!(choice.route, Route::Cross);
        // Binaries only on Debian: no buildah needed.
        let no_buildah = Machine {
            buildah: false,
            ..debian()
        };
        let choice = choose(&options(&["--binaries-only"], &HOME), &no_buildah).unwrap();
        assert_eq!(choice.route, Route::Daemonless);
        // Pushing with buildah needs no python3 (no archive to write).
        let no_python = Machine {
            python3: false,
            ..debian()
        };
        assert!(choose(&options(&["--registry", "r.lan"], &HOME), &no_python).is_ok());
        assert!(choose(&options(&[], &HOME), &no_python).is_err());
    }
}
