#!/usr/bin/env bash
# Builds kube-network-policies (sigs.k8s.io/kube-network-policies, the kind
# project's NetworkPolicy agent) from the Go module proxy at a pinned version
# into a cache outside the repository, and prints the binary's path. up.sh
# runs it as the test cluster's NetworkPolicy enforcement.
#
# The module has no replace directives, so `go install` takes it as is; its
# main package is .../cmd (installed as "cmd", renamed here). Pure Go.
#
# The cache key holds the version, the Go version and this script's hash; the
# build happens in a temporary directory that is renamed into place, and the
# stamp is written last, so a half-built entry is never used.
#
# Environment:
#   NETPOL_VERSION       the sigs.k8s.io/kube-network-policies version (default: the pinned one below)
#   PADDOCK_NETPOL_CACHE the cache root (default: /var/cache/paddock/netpol)
set -euo pipefail

version="${NETPOL_VERSION:-v0.8.0}"
cache="${PADDOCK_NETPOL_CACHE:-/var/cache/paddock/netpol}"

go_version="$(go env GOVERSION)"
script_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
key="${version}-${go_version}-${script_hash}"
dir="${cache}/${key}"
bin=kube-network-policies

if [[ -f "${dir}/stamp" && -x "${dir}/${bin}" ]]; then
	echo "${dir}/${bin}"
	exit 0
fi

mkdir -p "${cache}"
tmp="$(mktemp -d "${cache}/.build.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT

start=$(date +%s)
echo "building kube-network-policies ${version} with ${go_version} ..." >&2
# A private GOBIN keeps the installed binary out of the user's; the module
# cache stays shared. nice: other work shares this machine's cores.
CGO_ENABLED=0 GOBIN="${tmp}/bin" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local \
	nice -n 19 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kube-network-policies/cmd@${version}" >&2
mkdir -p "${tmp}/out"
mv "${tmp}/bin/cmd" "${tmp}/out/${bin}"
# It runs, and has the flags up.sh passes.
grep -q -- 'nfqueue-id' <("${tmp}/out/${bin}" --help 2>&1) ||
	{ echo "build-netpol: ${bin} ${version} has no --nfqueue-id flag (up.sh passes it)" >&2; exit 1; }

# Replace any half-built entry left by an interrupted run, then publish: rename, then the stamp.
rm -rf "${dir}"
mv "${tmp}/out" "${dir}"
echo "${version} ${go_version} built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - start))s" >"${dir}/stamp.tmp"
mv "${dir}/stamp.tmp" "${dir}/stamp"
echo "built ${dir}/${bin} in $(($(date +%s) - start))s" >&2
echo "${dir}/${bin}"
