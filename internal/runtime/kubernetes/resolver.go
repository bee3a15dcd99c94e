package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/paddock-dev/paddock/internal/dnsfilter"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// DNSConfig configures the driver's resolver (Config.DNS): the Pods'
// only nameserver, which answers a sandbox only the names its policy
// allows and, for a custom policy's domains, adds each answer's addresses
// to the sandbox's NetworkPolicy before it answers, so that the connect
// right after the lookup passes. Every replica runs one; any of them may
// answer any sandbox of the namespace, since the NetworkPolicy object is
// where the policy and the allowed addresses are kept.
type DNSConfig struct {
	// Address is the nameserver every Pod is given (dnsPolicy None), on
	// port 53: where the resolver's sockets are reached, e.g. the
	// ClusterIP of a Service in front of paddock's Pods. Required.
	Address netip.Addr
	// PeerNamespace and PeerLabels, when set, select the Pods that serve
	// Address behind a Service (paddock's own), on PeerPort: a Service's
	// translation happens before the network plugin judges a packet, so
	// each sandbox's NetworkPolicy must allow those Pods, besides Address.
	PeerNamespace string
	PeerLabels    map[string]string
	PeerPort      int
	// Upstream are the servers the resolver asks, in turn. Required (the
	// daemon's default: the nameservers of its /etc/resolv.conf, in a Pod
	// the cluster's DNS).
	Upstream []netip.AddrPort
	// Rate and Burst bound the queries one sandbox gets answered (a token
	// bucket), MaxInFlight those it has upstream at once; past either it
	// gets REFUSED. Defaults: dnsfilter's, as for runc sandboxes.
	Rate        float64
	Burst       int
	MaxInFlight int
	// MaxAddresses bounds the resolved addresses a sandbox's NetworkPolicy
	// keeps; the oldest go first. Default 256.
	MaxAddresses int
}

// Resolver limits that are the driver's, not a sandbox's.
const (
	// maxDNSInFlightTotal caps the queries the resolver has upstream at
	// once, all sandboxes together.
	maxDNSInFlightTotal = 1024
	// maxDNSTCPConns caps the resolver's open TCP connections.
	maxDNSTCPConns = 64
	// podCacheTTL is how long the resolver trusts what it learnt of a
	// source address (whose sandbox's Pod has it, or none): a Pod's IP is
	// its until the Pod is gone, and Stop waits for that.
	podCacheTTL = 5 * time.Second
	// maxPodCache bounds that cache; past it, it starts anew.
	maxPodCache = 4096
	// podLookupRate and podLookupBurst bound the Pod lists a flood of
	// queries from addresses not in the cache may cost the API server.
	podLookupRate  = 50
	podLookupBurst = 100
	// limitsIdle is how long a sandbox's rate limiter outlives its last
	// query.
	limitsIdle = time.Minute
	// queryTimeout bounds one query's work: API requests and upstream.
	queryTimeout = 3 * dnsfilter.UpstreamTimeout
	// resolvedRetries bounds the attempts to add addresses to a
	// NetworkPolicy that other writers keep changing.
	resolvedRetries = 5
)

func (c *DNSConfig) withDefaults() (*DNSConfig, error) {
	out := *c
	if out.Rate == 0 {
		out.Rate = dnsfilter.DefaultRate
	}
	if out.Burst == 0 {
		out.Burst = dnsfilter.DefaultBurst
	}
	if out.MaxInFlight == 0 {
		out.MaxInFlight = dnsfilter.DefaultMaxInFlight
	}
	if out.MaxAddresses == 0 {
		out.MaxAddresses = 256
	}
	switch {
	case !out.Address.IsValid():
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: DNS.Address is required")
	case len(out.Upstream) == 0:
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: DNS.Upstream is required")
	case out.Rate < 0 || out.Burst < 0 || out.MaxInFlight < 0 || out.MaxAddresses < 0:
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: DNS limits must not be negative")
	case len(out.PeerLabels) > 0 && (out.PeerNamespace == "" || out.PeerPort <= 0 || out.PeerPort > 65535):
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: DNS.PeerLabels need PeerNamespace and a PeerPort")
	}
	for _, u := range out.Upstream {
		if !u.IsValid() || u.Port() == 0 {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: invalid upstream DNS server %v", u)
		}
	}
	return &out, nil
}

