// Package netns gives each sandbox its own network: a network namespace
// pinned under paddock's data dir, a veth pair with a /30 from a private pool,
// an egress policy enforced with nftables inside the sandbox's namespace, and
// a per-sandbox DNS resolver that turns allowed domain names into allowed
// addresses.
//
// # Layout
//
// A sandbox's namespace is pinned by a bind mount at <DataDir>/netns/<id>
// (not /run/netns, so nothing else on the host manages or lists it); its
// state (address slot, policy) sits beside it in <id>.json. The host end of
// the veth ("pd" + 4 hex digits naming this data dir + 8 of sha256(id), so
// two paddock instances never take each other's veths for orphans) gets the
// /30's first address,
// the sandbox end (eth0) the second, with a default route via the host end.
// On start, New re-adopts every pinned namespace it finds, so addresses
// survive a paddock restart; a pin without a state file is read back from
// the namespace's eth0.
//
// Without Config.NAT the package never touches the host's routing, sysctls
// or nftables ruleset, and a sandbox's allowed traffic reaches nothing past
// the host: forwarding and NAT of the pool are then the operator's business.
// Everything it programs lives inside the sandbox's namespace (rules, sets)
// or on the host end of the veth (an address, and the resolver's sockets
// bound to that address).
//
// # NAT (opt-in)
//
// With Config.NAT, New changes the host-side namespace (the real host in
// production) in two ways: it sets net.ipv4.ip_forward=1, and it replaces,
// atomically and as a whole, a table of its own, "ip paddock-nat":
//
//   - chain postrouting (nat) masquerades packets from the pool that leave
//     through any interface other than this instance's veths;
//   - chain forward (filter, policy accept) accepts pool → outside and the
//     established/related replies, and drops everything else forwarded into
//     the pool or out of this instance's veths, so turning forwarding on does
//     not let a neighbour that routes the pool via this host reach sandbox
//     ports around the port proxy.
//
// NAT only makes traffic routable: each sandbox's output chain (below) has
// decided already, so deny-all stays deny-all. An accept in paddock-nat does
// not override another table: a base chain on the forward hook with a drop
// policy (Docker's FORWARD, a host firewall) still drops the pool's packets,
// and the operator must allow the pool there. Close leaves the table (running
// sandboxes keep their connections); a New without NAT removes it but leaves
// ip_forward as it is, since paddock cannot tell who else relies on it. The
// table's name is fixed, so only one NAT-enabled instance per host namespace.
//
// # Egress policy and precedence
//
// The output chain of table "inet paddock" in the sandbox's namespace decides,
// first match wins:
//
//  1. loopback (oif lo) is accepted, whatever the policy;
//  2. packets in the reply direction of a connection opened *into* the
//     sandbox (the host reaching a sandbox port) are accepted;
//  3. DNS (UDP and TCP 53) to paddock's resolver on the host end is accepted;
//  4. refused always, the deny sets:
//     - whatever the operator says: every address of the host-side
//     namespace (kept current, see below), the whole pool (other sandboxes;
//     the sandbox's own address goes over lo), 127/8 and ::1 off loopback,
//     IPv4-mapped IPv6, and netguard.Reserved (0/8, 169.254/16 and
//     fe80::/10, the clouds' metadata addresses outside them such as
//     Alibaba's 100.100.100.200, multicast, 240/4 and broadcast, NAT64);
//     - Config.BlockCIDRs, the operator's own list;
//     - netguard.Private (RFC 1918, 100.64/10, 198.18/15, 192.0.0.0/24,
//     fc00::/7 ...) but the parts Config.AllowPrivate opens;
//     - the policy's DenyCIDRs;
//  5. the mode: allow-all accepts; deny-all drops; custom accepts
//     established flows (so a long download outlives its DNS entry's TTL),
//     AllowCIDRs, and the addresses the resolver handed out for
//     AllowDomains; everything else is dropped.
//
// So deny beats allow: a DenyCIDR inside an AllowCIDR, an operator-blocked
// range inside a policy's AllowCIDRs, or an allowed domain that resolves
// into a denied range (DNS rebinding to an internal address), stays refused.
// Config.AllowPrivate only takes ranges out of the default refusal: the
// policy still decides about them. Because step 4 precedes the established
// rule, an Update that adds a DenyCIDR or switches to deny-all also cuts
// connections already open; removing a domain or an AllowCIDR in custom mode
// stops new connections at once but lets already established ones finish.
//
// # The host's addresses change
//
// The host side gains and loses addresses while sandboxes run (a new NIC,
// docker0, a VPN, DHCP). The Manager subscribes to netlink's address
// notifications in the host-side namespace and, when an address outside the
// static deny ranges comes or goes, rewrites every sandbox's deny sets (one
// atomic batch each, resolved addresses kept); a burst of changes is
// gathered for 50 ms first. Until then a new public address of the host is
// reachable; private and link-local ones are refused by the static ranges
// anyway. Creating a sandbox reads the cached list instead of dumping the
// host's addresses. On start, New rewrites the rules of every network it
// re-adopts, so a changed BlockCIDRs or AllowPrivate applies to running
// sandboxes too (a network whose state file was lost is enforced deny-all,
// as it is reported, until its policy is set again).
//
// # Domain rules: a DNS resolver, not an SNI proxy
//
// Domain rules are enforced through DNS: the sandbox's resolv.conf points at
// a resolver listening on the host end of its own veth (Network.DNS, UDP and
// TCP port 53, bound to that one address, so nothing else on the host is
// exposed). It answers REFUSED for names the policy does not allow, forwards
// the others upstream and, before replying, removes from the answer every
// address the sandbox may not reach (the deny sets above: A and AAAA records,
// glue, SVCB/HTTPS address hints); if that leaves none of the answer's
// addresses (a name, or a CNAME chain, leading only into the LAN: DNS
// rebinding), the answer is REFUSED. In custom mode it then adds every
// remaining A/AAAA of the answer (CNAME targets included) to a set with
// timeout max(TTL, 30 s) that the output chain accepts. This works for every
// protocol (not only TLS) and needs no certificate tricks, but it has limits
// an SNI/HTTP proxy would not:
//
//   - it allows addresses, not names: an IP shared by many names (CDNs,
//     virtual hosting) lets the sandbox reach every name on it, including
//     with a forged SNI or Host header, and DoH/DoT to an allowed address
//     bypasses the resolver's view (but only reaches allowed addresses);
//   - hard-coded addresses that were never resolved need AllowCIDRs;
//   - a client that caches DNS longer than the set's timeout loses access
//     until it resolves again; established flows are not affected;
//   - "*.example.com" matches subdomains only; list "example.com" too for
//     the apex;
//   - while paddock is restarting, the resolver is down (lookups time out;
//     rules in the namespace keep applying).
//
// Each resolver answers at most Config.DNSRate queries a second (a token
// bucket of Config.DNSBurst) and has at most Config.DNSMaxInFlight upstream
// at once (all resolvers together 1024); past either a query is REFUSED at
// once, so a flood costs paddock neither goroutines nor sockets that wait.
// Its TCP side holds at most 16 connections. Queries go upstream through a
// pool of UDP sockets shared by all resolvers (TCP only for truncated
// answers), each used by one query at a time and retired after 100 queries;
// every query leaves with an ID of paddock's choosing and its answer must
// match the question. There is no cache: each sandbox's queries reach the
// upstream servers, within its rate.
//
// # Kubernetes Pods
//
// Two helpers serve cmd/paddock-runc on Kubernetes nodes, where the
// runtime, not paddock, makes a Pod's network namespace: ForUserNS readies
// it for containers in a user namespace that does not own it, and
// GuardNode installs the node guard (NodeGuard), table inet paddock-node,
// which keeps the Pod from its node's own addresses as the deny sets keep
// a sandbox from its host.
//
// # Requirements on the caller
//
// The sandbox must not hold CAP_NET_ADMIN (it could rewrite its own rules)
// nor CAP_NET_RAW (AF_PACKET sockets bypass netfilter's output hook).
package netns
