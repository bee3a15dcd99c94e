#!/usr/bin/env bash
# Builds runsc (gVisor's runtime) from gvisor.dev/gvisor at a pinned pseudo-version of its Go branch
# into a cache outside the repository, and prints the binary's path.
#
# gvisor.dev/gvisor has no tags and the proxy refuses `@go`, so the version is a pinned pseudo-version.
# CGO_ENABLED=0 because a cgo build is dynamic and dies at start ("error executing umounter").
# The cache key holds the version, the Go version and this script's hash, so a change to any of them
# builds anew; the build happens in a temporary directory that is moved into place, and the stamp is
# written last, so a half-built entry is never used.
#
# Environment:
#   RUNSC_VERSION       the gvisor.dev/gvisor pseudo-version (default: the pinned one below)
#   PADDOCK_RUNSC_CACHE the cache root (default: /var/cache/paddock/runsc)
set -euo pipefail

version="${RUNSC_VERSION:-v0.0.0-20260905035102-160fafc42237}"
cache="${PADDOCK_RUNSC_CACHE:-/var/cache/paddock/runsc}"

go_version="$(go env GOVERSION)"
script_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
key="${version}-${go_version}-${script_hash}"
dir="${cache}/${key}"

if [[ -f "${dir}/stamp" && -x "${dir}/runsc" ]]; then
	echo "${dir}/runsc"
	exit 0
fi

mkdir -p "${cache}"
tmp="$(mktemp -d "${cache}/.build.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT

start=$(date +%s)
echo "building runsc ${version} with ${go_version} (CGO_ENABLED=0) ..." >&2
# A private GOPATH/bin keeps the installed binary out of the user's; the module cache stays shared.
CGO_ENABLED=0 GOBIN="${tmp}/bin" GOFLAGS=-buildvcs=false \
	go install -trimpath "gvisor.dev/gvisor/runsc@${version}" >&2
mkdir -p "${tmp}/out"
mv "${tmp}/bin/runsc" "${tmp}/out/runsc"
"${tmp}/out/runsc" --version >"${tmp}/out/version"

# Replace any half-built entry left by an interrupted run, then publish: rename, then the stamp.
rm -rf "${dir}"
mv "${tmp}/out" "${dir}"
echo "${version} ${go_version} built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - start))s" >"${dir}/stamp.tmp"
mv "${dir}/stamp.tmp" "${dir}/stamp"
echo "built ${dir}/runsc in $(($(date +%s) - start))s" >&2
echo "${dir}/runsc"
