package kubernetes

import (
	"path"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// The labels the driver puts on its objects, for what else paddock keeps
// in the namespace (internal/volume/claim's PersistentVolumeClaims) to be
// labelled alike, and to find the sandbox Pods that mount a claim.
const (
	LabelManagedBy = labelManagedBy
	ManagedBy      = managedBy
	LabelOwner     = labelOwner
	// AnnotationID is the sandbox id on a sandbox's Pod.
	AnnotationID = annotationID
)

// APIErr gives an API server's error the kind of sandbox error it
// amounts to, for paddock's other objects in the namespace.
func APIErr(err error) error { return apiErr(err) }

// reservedDests are the sandbox container's own mounts, which a volume
// may not cover.
var reservedDests = []string{"/proc", "/sys", "/dev", "/tmp", agentDir, credDir, agent.StateDir}

// checkClaims refuses the mounts a Pod cannot make: host directories (a
// node is not paddock's host) and copy-on-write overlays; what remains
// are PersistentVolumeClaims at clean, distinct paths.
func checkClaims(mounts []runtime.Mount) error {
	var dests []string
	for _, m := range mounts {
		switch {
		case m.Claim == "":
			return sandbox.Errorf(sandbox.ErrUnsupported, "no_host_volumes", "a Pod mounts volume claims only, not directories of paddock's host (%s)", m.Source)
		case m.Upper != "":
			return sandbox.Errorf(sandbox.ErrUnsupported, "volume_mode_unsupported", "a Pod cannot mount a volume copy-on-write")
		case len(validation.IsDNS1123Subdomain(m.Claim)) > 0:
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_claim", "%q is not a claim's name", m.Claim)
		case !path.IsAbs(m.Dest) || path.Clean(m.Dest) != m.Dest || m.Dest == "/" || strings.ContainsAny(m.Dest, "\x00:"):
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_mount_path", "mount path %q must be absolute, clean and not /", m.Dest)
		}
		for _, o := range append(slices.Clone(reservedDests), dests...) {
			if o == m.Dest || strings.HasPrefix(m.Dest, o+"/") || strings.HasPrefix(o, m.Dest+"/") {
				return sandbox.Errorf(sandbox.ErrInvalid, "invalid_mount_path", "mount path %s overlaps %s", m.Dest, o)
			}
		}
		dests = append(dests, m.Dest)
	}
	return nil
}

// claimVolumes are the Pod's volumes and the sandbox container's mounts
// of the claims in mounts (checked by checkClaims), and the agent's
// arguments that give each writable one to the sandbox user while it is
// empty: the kubelet mounts a new claim's root as the volume made it
// (root's, usually), and fsGroup is not applied by every volume type
// (hostPath, NFS). With `hostUsers: false` the claim is an idmapped
// mount, so the owner the agent sets inside is the one on disk, and the
// next Pod, of another id range, sees it alike.
func claimVolumes(mounts []runtime.Mount) ([]corev1.Volume, []corev1.VolumeMount, []string) {
	var (
		vols []corev1.Volume
		vms  []corev1.VolumeMount
		args []string
	)
	for i, m := range mounts {
		name := "claim-" + strconv.Itoa(i)
		vols = append(vols, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: m.Claim, ReadOnly: m.ReadOnly}}})
		vms = append(vms, corev1.VolumeMount{Name: name, MountPath: m.Dest, ReadOnly: m.ReadOnly})
		if !m.ReadOnly {
			args = append(args, "--own-if-empty="+m.Dest)
		}
	}
	return vols, vms, args
}
