package upstream

// The destination policy: which addresses feedgate refuses to dial, applied
// by the Dialer's Guard to every address actually dialed, after name
// resolution.
//
// Two classes of refusal:
//
//   - always: loopback, link-local (which holds most cloud metadata
//     services, 169.254.169.254 among them), unspecified and 0.0.0.0/8,
//     multicast, the limited broadcast, the cloud metadata and platform
//     services that live outside link-local, the local-use NAT64 prefix,
//     the deprecated site-local fec0::/10 (RFC 3879: nothing on the
//     Internet is there, and a network that kept it uses it for its own
//     hosts), and feedgate's own listeners. Nothing legitimate behind a forward
//     proxy lives there, and reaching them is what an attacker who can
//     name a URL wants. A future allow-list must never lift these.
//   - only with deny_private: private and other internal space (RFC 1918,
//     100.64.0.0/10, fc00::/7) and
//     space that is not globally routable (documentation, benchmarking,
//     240.0.0.0/4, IPv6 outside 2000::/3). The Internet never routes these
//     to anyone, so a network that uses them uses them internally, like
//     RFC 1918 space: 198.18.0.0/15 by fake-IP resolvers, 240.0.0.0/4 by
//     some clusters. Without deny_private internal destinations are
//     allowed, and so are these.
//
// An IPv6 address that carries an IPv4 address (IPv4-mapped,
// IPv4-compatible, IPv4-translated, NAT64 64:ff9b::/96, 6to4, Teredo) is
// judged by the IPv4 rules applied to what it carries: a translator or
// tunnel delivers the packets to that IPv4 address, so 64:ff9b::7f00:1 is
// as much loopback as 127.0.0.1. Prefixes whose IPv4 position only the
// local network knows (network-specific NAT64 prefixes, 6rd, ISATAP) cannot
// be decoded here; deny_private and the translator's own policy are the
// defence there.

import (
	"fmt"
	"net/netip"
)

// DestinationError is a dial refused by the destination policy.
type DestinationError struct {
	Addr   netip.AddrPort
	Reason string // e.g. "loopback", "link-local", "private", "feedgate itself"
}

func (e *DestinationError) Error() string {
	return fmt.Sprintf("destination %s refused: %s address", e.Addr, e.Reason)
}

// Reasons for a refusal: a short, fixed set, quoted in the 403 body
// ("refused: <reason> address"). The metric label is always
// metrics.RejectDestination.
const (
	reasonLoopback    = "loopback"
	reasonLinkLocal   = "link-local"
	reasonUnspecified = "unspecified"
	reasonMulticast   = "multicast"
	reasonBroadcast   = "broadcast"
	reasonMetadata    = "metadata"
	reasonNAT64Local  = "local-use NAT64"
	reasonSelf        = "feedgate itself"
	reasonPrivate     = "private"
	reasonSiteLocal   = "site-local"
	reasonReserved    = "reserved"

	// reasonParent refuses a direct request to a parent proxy's address
	// (see DialHTTP).
	reasonParent = "parent proxy"
)

