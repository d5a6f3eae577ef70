package proxy_test

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// authParent runs a parent feedgate (the default policy, before the
// cut-offs, so that it allows everything) behind a check of
// Proxy-Authorization, and counts what reached it.
type authParent struct {
	*env
	addr    string
	denied  atomic.Int64
	allowed atomic.Int64

	mu   sync.Mutex
	uris []string // request targets as received, in order
}

// requestURIs returns the request targets the parent received.
func (p *authParent) requestURIs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.uris...)
}

func newAuthParent(t *testing.T, resolve []string, user, pass string) *authParent {
	t.Helper()
	p := &authParent{env: newEnv(t, envConfig{now: beforeCutoffs, resolve: resolve})}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.uris = append(p.uris, r.RequestURI)
		p.mu.Unlock()
		if user != "" && r.Header.Get("Proxy-Authorization") != want {
			p.denied.Add(1)
			w.Header().Set("Proxy-Authenticate", `Basic realm="parent"`)
			w.WriteHeader(http.StatusProxyAuthRequired)
			return
		}
		p.allowed.Add(1)
		p.srv.ServeHTTP(w, r)
	})}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	p.addr = ln.Addr().String()
	return p
}

// TestParentProxy: with upstream_proxy, plain HTTP and CONNECT go through
// the parent (with the credentials of the auth file), and decisions are
// still made here: a blocked request never reaches the parent.
func TestParentProxy(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	to := newTLSOrigin(t)
	resolve := []string{
		"www.example.test:80:" + hostPort(t, o.URL),
		"www.example.test:443:" + hostPort(t, to.URL),
		"s01.upd.kaspersky.com:443:" + hostPort(t, to.URL),
	}
	for _, tt := range []struct{ name, user, pass string }{
		{"no-credentials", "", ""},
		{"credentials", "gw", "s3cret:with:colons"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			parent := newAuthParent(t, resolve, tt.user, tt.pass)
			keys := fmt.Sprintf("upstream_proxy = %q\n", "http://"+parent.addr)
			if tt.user != "" {
				auth := filepath.Join(t.TempDir(), "parent.auth")
				if err := os.WriteFile(auth, []byte(tt.user+":"+tt.pass+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				keys += fmt.Sprintf("upstream_proxy_auth_file = %q\n", auth)
			}
			cfg := policyWith(t, keys+"[[rule]]\nname = \"block-updates\"\nvendor = \"kaspersky\"\ncategories = [\"update\"]\naction = \"block\"\n")
			e := newEnv(t, cfg) // no -resolve here: only the parent resolves
			c, tr := e.client(t, to.roots)

			resp, body := get(t, c, "http://www.example.test/small")
			if resp.StatusCode != 200 || body == "" {
				t.Fatalf("plain HTTP through the parent: %d %q", resp.StatusCode, body)
			}
			resp, _ = get(t, c, "https://www.example.test/small")
			if resp.StatusCode != 200 {
				t.Fatalf("CONNECT through the parent: %d", resp.StatusCode)
			}
			before := parent.allowed.Load() + parent.denied.Load()
			if _, err := c.Get("https://s01.upd.kaspersky.com/small"); err == nil {
				t.Fatalf("a blocked CONNECT succeeded")
			}
			if n := parent.allowed.Load() + parent.denied.Load(); n != before {
				t.Errorf("a blocked CONNECT reached the parent")
			}
			if parent.denied.Load() != 0 {
				t.Errorf("the parent refused %d requests for bad credentials", parent.denied.Load())
			}
			// The parent saw the plain request and the tunnel (whose
			// record is written when it closes).
			tr.CloseIdleConnections()
			parent.waitRecord(t, map[string]any{"kind": "http", "host": "www.example.test", "path": "/small"})
			parent.waitRecord(t, map[string]any{"kind": "connect", "host": "www.example.test"})
			e.waitRecord(t, map[string]any{"kind": "connect", "host": "s01.upd.kaspersky.com", "action": "block"})
		})
	}
}

// TestParentProxyRefuses: a parent that refuses the tunnel (407 here, for
// missing credentials) becomes a 502 that says so.
func TestParentProxyRefuses(t *testing.T) {
	t.Parallel()
	to := newTLSOrigin(t)
	parent := newAuthParent(t, []string{"www.example.test:443:" + hostPort(t, to.URL)}, "gw", "pw")
	e := newEnv(t, policyWith(t, fmt.Sprintf("upstream_proxy = %q\n", "http://"+parent.addr)))
	conn, resp := openTunnel(t, e, "www.example.test:443")
	_ = conn
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("CONNECT refused by the parent: %d; want 502", resp.StatusCode)
	}
	if parent.denied.Load() != 1 {
		t.Errorf("parent refusals = %d; want 1", parent.denied.Load())
	}
}

