package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenTransparent opens a transparent listener: a plain one for
// connections netfilter redirected (REDIRECT, DNAT), or with tproxy a
// TPROXY socket (IP_TRANSPARENT, IPV6_TRANSPARENT), which accepts
// connections to any address and needs CAP_NET_ADMIN.
//
// An IPv4 address listens on IPv4 only and an IPv6 one on IPv6 only, so that
// 0.0.0.0:3129 and [::]:3129 can both be given: Go would otherwise make the
// IPv4 wildcard a dual-stack socket that takes the IPv6 port as well.
func listenTransparent(addr string, tproxy bool) (net.Listener, error) {
	network := "tcp4"
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.To4() == nil || strings.Contains(host, ":") {
			network = "tcp6"
		}
	}
	lc := proxyListenConfig()
	if tproxy {
		lc.Control = func(network, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if network == "tcp6" {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
				}
			})
			if err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("IP_TRANSPARENT (TPROXY needs CAP_NET_ADMIN): %w", serr)
			}
			return nil
		}
	}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("transparent listener: %w", err)
	}
	return ln, nil
}