var (
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")     // RFC 1122 "this network"
	sharedSpace = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598 carrier-grade NAT
	broadcast   = netip.MustParseAddr("255.255.255.255")

	// metadataAddrs are the instance metadata and platform services that
	// hand out credentials or configuration and do not live in
	// link-local space (all of 169.254.0.0/16 and fe80::/10 is refused
	// anyway: AWS, GCP, Azure, OpenStack and most others at
	// 169.254.169.254, ECS at 169.254.170.2, EKS Pod Identity at
	// 169.254.170.23, Tencent at 169.254.0.23, Scaleway at
	// 169.254.42.42). Names such as metadata.google.internal need no entry:
	// what they resolve to is checked.
	metadataAddrs = map[netip.Addr]bool{
		netip.MustParseAddr("100.100.100.200"):    true, // Alibaba Cloud, inside 100.64.0.0/10
		netip.MustParseAddr("192.0.0.192"):        true, // Oracle Cloud (Classic), inside 192.0.0.0/24
		netip.MustParseAddr("168.63.129.16"):      true, // Azure WireServer, a public address
		netip.MustParseAddr("fd00:ec2::254"):      true, // AWS instance metadata over IPv6
		netip.MustParseAddr("fd00:ec2::23"):       true, // AWS EKS Pod Identity Agent over IPv6
		netip.MustParseAddr("fd20:ce::254"):       true, // Google Cloud, IPv6-only instances
		netip.MustParseAddr("fd00:c1::a9fe:a9fe"): true, // Oracle Cloud over IPv6
		netip.MustParseAddr("fd00:42::42"):        true, // Scaleway over IPv6
		netip.MustParseAddr("fd00:a9fe:a9fe::1"):  true, // Akamai (Linode) over IPv6
	}

	// reserved4 is IPv4 space that is not globally routable and not
	// covered by the other rules (IANA special-purpose registry).
	reserved4 = []netip.Prefix{
		netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
		netip.MustParsePrefix("192.0.2.0/24"),    // documentation (TEST-NET-1)
		netip.MustParsePrefix("192.88.99.0/24"),  // deprecated 6to4 relay anycast
		netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
		netip.MustParsePrefix("198.51.100.0/24"), // documentation (TEST-NET-2)
		netip.MustParsePrefix("203.0.113.0/24"),  // documentation (TEST-NET-3)
		netip.MustParsePrefix("240.0.0.0/4"),     // reserved ("class E")
	}

	// globalUnicast6 is where the IPv6 Internet is; outside it, only
	// the forms classified explicitly are dialable at all.
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	// reserved6 is the space inside 2000::/3 that is not globally
	// routable.
	reserved6 = []netip.Prefix{
		netip.MustParsePrefix("2001:2::/48"),   // benchmarking
		netip.MustParsePrefix("2001:10::/28"),  // deprecated ORCHID
		netip.MustParsePrefix("2001:20::/28"),  // ORCHIDv2
		netip.MustParsePrefix("2001:db8::/32"), // documentation
		netip.MustParsePrefix("3fff::/20"),     // documentation (RFC 9637)
	}
	// siteLocal is deprecated (RFC 3879) but still routed inside the
	// networks that kept it; unlike fc00::/7 nothing legitimate behind a
	// forward proxy is addressed there, so it is always refused.
	siteLocal = netip.MustParsePrefix("fec0::/10")

	// Forms that carry an IPv4 address. ::ffff:0:0/96 (IPv4-mapped)
	// needs no entry: Unmap turns it into the IPv4 address it is.
	v4Compatible = netip.MustParsePrefix("::/96")           // RFC 4291, deprecated
	v4Translated = netip.MustParsePrefix("::ffff:0:0:0/96") // RFC 2765 (SIIT)
	nat64        = netip.MustParsePrefix("64:ff9b::/96")    // RFC 6052 well-known prefix
	sixToFour    = netip.MustParsePrefix("2002::/16")       // RFC 3056
	teredo       = netip.MustParsePrefix("2001::/32")       // RFC 4380
	// nat64Local is the local-use NAT64 prefix (RFC 8215). Where its IPv4
	// address sits depends on the prefix length the network chose inside
	// it (RFC 6052 allows /48 to /96, each with a different position), and
	// it may carry non-global IPv4 by design; no position can be trusted,
	// so it is refused whole. A site that translates with it can point the
	// names it needs at their translated addresses with -resolve.
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
)

// verdict is the policy's answer for one address: why it is refused, ""
// if it is not, and whether only deny_private refuses it.
type verdict struct {
	reason  string
	private bool
}

func (v verdict) refuses(denyPrivate bool) bool {
	return v.reason != "" && (!v.private || denyPrivate)
}

// checkDestination is the destination policy, applied to the address that
// is actually dialed.
func (r *Router) checkDestination(ap netip.AddrPort) error {
	// A zone (fe80::1%eth0) would make every prefix test below fail: the
	// netip predicates ignore it, Prefix.Contains does not.
	ip := ap.Addr().Unmap().WithZone("")
	denyPrivate := r.denyPrivate != nil && r.denyPrivate()
	v := classify(ip)
	if v.reason == "" || v.private {
		// A loop into feedgate is refused whatever deny_private says.
		if r.isOwnListener(ip, ap.Port()) {
			v = verdict{reason: reasonSelf}
		} else if !v.refuses(denyPrivate) {
			return nil
		}
	}
	return &DestinationError{Addr: ap, Reason: v.reason}
}

