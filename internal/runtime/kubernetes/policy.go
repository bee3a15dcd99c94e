package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/runtime/ocispec"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

type policyObject = *networkingv1.NetworkPolicy

// Egress modes, as internal/netns names them.
const (
	modeAllowAll = "allow-all"
	modeDenyAll  = "deny-all"
	modeCustom   = "custom"
)

// Annotations of a sandbox's NetworkPolicy: what the resolver reads,
// since the object, not a replica's memory, is where a sandbox's egress
// lives.
const (
	// annotationEgress is the sandbox's sandbox.NetworkPolicy as JSON
	// ("null": deny-all).
	annotationEgress = "paddock.dev/egress"
	// annotationResolved is the addresses the resolver allowed for the
	// policy's domains, oldest first, as a JSON array.
	annotationResolved = "paddock.dev/resolved"
)

// networkPolicy is the NetworkPolicy of a driver without a resolver
// (egressPolicy with no DNSConfig): domains are refused.
func networkPolicy(meta metav1.ObjectMeta, p *sandbox.NetworkPolicy) (policyObject, error) {
	return egressPolicy(meta, p, nil, nil)
}

// egressPolicy is the sandbox's egress as a NetworkPolicy selecting its
// Pod alone, with the rules internal/netns applies to a runc sandbox:
// deny beats allow, and netguard's Reserved (link-local and the clouds'
// metadata, multicast...) and Private (RFC 1918 and the like: the cluster's
// Pods, Services and nodes, the API server) ranges, and the policy's
// DenyCIDRs, are refused whatever the mode, as exceptions of every allowed
// block (a block wholly inside one is dropped). deny-all (and nil: a runc
// sandbox without a network has none) allows nothing; allow-all allows
// 0.0.0.0/0 and ::/0 but those; custom its CIDRs but those. Policies add
// up, so these allow over a namespace's default deny.
//
// DNS: without a resolver (dns nil), a mode that allows anything may ask
// the cluster's DNS (port 53 of the Pods labelled k8s-app=kube-dns), which
// the Private ranges would refuse, and domains are refused (no
// NetworkPolicy field names one). With the driver's resolver, every mode
// but deny-all may ask it and nothing else (DNSConfig.rule), and custom allows
// the resolved addresses too: each a /32 or /128 block of its own, which
// the resolver adds as it answers (Driver.allowResolved).
func egressPolicy(meta metav1.ObjectMeta, p *sandbox.NetworkPolicy, dns *DNSConfig, resolved []netip.Addr) (policyObject, error) {
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: meta,
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{labelPod: meta.Labels[labelPod]}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		},
	}
	mode := modeDenyAll
	if p != nil && p.Mode != "" {
		mode = p.Mode
	}
	var allow []netip.Prefix
	switch mode {
	case modeDenyAll:
		if p != nil && (len(p.AllowCIDRs) > 0 || len(p.AllowDomains) > 0) {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_network_policy", "deny-all takes no allow list")
		}
	case modeAllowAll:
		allow = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	case modeCustom:
		if len(p.AllowDomains) > 0 && dns == nil {
			return nil, sandbox.Errorf(sandbox.ErrUnsupported, "no_domain_policy",
				"the kubernetes driver allows egress by domain only with its resolver (paddock serve --k8s-dns-listen and --k8s-dns-address); without it, only by CIDR")
		}
		allow = p.AllowCIDRs
		if len(p.AllowDomains) > 0 {
			for _, a := range resolved {
				allow = append(allow, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	default:
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_network_policy", "unknown egress mode %q", mode)
	}
	if resolved == nil {
		resolved = []netip.Addr{}
	}
	rawPolicy, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: egress policy: %w", err)
	}
	rawResolved, err := json.Marshal(resolved)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: resolved addresses: %w", err)
	}
	np.Annotations = maps.Clone(np.Annotations)
	if np.Annotations == nil {
		np.Annotations = map[string]string{}
	}
	np.Annotations[annotationEgress], np.Annotations[annotationResolved] = string(rawPolicy), string(rawResolved)
	if mode == modeDenyAll {
		return np, nil
	}
	// No IPv4-mapped IPv6 range (the API refuses to name one): a socket
	// that dials ::ffff:a.b.c.d sends IPv4, which the IPv4 blocks judge.
	refused := refusedRanges(p)
	var peers []networkingv1.NetworkPolicyPeer
	for _, a := range allow {
		a = a.Masked()
		if slices.ContainsFunc(refused, func(r netip.Prefix) bool { return within(a, r) }) {
			continue
		}
		block := &networkingv1.IPBlock{CIDR: a.String()}
		for _, r := range refused {
			// NetworkPolicy takes exceptions strictly inside their block.
			if r = r.Masked(); within(r, a) && r != a && !slices.Contains(block.Except, r.String()) {
				block.Except = append(block.Except, r.String())
			}
		}
		peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: block})
	}
	if len(peers) > 0 {
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers})
	}
	switch {
	case dns != nil:
		np.Spec.Egress = append(np.Spec.Egress, dns.rule())
	case len(peers) > 0:
		udp, tcp, port := corev1.ProtocolUDP, corev1.ProtocolTCP, intstr.FromInt32(53)
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{
			To: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
			}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &port}, {Protocol: &tcp, Port: &port}},
		})
	}
	return np, nil
}

