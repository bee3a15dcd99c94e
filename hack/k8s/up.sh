#!/usr/bin/env bash
# Bring up a one-node Kubernetes cluster on this machine for paddock's tests.
#
#   hack/k8s/up.sh [WORK]        WORK defaults to $PADDOCK_K8S_WORK, else a new temp dir
#   hack/k8s/down.sh WORK        stops it and puts the machine back as it was
#
# Every file, socket and data dir lives under WORK; what the kubelet and
# containerd insist on writing elsewhere, and every machine setting they
# change, is recorded in WORK/saved before it changes, for down.sh. On any
# failure this script runs down.sh itself. WORK/cluster.env tells clients
# (internal/k8stest) where everything is; its KUBECONFIG is cluster-admin.
#
# Binaries: $PADDOCK_K8S_BIN, else what hack/k8s/build.sh built or cached.
# runc: $PADDOCK_K8S_RUNC, else what hack/k8s/build-runc.sh built or cached
# (runc >= 1.2: Pods with `hostUsers: false`, the Kubernetes driver's
# default, need it); PADDOCK_K8S_RUNC=/usr/sbin/runc is Debian's 1.1.5,
# whose node gives Pods no user namespaces. NetworkPolicy enforcement:
# kube-network-policies from $PADDOCK_K8S_NETPOL, else what
# hack/k8s/build-netpol.sh built or cached; PADDOCK_K8S_NETPOL=off runs
# none (every Pod's egress is then open, as with the bare bridge plugin).
# etcd and the CNI plugins are Debian's (see .ci/run). Needs root,
# openssl, iproute2, iptables and nft. Not safe to run twice at once on one
# machine: the ports, node IP and bridge below are fixed (tests hold
# /tmp/paddock-root-tests.lock).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${1:-${PADDOCK_K8S_WORK:-}}
[ -n "$work" ] || work=$(mktemp -d /tmp/paddock-k8s.XXXXXX)
mkdir -p "$work"
work=$(cd "$work" && pwd)
# Traversable by every uid (a temp dir is 0700): in a Pod's user namespace
# root is an unprivileged host uid, and runc, already inside it, reaches the
# container's rootfs under WORK/run by path ("remount-propagation ...:
# permission denied" otherwise). Nothing under WORK is listable by others,
# and its keys and kubeconfigs are 0600.
chmod 0711 "$work"

# The cluster's fixed addresses. 10.244/16 and 10.245/16 are clear of the
# sandboxes' pool (10.213.0.0/16); pods have no default route, so nothing
# they send leaves the machine. Their one other route is TEST_NET
# (TEST-NET-2, a documentation range no one owns), through the host, where
# it is unreachable unless a test routes an address of it into a network
# namespace of its own: the egress tests' targets, which the Kubernetes
# driver's NetworkPolicies may allow (it never allows private ranges, so no
# Pod or node address can be one).
NODE=paddock-k8s
NODE_IP=10.245.0.1
NODE_LINK=pdk8s0 # a veth pair: the kernel here has no dummy links
BRIDGE=pdk8sbr0
POD_CIDR=10.244.0.0/24
TEST_NET=198.51.100.0/24
SERVICE_CIDR=10.96.0.0/16
API_PORT=6443
PAUSE_IMAGE=docker.io/paddock/pause:test
# kube-network-policies: the nfqueue it reads (the kernel's verdict queue
# for new connections of Pods), its table, the chain up.sh queues with and
# its metrics address (loopback: Pods reach the host's other addresses).
NETPOL_QUEUE=100
NETPOL_TABLE=kube-network-policies
NETPOL_CHAIN=PDK8S-NETPOL
NETPOL_METRICS=127.0.0.1:10270
# Set by the kubelet (kernel tunables), the bridge plugin (forwarding) and
# up.sh (bridged traffic through netfilter, for NetworkPolicy).
SYSCTLS="net.bridge.bridge-nf-call-iptables net.ipv4.ip_forward kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
# Paths the kubelet and containerd write outside WORK whatever their config
# says; down.sh removes those that were not there before.
OUTSIDE="/var/lib/kubelet /var/lib/kubelet/device-plugins /var/log/pods /var/log/containers /run/containerd /run/containerd/s /run/containerd/fifo /var/run/nri /etc/cdi /var/run/cdi /opt/containerd"

