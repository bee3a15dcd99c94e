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
//  4. refused always: every address of the host-side namespace, the whole
//     pool (other sandboxes; the sandbox's own address goes over lo), 0/8,
//     127/8 and ::1 off loopback, 169.254/16 and fe80::/10 (link-local and
//     cloud metadata), multicast and broadcast, Config.BlockCIDRs, and then
//     the policy's DenyCIDRs;
//  5. the mode: allow-all accepts; deny-all drops; custom accepts
//     established flows (so a long download outlives its DNS entry's TTL),
//     AllowCIDRs, and the addresses the resolver handed out for
//     AllowDomains; everything else is dropped.
//
// So deny beats allow: a DenyCIDR inside an AllowCIDR, or an allowed domain
// that resolves into a denied range (DNS rebinding to an internal address),
// stays refused. Because step 4 precedes the established rule, an Update
// that adds a DenyCIDR or switches to deny-all also cuts connections already
// open; removing a domain or an AllowCIDR in custom mode stops new
// connections at once but lets already established ones finish.
//
// # Domain rules: a DNS resolver, not an SNI proxy
//
// Domain rules are enforced through DNS: the sandbox's resolv.conf points at
// a resolver listening on the host end of its own veth (Network.DNS, UDP and
// TCP port 53, bound to that one address, so nothing else on the host is
// exposed). It answers REFUSED for names the policy does not allow, forwards
// the others upstream and, before replying, adds every A/AAAA in the answer
// (CNAME targets included) to a set with timeout max(TTL, 30 s) that the
// output chain accepts. This works for every protocol (not only TLS) and
// needs no certificate tricks, but it has limits an SNI/HTTP proxy would not:
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
// # Requirements on the caller
//
// The sandbox must not hold CAP_NET_ADMIN (it could rewrite its own rules)
// nor CAP_NET_RAW (AF_PACKET sockets bypass netfilter's output hook).
package netns
