// Command paddock-runc is a node-side wrapper of runc that gives each
// Kubernetes Pod with a user namespace (hostUsers: false) a namespace
// owned by its own range's first host uid rather than by root, and keeps
// every Pod from connecting to its own node.
//
// Why: the kernel charges per-user counts (inotify instances and watches,
// user namespaces, message queues) to the user inside a user namespace
// and again to the namespace's owner outside it. The container runtime
// (containerd, as root) makes every Pod's namespace, so every Pod draws on
// host root's one count, and a Pod that takes all its inotify instances
// takes them from every other Pod. The runc driver avoids this by making
// each sandbox's namespace itself (internal/userns); this wrapper does the
// same for Pods. And NetworkPolicy leaves a Pod's connections to its own
// node's addresses alone (the node delivers them, it does not forward
// them, and most network plugins filter only what they forward), so even
// a deny-all Pod reaches every listener of the node: the kubelet, node
// ports, anything bound to the wildcard address. The runc driver's
// sandboxes never reach their host; this wrapper's node guard does the
// same for Pods.
//
// containerd's runc shim runs it instead of runc (the BinaryName of a
// runtime handler, which a RuntimeClass selects). It passes every command
// line to the real runc by exec; it looks only at create and run, and at
// delete:
//
//   - create/run of any container that joins a network namespace by path
//     (a Pod's): it installs the node guard there, table inet paddock-node
//     (internal/netns.GuardNode, NodeGuard says what it drops and why the
//     Pod cannot remove it): new connections to every address the node
//     delivers to itself at that moment and to link-local and metadata
//     addresses are dropped; replies (the kubelet's probes, paddock's
//     connections to the agent) and everything else (NetworkPolicy's) are
//     not. Each container of the Pod replaces the table with the node's
//     addresses of its create. A failure fails the create: no Pod runs
//     unguarded. Exceptions are baked in at build time, comma-separated:
//     -X main.guardAllow=169.254.20.10:53 accepts that address and port
//     (TCP and UDP; a node-local DNS cache), -X main.guardNotNode=10.96.0.0/12
//     takes the node's addresses in that range for not the node's (the
//     Service range under kube-proxy's IPVS mode, which puts every Service
//     address on the node).
//   - create/run of a Pod's sandbox (pause) container whose config.json
//     asks for a user namespace with one range of 65536 ids from 0 (what
//     the kubelet gives), either a new one (runc would make it) or one
//     that root owns (containerd 2 makes it, with the Pod's network
//     namespace inside, and hands it over by path): it makes a namespace
//     with the same mapping owned by the range's first uid
//     (internal/userns), pins it under the state dir and points
//     config.json at it. The Pod's other containers join the sandbox
//     container's namespaces by path and so join it too.
//   - create/run of any container whose user namespace does not own its
//     network namespace (after the above, every container of such a Pod):
//     sysfs cannot be mounted from inside, nor network sysctls written, so
//     it mounts sysfs of that network namespace under the state dir for
//     the container to bind read-only and writes the config's network
//     sysctls itself (internal/netns.ForUserNS), as the runc driver does.
//   - delete: removes what create left for that id (idempotent). runc
//     needs none of it once create has returned, but exec leaves the
//     wrapper nothing to run afterwards, so it stays until the caller's
//     delete (containerd's shim always deletes; a create of the same id
//     first clears a crash's leftovers).
//
// Where runc is: the path baked in at build time with
// -ldflags "-X main.runcPath=/path/to/runc", else the file named runc in
// the directory of this binary (after symlinks). The state dir is
// /run/paddock-runc unless baked in with -X main.stateDir=DIR.
package main

import (
	"fmt"
	"os"
)

func main() {
	// run returns only on failure: on success it has become runc.
	err := run(os.Args)
	fmt.Fprintln(os.Stderr, "paddock-runc:", err)
	os.Exit(1)
}