T0=$(date +%s%N)
step() { echo "k8s up: [$((($(date +%s%N) - T0) / 1000000)) ms] $*" >&2; }
fail() { echo "k8s up: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root"
for c in etcd openssl ip iptables nft curl; do command -v "$c" >/dev/null || fail "missing $c (see .ci/run for the packages)"; done
[ -x /usr/lib/cni/bridge ] || fail "missing /usr/lib/cni (apt-get install containernetworking-plugins)"
[ -e "$work/saved" ] && fail "$work already holds a cluster (run down.sh $work first)"

# Refuse to share the machine with another kubelet or an earlier run that
# was not torn down: down.sh would remove what it had made.
for s in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods /sys/fs/cgroup/kubepods; do
	[ -e "$s" ] && fail "$s exists: another kubelet runs here, or a cluster was not torn down"
done
for l in "$NODE_LINK" "$BRIDGE"; do ip link show "$l" >/dev/null 2>&1 && fail "link $l exists: a cluster was not torn down"; done
for p in 2379 2380 $API_PORT 10248 10250 10257 10259 "${NETPOL_METRICS##*:}"; do
	(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && fail "port $p on 127.0.0.1 is taken"
done

if [ -z "${PADDOCK_K8S_BIN:-}" ]; then
	PADDOCK_K8S_BIN=$("$here/build.sh" | tail -n 1)
fi
bin=$PADDOCK_K8S_BIN
if [ -z "${PADDOCK_K8S_RUNC:-}" ]; then
	PADDOCK_K8S_RUNC=$("$here/build-runc.sh" | tail -n 1)
fi
runc=$PADDOCK_K8S_RUNC
[ -x "$runc" ] || fail "missing $runc"
if [ -z "${PADDOCK_K8S_NETPOL:-}" ]; then
	PADDOCK_K8S_NETPOL=$("$here/build-netpol.sh" | tail -n 1)
fi
netpol=$PADDOCK_K8S_NETPOL
if [ "$netpol" != off ]; then
	[ -x "$netpol" ] || fail "missing $netpol"
	nft list table inet "$NETPOL_TABLE" >/dev/null 2>&1 && fail "nftables table inet $NETPOL_TABLE exists: a cluster was not torn down"
	awk -v q="$NETPOL_QUEUE" '$1 == q {f = 1} END {exit !f}' /proc/net/netfilter/nfnetlink_queue 2>/dev/null &&
		fail "nfqueue $NETPOL_QUEUE is taken: another NetworkPolicy agent runs here"
fi
ip route show exact "$TEST_NET" | grep -q . && fail "a route to $TEST_NET exists: a cluster was not torn down"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet containerd containerd-shim-runc-v2 ctr; do
	[ -x "$bin/$b" ] || fail "$bin/$b missing"
done

mkdir -p "$work"/{saved,pid,log,pki,etc,run,state,cni/net.d,cni/ipam,images}
up=
on_exit() {
	[ -z "$up" ] || return 0
	echo "k8s up: failed; logs in $work/log; tearing down" >&2
	"$here/down.sh" "$work" >&2 || true
}
trap on_exit EXIT
# From here on a failure tears down: say what was there before first.
for k in $SYSCTLS; do echo "$k = $(sysctl -n "$k")"; done >"$work/saved/sysctl"
for p in $OUTSIDE; do [ -e "$p" ] && echo "$p"; done >"$work/saved/paths" || true
for ipt in iptables ip6tables; do
	for t in filter nat mangle; do "$ipt" -t "$t" -S 2>/dev/null | awk -v t="$t" '$1 == "-N" {print t, $2}'; done >"$work/saved/$ipt.chains"
done
echo "$bin" >"$work/saved/bin"
# For down.sh to point out anything new at these levels (other jobs on the
# machine may add entries too, so it only reports them).
ls -d /var/lib/* /var/log/* /run/* /etc/* /opt/* /var/cache/* 2>/dev/null >"$work/saved/toplevel" || true

# --- PKI and credentials ----------------------------------------------------
# Fresh every run, so nothing from one run authenticates to the next.
pki=$work/pki
ossl() { openssl "$@" 2>>"$work/log/openssl.log"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
	-subj "/CN=paddock-test-cluster-ca" -keyout "$pki/ca.key" -out "$pki/ca.crt"
# sign NAME SUBJECT USAGE [SANS]: a key and a CA-signed certificate for
# USAGE (serverAuth or clientAuth).
sign() {
	local ext=(-addext "extendedKeyUsage=$3" -addext "keyUsage=critical,digitalSignature")
	[ -n "${4:-}" ] && ext+=(-addext "subjectAltName=$4")
	ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" "${ext[@]}"
	ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
		-days 7 -copy_extensions copyall -out "$pki/$1.crt"
}
sign apiserver "/CN=kube-apiserver" serverAuth \
	"IP:127.0.0.1,IP:$NODE_IP,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
# The apiserver's client certificate for the kubelet (exec, logs,
# port-forward): the kubelet trusts only this CA, so other local processes
# cannot reach Pods through its port.
sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
ossl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:prime256v1 -out "$pki/sa.key"
ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
chmod 600 "$pki"/*.key

tok() { openssl rand -hex 24; }
admin_tok=$(tok) node_tok=$(tok) kcm_tok=$(tok) sched_tok=$(tok) netpol_tok=$(tok)
{
	echo "$admin_tok,paddock-test-admin,uid-admin,\"system:masters\""
	echo "$node_tok,system:node:$NODE,uid-node,\"system:nodes\""
	echo "$kcm_tok,system:kube-controller-manager,uid-kcm"
	echo "$sched_tok,system:kube-scheduler,uid-scheduler"
	echo "$netpol_tok,paddock-test-netpol,uid-netpol"
} >"$pki/tokens.csv"
chmod 600 "$pki/tokens.csv"

kubeconfig() { # FILE USER TOKEN
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: paddock-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: paddock-test
  context: {cluster: paddock-test, user: $2}
current-context: paddock-test
EOF
	chmod 600 "$1"
}
kubeconfig "$work/admin.kubeconfig" admin "$admin_tok"
kubeconfig "$work/etc/kubelet.kubeconfig" node "$node_tok"
kubeconfig "$work/etc/kcm.kubeconfig" kcm "$kcm_tok"
kubeconfig "$work/etc/scheduler.kubeconfig" scheduler "$sched_tok"
step "pki and kubeconfigs"

# --- configs ----------------------------------------------------------------
# Debian's runc (1.1: no user namespaces for Pods), when there and not the
# node's own, as a second runtime handler: what the driver does on a node
# that cannot give Pods user namespaces is tested with a RuntimeClass of it.
old_runc_handler=
if [ -x /usr/sbin/runc ] && [ "$(readlink -f /usr/sbin/runc)" != "$(readlink -f "$runc")" ]; then
	old_runc_handler="    [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.debian-runc]
      runtime_type = \"io.containerd.runc.v2\"
      [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.debian-runc.options]
        BinaryName = \"/usr/sbin/runc\"
        Root = \"$work/run/debian-runc\"
        SystemdCgroup = false"
fi
# paddock's runc wrapper (cmd/paddock-runc) as a handler of its own,
# "paddock": each Pod's user namespace owned by its range's first uid. Built
# from this tree with the real runc's path and a state dir under WORK baked
# in (down.sh unmounts what it pins there).
mkdir -p "$work/bin"
(cd "$repo" && CGO_ENABLED=1 go build -trimpath -o "$work/bin/paddock-runc" \
	-ldflags "-X main.runcPath=$runc -X main.stateDir=$work/run/paddock-runc" ./cmd/paddock-runc)
step "paddock-runc built"
cat >"$work/etc/containerd.toml" <<EOF
version = 3
root = "$work/state/containerd"
state = "$work/run/containerd"
[grpc]
  address = "$work/run/containerd/containerd.sock"
[ttrpc]
  address = "$work/run/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/state/opt"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "$work/etc/registry"
[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  enable_cdi = false
  # CAP_SYS_RESOURCE is outside this machine's bounding set: runc cannot
  # lower oom_score_adj below the caller's, so every sandbox fails without.
  restrict_oom_score_adj = true
  # Network namespaces under WORK, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        # containerd asks it ("runc features") whether Pods may have user
        # namespaces, and tells the kubelet.
        BinaryName = "$runc"
        Root = "$work/run/runc"
        SystemdCgroup = false
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.paddock]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.paddock.options]
        BinaryName = "$work/bin/paddock-runc"
        Root = "$work/run/runc-paddock"
        SystemdCgroup = false
$old_runc_handler
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$work/cni/net.d"
EOF
mkdir -p "$work/etc/registry"

# No default route and no masquerade: Pods reach each other and the host
# reaches them through the bridge, and nothing goes further.
cat >"$work/cni/net.d/10-paddock.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "paddock-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$work/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "$TEST_NET"}]
      }
    }
  ]
}
EOF

cat >"$work/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: AlwaysAllow
# No systemd here (PID 1 is not an init system), and cgroup v1.
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://$work/run/containerd/containerd.sock
failSwapOn: false
podCIDR: $POD_CIDR
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $work/state/pod-logs
# Images are imported, not pulled: never collect them, and never evict for
# a full disk on a shared CI machine.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
serializeImagePulls: false
maxPods: 50
EOF
sign kubelet "/CN=$NODE" serverAuth "IP:$NODE_IP,DNS:$NODE"

# --- node IP ----------------------------------------------------------------
# The kubelet refuses a loopback node IP, so the node gets a local address
# on a veth pair that leads nowhere.
ip link add "$NODE_LINK" type veth peer name "${NODE_LINK}p"
ip addr add "$NODE_IP/32" dev "$NODE_LINK"
ip link set "${NODE_LINK}p" up
ip link set "$NODE_LINK" up
step "node IP $NODE_IP on $NODE_LINK"
# Pods route TEST_NET to the host (the CNI config above); it goes no
# further: forwarded elsewhere, it would leave the machine.
ip route add unreachable "$TEST_NET"

# daemon NAME CMD...: start in the background, record its own pid.
daemon() {
	local n=$1
	shift
	nohup "$@" >"$work/log/$n.log" 2>&1 </dev/null &
	echo $! >"$work/pid/$n"
}
alive() { kill -0 "$(cat "$work/pid/$1")" 2>/dev/null || fail "$1 exited: $(tail -n 5 "$work/log/$1.log")"; }
# wait_for DAEMON SECONDS CMD...: poll CMD every 100 ms while DAEMON runs.
wait_for() {
	local d=$1 deadline=$(($(date +%s) + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		alive "$d"
		[ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for $d: $* (logs in $work/log)"
		sleep 0.1
	done
}

# --- etcd and containerd ----------------------------------------------------
mkdir -p -m 700 "$work/state/etcd"
daemon etcd etcd --name paddock-test --data-dir "$work/state/etcd" \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster paddock-test=http://127.0.0.1:2380 --listen-metrics-urls ""
# The shim is found on PATH.
PATH="$bin:$PATH" daemon containerd "$bin/containerd" --config "$work/etc/containerd.toml"
ctr=("$bin/ctr" --address "$work/run/containerd/containerd.sock" --namespace k8s.io)
wait_for etcd 30 curl -sf --max-time 1 http://127.0.0.1:2379/health
wait_for containerd 30 "${ctr[@]}" version
alive etcd
alive containerd
step "etcd and containerd"

# The pause image, from this tree: there is no registry to pull one from.
(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/images/pause" ./hack/k8s/pause &&
	go run ./hack/k8s/ociimage -ref "$PAUSE_IMAGE" -o "$work/images/pause.tar" -entrypoint /pause "/pause=$work/images/pause")
"${ctr[@]}" images import "$work/images/pause.tar" >/dev/null
step "pause image imported"

# --- control plane ----------------------------------------------------------
daemon kube-apiserver "$bin/kube-apiserver" \
	--etcd-servers=http://127.0.0.1:2379 \
	--bind-address=127.0.0.1 --secure-port="$API_PORT" \
	--advertise-address="$NODE_IP" \
	--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
	--client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
	--authorization-mode=Node,RBAC \
	--kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
	--kubelet-client-key="$pki/apiserver-kubelet-client.key" \
	--kubelet-certificate-authority="$pki/ca.crt" \
	--kubelet-preferred-address-types=InternalIP \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--allow-privileged=true --enable-priority-and-fairness=false --profiling=false \
	--cert-dir="$work/state/apiserver-certs"
# /readyz answers ok only after the RBAC bootstrap; a controller manager
# started before then exits on a forbidden configmap.
readyz() { [ "$(curl -s --max-time 2 --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_tok" "https://127.0.0.1:$API_PORT/readyz")" = ok ]; }
wait_for kube-apiserver 120 readyz
step "kube-apiserver ready"

daemon kube-controller-manager "$bin/kube-controller-manager" \
	--kubeconfig="$work/etc/kcm.kubeconfig" \
	--authentication-kubeconfig="$work/etc/kcm.kubeconfig" --authorization-kubeconfig="$work/etc/kcm.kubeconfig" \
	--bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
	--service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
	--use-service-account-credentials=true --service-cluster-ip-range="$SERVICE_CIDR" \
	--cert-dir="$work/state/kcm-certs"
daemon kube-scheduler "$bin/kube-scheduler" \
	--kubeconfig="$work/etc/scheduler.kubeconfig" \
	--authentication-kubeconfig="$work/etc/scheduler.kubeconfig" --authorization-kubeconfig="$work/etc/scheduler.kubeconfig" \
	--bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false
daemon kubelet "$bin/kubelet" --config="$work/etc/kubelet.yaml" --kubeconfig="$work/etc/kubelet.kubeconfig" \
	--hostname-override="$NODE" --node-ip="$NODE_IP" --root-dir="$work/state/kubelet" \
	--cert-dir="$work/state/kubelet-certs"

api() { curl -sf --max-time 2 --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_tok" "https://127.0.0.1:$API_PORT$1"; }

# --- NetworkPolicy: kube-network-policies -----------------------------------
# The agent decides each new connection of a Pod in user space: the kernel
# hands it the first packet through nfqueue NETPOL_QUEUE, it answers accept
# or drop by the NetworkPolicies of the source and destination Pods (it
# watches them, Pods and namespaces). Its own nftables rules, which would
# send those packets to the queue, need nftables' queue expression, and
# this kernel has none (CONFIG_NFT_QUEUE off: the agent logs "syncing
# nftables rules ... no such file or directory" and retries): the same
# rules are here in iptables, whose NFQUEUE target (xt_NFQUEUE) it has. They
# queue every Pod's connections, not only those of Pods a policy selects,
# after the agent's own exceptions: packets of known connections, and
# what the host's root sends (the kubelet's probes, paddock's dials). No
# --queue-bypass: while the agent is down, new Pod connections are dropped,
# as the agent's own rules do. Bridged Pod-to-Pod packets reach these hooks
# through br_netfilter (bridge-nf-call-iptables). Traffic of a Pod to the
# host's own addresses is delivered, not forwarded: NetworkPolicy does not
# cover it here, as in many network plugins (the handler paddock's node
# guard, cmd/paddock-runc, refuses it inside each Pod).
if [ "$netpol" != off ]; then
	sysctl -q -w net.bridge.bridge-nf-call-iptables=1
	iptables -t mangle -N "$NETPOL_CHAIN"
	iptables -t mangle -A "$NETPOL_CHAIN" -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
	iptables -t mangle -A "$NETPOL_CHAIN" -m owner --uid-owner 0 -j RETURN
	iptables -t mangle -A "$NETPOL_CHAIN" -s "$POD_CIDR" -j NFQUEUE --queue-num "$NETPOL_QUEUE"
	iptables -t mangle -A "$NETPOL_CHAIN" -d "$POD_CIDR" -j NFQUEUE --queue-num "$NETPOL_QUEUE"
	iptables -t mangle -A POSTROUTING -j "$NETPOL_CHAIN"
	# Read-only access to what it watches (view), as its own token user.
	curl -sf --max-time 10 -o /dev/null --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_tok" \
		-H "Content-Type: application/json" -X POST "https://127.0.0.1:$API_PORT/apis/rbac.authorization.k8s.io/v1/clusterrolebindings" \
		-d '{"metadata":{"name":"paddock-test-netpol"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"paddock-test-netpol"}]}' ||
		fail "cannot bind the view ClusterRole for kube-network-policies"
	# It takes only the in-cluster configuration: a token and CA at the
	# ServiceAccount paths under /run, which it sees, in a mount namespace
	# of its own, on a tmpfs there (nothing on the host's /run changes), and
	# the API server from KUBERNETES_SERVICE_*.
	mkdir -p -m 700 "$work/etc/netpol-sa"
	printf '%s' "$netpol_tok" >"$work/etc/netpol-sa/token"
	cp "$pki/ca.crt" "$work/etc/netpol-sa/ca.crt"
	KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=$API_PORT daemon kube-network-policies \
		unshare --mount --propagation private -- sh -ec '
			sa=/run/secrets/kubernetes.io/serviceaccount
			mount -t tmpfs -o size=1m,mode=0755 tmpfs /run
			mkdir -p "$sa"
			mount --bind "$1" "$sa"
			shift
			exec "$@"' sh "$work/etc/netpol-sa" \
		"$netpol" --hostname-override="$NODE" --nfqueue-id="$NETPOL_QUEUE" --disable-nri \
		--netfilter-bug-1766-fix=false --metrics-bind-address="$NETPOL_METRICS"
fi
node_ready() {
	api "/api/v1/nodes/$NODE" | tr -d ' \n' | grep -q '"type":"Ready","status":"True"'
}
wait_for kubelet 120 node_ready
step "node $NODE Ready"
# Pods cannot be created in a namespace before its default ServiceAccount.
wait_for kube-controller-manager 60 api /api/v1/namespaces/default/serviceaccounts/default
for n in kube-controller-manager kube-scheduler kubelet; do alive "$n"; done
step "default ServiceAccount"
if [ "$netpol" != off ]; then
	# Ready when it reads the queue: it opens it once its caches synced.
	queue_bound() { awk -v q="$NETPOL_QUEUE" '$1 == q {f = 1} END {exit !f}' /proc/net/netfilter/nfnetlink_queue; }
	wait_for kube-network-policies 60 queue_bound
	step "kube-network-policies on nfqueue $NETPOL_QUEUE"
fi

cat >"$work/cluster.env" <<EOF
KUBECONFIG=$work/admin.kubeconfig
PADDOCK_K8S_WORK=$work
PADDOCK_K8S_NODE=$NODE
PADDOCK_K8S_NODE_IP=$NODE_IP
PADDOCK_K8S_POD_CIDR=$POD_CIDR
PADDOCK_K8S_CTR=$bin/ctr
PADDOCK_K8S_CONTAINERD=$work/run/containerd/containerd.sock
PADDOCK_K8S_REGISTRY_CONFIG=$work/etc/registry
PADDOCK_K8S_PAUSE_IMAGE=$PAUSE_IMAGE
PADDOCK_K8S_RUNC=$runc
PADDOCK_K8S_TEST_NET=$TEST_NET
EOF
[ "$netpol" = off ] || echo "PADDOCK_K8S_NETWORK_POLICY=kube-network-policies" >>"$work/cluster.env"
up=1
step "up; $work/cluster.env"
echo "$work"
