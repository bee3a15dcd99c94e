#!/usr/bin/env bash
# Builds runc (the OCI runtime containerd runs the test cluster's Pods with)
# from github.com/opencontainers/runc at a pinned version into a cache outside
# the repository, and prints the binary's path.
#
# Why not Debian's: Pods with `hostUsers: false` (each in a user namespace of
# its own, what the Kubernetes driver asks for) need runc >= 1.2, whose
# `runc features` reports idmapped mounts; containerd gives the kubelet user
# namespace support only then. Debian 12 ships 1.1.5.
#
# runc's go.mod has no replace directives, so `go install` takes it as is.
# cgo is required (runc's nsexec is C), and -tags seccomp with Debian's
# libseccomp-dev, as runc's own releases are built: without it runc would
# refuse every Pod that asks for the RuntimeDefault seccomp profile. The
# binary links libseccomp dynamically, so the node needs libseccomp2 (Debian
# installs it with runc, and it is a dependency of libseccomp-dev).
#
# The cache key holds the version, the Go version and this script's hash; the
# build happens in a temporary directory that is renamed into place, and the
# stamp is written last, so a half-built entry is never used.
#
# Environment:
#   RUNC_VERSION       the github.com/opencontainers/runc version (default: the pinned one below)
#   PADDOCK_RUNC_CACHE the cache root (default: /var/cache/paddock/runc)
set -euo pipefail

version="${RUNC_VERSION:-v1.5.2}"
cache="${PADDOCK_RUNC_CACHE:-/var/cache/paddock/runc}"

go_version="$(go env GOVERSION)"
script_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
key="${version}-${go_version}-${script_hash}"
dir="${cache}/${key}"

if [[ -f "${dir}/stamp" && -x "${dir}/runc" ]]; then
	echo "${dir}/runc"
	exit 0
fi

[[ -f /usr/include/seccomp.h ]] || { echo "build-runc: missing /usr/include/seccomp.h (apt-get install libseccomp-dev)" >&2; exit 1; }

mkdir -p "${cache}"
tmp="$(mktemp -d "${cache}/.build.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT

start=$(date +%s)
echo "building runc ${version} with ${go_version} (cgo, seccomp) ..." >&2
# A private GOBIN keeps the installed binary out of the user's; the module
# cache stays shared. nice: other work shares this machine's cores.
CGO_ENABLED=1 GOBIN="${tmp}/bin" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local \
	nice -n 19 go install -trimpath -tags seccomp "github.com/opencontainers/runc@${version}" >&2
mkdir -p "${tmp}/out"
mv "${tmp}/bin/runc" "${tmp}/out/runc"
"${tmp}/out/runc" --version >"${tmp}/out/version"
# The property this build exists for: containerd reads it from here.
"${tmp}/out/runc" features | tr -d ' \n' | grep -q '"idmap":{"enabled":true}' ||
	{ echo "build-runc: runc ${version} does not report idmapped mounts (runc features)" >&2; exit 1; }

# Replace any half-built entry left by an interrupted run, then publish: rename, then the stamp.
rm -rf "${dir}"
mv "${tmp}/out" "${dir}"
echo "${version} ${go_version} built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - start))s" >"${dir}/stamp.tmp"
mv "${dir}/stamp.tmp" "${dir}/stamp"
echo "built ${dir}/runc in $(($(date +%s) - start))s" >&2
echo "${dir}/runc"
