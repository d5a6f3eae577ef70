package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// destinationTable is the destination policy's table, which belongs to
// package upstream (where its unit test reads it too); this test runs it
// through the whole proxy.
const destinationTable = "upstream/testdata/destinations.txt"

// destinationCase is one line of the destination table.
type destinationCase struct {
	line int
	addr netip.Addr
	text string    // the address as written
	want [2]string // verdict with deny_private off, on: "allow" or a reason
}

func readDestinationCases(t *testing.T) []destinationCase {
	t.Helper()
	f, err := os.Open(destinationTable)
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

// TestDestinationTable runs every address of the destination table
// (upstream/testdata/destinations.txt) through the real proxy and its real
// Dialer, whose connect step only records: as an IP literal and as a name
// the table resolver answers with it, by plain HTTP and by CONNECT, with
// deny_private off and on. A refused address must never reach the connect
// step; an allowed one must reach it exactly as itself.
func TestDestinationTable(t *testing.T) {
	cases := readDestinationCases(t)
	names := map[string][]netip.Addr{}
	for i, c := range cases {
		names[fmt.Sprintf("d%d.example.test", i)] = []netip.Addr{c.addr}
	}
	for mode, keys := range []string{"", "deny_private = true"} {
		cfg := policyWith(t, keys)
		rec := &recordingDial{}
		cfg.dial = rec.dial
		cfg.resolver = &fakeResolver{addrs: names}
		cfg.listeners = []netip.AddrPort{netip.MustParseAddrPort("198.51.100.99:80"), netip.MustParseAddrPort("198.51.100.99:443")}
		e := newEnv(t, cfg)
		for i, c := range cases {
			for _, form := range []string{"literal", "name"} {
				for _, method := range []string{"GET", "CONNECT"} {
					name := fmt.Sprintf("deny_private=%v/%s/%s/%s", mode == 1, c.text, form, method)
					t.Run(name, func(t *testing.T) {
						host := fmt.Sprintf("d%d.example.test", i)
						dialHost := c.addr
						if form == "literal" {
							host, dialHost = destinationLiteral(c.addr)
						}
						port := 80
						req := "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
						if method == "CONNECT" {
							port = 443
							req = "CONNECT " + host + ":443 HTTP/1.1\r\nHost: " + host + ":443\r\n\r\n"
						}
						if form == "literal" && c.addr.Zone() != "" {
							// A zone in a request target is no host name:
							// refused before any dial, whatever the address.
							checkInvalidTarget(t, e, rec, req)
							return
						}
						checkDestinationVerdict(t, e, rec, req, c.want[mode], netip.AddrPortFrom(dialHost.Unmap(), uint16(port)).String())
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

func checkInvalidTarget(t *testing.T, e *env, rec *recordingDial, req string) {
	t.Helper()
	seen := len(rec.dialed())
	resp := rawRequest(t, e, req)
	if resp.StatusCode != 400 || resp.Header.Get("X-Feedgate-Reason") != "invalid" {
		t.Errorf("status %d, X-Feedgate-Reason %q; want 400 invalid", resp.StatusCode, resp.Header.Get("X-Feedgate-Reason"))
	}
	if dialed := rec.dialed()[seen:]; len(dialed) != 0 {
		t.Errorf("the dialer was asked for %v; want nothing", dialed)
	}
}

func checkDestinationVerdict(t *testing.T, e *env, rec *recordingDial, req, want, wantDial string) {
	t.Helper()
	before := e.snapshot(t, rejectedSeries("destination"))
	seen := len(rec.dialed())
	resp := rawRequest(t, e, req)
	body, _ := io.ReadAll(resp.Body)
	dialed := rec.dialed()[seen:]
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
