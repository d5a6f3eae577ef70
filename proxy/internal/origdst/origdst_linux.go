package origdst

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from
// linux/netfilter_ipv6/ip6_tables.h, which golang.org/x/sys/unix does not
// define: the IPv6 twin of SO_ORIGINAL_DST, read at level SOL_IPV6.
const ip6tSOOriginalDst = 80

// Lookup returns the original destination of a connection that netfilter
// redirected (nftables redirect/dnat, iptables REDIRECT/DNAT) to a local
// listener: SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST for IPv6.
// local is the connection's local address, which tells the family; a
// connection whose original destination is local itself was not
// redirected (ErrNotRedirected).
func Lookup(c syscall.Conn, local netip.AddrPort) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", err)
	}
	level, opt, size := unix.SOL_IP, unix.SO_ORIGINAL_DST, sizeofSockaddrIn
	if local.Addr().Is6() && !local.Addr().Is4In6() {
		level, opt, size = unix.SOL_IPV6, ip6tSOOriginalDst, sizeofSockaddrIn6
	}
	var buf [sizeofSockaddrIn6]byte
	n := uint32(size)
	var serr error
	err = rc.Control(func(fd uintptr) {
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(opt),
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if errno != 0 {
			serr = errno
		}
	})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", err)
	}
	if serr != nil {
		// ENOENT: conntrack has no entry for the connection;
		// ENOPROTOOPT: conntrack is not loaded at all. Either way
		// nothing redirected it.
		if errors.Is(serr, unix.ENOENT) || errors.Is(serr, unix.ENOPROTOOPT) {
			return netip.AddrPort{}, ErrNotRedirected
		}
		return netip.AddrPort{}, fmt.Errorf("origdst: getsockopt: %w", serr)
	}
	ap, err := parseSockaddr(buf[:n])
	if err != nil {
		return netip.AddrPort{}, err
	}
	// conntrack keeps an entry for every connection once it is loaded,
	// NATed or not; for one nothing redirected, the original destination
	// is the listener's own address.
	if netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) == netip.AddrPortFrom(local.Addr().Unmap(), local.Port()) {
		return netip.AddrPort{}, ErrNotRedirected
	}
	return ap, nil
}