// refusedRanges are what p may never reach: netguard's Reserved and
// Private ranges and its DenyCIDRs.
func refusedRanges(p *sandbox.NetworkPolicy) []netip.Prefix {
	refused := slices.Concat(netguard.Reserved, netguard.Private)
	if p != nil {
		refused = append(refused, p.DenyCIDRs...)
	}
	return refused
}

// UpdateEgress replaces the spec of the sandbox's NetworkPolicy with the
// one policy makes (refused as in Create: domains without a resolver, a
// bad mode), and its policy annotations (the resolved addresses start
// anew: they were for the old policy's names), in one JSON patch that
// first tests the object's sandbox id, so a same-named object of another
// sandbox is never changed. The object is where the policy lives: a
// restarted paddock, or a replica taking the sandbox over, finds it there,
// the resolver of any replica reads it, and the network plugin enforces it
// on the running Pod (on connections it has not yet allowed: a plugin may
// keep an allowed connection's conntrack entry).
func (d *Driver) UpdateEgress(ctx context.Context, id string, policy *sandbox.NetworkPolicy) error {
	if err := ocispec.CheckID(id); err != nil {
		return err
	}
	np, err := egressPolicy(d.meta(id), policy, d.cfg.DNS, nil)
	if err != nil {
		return err
	}
	annotation := func(key string) string { return "/metadata/annotations/" + jsonPointerEscape(key) }
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": annotation(annotationID), "value": id},
		{"op": "replace", "path": "/spec", "value": np.Spec},
		// add: sets the member whether or not it is there.
		{"op": "add", "path": annotation(annotationEgress), "value": np.Annotations[annotationEgress]},
		{"op": "add", "path": annotation(annotationResolved), "value": np.Annotations[annotationResolved]},
	})
	if err != nil {
		return fmt.Errorf("kubernetes: network policy patch of %s: %w", id, err)
	}
	_, err = d.cfg.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace).Patch(ctx, podName(id), types.JSONPatchType, patch, metav1.PatchOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s has no network policy", id)
	case err != nil:
		return fmt.Errorf("kubernetes: update the network policy of %s: %w", id, apiErr(err))
	}
	return nil
}

// jsonPointerEscape escapes s as one token of a JSON pointer (RFC 6901).
func jsonPointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// within reports whether prefix p lies inside q (same family).
func within(p, q netip.Prefix) bool {
	return p.Addr().Is4() == q.Addr().Is4() && p.Bits() >= q.Bits() && q.Contains(p.Addr())
}

// resourceQuantity is n in base units, or thousandths with suffix "m".
func resourceQuantity(n int64, suffix string) resource.Quantity {
	if suffix == "m" {
		return *resource.NewMilliQuantity(n, resource.DecimalSI)
	}
	return *resource.NewQuantity(n, resource.BinarySI)
}