// rule is the egress rule that lets a Pod ask the resolver, and nothing
// else, for names: Address on port 53, and the Pods behind it on theirs.
func (c *DNSConfig) rule() networkingv1.NetworkPolicyEgressRule {
	udp, tcp, port := corev1.ProtocolUDP, corev1.ProtocolTCP, intstr.FromInt32(53)
	ports := []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &port}, {Protocol: &tcp, Port: &port}}
	r := networkingv1.NetworkPolicyEgressRule{
		To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(c.Address, c.Address.BitLen()).String()}}},
		Ports: ports,
	}
	if len(c.PeerLabels) > 0 {
		r.To = append(r.To, networkingv1.NetworkPolicyPeer{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": c.PeerNamespace}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: c.PeerLabels},
		})
		if c.PeerPort != 53 {
			peer := intstr.FromInt32(int32(c.PeerPort))
			r.Ports = append(r.Ports, networkingv1.NetworkPolicyPort{Protocol: &udp, Port: &peer}, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &peer})
		}
	}
	return r
}

// resolver is the driver's DNS server (see DNSConfig). Made by New when
// the driver has a DNSConfig, serving once Driver.ServeDNS gives it
// sockets; Driver.Close stops it.
type resolver struct {
	d     *Driver
	cfg   *DNSConfig
	up    *dnsfilter.Upstream
	slots chan struct{} // the driver's upstream slots: maxDNSInFlightTotal
	// lookups limits the Pod lists of sources not in the cache.
	lookups *rate.Limiter

	mu      sync.Mutex
	pods    map[netip.Addr]podEntry   // guarded by mu: source address -> sandbox
	limits  map[string]*sandboxLimits // guarded by mu: sandbox id -> its limits
	servers []*dns.Server             // guarded by mu
	closed  bool                      // guarded by mu
	wg      sync.WaitGroup
}

// podEntry is what a source address was found to be: a sandbox's Pod
// (id), or none ("").
type podEntry struct {
	id      string
	expires time.Time
}

// sandboxLimits are one sandbox's query limits, shared by its queries.
type sandboxLimits struct {
	rate     *rate.Limiter
	slots    chan struct{}
	lastUsed time.Time // guarded by resolver.mu
}

func newResolver(d *Driver, cfg *DNSConfig) *resolver {
	return &resolver{d: d, cfg: cfg, up: dnsfilter.NewUpstream(cfg.Upstream, nil), slots: make(chan struct{}, maxDNSInFlightTotal),
		lookups: rate.NewLimiter(podLookupRate, podLookupBurst), pods: map[netip.Addr]podEntry{}, limits: map[string]*sandboxLimits{}}
}

// ServeDNS serves the driver's resolver on pc (UDP) and ln (TCP), the
// sockets at DNSConfig.Address (or behind it), until Close, which closes
// them. An error if the driver has no DNSConfig, or is closed.
func (d *Driver) ServeDNS(pc net.PacketConn, ln net.Listener) error {
	r := d.dns
	if r == nil {
		return sandbox.Errorf(sandbox.ErrInvalid, "k8s_config", "kubernetes driver: no DNS configured")
	}
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	udp := &dns.Server{PacketConn: pc, Handler: r, NotifyStartedFunc: notify}
	tcp := &dns.Server{Listener: netutil.LimitListener(ln, maxDNSTCPConns), Handler: r, NotifyStartedFunc: notify,
		ReadTimeout: 5 * time.Second}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errors.New("kubernetes driver: closed")
	}
	r.servers = append(r.servers, udp, tcp)
	for _, s := range []*dns.Server{udp, tcp} {
		r.wg.Go(func() {
			if err := s.ActivateAndServe(); err != nil {
				r.d.log.Warn("resolver stopped", "err", err)
			}
		})
	}
	r.mu.Unlock()
	// Until both serve: miekg/dns refuses to shut down a server that has
	// not started, so close would race them.
	<-started
	<-started
	return nil
}