// TestParentProxyFromEnv: the proxy variables count only with
// upstream_proxy = "env".
func TestParentProxyFromEnv(t *testing.T) {
	o := newOrigin(t)
	resolve := []string{"www.example.test:80:" + hostPort(t, o.URL)}
	parent := newAuthParent(t, resolve, "", "")
	t.Setenv("HTTP_PROXY", "http://"+parent.addr)
	t.Setenv("HTTPS_PROXY", "http://"+parent.addr)
	t.Setenv("NO_PROXY", "")
	for _, tt := range []struct {
		name, keys string
		viaParent  bool
	}{
		{"default-ignores-env", "", false},
		{"env", "upstream_proxy = \"env\"\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := policyWith(t, tt.keys)
			cfg.resolve = resolve
			e := newEnv(t, cfg)
			c, _ := e.client(t, nil)
			before := parent.allowed.Load()
			if resp, _ := get(t, c, "http://www.example.test/small"); resp.StatusCode != 200 {
				t.Fatalf("GET: %d", resp.StatusCode)
			}
			if got := parent.allowed.Load() - before; (got == 1) != tt.viaParent {
				t.Errorf("requests through the parent: %d; want via parent = %v", got, tt.viaParent)
			}
		})
	}
}

// TestParentAddressNotTrustedForClients: with upstream_proxy = "env",
// requests the proxy variables send direct are dialed under the
// destination policy even when they name the parent's own address, before
// and after feedgate has used the parent. Trust in the parent's address
// used to be learned from the first request through it and then extended
// to every dial of that address, so a client could reach the parent (here
// on loopback, which net/http never proxies) as an origin server.
func TestParentAddressNotTrustedForClients(t *testing.T) {
	o := newOrigin(t)
	parent := newAuthParent(t, []string{"www.example.test:80:" + hostPort(t, o.URL)}, "", "")
	_, pport, err := net.SplitHostPort(parent.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HTTP_PROXY", "http://"+parent.addr)
	t.Setenv("HTTPS_PROXY", "http://"+parent.addr)
	t.Setenv("NO_PROXY", "")
	e := newEnv(t, policyWith(t, "upstream_proxy = \"env\"\n"+
		"http_ports = [80, "+pport+"]\nconnect_ports = [443, "+pport+"]"))
	c, tr := e.client(t, nil)

	viaParent := func() {
		t.Helper()
		if resp, body := get(t, c, "http://www.example.test/small"); resp.StatusCode != 200 || body == "" {
			t.Fatalf("plain HTTP through the parent: %d %q", resp.StatusCode, body)
		}
	}
	viaParent()
	for _, tt := range []struct {
		name, req, reason string
	}{
		{"plain HTTP to the parent's address", "GET http://" + parent.addr + "/secret HTTP/1.1\r\nHost: " + parent.addr + "\r\n\r\n", "parent proxy"},
		{"https to the parent's address", "GET https://" + parent.addr + "/secret HTTP/1.1\r\nHost: " + parent.addr + "\r\n\r\n", "parent proxy"},
		{"plain HTTP to the parent, spelled otherwise", "GET http://[::ffff:127.0.0.1]:" + pport + "/secret HTTP/1.1\r\nHost: [::ffff:127.0.0.1]:" + pport + "\r\n\r\n", "loopback"},
		{"CONNECT to the parent's address", "CONNECT " + parent.addr + " HTTP/1.1\r\nHost: " + parent.addr + "\r\n\r\n", "loopback"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := e.snapshot(t, rejectedSeries("destination"))
			resp := rawRequest(t, e, tt.req)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Feedgate-Reason") != "destination" {
				t.Fatalf("status %d, X-Feedgate-Reason %q, body %q; want 403 destination", resp.StatusCode, resp.Header.Get("X-Feedgate-Reason"), body)
			}
			if want := "refused: " + tt.reason + " address"; !strings.Contains(string(body), want) {
				t.Errorf("body %q; want it to say %q", body, want)
			}
			e.checkDeltas(t, before, delta{rejectedSeries("destination"), 1})
			// The parent still carries what the variables send to it.
			viaParent()
		})
	}
	tr.CloseIdleConnections()
	for _, uri := range parent.requestURIs() {
		if strings.Contains(uri, "secret") {
			t.Errorf("the parent received %q", uri)
		}
	}
}

// TestFixedParentCarriesRequestsForItself: with a fixed upstream_proxy
// every request goes through the parent, a request for the parent's own
// address too: the parent gets it in proxy form, never as a direct
// request, and decides it by its own policy (this parent's http_ports do
// not include its own port).
func TestFixedParentCarriesRequestsForItself(t *testing.T) {
	t.Parallel()
	parent := newAuthParent(t, nil, "", "")
	_, pport, err := net.SplitHostPort(parent.addr)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, policyWith(t, fmt.Sprintf("upstream_proxy = %q\nhttp_ports = [80, %s]\n", "http://"+parent.addr, pport)))
	resp := rawRequest(t, e, "GET http://"+parent.addr+"/secret HTTP/1.1\r\nHost: "+parent.addr+"\r\n\r\n")
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Feedgate-Reason") != "port" {
		t.Errorf("status %d, X-Feedgate-Reason %q; want the parent's 403 port", resp.StatusCode, resp.Header.Get("X-Feedgate-Reason"))
	}
	uris := parent.requestURIs()
	if want := "http://" + parent.addr + "/secret"; len(uris) != 1 || uris[0] != want {
		t.Errorf("the parent received %q; want [%q]", uris, want)
	}
}
