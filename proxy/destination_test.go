package proxy_test

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// destinationTable is the destination policy's table, which belongs to
// package upstream (where its unit test reads it too); this test runs it
// through the whole proxy.
const destinationTable = "upstream/testdata/destinations.txt"

// TestDestinationTable runs every address of the destination table
// (upstream/testdata/destinations.txt) through the real proxy and its real
// Dialer, whose connect step only records: as an IP literal and as a name
// the table resolver answers with it, by plain HTTP and by CONNECT, with
// deny_private off and on. A refused address must never reach the connect
// step; an allowed one must reach it exactly as itself.
func TestDestinationTable(t *testing.T) {
	cases := testutil.DestinationCases(t, destinationTable)
	names := map[string][]netip.Addr{}
	for i, c := range cases {
		names[fmt.Sprintf("d%d.example.test", i)] = []netip.Addr{c.Addr}
	}
	for mode, keys := range []string{"", "deny_private = true"} {
		cfg := policyWith(t, keys)
		rec := &testutil.DialRecorder{}
		cfg.dial = rec.Dial
		cfg.resolver = &testutil.Resolver{Addrs: names}
		cfg.listeners = []netip.AddrPort{netip.MustParseAddrPort("198.51.100.99:80"), netip.MustParseAddrPort("198.51.100.99:443")}
		e := newEnv(t, cfg)
		for i, c := range cases {
			for _, form := range []string{"literal", "name"} {
				for _, method := range []string{"GET", "CONNECT"} {
					name := fmt.Sprintf("deny_private=%v/%s/%s/%s", mode == 1, c.Text, form, method)
					t.Run(name, func(t *testing.T) {
						host := fmt.Sprintf("d%d.example.test", i)
						dialHost := c.Addr
						if form == "literal" {
							host, dialHost = destinationLiteral(c.Addr)
						}
						port := 80
						req := "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
						if method == "CONNECT" {
							port = 443
							req = "CONNECT " + host + ":443 HTTP/1.1\r\nHost: " + host + ":443\r\n\r\n"
						}
						if form == "literal" && c.Addr.Zone() != "" {
							// A zone in a request target is no host name:
							// refused before any dial, whatever the address.
							checkInvalidTarget(t, e, rec, req)
							return
						}
						checkDestinationVerdict(t, e, rec, req, c.Want[mode], netip.AddrPortFrom(dialHost.Unmap(), uint16(port)).String())
					})
				}
			}
		}
	}
}

// destinationLiteral spells addr as a request's host and returns the
// address the proxy will make of it. A zoned address is spelled with its
// zone percent-encoded, which the proxy refuses before any dial.
func destinationLiteral(addr netip.Addr) (string, netip.Addr) {
	if addr.Is4() {
		return addr.String(), addr
	}
	text := addr.WithZone("").String()
	if z := addr.Zone(); z != "" {
		text += "%25" + z
	}
	return "[" + text + "]", addr
}

func checkInvalidTarget(t *testing.T, e *env, rec *testutil.DialRecorder, req string) {
	t.Helper()
	seen := len(rec.Dialed())
	resp := rawRequest(t, e, req)
	if resp.StatusCode != 400 || resp.Header.Get("X-Feedgate-Reason") != "invalid" {
		t.Errorf("status %d, X-Feedgate-Reason %q; want 400 invalid", resp.StatusCode, resp.Header.Get("X-Feedgate-Reason"))
	}
	if dialed := rec.Dialed()[seen:]; len(dialed) != 0 {
		t.Errorf("the dialer was asked for %v; want nothing", dialed)
	}
}

func checkDestinationVerdict(t *testing.T, e *env, rec *testutil.DialRecorder, req, want, wantDial string) {
	t.Helper()
	before := e.snapshot(t, rejectedSeries("destination"))
	seen := len(rec.Dialed())
	resp := rawRequest(t, e, req)
	body, _ := io.ReadAll(resp.Body)
	dialed := rec.Dialed()[seen:]
	if want != "allow" {
		if resp.StatusCode != 403 || resp.Header.Get("X-Feedgate-Reason") != "destination" {
			t.Errorf("status %d, X-Feedgate-Reason %q; want 403 destination", resp.StatusCode, resp.Header.Get("X-Feedgate-Reason"))
		}
		if wantText := "refused: " + want + " address"; !strings.Contains(string(body), wantText) {
			t.Errorf("body %q; want it to say %q", body, wantText)
		}
		if len(dialed) != 0 {
			t.Errorf("the dialer was asked for %v; want nothing", dialed)
		}
		e.checkDeltas(t, before, delta{rejectedSeries("destination"), 1})
		return
	}
	if len(dialed) != 1 || dialed[0] != wantDial {
		t.Errorf("the dialer was asked for %v; want [%s]", dialed, wantDial)
	}
	if resp.StatusCode != 502 {
		t.Errorf("status %d (body %q); want 502 from the recording dialer's error", resp.StatusCode, body)
	}
	e.checkDeltas(t, before, delta{rejectedSeries("destination"), 0})
}
