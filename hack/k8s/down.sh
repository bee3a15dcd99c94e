#!/usr/bin/env bash
# Tear down the cluster hack/k8s/up.sh started in WORK and put the machine
# back as up.sh found it (WORK/saved says how it was), then check that it is:
# exit status 1 and a list of what is left if anything is.
#
#   hack/k8s/down.sh WORK
#
# Only processes whose pid up.sh recorded, or that run in the kubepods
# cgroups or speak to WORK's containerd socket, are signalled. Safe to run
# twice, and on a bring-up that failed half way. PADDOCK_K8S_KEEP_LOGS=1
# keeps WORK/log.
set -uo pipefail

work=${1:-${PADDOCK_K8S_WORK:-}}
[ -n "$work" ] || { echo "usage: down.sh WORK" >&2; exit 2; }
[ -d "$work/saved" ] || { echo "k8s down: no cluster in $work" >&2; exit 0; }
work=$(cd "$work" && pwd)

# Keep in step with up.sh.
NODE_LINK=pdk8s0
BRIDGE=pdk8sbr0
API_PORT=6443
TEST_NET=198.51.100.0/24
NETPOL_TABLE=kube-network-policies
OUTSIDE="/var/lib/kubelet/device-plugins /var/lib/kubelet /var/log/pods /var/log/containers /run/containerd/s /run/containerd/fifo /run/containerd /var/run/nri /etc/cdi /var/run/cdi /opt/containerd"

