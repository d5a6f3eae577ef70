package origdst

import (
	"errors"
	"net"
	"testing"
)

// TestLookupNotRedirected: a connection that reached the listener
// directly has no original destination, over IPv4 and IPv6; Lookup says
// so rather than returning the listener's own address.
func TestLookupNotRedirected(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			c, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			local := s.LocalAddr().(*net.TCPAddr).AddrPort()
			got, err := Lookup(s.(*net.TCPConn), local)
			if !errors.Is(err, ErrNotRedirected) {
				t.Errorf("Lookup = %v, %v; want ErrNotRedirected", got, err)
			}
		})
	}
}
