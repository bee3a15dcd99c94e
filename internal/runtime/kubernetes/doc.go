// Package kubernetes is the runtime.Driver that runs each sandbox as a Pod
// in one namespace of a Kubernetes cluster, through client-go.
//
// A sandbox is three objects named after it (podName): a Secret holding its
// agent credential, a NetworkPolicy holding its egress policy, and the Pod.
// The Pod's init container runs the agent image (`paddock-agent install`),
// which copies the static agent into an emptyDir the sandbox mounts
// read-only at agent.BinaryPath's directory, and the credential from the
// Secret (mounted into the init container alone) into a memory emptyDir of
// the sandbox's. The sandbox container runs the agent as PID 1 with the
// image given by the spec; the agent takes the credential file (reads it
// and removes it) before it listens on agent.TCPPort, and refuses every
// request without that credential. paddock reaches it at the Pod IP.
//
// Everything paddock needs to find a sandbox again is on the API server:
// the objects carry the label managedBy and the annotation annotationID
// (the sandbox id), so List and Agent re-adopt sandboxes after a restart,
// and the Secret outlives a stopped sandbox's Pod until Destroy. Replicas
// sharing the namespace each set Config.Owner (their node name), a label
// List selects on, so that each reconciles its own sandboxes only.
//
// A sandbox's volumes are PersistentVolumeClaims (runtime.Mount.Claim,
// made by internal/volume/claim) mounted at their paths; the agent gives
// a writable one's empty root to the sandbox user at start (claimVolumes).
//
// The driver needs, in its namespace alone: pods (create, get, list,
// watch, delete), secrets (create, get, list, delete) and
// networkpolicies.networking.k8s.io (create, delete; get for the
// resolver), patch on all three (Adopt's relabelling; UpdateEgress and the
// resolver patch the NetworkPolicy's spec);
// and may list events,
// where it finds a node's refusal to give a Pod a user namespace (Pods
// have `hostUsers: false` unless Config.HostUsers), which leaves the Pod
// Pending with nothing in its status.
//
// Egress is a NetworkPolicy per sandbox, enforced by the cluster's network
// plugin outside the Pod (see docs/ARCHITECTURE.md for why not nftables
// applied by the agent), and replaced in place by UpdateEgress while the
// sandbox runs. Egress by domain takes the driver's resolver (DNSConfig):
// the Pods' only nameserver, it finds a query's sandbox by its source
// address (the Pod IP), answers the names the policy (an annotation of the
// NetworkPolicy) allows, and adds their addresses to the NetworkPolicy
// before it answers. The object is the truth, so any replica's resolver
// answers any sandbox. Network byte counts are the Pod's interfaces', read by the
// agent in the Pod's network namespace (Stats).
//
// A Pod's writable layer is on its node, out of reach: a snapshot is what
// the agent streams of the sandbox's changes (agent.Client.Changes),
// written in the runc driver's layer form by layer.FromChanges against the
// image's layers paddock holds (see Driver.Snapshot).
package kubernetes
