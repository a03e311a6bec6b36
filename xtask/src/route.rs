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

/// What route cross lacks for the steps asked for.
pub fn cross_missing(machine: &Machine, opts: &Options) -> Vec<String> {
    let mut missing = Vec::new();
    if opts.binaries && !machine.cross {
        missing.push("cross (cargo install cross)".into());
    }
    missing.extend(docker_missing(machine, opts.images));
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
    }
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
            python3: true,
            ..Machine::default()
        }
    }

    pub(crate) fn debian() -> Machine {
        Machine {
            debian_rustc: Some("/usr/bin/rustc".into()),
            build_std_cargo: Some("/usr/bin/cargo".into()),
            rust_src: true,
            zig: Some(PathBuf::from("/venv/zig")),
            python3: true,
            buildah: true,
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
            python3: true,
            ..Machine::default()
        };
        let error = choose(&options(&[], &HOME), &mac_without_docker).unwrap_err();
        let Error::NoRoute { cross, daemonless } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(cross, &["docker (Docker Desktop, colima or Docker Engine)"]);
        assert_eq!(daemonless.len(), 5, "{daemonless:?}");
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
        assert_eq!(choice.missing.len(), 4, "{:?}", choice.missing);
    }

    #[test]
    fn only_the_steps_asked_for_need_their_tools() {
        // Images only: cross itself is not needed, buildx is.
        let docker_only = Machine {
            docker: Docker::ready(),
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
