// Package origdst recovers where a redirected connection was going: the
// original destination that netfilter's REDIRECT or DNAT replaced with
// feedgate's transparent listener, or, for a TPROXY socket, the local
// address itself.
package origdst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// ErrNotRedirected is returned for a connection that netfilter did not
// redirect: the kernel has no original destination for it.
var ErrNotRedirected = errors.New("origdst: the connection was not redirected (no conntrack entry)")

// Address families as the kernel writes them in a sockaddr (AF_INET,
// AF_INET6 on Linux).
const (
	afInet  = 2
	afInet6 = 10
)

// sockaddr sizes: struct sockaddr_in and struct sockaddr_in6.
const (
	sizeofSockaddrIn  = 16
	sizeofSockaddrIn6 = 28
)

// parseSockaddr reads the struct sockaddr_in or sockaddr_in6 that
// getsockopt(SO_ORIGINAL_DST) or getsockopt(IP6T_SO_ORIGINAL_DST) wrote.
// The family is in host byte order; the port and the address are in
// network byte order, as in every sockaddr.
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, fmt.Errorf("origdst: sockaddr of %d bytes", len(b))
	}
	switch family := binary.NativeEndian.Uint16(b); family {
	case afInet:
		if len(b) < 8 {
			return netip.AddrPort{}, fmt.Errorf("origdst: sockaddr_in of %d bytes", len(b))
		}
		port := binary.BigEndian.Uint16(b[2:4])
		addr := netip.AddrFrom4([4]byte(b[4:8]))
		return netip.AddrPortFrom(addr, port), nil
	case afInet6:
		if len(b) < 24 {
			return netip.AddrPort{}, fmt.Errorf("origdst: sockaddr_in6 of %d bytes", len(b))
		}
		port := binary.BigEndian.Uint16(b[2:4])
		// b[4:8] is the flow label; b[24:28] the scope, which a
		// redirected connection to a global address does not have.
		addr := netip.AddrFrom16([16]byte(b[8:24]))
		return netip.AddrPortFrom(addr, port), nil
	default:
		return netip.AddrPort{}, fmt.Errorf("origdst: unknown address family %d", family)
	}
}