// close stops the servers, waits for their goroutines and closes the
// upstream sockets.
func (r *resolver) close() {
	r.mu.Lock()
	r.closed = true
	servers := r.servers
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout+time.Second)
	defer cancel()
	for _, s := range servers {
		s.ShutdownContext(ctx)
	}
	r.wg.Wait()
	r.up.Close()
}

// ServeDNS answers one query of a sandbox, found by the query's source
// address (its Pod IP): REFUSED for an address that is no sandbox of the
// namespace, past the sandbox's rate or in-flight limit, or unless its
// policy allows the name (dnsfilter.AllowsName, as for runc sandboxes);
// else the upstream's answer without the addresses the sandbox may never
// reach (REFUSED if that leaves none), whose addresses a custom policy's
// NetworkPolicy allows first.
func (r *resolver) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	reply := func(rcode int) {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		w.WriteMsg(m)
	}
	src := sourceAddr(w.RemoteAddr())
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	id, err := r.sandboxAt(ctx, src)
	if errors.Is(err, errLookupLimit) {
		r.d.log.Debug("resolver: refused: pod lookup rate limit", "source", src)
		reply(dns.RcodeRefused)
		return
	}
	if err != nil {
		r.d.log.Warn("resolver: find the sandbox of a query", "source", src, "err", err)
		reply(dns.RcodeServerFailure)
		return
	}
	if id == "" {
		r.d.log.Debug("resolver: refused a query of no sandbox", "source", src)
		reply(dns.RcodeRefused)
		return
	}
	log := r.d.log.With("sandbox", id)
	lim := r.limitsOf(id)
	if !lim.rate.Allow() {
		log.Debug("resolver: refused: query rate limit")
		reply(dns.RcodeRefused)
		return
	}
	name := dnsfilter.QueryName(req)
	if name == "" {
		reply(dns.RcodeFormatError)
		return
	}
	np, policy, err := r.d.egressOf(ctx, id)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		reply(dns.RcodeRefused)
		return
	case err != nil:
		log.Warn("resolver: read the sandbox's policy", "err", err)
		reply(dns.RcodeServerFailure)
		return
	case !allowsName(policy, name):
		log.Debug("resolver: refused", "name", name)
		reply(dns.RcodeRefused)
		return
	}
	release, ok := r.acquire(lim)
	if !ok {
		log.Debug("resolver: refused: too many queries in flight", "name", name)
		reply(dns.RcodeRefused)
		return
	}
	defer release()
	network := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	resp, err := r.up.Exchange(ctx, req, network)
	if err != nil {
		// Debug: the names are the sandbox's, and so is a flood of them.
		log.Debug("resolver: upstream failed", "name", name, "err", err)
		reply(dns.RcodeServerFailure)
		return
	}
	refused := refusedRanges(policy)
	addrs, _, dropped, allBlocked := dnsfilter.FilterAnswer(resp, func(a netip.Addr) bool {
		// IPv4-mapped IPv6 too: no NetworkPolicy block may name one.
		return a.Is4In6() || slices.ContainsFunc(refused, func(p netip.Prefix) bool { return p.Contains(a) })
	})
	if dropped > 0 {
		log.Debug("resolver: dropped blocked addresses", "name", name, "dropped", dropped, "kept", len(addrs))
	}
	if allBlocked {
		// Only blocked addresses: DNS rebinding into the cluster's or the
		// node's networks, or a name not for sandboxes.
		reply(dns.RcodeRefused)
		return
	}
	if policy != nil && policy.Mode == modeCustom && len(addrs) > 0 {
		err := r.d.allowResolved(ctx, id, name, np, addrs)
		if errors.Is(err, errNameNotAllowed) || errors.Is(err, sandbox.ErrNotFound) {
			reply(dns.RcodeRefused)
			return
		}
		if err != nil {
			// Better no answer than one the network plugin then drops.
			log.Warn("resolver: allow resolved addresses", "name", name, "err", err)
			reply(dns.RcodeServerFailure)
			return
		}
	}
	resp.Id = req.Id
	w.WriteMsg(resp)
}