T0=$(date +%s%N)
step() { echo "k8s down: [$((($(date +%s%N) - T0) / 1000000)) ms] $*" >&2; }
pidof_() { cat "$work/pid/$1" 2>/dev/null; }
# live PID NAME: PID runs NAME's binary and is not a zombie (init here can
# take seconds to reap; a reused pid is someone else's).
live() {
	local st
	st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
	[ "$st" != Z ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}
running() { local p; p=$(pidof_ "$1") && live "$p" "$1"; }
ctr() { "$(cat "$work/saved/bin" 2>/dev/null)/ctr" --address "$work/run/containerd/containerd.sock" --namespace k8s.io "$@"; }

# stop NAME [SIGNAL]: SIGNAL (default TERM), then SIGKILL after 10 s.
stop() {
	local p i
	p=$(pidof_ "$1") || return 0
	if live "$p" "$1" && kill -s "${2:-TERM}" "$p" 2>/dev/null; then
		for i in $(seq 100); do live "$p" "$1" || break; sleep 0.1; done
		live "$p" "$1" && kill -9 "$p" 2>/dev/null && sleep 0.2
	fi
	rm -f "$work/pid/$1"
	step "$1 stopped"
}

# 1. Pods first, through the API, while the kubelet runs: it stops them the
#    CRI way, which also releases their addresses and veths (CNI DEL).
if running kube-apiserver && running kubelet && [ -f "$work/pki/tokens.csv" ]; then
	tok=$(awk -F, '$2 == "paddock-test-admin" {print $1}' "$work/pki/tokens.csv")
	api() {
		curl -s --max-time 10 -A paddock-down --cacert "$work/pki/ca.crt" \
			-H "Authorization: Bearer $tok" "$@"
	}
	for ns in $(api "https://127.0.0.1:$API_PORT/api/v1/namespaces" | grep -o '"metadata":{"name":"[^"]*"' | cut -d'"' -f6); do
		api -X DELETE -o /dev/null "https://127.0.0.1:$API_PORT/api/v1/namespaces/$ns/pods?gracePeriodSeconds=1"
	done
	# Stopped tasks stay listed until the kubelet's garbage collection:
	# wait for the running ones only.
	for i in $(seq 300); do
		[ -z "$(ctr tasks ls 2>/dev/null | awk '$3 == "RUNNING"')" ] && break
		sleep 0.2
	done
	step "pods deleted"
fi
stop kubelet
# Killed outright: on SIGTERM it waits 5 s to remove its nftables table,
# which step 6 removes anyway.
stop kube-network-policies KILL
# Whatever the kubelet left: kill the tasks, so that their shims exit.
if running containerd; then
	for t in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
	sleep 0.5
	for t in $(ctr tasks ls -q 2>/dev/null); do ctr tasks delete -f "$t" >/dev/null 2>&1; done
fi
for d in kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do stop "$d"; done
step "daemons stopped"

# 2. Stragglers: shims of this containerd (they outlive it) and anything in
#    the kubepods cgroups, which up.sh checked did not exist before it.
strays() {
	# The pattern comes from a file so that grep's own command line does
	# not match it.
	grep -alF -f <(printf '%s\n' "$work/run/containerd/") /proc/[0-9]*/cmdline 2>/dev/null |
		cut -d/ -f3 | grep -vxF -e $$ -e "$BASHPID"
	find /sys/fs/cgroup/*/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null
}
for p in $(strays | sort -u); do kill -9 "$p" 2>/dev/null; done
for i in $(seq 50); do [ -z "$(strays)" ] && break; sleep 0.1; done

# 3. Mounts: the Pods' network namespaces, shm, overlay root filesystems
#    and volumes, deepest first.
mounts() { awk '{print $5}' /proc/self/mountinfo | grep -E "^($work/|/var/lib/kubelet/|/run/containerd/)" | sort -r; }
for m in $(mounts); do umount -l "$m" 2>/dev/null; done

# 4. cgroups the kubelet made, leaves first.
for c in /sys/fs/cgroup/*/kubepods; do
	[ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
done

# 5. Links: the Pods' veths on the bridge, the bridge, the node IP's pair.
for v in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$v" 2>/dev/null; done
ip link del "$BRIDGE" 2>/dev/null
ip link del "$NODE_LINK" 2>/dev/null

# 6. iptables chains that were not there before (the kubelet's KUBE-*, any
#    CNI-*, up.sh's PDK8S-*), with the rules that jump to them; the
#    NetworkPolicy agent's nftables table (up.sh refuses to start if it
#    exists); the route to the test net.
for ipt in iptables ip6tables; do
	for t in filter nat mangle; do
		for c in $("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE|CNI|PDK8S)-/ {print $2}'); do
			grep -qxF "$t $c" "$work/saved/$ipt.chains" 2>/dev/null && continue
			"$ipt" -t "$t" -S | grep -E -- "-j $c( |\$)" | sed 's/^-A /-D /' | while read -r rule; do
				# shellcheck disable=SC2086 # a rule is words
				"$ipt" -t "$t" $rule 2>/dev/null
			done
			"$ipt" -t "$t" -F "$c" 2>/dev/null
			"$ipt" -t "$t" -X "$c" 2>/dev/null
		done
	done
done
nft delete table inet "$NETPOL_TABLE" 2>/dev/null
ip route del unreachable "$TEST_NET" 2>/dev/null

# 7. sysctls as they were.
while IFS= read -r line; do sysctl -q -w "${line// = /=}" >/dev/null 2>&1; done <"$work/saved/sysctl"

# 8. Paths outside WORK that were not there before.
for p in $OUTSIDE; do
	grep -qxF "$p" "$work/saved/paths" && continue
	rm -rf "$p"
done
# A /var/log/containers that was there keeps everything but our links.
if grep -qxF /var/log/containers "$work/saved/paths"; then
	find /var/log/containers -maxdepth 1 -type l -lname "$work/*" -delete 2>/dev/null
fi
step "machine restored"

# 9. Check, then remove WORK's contents (and WORK when empty).
left=()
for f in "$work"/pid/*; do [ -e "$f" ] && left+=("process $(basename "$f") pid $(cat "$f") not stopped"); done
for p in $(strays | sort -u); do left+=("process $p: $({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | cut -c1-120)"); done
for m in $(mounts); do left+=("mount $m"); done
for c in /sys/fs/cgroup/*/kubepods; do [ -e "$c" ] && left+=("cgroup $c"); done
for l in "$BRIDGE" "$NODE_LINK"; do ip link show "$l" >/dev/null 2>&1 && left+=("link $l"); done
for ipt in iptables ip6tables; do
	for t in filter nat mangle; do
		for c in $("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE|CNI|PDK8S)-/ {print $2}'); do
			grep -qxF "$t $c" "$work/saved/$ipt.chains" 2>/dev/null || left+=("$ipt chain $t $c")
		done
	done
done
nft list table inet "$NETPOL_TABLE" >/dev/null 2>&1 && left+=("nftables table inet $NETPOL_TABLE")
ip route show exact "$TEST_NET" | grep -q . && left+=("route $TEST_NET")
while IFS= read -r line; do
	k=${line%% = *} v=${line#* = }
	[ "$(sysctl -n "$k")" = "$v" ] || left+=("sysctl $k = $(sysctl -n "$k"), was $v")
done <"$work/saved/sysctl"
for p in $OUTSIDE; do
	[ -e "$p" ] && ! grep -qxF "$p" "$work/saved/paths" && left+=("path $p")
done

if [ -f "$work/saved/toplevel" ]; then
	ls -d /var/lib/* /var/log/* /run/* /etc/* /opt/* /var/cache/* 2>/dev/null | grep -vxF -f "$work/saved/toplevel" |
		sed 's/^/k8s down: note: new since up (this cluster or another job): /' >&2
fi
if [ ${#left[@]} -gt 0 ]; then
	printf 'k8s down: left behind: %s\n' "${left[@]}" >&2
	echo "k8s down: $work kept for a look" >&2
	exit 1
fi
keep=()
[ "${PADDOCK_K8S_KEEP_LOGS:-}" = 1 ] && keep=(-not -name log)
find "$work" -mindepth 1 -maxdepth 1 "${keep[@]}" -exec rm -rf {} +
rmdir "$work" 2>/dev/null
step "clean"
