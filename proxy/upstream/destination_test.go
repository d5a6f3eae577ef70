package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
	"github.com/feedgate/feedgate/proxy/upstream"
)

// TestDestinationTable runs every address of testdata/destinations.txt
// through a Router and its real Dialer, whose connect step only records: as
// an IP literal (a zoned one too, which the proxy core refuses before it
// asks for a dial) and as a name the table resolver answers with it, for
// plain HTTP and for CONNECT, with deny_private off and on. A refused
// address must never reach the connect step and must say why; an allowed
// one must reach it exactly as itself.
func TestDestinationTable(t *testing.T) {
	cases := testutil.DestinationCases(t, "testdata/destinations.txt")
	names := map[string][]netip.Addr{}
	for i, c := range cases {
		names[fmt.Sprintf("d%d.example.test", i)] = []netip.Addr{c.Addr}
	}
	for mode := range 2 {
		rec := &testutil.DialRecorder{}
		r, err := upstream.New(upstream.Options{
			Dialer:      &upstream.Dialer{Resolver: &testutil.Resolver{Addrs: names}, Dial: rec.Dial},
			Listeners:   []netip.AddrPort{netip.MustParseAddrPort("198.51.100.99:80"), netip.MustParseAddrPort("198.51.100.99:443")},
			DenyPrivate: func() bool { return mode == 1 },
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			for _, form := range []string{"literal", "name"} {
				for _, method := range []string{"GET", "CONNECT"} {
					t.Run(fmt.Sprintf("deny_private=%v/%s/%s/%s", mode == 1, c.Text, form, method), func(t *testing.T) {
						host := fmt.Sprintf("d%d.example.test", i)
						if form == "literal" {
							host = c.Addr.String()
						}
						port, dial := uint16(80), func(addr string) (net.Conn, error) { return r.DialHTTP(context.Background(), "tcp", addr) }
						if method == "CONNECT" {
							port, dial = 443, func(addr string) (net.Conn, error) { return r.DialTarget(context.Background(), addr) }
						}
						seen := len(rec.Dialed())
						conn, err := dial(net.JoinHostPort(host, fmt.Sprint(port)))
						if conn != nil {
							conn.Close()
							t.Fatalf("the recording dialer returned a connection")
						}
						dialed := rec.Dialed()[seen:]
						want := c.Want[mode]
						if want != "allow" {
							var destErr *upstream.DestinationError
							if !errors.As(err, &destErr) || destErr.Reason != want {
								t.Errorf("error %v; want a DestinationError for %q", err, want)
							}
							if wantText := "refused: " + want + " address"; err == nil || !strings.Contains(err.Error(), wantText) {
								t.Errorf("error %v; want it to say %q", err, wantText)
							}
							if len(dialed) != 0 {
								t.Errorf("the dialer was asked for %v; want nothing", dialed)
							}
							return
						}
						wantDial := netip.AddrPortFrom(c.Addr.Unmap(), port).String()
						if !errors.Is(err, testutil.ErrRecorded) {
							t.Errorf("error %v; want the recording dialer's", err)
						}
						if len(dialed) != 1 || dialed[0] != wantDial {
							t.Errorf("the dialer was asked for %v; want [%s]", dialed, wantDial)
						}
					})
				}
			}
		}
	}
}