func sourceAddr(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	}
	addr, _ := netip.AddrFromSlice(ip)
	return addr.Unmap()
}

// allowsName reports whether the policy (nil: deny-all) lets its sandbox
// resolve name.
func allowsName(p *sandbox.NetworkPolicy, name string) bool {
	return p != nil && dnsfilter.AllowsName(p.Mode, p.AllowDomains, name)
}

// sandboxAt is the id of the sandbox whose Pod has the address src in the
// driver's namespace, "" if none; cached for podCacheTTL. errLookupLimit
// past the driver's rate of lookups.
func (r *resolver) sandboxAt(ctx context.Context, src netip.Addr) (string, error) {
	now := time.Now()
	r.mu.Lock()
	e, ok := r.pods[src]
	r.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.id, nil
	}
	if !src.IsValid() {
		return "", nil
	}
	if !r.lookups.Allow() {
		return "", errLookupLimit
	}
	// The field selector spares the listing of every Pod; the check below
	// is what decides (a client that ignores the selector lists them all).
	pods, err := r.d.cfg.Client.CoreV1().Pods(r.d.cfg.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labelManagedBy + "=" + managedBy, FieldSelector: "status.podIP=" + src.String()})
	if err != nil {
		return "", fmt.Errorf("kubernetes: list pods at %s: %w", src, apiErr(err))
	}
	id := ""
	for i := range pods.Items {
		p := &pods.Items[i]
		if pid := p.Annotations[annotationID]; sandbox.ValidID(pid) && podName(pid) == p.Name && podHasIP(p, src) {
			id = pid
			break
		}
	}
	r.mu.Lock()
	if len(r.pods) >= maxPodCache {
		clear(r.pods)
	}
	r.pods[src] = podEntry{id: id, expires: now.Add(podCacheTTL)}
	r.mu.Unlock()
	return id, nil
}

func podHasIP(p *corev1.Pod, a netip.Addr) bool {
	if p.Status.PodIP == a.String() {
		return true
	}
	return slices.ContainsFunc(p.Status.PodIPs, func(ip corev1.PodIP) bool { return ip.IP == a.String() })
}

// limitsOf returns the sandbox's limits, made on its first query; those
// idle for limitsIdle are dropped as others are made.
func (r *resolver) limitsOf(id string) *sandboxLimits {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.limits[id]
	if !ok {
		for other, ol := range r.limits {
			if now.Sub(ol.lastUsed) > limitsIdle && len(ol.slots) == 0 {
				delete(r.limits, other)
			}
		}
		l = &sandboxLimits{rate: rate.NewLimiter(rate.Limit(r.cfg.Rate), r.cfg.Burst), slots: make(chan struct{}, r.cfg.MaxInFlight)}
		r.limits[id] = l
	}
	l.lastUsed = now
	return l
}

// acquire takes one of the sandbox's and one of the driver's upstream
// slots, without waiting: a sandbox that floods gets REFUSED, it does not
// queue work in paddock.
func (r *resolver) acquire(l *sandboxLimits) (release func(), ok bool) {
	select {
	case l.slots <- struct{}{}:
	default:
		return nil, false
	}
	select {
	case r.slots <- struct{}{}:
	default:
		<-l.slots
		return nil, false
	}
	return func() { <-r.slots; <-l.slots }, true
}

// errLookupLimit: too many sources not in the cache at once.
var errLookupLimit = errors.New("too many pod lookups")

// errNameNotAllowed: the sandbox's policy changed under a query and no
// longer allows its name.
var errNameNotAllowed = errors.New("the policy does not allow the name")

