package vercel

import (
	"net/netip"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Network policy modes, Vercel's and paddock's (the same words).
const (
	modeAllowAll = "allow-all"
	modeDenyAll  = "deny-all"
	modeCustom   = "custom"
)

// policyFromRequest turns any request form of a network policy into
// paddock's: {mode: allow-all|deny-all}, v2's {allow: [domains], subnets},
// or v1's {mode: custom, allowedDomains, allowedCIDRs, deniedCIDRs}.
// Header injection, forwarding and direct responses need a TLS-terminating
// egress proxy paddock does not have: they are refused, not dropped.
func policyFromRequest(p *policyRequest) (*PolicyConfig, error) {
	if p == nil {
		return nil, nil
	}
	if len(p.InjectionRules) > 0 || len(p.ForwardRules) > 0 {
		return nil, errPolicyRules
	}
	switch p.Mode {
	case modeAllowAll, modeDenyAll:
		if p.Allow != nil || p.Subnets != nil || len(p.AllowedDomains) > 0 || len(p.AllowedCIDRs) > 0 || len(p.DeniedCIDRs) > 0 {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "bad_request", "Invalid request: network policy mode %s takes no rules", p.Mode)
		}
		return &PolicyConfig{Mode: p.Mode}, nil
	case modeCustom:
		out := &PolicyConfig{Mode: modeCustom, AllowDomains: p.AllowedDomains, AllowCIDRs: p.AllowedCIDRs, DenyCIDRs: p.DeniedCIDRs}
		return out, checkCIDRs(out)
	case "":
	default:
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "bad_request", "Invalid request: unknown network policy mode %q", p.Mode)
	}
	out := &PolicyConfig{Mode: modeCustom}
	switch allow := p.Allow.(type) {
	case nil:
	case []any:
		for _, d := range allow {
			s, ok := d.(string)
			if !ok {
				return nil, sandbox.Errorf(sandbox.ErrInvalid, "bad_request", "Invalid request: networkPolicy.allow must list domain names")
			}
			out.AllowDomains = append(out.AllowDomains, s)
		}
	case map[string]any:
		for domain, rules := range allow {
			if list, ok := rules.([]any); !ok || len(list) > 0 {
				return nil, errPolicyRules
			}
			out.AllowDomains = append(out.AllowDomains, domain)
		}
	default:
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "bad_request", "Invalid request: networkPolicy.allow must be a list or an object")
	}
	if p.Subnets != nil {
		out.AllowCIDRs, out.DenyCIDRs = p.Subnets.Allow, p.Subnets.Deny
	}
	return out, checkCIDRs(out)
}

var errPolicyRules = sandbox.Errorf(sandbox.ErrInvalid, "unsupported_option",
	"network policy rules (header transforms, forwardURL, direct responses, injection rules) are not supported by paddock: allow domains and subnets only")

func checkCIDRs(p *PolicyConfig) error {
	for _, list := range [][]string{p.AllowCIDRs, p.DenyCIDRs} {
		for _, c := range list {
			if _, err := netip.ParsePrefix(c); err != nil {
				return sandbox.Errorf(sandbox.ErrInvalid, "bad_request", "Invalid request: %q is not a CIDR", c)
			}
		}
	}
	return nil
}

// toSandboxPolicy converts a checked policy for node.
func toSandboxPolicy(p *PolicyConfig) *sandbox.NetworkPolicy {
	if p == nil {
		return nil
	}
	out := &sandbox.NetworkPolicy{Mode: p.Mode, AllowDomains: p.AllowDomains}
	for _, c := range p.AllowCIDRs {
		out.AllowCIDRs = append(out.AllowCIDRs, netip.MustParsePrefix(c).Masked())
	}
	for _, c := range p.DenyCIDRs {
		out.DenyCIDRs = append(out.DenyCIDRs, netip.MustParsePrefix(c).Masked())
	}
	return out
}

// wirePolicyOf is the response form of the policy in force.
func wirePolicyOf(p *sandbox.NetworkPolicy) *wirePolicy {
	if p == nil {
		return nil
	}
	out := &wirePolicy{Mode: p.Mode}
	if p.Mode != modeCustom {
		return out
	}
	out.AllowedDomains = append([]string{}, p.AllowDomains...)
	for _, c := range p.AllowCIDRs {
		out.AllowedCIDRs = append(out.AllowedCIDRs, c.String())
	}
	for _, c := range p.DenyCIDRs {
		out.DeniedCIDRs = append(out.DeniedCIDRs, c.String())
	}
	return out
}

func wirePolicyOfConfig(p *PolicyConfig) *wirePolicy {
	if p == nil {
		return nil
	}
	return wirePolicyOf(toSandboxPolicy(p))
}
