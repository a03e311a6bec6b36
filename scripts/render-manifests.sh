#!/usr/bin/env bash
# Writes a copy of k8s/ for a cluster that pulls the images from a registry:
#   scripts/render-manifests.sh [--registry REGISTRY] [--version VERSION] [--out DIR]
# Images become REGISTRY/gcd:VERSION and REGISTRY/api:VERSION (the names
# scripts/build-arm.sh --registry REGISTRY pushes); without --registry they
# stay pi-gcd/gcd and pi-gcd/api. VERSION (default: the workspace version)
# also sets the app.kubernetes.io/version labels. DIR defaults to dist/k8s;
# deploy it with `kubectl create -f DIR`. Nothing else changes.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

# The version k8s/ is written for: the workspace version (the manifest
# tests keep them equal).
source_version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$source_version" ] || die "cannot read the workspace version from Cargo.toml"

registry="" version="$source_version" out="dist/k8s"
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) [ $# -ge 2 ] || die "--registry needs a value"; registry=${2%/}; shift 2 ;;
    --registry=*) registry=${1#*=}; registry=${registry%/}; shift ;;
    --version) [ $# -ge 2 ] || die "--version needs a value"; version=$2; shift 2 ;;
    --version=*) version=${1#*=}; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# host[:port] and path components as image references allow them.
if [ -n "$registry" ] &&
  ! [[ "$registry" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$ ]]; then
  die "not a registry (host[:port][/path]): $registry"
fi
[[ "$version" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "not an image tag: $version"

prefix=${registry:-pi-gcd}
escaped=${source_version//./\\.}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count=0
for file in k8s/*.yaml; do
  sed -e "s#^\( *image: \)pi-gcd/\(gcd\|api\):${escaped}\$#\1${prefix}/\2:${version}#" \
    -e "s#^\( *app\.kubernetes\.io/version: \)\"${escaped}\"\$#\1\"${version}\"#" \
    "$file" >"$tmp/$(basename "$file")"
  count=$((count + $(grep -c "^ *image: ${prefix}/\(gcd\|api\):${version}\$" "$tmp/$(basename "$file")" || true)))
done
# Every image line must have been rewritten; a manifest whose image does not
# carry the workspace version would otherwise be copied unchanged.
images=$(cat k8s/*.yaml | grep -c '^ *image: ' || true)
[ "$count" = "$images" ] || die "rewrote $count of $images image lines: does k8s/ name pi-gcd/*:$source_version?"

mkdir -p "$out"
rm -f "$out"/*.yaml
cp "$tmp"/*.yaml "$out"/
log "manifests for ${prefix}/{gcd,api}:${version} written to $out (kubectl create -f $out)"
