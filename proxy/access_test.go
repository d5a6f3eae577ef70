package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// policyWith writes a policy with the built-in catalog and the given
// top-level access keys, and returns an envConfig that enforces it.
func policyWith(t *testing.T, keys string) envConfig {
	t.Helper()
	file := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(file, []byte("catalogs = [\"builtin:catalog/kaspersky.toml\"]\n"+keys+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return envConfig{policy: loadTestPolicy(t, file)}
}

func rejectedSeries(reason string) series {
	return series{"feedgate_rejected_total", []string{"reason", reason}}
}

// rawRequest sends raw bytes on a new connection and reads one response.
func rawRequest(t *testing.T, e *env, req string) *http.Response {
	t.Helper()
	c := e.dial(t)
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var forReq *http.Request
	if strings.HasPrefix(req, "CONNECT ") {
		forReq = &http.Request{Method: http.MethodConnect}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), forReq)
	if err != nil {
		t.Fatalf("reading the reply to %q: %v", req, err)
	}
	if forReq != nil && resp.StatusCode == http.StatusOK {
		return resp // a tunnel: nothing more to read
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp
}

func TestAccessRefusals(t *testing.T) {
	o := newOrigin(t)
	_, oport, _ := net.SplitHostPort(o.Listener.Addr().String())
	resolve := []string{
		"www.example.test:80:127.0.0.1:" + oport, "www.example.test:8081:127.0.0.1:" + oport,
		"www.example.test:443:127.0.0.1:" + oport, "www.example.test:8443:127.0.0.1:" + oport,
	}
	tests := []struct {
		name, keys, req string
		status          int
		reason          string // X-Feedgate-Reason and counter label; "" for none
	}{
		{"client outside allowed_clients", `allowed_clients = ["10.0.0.0/8"]`,
			"GET http://www.example.test/hello HTTP/1.1\r\nHost: www.example.test\r\n\r\n", 403, "client"},
		{"client outside allowed_clients, CONNECT", `allowed_clients = ["192.0.2.0/24", "2001:db8::/32"]`,
			"CONNECT www.example.test:443 HTTP/1.1\r\nHost: www.example.test:443\r\n\r\n", 403, "client"},
		{"client inside allowed_clients", `allowed_clients = ["127.0.0.1"]`,
			"GET http://www.example.test/hello HTTP/1.1\r\nHost: www.example.test\r\n\r\n", 200, ""},
		{"plain HTTP to a port not in http_ports", ``,
			"GET http://www.example.test:8081/hello HTTP/1.1\r\nHost: www.example.test:8081\r\n\r\n", 403, "port"},
		{"plain HTTP to a port added to http_ports", `http_ports = [80, "8080-8089"]`,
			"GET http://www.example.test:8081/hello HTTP/1.1\r\nHost: www.example.test:8081\r\n\r\n", 200, ""},
		{"CONNECT to a port not in connect_ports", ``,
			"CONNECT www.example.test:8443 HTTP/1.1\r\nHost: www.example.test:8443\r\n\r\n", 403, "port"},
		{"CONNECT to port 80 (not TLS)", ``,
			"CONNECT www.example.test:80 HTTP/1.1\r\nHost: www.example.test:80\r\n\r\n", 403, "port"},
		{"CONNECT to a port added to connect_ports", `connect_ports = [443, 8443]`,
			"CONNECT www.example.test:8443 HTTP/1.1\r\nHost: www.example.test:8443\r\n\r\n", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := policyWith(t, tt.keys)
			cfg.resolve = resolve
			e := newEnv(t, cfg)
			before := e.snapshot(t, rejectedSeries("client"), rejectedSeries("port"), rejectedSeries("destination"))
			hits := o.Hits()
			resp := rawRequest(t, e, tt.req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d; want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Get("X-Feedgate-Reason"); got != tt.reason {
				t.Errorf("X-Feedgate-Reason %q; want %q", got, tt.reason)
			}
			var deltas []delta
			for _, r := range []string{"client", "port", "destination"} {
				want := 0.0
				if r == tt.reason {
					want = 1
				}
				deltas = append(deltas, delta{rejectedSeries(r), want})
			}
			e.checkDeltas(t, before, deltas...)
			if tt.reason != "" {
				if o.Hits() != hits {
					t.Errorf("the origin saw the refused request")
				}
				e.waitRecord(t, map[string]any{"rejected": tt.reason, "status": 403.0, "level": "WARN"})
			}
		})
	}
}

// TestDestinationPolicy resolves names to addresses in every special range
// through the fake resolver and checks which ones the proxy would dial.
// The dialer records and never connects.
func TestDestinationPolicy(t *testing.T) {
	tests := []struct {
		name, addr  string
		denyPrivate bool
		refused     string // "" when the address must reach the dialer
	}{
		{"public", "198.51.100.7", false, ""},
		{"public IPv6", "2001:db8::7", false, ""},
		{"metadata service", "169.254.169.254", false, "link-local"},
		{"link-local IPv6", "fe80::1", false, "link-local"},
		{"loopback", "127.0.0.1", false, "loopback"},
		{"loopback elsewhere in 127/8", "127.9.9.9", false, "loopback"},
		{"loopback IPv6", "::1", false, "loopback"},
		{"IPv4-mapped loopback", "::ffff:127.0.0.1", false, "loopback"},
		{"unspecified", "0.0.0.0", false, "unspecified"},
		{"this network", "0.1.2.3", false, "unspecified"},
		{"multicast", "239.1.2.3", false, "multicast"},
		{"link-local multicast", "224.0.0.251", false, "link-local"},
		{"private, allowed by default", "10.1.2.3", false, ""},
		{"private, denied", "10.1.2.3", true, "private"},
		{"private 172.16/12, denied", "172.20.0.1", true, "private"},
		{"private 192.168/16, denied", "192.168.1.1", true, "private"},
		{"shared address space, denied", "100.64.0.1", true, "private"},
		{"unique local IPv6, denied", "fd12:3456::1", true, "private"},
		{"just outside 172.16/12", "172.32.0.1", true, ""},
		{"feedgate's own listener", "198.51.100.99", false, "feedgate itself"},
	}
	for _, tt := range tests {
		for _, method := range []string{"GET", "CONNECT"} {
			t.Run(method+" "+tt.name, func(t *testing.T) {
				keys := ""
				if tt.denyPrivate {
					keys = "deny_private = true"
				}
				cfg := policyWith(t, keys)
				rec := &testutil.DialRecorder{}
				cfg.dial = rec.Dial
				cfg.resolver = &testutil.Resolver{Addrs: map[string][]netip.Addr{"dest.example.test": {netip.MustParseAddr(tt.addr)}}}
				port := 80
				if method == "CONNECT" {
					port = 443
				}
				cfg.listeners = []netip.AddrPort{netip.MustParseAddrPort(fmt.Sprintf("198.51.100.99:%d", port))}
				e := newEnv(t, cfg)
				req := "GET http://dest.example.test/ HTTP/1.1\r\nHost: dest.example.test\r\n\r\n"
				if method == "CONNECT" {
					req = "CONNECT dest.example.test:443 HTTP/1.1\r\nHost: dest.example.test:443\r\n\r\n"
				}
				before := e.snapshot(t, rejectedSeries("destination"))
				resp := rawRequest(t, e, req)
				dialed := rec.Dialed()
				if tt.refused != "" {
					if resp.StatusCode != 403 || resp.Header.Get("X-Feedgate-Reason") != "destination" {
						t.Errorf("status %d reason %q; want 403 destination", resp.StatusCode, resp.Header.Get("X-Feedgate-Reason"))
					}
					body, _ := io.ReadAll(resp.Body)
					if !strings.Contains(string(body), tt.refused) {
						t.Errorf("body %q does not name the reason %q", body, tt.refused)
					}
					if len(dialed) != 0 {
						t.Errorf("dialer was asked for %v; want nothing", dialed)
					}
					e.checkDeltas(t, before, delta{rejectedSeries("destination"), 1})
					return
				}
				want := netip.AddrPortFrom(netip.MustParseAddr(tt.addr), uint16(port)).String()
				if len(dialed) != 1 || dialed[0] != want {
					t.Errorf("dialed %v; want [%s]", dialed, want)
				}
				if resp.StatusCode != 502 {
					t.Errorf("status %d; want 502 from the recording dialer's error", resp.StatusCode)
				}
				e.checkDeltas(t, before, delta{rejectedSeries("destination"), 0})
			})
		}
	}
}

// TestResolveOverridesAreTrusted: an address the operator set with
// -resolve is dialed even when it is loopback.
func TestResolveOverridesAreTrusted(t *testing.T) {
	o := newOrigin(t)
	_, oport, _ := net.SplitHostPort(o.Listener.Addr().String())
	e := newEnv(t, envConfig{resolve: []string{"www.example.test:80:127.0.0.1:" + oport}})
	resp := rawRequest(t, e, "GET http://www.example.test/hello HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Errorf("status %d; want 200 through the trusted override", resp.StatusCode)
	}
	// The same origin by IP literal is a loopback destination: refused.
	resp = rawRequest(t, e, "GET http://127.0.0.1:"+oport+"/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if resp.StatusCode != 403 {
		t.Errorf("IP literal to loopback: status %d; want 403", resp.StatusCode)
	}
}
