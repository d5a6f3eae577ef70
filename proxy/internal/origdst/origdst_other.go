//go:build !linux

package origdst

import (
	"errors"
	"net/netip"
	"syscall"
)

// Lookup is only implemented on Linux, where netfilter keeps the original
// destination of a redirected connection.
func Lookup(syscall.Conn, netip.AddrPort) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("origdst: transparent interception needs Linux")
}
