package upstream_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/proxy/upstream"
)

// destinationCase is one line of testdata/destinations.txt.
type destinationCase struct {
	line int
	addr netip.Addr
	text string    // the address as written
	want [2]string // verdict with deny_private off, on: "allow" or a reason
}

func readDestinationCases(t *testing.T) []destinationCase {
	t.Helper()
	f, err := os.Open("testdata/destinations.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []destinationCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "|")
		if len(fields) != 3 {
			t.Fatalf("destinations.txt:%d: want address | off | on, got %q", n, line)
		}
		text := strings.TrimSpace(fields[0])
		addr, err := netip.ParseAddr(text)
		if err != nil {
			t.Fatalf("destinations.txt:%d: %v", n, err)
		}
		cases = append(cases, destinationCase{line: n, addr: addr, text: text,
			want: [2]string{strings.TrimSpace(fields[1]), strings.TrimSpace(fields[2])}})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("destinations.txt has no cases")
	}
	return cases
}

// TestDestinationTable runs every address of testdata/destinations.txt
// through a Router and its real Dialer, whose connect step only records: as
// an IP literal (a zoned one too, which the proxy core refuses before it
// asks for a dial) and as a name the table resolver answers with it, for
// plain HTTP and for CONNECT, with deny_private off and on. A refused
// address must never reach the connect step and must say why; an allowed
// one must reach it exactly as itself.
func TestDestinationTable(t *testing.T) {
	cases := readDestinationCases(t)
	names := map[string][]netip.Addr{}
	for i, c := range cases {
		names[fmt.Sprintf("d%d.example.test", i)] = []netip.Addr{c.addr}
	}
	for mode := range 2 {
		rec := &recordingDial{}
		r, err := upstream.New(upstream.Options{
			Dialer:      &upstream.Dialer{Resolver: &fakeResolver{addrs: names}, Dial: rec.dial},
			Listeners:   []netip.AddrPort{netip.MustParseAddrPort("198.51.100.99:80"), netip.MustParseAddrPort("198.51.100.99:443")},
			DenyPrivate: func() bool { return mode == 1 },
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			for _, form := range []string{"literal", "name"} {
				for _, method := range []string{"GET", "CONNECT"} {
					t.Run(fmt.Sprintf("deny_private=%v/%s/%s/%s", mode == 1, c.text, form, method), func(t *testing.T) {
						host := fmt.Sprintf("d%d.example.test", i)
						if form == "literal" {
							host = c.addr.String()
						}
						port, dial := uint16(80), func(addr string) (net.Conn, error) { return r.DialHTTP(context.Background(), "tcp", addr) }
						if method == "CONNECT" {
							port, dial = 443, func(addr string) (net.Conn, error) { return r.DialTarget(context.Background(), addr) }
						}
						seen := len(rec.dialed())
						conn, err := dial(net.JoinHostPort(host, fmt.Sprint(port)))
						if conn != nil {
							conn.Close()
							t.Fatalf("the recording dialer returned a connection")
						}
						dialed := rec.dialed()[seen:]
						want := c.want[mode]
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
						wantDial := netip.AddrPortFrom(c.addr.Unmap(), port).String()
						if !errors.Is(err, errRecorded) {
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
