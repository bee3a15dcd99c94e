#!/usr/bin/env bash
# Build (or reuse) the binaries of the one-node test cluster: kube-apiserver,
# kube-controller-manager, kube-scheduler and kubelet from the Go module proxy
# through a generated wrapper module, and containerd (with its runc shim and
# ctr). etcd, runc and the CNI plugins come from Debian (see deps.sh).
#
# The result lives outside the repo, in $PADDOCK_K8S_CACHE/<key>/ (default
# /var/cache/paddock/k8s), where <key> names every input that changes the
# binaries: the Kubernetes and containerd versions, the Go version and this
# script's hash. A build happens in a temp dir beside it and is renamed into
# place whole; the stamp file is written last, so a killed build is never
# mistaken for a good one. The last line printed is the directory.
#
# The compile is slow (about 8 minutes on 2 idle cores); it runs at the lowest
# CPU priority with at most $PADDOCK_K8S_BUILD_PROCS (default 2) jobs.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-2.2.10}
CACHE=${PADDOCK_K8S_CACHE:-/var/cache/paddock/k8s}
PROCS=${PADDOCK_K8S_BUILD_PROCS:-2}

here=$(cd "$(dirname "$0")" && pwd)
gover=$(go env GOVERSION)
hash=$(sha256sum "$here/build.sh" | cut -c1-12)
key="k8s${K8S_VERSION}-containerd${CONTAINERD_VERSION}-${gover}-${hash}"
out="$CACHE/$key"

if [ "${1:-}" = "--key" ]; then
	echo "$key"
	exit 0
fi
if [ -f "$out/.stamp" ]; then
	echo "k8s build: cache hit $out" >&2
	echo "$out"
	exit 0
fi

mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/wrap"

# nice and a small GOMAXPROCS: other work shares this machine's two cores.
export GOMAXPROCS=$PROCS CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
run() { nice -n 19 "$@"; }
start=$(date +%s)

# --- Kubernetes through a wrapper module -----------------------------------
# k8s.io/kubernetes cannot be required as is: its go.mod points each staging
# module (k8s.io/api, k8s.io/client-go, ...) at ./staging. The wrapper replaces
# each of them with the published v0.<minor>.<patch> of the same release.
gomod=$(cd "$tmp/wrap" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
	sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { echo "k8s build: no go.mod for k8s.io/kubernetes@v$K8S_VERSION" >&2; exit 1; }
staging_version="v0.${K8S_VERSION#1.}"
{
	echo "module paddock.local/k8sbuild"
	echo
	echo "go $(awk '$1 == "go" {print $2; exit}' "$gomod")"
	echo
	echo "require k8s.io/kubernetes v$K8S_VERSION"
	echo
	echo "replace ("
	awk -v v="$staging_version" '$2 == "=>" && $3 ~ /^\.\/staging\// {printf "\t%s => %s %s\n", $1, $1, v}' "$gomod"
	echo ")"
} >"$tmp/wrap/go.mod"
cmds="kube-apiserver kube-controller-manager kube-scheduler kubelet"
{
	printf '//go:build tools\n\n// Package tools pins the Kubernetes commands this module builds.\npackage tools\n\nimport (\n'
	for c in $cmds; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
	printf ')\n'
} >"$tmp/wrap/tools.go"
(cd "$tmp/wrap" && run go mod tidy)

minor=$(echo "$K8S_VERSION" | cut -d. -f2)
# Without the version stamps the node reports v0.0.0-master and clients warn.
ld="-s -w"
ld+=" -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
ld+=" -X k8s.io/component-base/version.gitMajor=1"
ld+=" -X k8s.io/component-base/version.gitMinor=$minor"
ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
ld+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
pkgs=()
for c in $cmds; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
t=$(date +%s)
(cd "$tmp/wrap" && run go build -p "$PROCS" -trimpath -ldflags "$ld" -o "$tmp/bin/" "${pkgs[@]}")
echo "k8s build: kubernetes v$K8S_VERSION in $(($(date +%s) - t)) s" >&2

# --- containerd -------------------------------------------------------------
# containerd v2 has no replace directives, so go install builds it directly.
t=$(date +%s)
(cd "$tmp/wrap" && GOBIN="$tmp/bin" run go install -p "$PROCS" -trimpath \
	-tags "no_btrfs urfave_cli_no_docs" \
	-ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
	"github.com/containerd/containerd/v2/cmd/containerd@v$CONTAINERD_VERSION" \
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION" \
	"github.com/containerd/containerd/v2/cmd/ctr@v$CONTAINERD_VERSION")
echo "k8s build: containerd v$CONTAINERD_VERSION in $(($(date +%s) - t)) s" >&2

for b in $cmds containerd containerd-shim-runc-v2 ctr; do
	[ -x "$tmp/bin/$b" ] || { echo "k8s build: $b missing" >&2; exit 1; }
done
rm -rf "$out"
mv "$tmp/bin" "$out"
echo "key=$key built=$(date -u +%FT%TZ) seconds=$(($(date +%s) - start))" >"$out/.stamp"
echo "k8s build: $out in $(($(date +%s) - start)) s" >&2
echo "$out"