// egressOf reads the sandbox's NetworkPolicy and the policy it holds (nil:
// deny-all); ErrNotFound if the sandbox has none.
func (d *Driver) egressOf(ctx context.Context, id string) (policyObject, *sandbox.NetworkPolicy, error) {
	np, err := d.cfg.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace).Get(ctx, podName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && np.Annotations[annotationID] != id) {
		return nil, nil, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s has no network policy", id)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes: get the network policy of %s: %w", id, apiErr(err))
	}
	raw, ok := np.Annotations[annotationEgress]
	if !ok {
		// Made by a paddock before the resolver: nothing to resolve by.
		return np, nil, nil
	}
	var p *sandbox.NetworkPolicy
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return nil, nil, fmt.Errorf("kubernetes: the network policy of %s: annotation %s: %w", id, annotationEgress, err)
	}
	return np, p, nil
}

// allowResolved adds addrs, the answer for name, to the allowed addresses
// of the sandbox's NetworkPolicy np (as read for this query), unless all
// are there already and not about to be dropped. Its write is conditional
// on the resourceVersion it read, so a concurrent change, an
// UpdateEgress or another replica's resolver, fails the write; it then
// reads the object again and starts over, the name checked against the
// policy it holds now (errNameNotAllowed if no longer allowed).
func (d *Driver) allowResolved(ctx context.Context, id, name string, np policyObject, addrs []netip.Addr) error {
	nps := d.cfg.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace)
	for attempt := 1; ; attempt++ {
		var policy *sandbox.NetworkPolicy
		if raw, ok := np.Annotations[annotationEgress]; ok {
			if err := json.Unmarshal([]byte(raw), &policy); err != nil {
				return fmt.Errorf("kubernetes: the network policy of %s: annotation %s: %w", id, annotationEgress, err)
			}
		}
		if !allowsName(policy, name) {
			return errNameNotAllowed
		}
		if policy.Mode != modeCustom {
			return nil // allow-all reaches them already
		}
		var resolved []netip.Addr
		if raw, ok := np.Annotations[annotationResolved]; ok {
			if err := json.Unmarshal([]byte(raw), &resolved); err != nil {
				return fmt.Errorf("kubernetes: the network policy of %s: annotation %s: %w", id, annotationResolved, err)
			}
		}
		merged, changed := addResolved(resolved, addrs, d.cfg.DNS.MaxAddresses)
		if !changed {
			return nil
		}
		want, err := egressPolicy(d.meta(id), policy, d.cfg.DNS, merged)
		if err != nil {
			return err
		}
		// A merge patch: the driver may patch NetworkPolicies (UpdateEgress),
		// and the resourceVersion in it is the write's condition.
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": np.ResourceVersion,
				"annotations": map[string]string{annotationResolved: want.Annotations[annotationResolved]}},
			"spec": map[string]any{"egress": want.Spec.Egress}, // the list as a whole
		})
		if err != nil {
			return fmt.Errorf("kubernetes: network policy patch of %s: %w", id, err)
		}
		_, err = nps.Patch(ctx, np.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt == resolvedRetries {
			return fmt.Errorf("kubernetes: allow the addresses of %s for %s: %w", name, id, apiErr(err))
		}
		if np, _, err = d.egressOf(ctx, id); err != nil {
			return err
		}
	}
}

// addResolved is old with addrs added at its end (newest), keeping its
// newest limit elements at most, and whether that differs from old. An
// address already in old moves to the end only when something changes or
// it is among the quarter of limit to be dropped first: a name looked up
// again keeps its addresses, at the cost of a write now and then.
func addResolved(old, addrs []netip.Addr, limit int) ([]netip.Addr, bool) {
	atRisk := len(old) - limit*3/4
	changed := false
	for _, a := range addrs {
		if i := slices.Index(old, a); i < 0 || i < atRisk {
			changed = true
		}
	}
	if !changed {
		return old, false
	}
	out := slices.DeleteFunc(slices.Clone(old), func(a netip.Addr) bool { return slices.Contains(addrs, a) })
	for _, a := range addrs {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, true
}