// classify applies the policy's ranges to ip, which is unmapped and has no
// zone.
func classify(ip netip.Addr) verdict {
	if ip.Is4() {
		return classify4(ip)
	}
	switch {
	case ip.IsLoopback():
		return verdict{reason: reasonLoopback}
	case ip.IsUnspecified():
		return verdict{reason: reasonUnspecified}
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return verdict{reason: reasonLinkLocal}
	case ip.IsMulticast():
		return verdict{reason: reasonMulticast}
	case metadataAddrs[ip]:
		return verdict{reason: reasonMetadata}
	case nat64Local.Contains(ip):
		return verdict{reason: reasonNAT64Local}
	}
	if v4 := embeddedIPv4(ip); len(v4) > 0 {
		// The carried address decides, not the carrier: 64:ff9b::/96
		// and ::/96 lie outside 2000::/3, yet NAT64 to a public
		// address is how an IPv6-only host reaches the IPv4 Internet.
		var out verdict
		for _, a := range v4 {
			v := classify4(a)
			if v.reason != "" && !v.private {
				return v
			}
			if out.reason == "" {
				out = v
			}
		}
		return out
	}
	switch {
	case ip.IsPrivate():
		return verdict{reason: reasonPrivate, private: true}
	case siteLocal.Contains(ip):
		return verdict{reason: reasonSiteLocal}
	case !globalUnicast6.Contains(ip), inAny(reserved6, ip):
		return verdict{reason: reasonReserved, private: true}
	}
	return verdict{}
}

func classify4(ip netip.Addr) verdict {
	switch {
	case ip.IsLoopback():
		return verdict{reason: reasonLoopback}
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return verdict{reason: reasonLinkLocal}
	case ip.IsUnspecified(), thisNetwork.Contains(ip):
		return verdict{reason: reasonUnspecified}
	case ip == broadcast:
		return verdict{reason: reasonBroadcast}
	case ip.IsMulticast():
		return verdict{reason: reasonMulticast}
	case metadataAddrs[ip]:
		return verdict{reason: reasonMetadata}
	case ip.IsPrivate(), sharedSpace.Contains(ip):
		return verdict{reason: reasonPrivate, private: true}
	case inAny(reserved4, ip):
		return verdict{reason: reasonReserved, private: true}
	}
	return verdict{}
}

// embeddedIPv4 returns the IPv4 addresses an IPv6 address carries (ip is
// IPv6 and not IPv4-mapped), nil for none.
//
// Teredo carries two: the server, in bits 32-63, and the client's public
// (NAT-mapped) address, in the last 32 bits inverted (RFC 4380 4). Packets
// to the address go to the client's mapping, and relays talk to the server;
// for a real Teredo address both are global, so both are checked and
// either one refused refuses the address.
func embeddedIPv4(ip netip.Addr) []netip.Addr {
	b := ip.As16()
	switch {
	case v4Compatible.Contains(ip), v4Translated.Contains(ip), nat64.Contains(ip):
		return []netip.Addr{netip.AddrFrom4([4]byte(b[12:16]))}
	case sixToFour.Contains(ip):
		return []netip.Addr{netip.AddrFrom4([4]byte(b[2:6]))}
	case teredo.Contains(ip):
		client := [4]byte{^b[12], ^b[13], ^b[14], ^b[15]}
		return []netip.Addr{netip.AddrFrom4(client), netip.AddrFrom4([4]byte(b[4:8]))}
	}
	return nil
}

func inAny(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// isOwnListener reports a dial that would loop back into one of feedgate's
// own listeners, directly or through an address that carries one.
func (r *Router) isOwnListener(ip netip.Addr, port uint16) bool {
	addrs := []netip.Addr{ip}
	if ip.Is6() {
		addrs = append(addrs, embeddedIPv4(ip)...)
	}
	for _, l := range r.listeners {
		if l.Port() != port {
			continue
		}
		if l.Addr().IsUnspecified() {
			return true
		}
		for _, a := range addrs {
			if l.Addr().Unmap().WithZone("") == a {
				return true
			}
		}
	}
	return false
}

// IsOwnListener reports whether ap is one of feedgate's own listeners: a
// transparent connection redirected there would loop.
func (r *Router) IsOwnListener(ap netip.AddrPort) bool {
	return r.isOwnListener(ap.Addr().Unmap().WithZone(""), ap.Port())
}
