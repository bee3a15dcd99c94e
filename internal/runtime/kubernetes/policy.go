package kubernetes

import (
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

type policyObject = *networkingv1.NetworkPolicy

// Egress modes, as internal/netns names them.
const (
	modeAllowAll = "allow-all"
	modeDenyAll  = "deny-all"
	modeCustom   = "custom"
)

// networkPolicy is the sandbox's egress as a NetworkPolicy selecting its
// Pod alone. Policies add up, so allow-all is a policy too (one that
// allows everything): it wins over a namespace's default deny. nil is
// deny-all, as a runc sandbox without a network has none. A custom
// policy's CIDRs become ipBlocks; its domains would need the cluster's
// network plugin to resolve names (no NetworkPolicy field does), so they
// are refused.
func networkPolicy(meta metav1.ObjectMeta, p *sandbox.NetworkPolicy) (policyObject, error) {
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
	switch mode {
	case modeDenyAll:
		if p != nil && (len(p.AllowCIDRs) > 0 || len(p.AllowDomains) > 0) {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_network_policy", "deny-all takes no allow list")
		}
	case modeAllowAll:
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{}}
	case modeCustom:
		if len(p.AllowDomains) > 0 {
			return nil, sandbox.Errorf(sandbox.ErrUnsupported, "no_domain_policy", "the kubernetes driver cannot allow egress by domain yet, only by CIDR")
		}
		var peers []networkingv1.NetworkPolicyPeer
		for _, allow := range p.AllowCIDRs {
			block := &networkingv1.IPBlock{CIDR: allow.Masked().String()}
			for _, deny := range p.DenyCIDRs {
				// NetworkPolicy takes exceptions inside their block only.
				if deny.Addr().Is4() == allow.Addr().Is4() && deny.Bits() > allow.Bits() && allow.Contains(deny.Addr()) {
					block.Except = append(block.Except, deny.Masked().String())
				}
			}
			peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: block})
		}
		if len(peers) > 0 {
			np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: peers}}
		}
	default:
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_network_policy", "unknown egress mode %q", mode)
	}
	return np, nil
}

// resourceQuantity is n in base units, or thousandths with suffix "m".
func resourceQuantity(n int64, suffix string) resource.Quantity {
	if suffix == "m" {
		return *resource.NewMilliQuantity(n, resource.DecimalSI)
	}
	return *resource.NewQuantity(n, resource.BinarySI)
}
