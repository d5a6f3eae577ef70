package proxy

import "net/netip"

// Ranges a proxy at the network edge must never be tricked into reaching;
// IsPrivate and the netip predicates cover the rest.
var (
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")     // RFC 1122 "this network"
	sharedSpace = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598 carrier-grade NAT
)

// checkDestination is the destination policy, applied to the address that
// is actually dialed.
func (s *Server) checkDestination(ap netip.AddrPort) error {
	ip := ap.Addr().Unmap()
	reason := ""
	switch {
	case ip.IsLoopback():
		reason = "loopback"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		// 169.254.169.254, the cloud metadata service, is link-local.
		reason = "link-local"
	case ip.IsUnspecified(), ip.Is4() && thisNetwork.Contains(ip):
		reason = "unspecified"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		reason = "multicast"
	case s.isOwnListener(netip.AddrPortFrom(ip, ap.Port())):
		reason = "feedgate itself"
	case s.state.Load().policy.Access.DenyPrivate && (ip.IsPrivate() || sharedSpace.Contains(ip)):
		reason = "private"
	}
	if reason == "" {
		return nil
	}
	return &DestinationError{Addr: ap, Reason: reason}
}

// isOwnListener reports a dial that would loop back into one of feedgate's
// own listeners.
func (s *Server) isOwnListener(ap netip.AddrPort) bool {
	for _, l := range s.opts.Listeners {
		if l.Port() == ap.Port() && (l.Addr() == ap.Addr() || l.Addr().IsUnspecified()) {
			return true
		}
	}
	return false
}
