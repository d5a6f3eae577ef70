package proxy_test

// The transparent listener, driven over loopback with real clients: a
// connection's original destination is a documentation address (the
// env's redirect table stands in for the kernel's), and the injected dial
// connects such addresses to local origins and records every address the
// proxy dialed. Names are checked against original destinations through
// -resolve overrides.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
	"github.com/feedgate/feedgate/rules/config"
)

// docNet is the network behind a transparent listener, for
// envConfig.dial: documentation addresses (192.0.2.0/24, 2001:db8::/32)
// stand for origins on the Internet and are connected to local test
// servers. It records every address the proxy dials; it dials loopback
// addresses (from -resolve overrides) as they are and refuses every
// other, so that no test sends a packet beyond the machine.
type docNet struct {
	mu     sync.Mutex
	routes map[string]string // documentation address:port -> 127.0.0.1:port
	dialed map[string]int    // how often each address was dialed
}

func newDocNet() *docNet { return &docNet{routes: map[string]string{}, dialed: map[string]int{}} }

// route connects the documentation address orig to the local address to.
func (n *docNet) route(orig, to string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.routes[netip.MustParseAddrPort(orig).String()] = to
}

func (n *docNet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	n.dialed[addr]++
	to, ok := n.routes[addr]
	n.mu.Unlock()
	if !ok {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || !ap.Addr().IsLoopback() {
			return nil, fmt.Errorf("test network: nothing listens at %s: %w", addr, syscall.ECONNREFUSED)
		}
		to = addr
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

// Dialed returns how often each address was dialed so far.
func (n *docNet) Dialed() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.dialed)
}

// checkDialed fails t unless every address dialed is want and there was at
// least one dial (none if want is "").
func (n *docNet) checkDialed(t *testing.T, want string) {
	t.Helper()
	got := n.Dialed()
	if want == "" {
		if len(got) != 0 {
			t.Errorf("the proxy dialed %v; want nothing dialed", got)
		}
		return
	}
	if got[want] == 0 || len(got) != 1 {
		t.Errorf("the proxy dialed %v; want only the original destination %s", got, want)
	}
}

// transparentClient returns an http.Client without a proxy whose every
// connection goes to the transparent listener at addr, as a client's
// behind a redirecting gateway does; roots verify https origins. dials
// counts the connections it opened.
func transparentClient(t *testing.T, addr string, roots *x509.CertPool) (c *http.Client, tr *http.Transport, dials *atomic.Int32) {
	t.Helper()
	dials = &atomic.Int32{}
	tr = &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		DisableCompression: true,
	}
	if roots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testutil.WaitLimit}, tr, dials
}

// dialTransparent opens a raw connection to a transparent listener, with a
// deadline against hangs.
func dialTransparent(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial the transparent listener: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(testutil.WaitLimit))
	return c.(*net.TCPConn)
}

// tlsTransparent runs a TLS handshake with serverName in its ClientHello
// ("" sends none) on a new connection to a transparent listener.
func tlsTransparent(t *testing.T, addr, serverName string, roots *x509.CertPool) (*tls.Conn, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, ServerName: serverName}
	if serverName == "" {
		// Go sends no SNI for an IP literal; verify against the IP SAN.
		cfg.ServerName = "127.0.0.1"
	}
	tc := tls.Client(dialTransparent(t, addr), cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc, nil
}

// tlsGet sends GET path over tc and returns the body.
func tlsGet(t *testing.T, tc *tls.Conn, host, path string) []byte {
	t.Helper()
	if _, err := io.WriteString(tc, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		t.Fatalf("GET %s over TLS: %v", path, err)
	}
	resp, body := readResponse(t, bufio.NewReader(tc))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s over TLS: status %d; want 200", path, resp.StatusCode)
	}
	return []byte(body)
}

// waitClosed reads c (through r, if not nil) until feedgate closes it,
// and fails t if anything arrives or it stays open.
func waitClosed(t *testing.T, c net.Conn, r io.Reader) {
	t.Helper()
	if r == nil {
		r = c
	}
	_ = c.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
	b, err := io.ReadAll(r)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the connection is still open after %v; want it closed", testutil.WaitLimit)
	case len(b) != 0:
		t.Errorf("read %q before the close; want nothing", b)
	}
}

func hostVerifySeries(result string) series {
	return series{"feedgate_host_verify_total", []string{"result", result}}
}

// allHostVerifySeries are the host verification counters, by result.
func allHostVerifySeries() []series {
	var out []series
	for _, r := range metrics.VerifyResults() {
		out = append(out, hostVerifySeries(r))
	}
	return out
}

// defaultPolicyKeys is the default policy with top-level keys added
// (defaultPolicyWith appends tables, after which a key would belong to
// the last of them).
func defaultPolicyKeys(t *testing.T, keys string) *config.Config {
	t.Helper()
	b, err := fs.ReadFile(configs.Files(), configs.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	const catalogs = `catalogs = ["catalog/kaspersky.toml"]`
	text := strings.Replace(string(b), catalogs, `catalogs = ["builtin:catalog/kaspersky.toml"]`+"\n"+keys+"\n", 1)
	if text == string(b) {
		t.Fatalf("the default policy has no line %s", catalogs)
	}
	file := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadTestPolicy(t, file)
}

// TestTransparentHTTP: plain HTTP redirected to the transparent listener
// reaches the origin intact, at the original destination, with the
// client's Host header, and the resolver is never asked; each request of
// the keep-alive connection has its own record. (The Host resolves to
// the original destination here: TestTransparentHostVerify's names that
// resolve elsewhere show that what is dialed is the original destination,
// never the name.)
func TestTransparentHTTP(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, orig string }{
		{"ipv4", "192.0.2.10:80"},
		{"ipv6", "[2001:db8:2::10]:80"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := newRecordingOrigin(t)
			n := newDocNet()
			n.route(tt.orig, hostPort(t, o.URL))
			orig := netip.MustParseAddrPort(tt.orig)
			e := newEnv(t, envConfig{dial: n.dial, resolve: []string{"www.example.test:80:[" + orig.Addr().String() + "]"}})
			c, _, dials := transparentClient(t, e.redirect(t, tt.orig), nil)
			reqs := requestsSeries("none", "none", "allow", "default")
			before := e.snapshot(t, append(allHostVerifySeries(), reqs, durationSeries("http"), durationSeries("transparent"))...)
			mark := o.mark()

			body := bytes.Repeat([]byte("transparent-body-"), 4<<10)
			steps := []struct {
				method, target, path string
				body, want           []byte
			}{
				{"GET", "/hello", "/hello", nil, []byte("hello from origin\n")},
				{"POST", "/echo", "/echo", body, body},
				{"PUT", "/echo?x=1", "/echo", []byte("put"), []byte("put")},
				{"GET", "/big", "/big", nil, bigBody},
			}
			for _, s := range steps {
				var rb io.Reader
				if s.body != nil {
					rb = bytes.NewReader(s.body)
				}
				req, err := http.NewRequest(s.method, "http://www.example.test"+s.target, rb)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", s.method, s.target, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, s.want) {
					t.Fatalf("%s %s: %d, %d bytes (%v); want 200 and %d bytes", s.method, s.target, resp.StatusCode, len(got), err, len(s.want))
				}
			}
			if d := dials.Load(); d != 1 {
				t.Errorf("the client opened %d connections; want 1 (keep-alive)", d)
			}
			seen := o.since(mark)
			if len(seen) != len(steps) {
				t.Fatalf("origin got %d requests; want %d", len(seen), len(steps))
			}
			for i, s := range steps {
				if got := seen[i]; got.method != s.method || got.uri != s.target || got.host != "www.example.test" {
					t.Errorf("origin got %s %s Host %q; want %s %s Host www.example.test", got.method, got.uri, got.host, s.method, s.target)
				}
			}
			n.checkDialed(t, tt.orig)
			if l := e.resolver.Lookups(); len(l) != 0 {
				t.Errorf("the resolver was asked for %q; want no lookups", l)
			}
			for _, s := range steps {
				r := e.waitRecord(t, map[string]any{"kind": "http", "method": s.method, "path": s.path})
				checkRecord(t, r, map[string]any{"mode": "transparent", "original_dst": tt.orig, "host_verify": "match",
					"host": "www.example.test", "port": 80, "client": "127.0.0.1", "action": "allow", "rule": "default", "status": 200})
			}
			e.checkDeltas(t, before, delta{reqs, 4}, delta{hostVerifySeries("match"), 4}, delta{hostVerifySeries("mismatch"), 0},
				delta{hostVerifySeries("unverified"), 0}, delta{durationSeries("http"), 4}, delta{durationSeries("transparent"), 0})
		})
	}
}

// TestTransparentHTTPDecidedPerRequest: each request of a transparent
// keep-alive connection is decided by its own Host and path. A Kaspersky
// update host after the cut-off gets the explicit port's 403, and nothing
// is dialed for it.
func TestTransparentHTTPDecidedPerRequest(t *testing.T) {
	t.Parallel()
	o := newRecordingOrigin(t)
	n := newDocNet()
	n.route("192.0.2.10:80", hostPort(t, o.URL))
	e := newEnv(t, envConfig{dial: n.dial, resolve: []string{"www.example.test:80:192.0.2.10", "dnl-01.geo.kaspersky.com:80:192.0.2.10"}})
	addr := e.redirect(t, "192.0.2.10:80")
	blocked := requestsSeries("kaspersky", "update", "block", "updates-cutoff")
	before := e.snapshot(t, blocked)
	get := func(c net.Conn, br *bufio.Reader, host, path string) (*http.Response, string) {
		t.Helper()
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
			t.Fatal(err)
		}
		return readResponse(t, br)
	}

	// Only the blocked request: nothing is dialed at all.
	c := dialTransparent(t, addr)
	br := bufio.NewReader(c)
	resp, body := get(c, br, "dnl-01.geo.kaspersky.com", "/bases/av/x.kdc")
	if resp.StatusCode != 403 || resp.Header.Get("X-Feedgate-Rule") != "updates-cutoff" || !strings.Contains(body, "updates-cutoff") {
		t.Fatalf("blocked request: %d X-Feedgate-Rule %q %q; want 403 from updates-cutoff", resp.StatusCode, resp.Header.Get("X-Feedgate-Rule"), body)
	}
	r := e.waitRecord(t, map[string]any{"host": "dnl-01.geo.kaspersky.com"})
	checkRecord(t, r, map[string]any{"kind": "http", "mode": "transparent", "original_dst": "192.0.2.10:80", "host_verify": "match",
		"path": "/bases/av/x.kdc", "action": "block", "rule": "updates-cutoff", "status": 403})
	n.checkDialed(t, "")
	e.checkDeltas(t, before, delta{blocked, 1})

	// The same connection goes on: allowed, blocked and allowed again.
	for i, host := range []string{"www.example.test", "dnl-01.geo.kaspersky.com", "www.example.test"} {
		resp, body := get(c, br, host, fmt.Sprintf("/step/%d", i))
		want := 200
		if strings.Contains(host, "kaspersky") {
			want = 403
		}
		if resp.StatusCode != want {
			t.Errorf("request %d to %s: %d %q; want %d", i, host, resp.StatusCode, body, want)
		}
	}
	for _, s := range o.since(0) {
		if s.host != "www.example.test" {
			t.Errorf("origin got a request for %s %s", s.host, s.uri)
		}
	}
	if got := len(o.since(0)); got != 2 {
		t.Errorf("origin got %d requests; want 2", got)
	}
	n.checkDialed(t, "192.0.2.10:80")
	e.waitRecords(t, 2, map[string]any{"host": "dnl-01.geo.kaspersky.com", "action": "block", "mode": "transparent"})
	e.waitRecords(t, 2, map[string]any{"host": "www.example.test", "action": "allow", "mode": "transparent"})
	e.checkDeltas(t, before, delta{blocked, 2})
}

// TestTransparentTLS: a TLS client redirected to the transparent listener
// is relayed to the original destination (never to where its server name
// resolves), its bytes intact, and the connection recorded and counted as
// a transparent tunnel.
func TestTransparentTLS(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, orig string }{
		{"ipv4", "192.0.2.10:443"},
		{"ipv6", "[2001:db8:2::10]:443"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := newTLSOrigin(t)
			n := newDocNet()
			n.route(tt.orig, hostPort(t, o.URL))
			orig := netip.MustParseAddrPort(tt.orig)
			e := newEnv(t, envConfig{dial: n.dial, resolve: []string{"www.example.test:443:[" + orig.Addr().String() + "]"}})
			c, tr, _ := transparentClient(t, e.redirect(t, tt.orig), o.roots)
			reqs := requestsSeries("none", "none", "allow", "default")
			before := e.snapshot(t, reqs, sniSeries(metrics.SNIMatch), hostVerifySeries("match"),
				durationSeries("transparent"), durationSeries("connect"), durationSeries("http"))

			if resp, body := get(t, c, "https://www.example.test/big"); resp.StatusCode != 200 || body != string(bigBody) {
				t.Fatalf("GET /big over TLS: %d, %d bytes; want 200 and %d bytes intact", resp.StatusCode, len(body), len(bigBody))
			}
			if n := e.value(t, activeSeries(accesslog.KindTransparent)); n != 1 {
				t.Errorf("active transparent = %v while the connection is open; want 1", n)
			}
			tr.CloseIdleConnections()
			r := e.waitRecord(t, map[string]any{"kind": "transparent"})
			checkRecord(t, r, map[string]any{"mode": "transparent", "original_dst": tt.orig, "method": "", "host": "www.example.test", "port": 443,
				"sni": "www.example.test", "sni_result": "match", "host_verify": "match", "action": "allow", "rule": "default",
				"vendor": "none", "status": 200, "client": "127.0.0.1"})
			if got := r.num("bytes_received"); got < float64(len(bigBody)) {
				t.Errorf("bytes_received = %v; want at least %d", got, len(bigBody))
			}
			if o.Conns() != 1 {
				t.Errorf("origin accepted %d connections; want 1", o.Conns())
			}
			n.checkDialed(t, tt.orig)
			if l := e.resolver.Lookups(); len(l) != 0 {
				t.Errorf("the resolver was asked for %q; want no lookups", l)
			}
			e.waitIdle(t)
			e.checkDeltas(t, before, delta{reqs, 1}, delta{sniSeries(metrics.SNIMatch), 1}, delta{hostVerifySeries("match"), 1},
				delta{durationSeries("transparent"), 1}, delta{durationSeries("connect"), 0}, delta{durationSeries("http"), 0})
		})
	}
}

// TestTransparentTLSBlocked: a ClientHello that names a blocked host is
// answered with a TLS access_denied alert before feedgate connects
// anywhere: the origin never sees the connection.
func TestTransparentTLSBlocked(t *testing.T) {
	t.Parallel()
	o := newTLSOrigin(t)
	n := newDocNet()
	n.route("192.0.2.10:443", hostPort(t, o.URL)) // a dial would succeed
	e := newEnv(t, envConfig{dial: n.dial, resolve: []string{"dnl-01.geo.kaspersky.com:443:192.0.2.10"}})
	addr := e.redirect(t, "192.0.2.10:443")
	blocked := requestsSeries("kaspersky", "update", "block", "updates-cutoff")
	before := e.snapshot(t, blocked, sniSeries(metrics.SNIMatch), durationSeries("transparent"))

	_, err := tlsTransparent(t, addr, "dnl-01.geo.kaspersky.com", o.roots)
	if err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("handshake: %v; want a TLS access_denied alert", err)
	}
	r := e.waitRecord(t, map[string]any{"kind": "transparent"})
	checkRecord(t, r, map[string]any{"mode": "transparent", "original_dst": "192.0.2.10:443", "host": "dnl-01.geo.kaspersky.com", "port": 443,
		"sni": "dnl-01.geo.kaspersky.com", "sni_result": "match", "host_verify": "match", "action": "block", "rule": "updates-cutoff",
		"closed": "blocked", "status": 403})
	n.checkDialed(t, "")
	if o.Conns() != 0 {
		t.Errorf("origin accepted %d connections; want none", o.Conns())
	}
	e.waitIdle(t)
	e.checkDeltas(t, before, delta{blocked, 1}, delta{sniSeries(metrics.SNIMatch), 1}, delta{durationSeries("transparent"), 1})
}

// TestTransparentHostVerify: the name a client sent (Host or SNI) is
// resolved as feedgate would dial it and compared with the original
// destination. A name that resolves elsewhere, or not at all, is logged
// and allowed by default; transparent_verify = "strict" refuses it (409
// for HTTP, an access_denied alert for TLS) before anything is dialed.
func TestTransparentHostVerify(t *testing.T) {
	t.Parallel()
	plain := newOrigin(t)
	secure := newTLSOrigin(t)
	for _, tt := range []struct {
		name    string
		strict  bool
		tls     bool
		orig    string
		resolve string // www.example.test's -resolve address, "" for none
		result  string
	}{
		{"http-match-strict", true, false, "192.0.2.10:80", "192.0.2.10", metrics.VerifyMatch},
		{"http-mismatch-logged", false, false, "192.0.2.20:80", "192.0.2.10", metrics.VerifyMismatch},
		{"http-mismatch-strict", true, false, "192.0.2.20:80", "192.0.2.10", metrics.VerifyMismatch},
		{"http-unverified-logged", false, false, "192.0.2.10:80", "", metrics.VerifyUnverified},
		{"http-unverified-strict", true, false, "192.0.2.10:80", "", metrics.VerifyUnverified},
		{"tls-match-strict", true, true, "192.0.2.10:443", "192.0.2.10", metrics.VerifyMatch},
		{"tls-mismatch-logged", false, true, "192.0.2.20:443", "192.0.2.10", metrics.VerifyMismatch},
		{"tls-mismatch-strict", true, true, "192.0.2.20:443", "192.0.2.10", metrics.VerifyMismatch},
		{"tls-unverified-logged", false, true, "192.0.2.10:443", "", metrics.VerifyUnverified},
		{"tls-unverified-strict", true, true, "192.0.2.10:443", "", metrics.VerifyUnverified},
		{"tls-ipv6-match-strict", true, true, "[2001:db8:2::10]:443", "[2001:db8:2::10]", metrics.VerifyMatch},
		{"tls-ipv6-mismatch-strict", true, true, "[2001:db8:2::10]:443", "192.0.2.10", metrics.VerifyMismatch},
		{"http-ipv6-mismatch-logged", false, false, "[2001:db8:2::10]:80", "[2001:db8:2::20]", metrics.VerifyMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newDocNet()
			to := hostPort(t, plain.URL)
			if tt.tls {
				to = hostPort(t, secure.URL)
			}
			n.route(tt.orig, to)
			cfg := envConfig{dial: n.dial}
			if tt.strict {
				cfg.policy = defaultPolicyKeys(t, `transparent_verify = "strict"`)
			}
			if tt.resolve != "" {
				port := netip.MustParseAddrPort(tt.orig).Port()
				cfg.resolve = []string{fmt.Sprintf("www.example.test:%d:%s", port, tt.resolve)}
			}
			e := newEnv(t, cfg)
			addr := e.redirect(t, tt.orig)
			refused := tt.strict && tt.result != metrics.VerifyMatch
			before := e.snapshot(t, append(allHostVerifySeries(), rejectedSeries(metrics.RejectHostVerify))...)

			want := map[string]any{"mode": "transparent", "original_dst": tt.orig, "host": "www.example.test", "host_verify": tt.result}
			if tt.tls {
				want["kind"], want["sni"], want["sni_result"] = "transparent", "www.example.test", metrics.SNIMatch
				tc, err := tlsTransparent(t, addr, "www.example.test", secure.roots)
				switch {
				case refused && (err == nil || !strings.Contains(err.Error(), "access denied")):
					t.Fatalf("handshake: %v; want a TLS access_denied alert", err)
				case !refused && err != nil:
					t.Fatalf("handshake: %v; want it relayed to the origin", err)
				case !refused:
					if b := tlsGet(t, tc, "www.example.test", "/hello"); string(b) != "hello from origin\n" {
						t.Errorf("over TLS: %q", b)
					}
					_ = tc.Close()
				}
			} else {
				want["kind"], want["path"] = "http", "/hello"
				c, _, _ := transparentClient(t, addr, nil)
				resp, body := get(t, c, "http://www.example.test/hello")
				switch {
				case refused && (resp.StatusCode != http.StatusConflict || resp.Header.Get("X-Feedgate-Reason") != metrics.RejectHostVerify):
					t.Fatalf("status %d X-Feedgate-Reason %q; want 409 and host_verify", resp.StatusCode, resp.Header.Get("X-Feedgate-Reason"))
				case !refused && (resp.StatusCode != 200 || body != "hello from origin\n"):
					t.Fatalf("status %d %q; want 200 from the origin", resp.StatusCode, body)
				}
			}
			if refused {
				want["rejected"] = metrics.RejectHostVerify
				if !tt.tls {
					want["status"] = http.StatusConflict
				}
				n.checkDialed(t, "")
			} else {
				want["action"] = "allow"
				n.checkDialed(t, tt.orig)
			}
			r := e.waitRecord(t, want)
			if !refused && r["rejected"] != nil {
				t.Errorf("record says rejected=%v; want the connection allowed", r["rejected"])
			}
			var deltas []delta
			for _, res := range metrics.VerifyResults() {
				d := 0.0
				if res == tt.result {
					d = 1
				}
				deltas = append(deltas, delta{hostVerifySeries(res), d})
			}
			wantRejected := 0.0
			if refused {
				wantRejected = 1
			}
			e.checkDeltas(t, before, append(deltas, delta{rejectedSeries(metrics.RejectHostVerify), wantRejected})...)
		})
	}
}

// TestTransparentVerifyReloads: transparent_verify follows a reload, from
// the next request on, on a keep-alive connection too.
func TestTransparentVerifyReloads(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	n := newDocNet()
	n.route("192.0.2.20:80", hostPort(t, o.URL))
	e := newEnv(t, envConfig{dial: n.dial, resolve: []string{"www.example.test:80:192.0.2.10"}})
	c, _, dials := transparentClient(t, e.redirect(t, "192.0.2.20:80"), nil)
	if resp, _ := get(t, c, "http://www.example.test/hello"); resp.StatusCode != 200 {
		t.Fatalf("before the reload: %d; want 200 (a mismatch is only logged)", resp.StatusCode)
	}
	e.srv.SetConfig(defaultPolicyKeys(t, `transparent_verify = "strict"`))
	if resp, _ := get(t, c, "http://www.example.test/hello"); resp.StatusCode != http.StatusConflict {
		t.Errorf("after the reload: %d; want 409", resp.StatusCode)
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("the client opened %d connections; want 1", d)
	}
	e.waitRecord(t, map[string]any{"host_verify": "mismatch", "action": "allow"})
	e.waitRecord(t, map[string]any{"host_verify": "mismatch", "rejected": metrics.RejectHostVerify})
}

// TestTransparentNoName: a connection that names no host (an HTTP/1.0
// request without Host, a ClientHello without SNI) is decided by its
// original destination, and has nothing to verify.
func TestTransparentNoName(t *testing.T) {
	t.Parallel()
	t.Run("http-1.0-without-host", func(t *testing.T) {
		t.Parallel()
		o := newRecordingOrigin(t)
		n := newDocNet()
		n.route("192.0.2.10:80", hostPort(t, o.URL))
		e := newEnv(t, envConfig{dial: n.dial})
		before := e.snapshot(t, allHostVerifySeries()...)
		c := dialTransparent(t, e.redirect(t, "192.0.2.10:80"))
		if _, err := io.WriteString(c, "GET /hello HTTP/1.0\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if resp, body := readResponse(t, bufio.NewReader(c)); resp.StatusCode != 200 || body != "hello from origin\n" {
			t.Fatalf("%d %q; want 200 from the origin", resp.StatusCode, body)
		}
		r := e.waitRecord(t, map[string]any{"kind": "http", "mode": "transparent"})
		checkRecord(t, r, map[string]any{"host": "192.0.2.10", "port": 80, "original_dst": "192.0.2.10:80", "action": "allow"})
		if v, ok := r["host_verify"]; ok {
			t.Errorf("record has host_verify %v; want none without a name", v)
		}
		n.checkDialed(t, "192.0.2.10:80")
		e.checkDeltas(t, before, delta{hostVerifySeries("match"), 0}, delta{hostVerifySeries("mismatch"), 0}, delta{hostVerifySeries("unverified"), 0})
	})
	t.Run("tls-without-sni", func(t *testing.T) {
		t.Parallel()
		o := newTLSOrigin(t)
		n := newDocNet()
		n.route("192.0.2.10:443", hostPort(t, o.URL))
		e := newEnv(t, envConfig{dial: n.dial})
		before := e.snapshot(t, allHostVerifySeries()...)
		tc, err := tlsTransparent(t, e.redirect(t, "192.0.2.10:443"), "", o.roots)
		if err != nil {
			t.Fatalf("handshake without SNI: %v; want it relayed (tunnel_without_sni is log)", err)
		}
		if b := tlsGet(t, tc, "127.0.0.1", "/hello"); string(b) != "hello from origin\n" {
			t.Errorf("over TLS: %q", b)
		}
		_ = tc.Close()
		r := e.waitRecord(t, map[string]any{"kind": "transparent"})
		checkRecord(t, r, map[string]any{"host": "192.0.2.10", "port": 443, "original_dst": "192.0.2.10:443", "sni_result": metrics.SNINone,
			"action": "log", "rule": "tunnel_without_sni", "vendor": "none"})
		if v, ok := r["host_verify"]; ok {
			t.Errorf("record has host_verify %v; want none without a name", v)
		}
		n.checkDialed(t, "192.0.2.10:443")
		e.checkDeltas(t, before, delta{hostVerifySeries("match"), 0}, delta{hostVerifySeries("mismatch"), 0}, delta{hostVerifySeries("unverified"), 0})
	})
}

// TestTransparentUnreadableHost: a transparent request whose Host the
// policy cannot read is refused as on the proxy port, and the name goes to
// no resolver, not even to be verified.
func TestTransparentUnreadableHost(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	n := newDocNet()
	n.route("192.0.2.10:80", hostPort(t, o.URL))
	e := newEnv(t, envConfig{dial: n.dial})
	addr := e.redirect(t, "192.0.2.10:80")
	for _, host := range []string{"ksn%2ekaspersky.com", "ksn..kaspersky.com", "ksn.kaspersky.com.."} {
		t.Run(host, func(t *testing.T) {
			before := e.snapshot(t, append(allHostVerifySeries(), rejectedSeries(metrics.RejectInvalid))...)
			c := dialTransparent(t, addr)
			fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: %s\r\n\r\n", host)
			if resp, body := readResponse(t, bufio.NewReader(c)); resp.StatusCode != 400 {
				t.Errorf("%d %q; want 400", resp.StatusCode, body)
			}
			r := e.waitRecord(t, map[string]any{"host": host})
			checkRecord(t, r, map[string]any{"kind": "http", "mode": "transparent", "rejected": metrics.RejectInvalid})
			if v, ok := r["host_verify"]; ok {
				t.Errorf("record has host_verify %v; want none for a name the policy cannot read", v)
			}
			e.checkDeltas(t, before, delta{rejectedSeries(metrics.RejectInvalid), 1},
				delta{hostVerifySeries("match"), 0}, delta{hostVerifySeries("mismatch"), 0}, delta{hostVerifySeries("unverified"), 0})
		})
	}
	if l := e.resolver.Lookups(); len(l) != 0 {
		t.Errorf("the resolver was asked for %q; want no lookups", l)
	}
	n.checkDialed(t, "")
}

// TestTransparentConnectRefused: a CONNECT on a transparent connection is
// refused as malformed: its client takes feedgate for the origin, and no
// tunnel is made.
func TestTransparentConnectRefused(t *testing.T) {
	t.Parallel()
	o := newRecordingOrigin(t)
	n := newDocNet()
	n.route("192.0.2.10:80", hostPort(t, o.URL))
	e := newEnv(t, envConfig{dial: n.dial, resolve: []string{"www.example.test:80:192.0.2.10"}})
	c := dialTransparent(t, e.redirect(t, "192.0.2.10:80"))
	if _, err := io.WriteString(c, connectRequest("www.example.test:80")+"GET /tunnelled HTTP/1.1\r\n"+hostHdr+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("CONNECT: %v, %v; want 400", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	waitClosed(t, c, br)
	e.waitRecord(t, map[string]any{"kind": "http", "method": "CONNECT", "host": "www.example.test", "mode": "transparent",
		"original_dst": "192.0.2.10:80", "rejected": metrics.RejectInvalid, "status": 400})
	n.checkDialed(t, "")
	if seen := o.since(0); len(seen) != 0 {
		t.Errorf("origin got %d requests (first %s %s); want none", len(seen), seen[0].method, seen[0].uri)
	}
}

// TestTransparentLoopGuard: a connection whose original destination is one
// of feedgate's own listeners would come straight back: it is closed and
// recorded, and nothing is dialed.
func TestTransparentLoopGuard(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, listener, orig string }{
		{"ipv4", "192.0.2.99:3129", "192.0.2.99:3129"},
		{"ipv6", "[2001:db8::99]:3129", "[2001:db8::99]:3129"},
		{"ipv4-mapped", "192.0.2.99:3129", "[::ffff:192.0.2.99]:3129"},
		{"unspecified-listener", "0.0.0.0:3129", "192.0.2.10:3129"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newDocNet()
			e := newEnv(t, envConfig{dial: n.dial, listeners: []netip.AddrPort{netip.MustParseAddrPort(tt.listener)}})
			before := e.snapshot(t, rejectedSeries(metrics.RejectDestination))
			c := dialTransparent(t, e.redirect(t, tt.orig))
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
			waitClosed(t, c, nil)
			orig := netip.MustParseAddrPort(tt.orig)
			orig = netip.AddrPortFrom(orig.Addr().Unmap(), orig.Port())
			r := e.waitRecord(t, map[string]any{"kind": "transparent"})
			checkRecord(t, r, map[string]any{"mode": "transparent", "rejected": metrics.RejectDestination, "original_dst": orig.String(),
				"host": orig.Addr().String(), "port": 3129})
			n.checkDialed(t, "")
			e.checkDeltas(t, before, delta{rejectedSeries(metrics.RejectDestination), 1})
		})
	}
}

// TestTransparentNoOriginalDst: a client that connects to the transparent
// port itself has no original destination: there is nowhere to send it.
func TestTransparentNoOriginalDst(t *testing.T) {
	t.Parallel()
	n := newDocNet()
	e := newEnv(t, envConfig{dial: n.dial})
	before := e.snapshot(t, rejectedSeries(metrics.RejectInvalid))
	c := dialTransparent(t, e.redirect(t, ""))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
	waitClosed(t, c, nil)
	r := e.waitRecord(t, map[string]any{"kind": "transparent"})
	checkRecord(t, r, map[string]any{"mode": "transparent", "rejected": metrics.RejectInvalid, "original_dst": "", "host": "", "port": 0})
	n.checkDialed(t, "")
	e.checkDeltas(t, before, delta{rejectedSeries(metrics.RejectInvalid), 1})
}

// TestTransparentOther: a connection that speaks neither TLS nor HTTP
// first, or nothing within sni_timeout, is decided by its original
// destination alone, with tunnel_without_sni, and relayed unchanged.
func TestTransparentOther(t *testing.T) {
	t.Parallel()
	echo := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	// greet speaks first, as SMTP and SSH servers do, then echoes.
	greet := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		if _, err := io.WriteString(c, "220 greet.example.test\r\n"); err == nil {
			_, _ = io.Copy(c, c)
		}
	})
	for _, tt := range []struct {
		name     string
		tlsKeys  string // keys of the policy's [tls] table
		rules    string // rules after the default policy's
		orig, to string
		silent   bool   // say nothing until the server has spoken
		first    string // sent before the other messages
		result   string
		action   string
		rule     string
	}{
		{name: "not-tls", orig: "192.0.2.10:443", to: echo.Addr(), result: metrics.SNINotTLS, action: "log", rule: "tunnel_without_sni"},
		{name: "silent-client", orig: "192.0.2.10:443", to: greet.Addr(), silent: true, result: metrics.SNITimeout, action: "log", rule: "tunnel_without_sni"},
		{name: "truncated-client-hello", orig: "192.0.2.10:443", to: echo.Addr(), first: tlsClientHello(t)[:20],
			result: metrics.SNITimeout, action: "log", rule: "tunnel_without_sni"},
		{name: "ipv6-not-tls", orig: "[2001:db8:2::10]:443", to: echo.Addr(), result: metrics.SNINotTLS, action: "log", rule: "tunnel_without_sni"},
		{name: "tunnel-without-sni-allowed", tlsKeys: "tunnel_without_sni = \"allow\"\n", orig: "192.0.2.10:443", to: echo.Addr(),
			result: metrics.SNINotTLS, action: "allow", rule: "default"},
		{name: "tunnel-without-sni-blocked", tlsKeys: "tunnel_without_sni = \"block\"\n", orig: "192.0.2.10:443", to: echo.Addr(),
			action: "block", rule: "tunnel_without_sni"},
		{name: "address-named-by-a-rule", rules: "[[rule]]\nname = \"block-address\"\nhosts = [\"192.0.2.66\"]\naction = \"block\"\n",
			orig: "192.0.2.66:443", to: echo.Addr(), action: "block", rule: "block-address"},
		{name: "address-named-by-a-rule-v4-mapped", rules: "[[rule]]\nname = \"block-address\"\nhosts = [\"192.0.2.66\"]\naction = \"block\"\n",
			orig: "[::ffff:192.0.2.66]:443", to: echo.Addr(), action: "block", rule: "block-address"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newDocNet()
			n.route(tt.orig, tt.to)
			policy := defaultPolicyWith(t, "[tls]\nsni_timeout = \"100ms\"\n"+tt.tlsKeys+"\n"+tt.rules)
			e := newEnv(t, envConfig{dial: n.dial, policy: policy})
			c := dialTransparent(t, e.redirect(t, tt.orig))
			br := bufio.NewReader(c)
			orig := netip.MustParseAddrPort(tt.orig)
			orig = netip.AddrPortFrom(orig.Addr().Unmap(), orig.Port())
			want := map[string]any{"kind": "transparent", "mode": "transparent", "original_dst": orig.String(), "host": orig.Addr().String(),
				"port": 443, "method": "", "action": tt.action, "rule": tt.rule, "vendor": "none"}
			if tt.action == "block" {
				_, _ = io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
				waitClosed(t, c, nil)
				want["closed"], want["sni_result"] = "blocked", metrics.SNINotTLS
				e.waitRecord(t, want)
				n.checkDialed(t, "")
				return
			}
			if tt.silent {
				if line, err := br.ReadString('\n'); err != nil || line != "220 greet.example.test\r\n" {
					t.Fatalf("the server's greeting: %q, %v", line, err)
				}
			}
			msgs := []string{"SSH-2.0-OpenSSH_9.6\r\n", "\x00\x01 binary \xff\r\n"}
			if tt.first != "" {
				msgs = append([]string{tt.first}, msgs...)
			}
			for _, msg := range msgs {
				if _, err := io.WriteString(c, msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
					t.Fatalf("echo through the tunnel: %q, %v; want %q", got, err, msg)
				}
			}
			_ = c.CloseWrite()
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Errorf("after the half-close: %q, %v; want EOF", rest, err)
			}
			want["sni_result"] = tt.result
			r := e.waitRecord(t, want)
			if v, ok := r["host_verify"]; ok {
				t.Errorf("record has host_verify %v; want none without a name", v)
			}
			n.checkDialed(t, orig.String())
		})
	}
}

// TestTransparentAccess: allowed_clients holds for the transparent
// listener as for the proxy port: a refused client's connection reaches
// nothing.
func TestTransparentAccess(t *testing.T) {
	t.Parallel()
	plain := newOrigin(t)
	secure := newTLSOrigin(t)
	cfg := policyWith(t, `allowed_clients = ["10.0.0.0/8"]`)
	n := newDocNet()
	n.route("192.0.2.10:80", hostPort(t, plain.URL))
	n.route("192.0.2.10:443", hostPort(t, secure.URL))
	cfg.dial = n.dial
	cfg.resolve = []string{"www.example.test:80:192.0.2.10", "www.example.test:443:192.0.2.10"}
	e := newEnv(t, cfg)
	before := e.snapshot(t, append(allHostVerifySeries(), rejectedSeries(metrics.RejectClient))...)

	c, _, _ := transparentClient(t, e.redirect(t, "192.0.2.10:80"), nil)
	if resp, _ := get(t, c, "http://www.example.test/hello"); resp.StatusCode != 403 || resp.Header.Get("X-Feedgate-Reason") != metrics.RejectClient {
		t.Errorf("HTTP: %d X-Feedgate-Reason %q; want 403 client", resp.StatusCode, resp.Header.Get("X-Feedgate-Reason"))
	}
	e.waitRecord(t, map[string]any{"kind": "http", "mode": "transparent", "rejected": metrics.RejectClient, "original_dst": "192.0.2.10:80", "status": 403})

	if _, err := tlsTransparent(t, e.redirect(t, "192.0.2.10:443"), "www.example.test", secure.roots); err == nil {
		t.Errorf("TLS handshake succeeded; want the connection closed")
	}
	r := e.waitRecord(t, map[string]any{"kind": "transparent", "mode": "transparent", "rejected": metrics.RejectClient, "original_dst": "192.0.2.10:443"})
	if v, ok := r["sni_result"]; ok {
		t.Errorf("a refused client's record has sni_result %v; want none, as for a CONNECT refused before its ClientHello", v)
	}
	n.checkDialed(t, "")
	if plain.Hits() != 0 || secure.Conns() != 0 {
		t.Errorf("the origins saw %d requests and %d connections; want none", plain.Hits(), secure.Conns())
	}
	e.checkDeltas(t, before, delta{rejectedSeries(metrics.RejectClient), 2},
		delta{hostVerifySeries("match"), 0}, delta{hostVerifySeries("mismatch"), 0}, delta{hostVerifySeries("unverified"), 0})
}

// TestTransparentConnectionCaps: max_connections and
// max_connections_per_client count a transparent tunnel once, as they
// count a CONNECT tunnel; the connection beyond a cap is closed before
// anything is read or dialed, and a slot comes back when a tunnel closes.
func TestTransparentConnectionCaps(t *testing.T) {
	t.Parallel()
	echo := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	for _, tt := range []struct{ name, limits, reason string }{
		{"per-client", "max_connections_per_client = 2", metrics.RejectClientLimit},
		{"total", "max_connections = 2\nmax_tunnels = 2", metrics.RejectLimit},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := policyWith(t, "[limits]\n"+tt.limits+"\n")
			n := newDocNet()
			n.route("192.0.2.10:443", echo.Addr())
			cfg.dial = n.dial
			e := newEnv(t, cfg)
			addr := e.redirect(t, "192.0.2.10:443")
			before := e.snapshot(t, rejectedSeries(tt.reason))
			open := func() (*net.TCPConn, error) {
				c := dialTransparent(t, addr)
				if _, err := io.WriteString(c, "ping\n"); err != nil {
					return c, err
				}
				got := make([]byte, 5)
				_, err := io.ReadFull(c, got)
				return c, err
			}
			var held []*net.TCPConn
			for i := range 2 {
				c, err := open()
				if err != nil {
					t.Fatalf("tunnel %d of 2: %v; want it open", i+1, err)
				}
				held = append(held, c)
			}
			if c, err := open(); err == nil {
				t.Errorf("a third tunnel is open with %q", tt.limits)
			} else {
				c.Close()
			}
			e.checkDeltas(t, before, delta{rejectedSeries(tt.reason), 1})
			if got := n.Dialed()["192.0.2.10:443"]; got != 2 {
				t.Errorf("dialed %d times; want 2, one per admitted tunnel", got)
			}
			held[0].Close()
			waitFor(t, "a slot to come back", func() bool {
				c, err := open()
				c.Close()
				return err == nil
			})
		})
	}
}

// TestTransparentShutdown: Shutdown closes the transparent listener's
// connections, idle keep-alive ones included, writes the records of open
// tunnels before it returns, and takes no new connections.
func TestTransparentShutdown(t *testing.T) {
	t.Parallel()
	plain := newOrigin(t)
	secure := newTLSOrigin(t)
	n := newDocNet()
	n.route("192.0.2.10:80", hostPort(t, plain.URL))
	n.route("192.0.2.10:443", hostPort(t, secure.URL))
	e := newEnv(t, envConfig{dial: n.dial, resolve: []string{"www.example.test:80:192.0.2.10", "www.example.test:443:192.0.2.10"}})
	httpAddr, tlsAddr := e.redirect(t, "192.0.2.10:80"), e.redirect(t, "192.0.2.10:443")

	idle := dialTransparent(t, httpAddr)
	if _, err := io.WriteString(idle, "GET /hello HTTP/1.1\r\nHost: www.example.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	ibr := bufio.NewReader(idle)
	if resp, _ := readResponse(t, ibr); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("keep-alive request: %d close=%v; want 200 and the connection kept", resp.StatusCode, resp.Close)
	}
	tc, err := tlsTransparent(t, tlsAddr, "www.example.test", secure.roots)
	if err != nil {
		t.Fatal(err)
	}
	tlsGet(t, tc, "www.example.test", "/hello")
	e.waitRecord(t, map[string]any{"kind": "http", "mode": "transparent"})

	ctx, cancel := context.WithTimeout(context.Background(), testutil.WaitLimit)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Server.Shutdown: %v", err)
	}
	// No waiting: the tunnel's record must already be there.
	recs := matching(e.records(t), map[string]any{"kind": "transparent", "original_dst": "192.0.2.10:443"})
	if len(recs) != 1 {
		t.Fatalf("transparent records after Shutdown = %d; want 1\nlog:\n%s", len(recs), e.log.String())
	}
	checkRecord(t, recs[0], map[string]any{"status": 200, "sni": "www.example.test", "action": "allow"})
	_ = tc.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
	if _, err := tc.Read(make([]byte, 1)); err == nil {
		t.Errorf("the tunnel still carries bytes after Shutdown")
	}
	waitClosed(t, idle, ibr)
	// The listener is still open, but the proxy takes nothing more.
	late := dialTransparent(t, httpAddr)
	_, _ = io.WriteString(late, "GET /hello HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
	waitClosed(t, late, nil)
	e.waitIdle(t)
}

// TestTransparentTProxy: on a TPROXY listener the local address of a
// connection is its original destination, whatever else would say: here
// the listener's own loopback address, which the destination policy
// refuses.
func TestTransparentTProxy(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	n := newDocNet()
	n.route("192.0.2.10:80", hostPort(t, o.URL))
	// Any port may carry plain HTTP, the listener's random one too.
	cfg := policyWith(t, `http_ports = ["1-65535"]`)
	cfg.dial = n.dial
	e := newEnv(t, cfg)
	addr := e.serveTransparent(t, netip.MustParseAddrPort("192.0.2.10:80"), proxy.TransparentOptions{TProxy: true})
	c, _, _ := transparentClient(t, addr, nil)
	resp, _ := get(t, c, "http://www.example.test/hello")
	if resp.StatusCode != 403 || resp.Header.Get("X-Feedgate-Reason") != metrics.RejectDestination {
		t.Errorf("%d X-Feedgate-Reason %q; want 403 destination (loopback)", resp.StatusCode, resp.Header.Get("X-Feedgate-Reason"))
	}
	e.waitRecord(t, map[string]any{"kind": "http", "mode": "transparent", "original_dst": addr, "rejected": metrics.RejectDestination})
	n.checkDialed(t, "")
	if o.Hits() != 0 {
		t.Errorf("origin got %d requests; want none", o.Hits())
	}
}

// TestTransparentWebsocket: a websocket upgrade on a transparent HTTP
// connection is relayed for as long as it is open, like one on the proxy
// port.
func TestTransparentWebsocket(t *testing.T) {
	t.Parallel()
	ws := testutil.NewRawUpstream(t, wsEcho)
	n := newDocNet()
	n.route("192.0.2.10:80", ws.Addr())
	e := newEnv(t, envConfig{dial: n.dial, resolve: []string{"ws.example.test:80:192.0.2.10"}})
	c := dialTransparent(t, e.redirect(t, "192.0.2.10:80"))
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: ws.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v; want 101", resp, err)
	}
	for _, line := range []string{"one\n", "two\n"} {
		echoLine(t, c, br, line)
	}
	c.Close()
	r := e.waitRecord(t, map[string]any{"kind": "http", "mode": "transparent", "host": "ws.example.test"})
	checkRecord(t, r, map[string]any{"status": 101, "original_dst": "192.0.2.10:80", "host_verify": "match"})
	n.checkDialed(t, "192.0.2.10:80")
}

// TestTransparentWebsocketsPerClient: a transparent websocket counts once
// against max_connections_per_client, as one on the proxy port does.
func TestTransparentWebsocketsPerClient(t *testing.T) {
	t.Parallel()
	ws := testutil.NewRawUpstream(t, wsEcho)
	cfg := policyWith(t, "[limits]\nmax_connections_per_client = 2\n")
	n := newDocNet()
	n.route("192.0.2.10:80", ws.Addr())
	cfg.dial = n.dial
	e := newEnv(t, cfg)
	addr := e.redirect(t, "192.0.2.10:80")
	for i := range 2 {
		c := dialTransparent(t, addr)
		fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: ws.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("websocket %d of 2: %v, %v; want 101", i+1, resp, err)
		}
		echoLine(t, c, br, "open\n")
	}
}

// TestTransparentHelloRetryRequest: a TLS 1.3 handshake whose server asks
// for another key share passes through a transparent tunnel intact; the
// second ClientHello is decided too, and its name, like the first's, is
// not held against the original destination's address.
func TestTransparentHelloRetryRequest(t *testing.T) {
	t.Parallel()
	ln, _ := retryServer(t)
	n := newDocNet()
	n.route("192.0.2.10:443", ln.Addr().String())
	e := newEnv(t, envConfig{dial: n.dial, resolve: []string{"www1.example.test:443:192.0.2.10"}})
	addr := e.redirect(t, "192.0.2.10:443")
	clientCfg := &tls.Config{ServerName: "www1.example.test", InsecureSkipVerify: true,
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}, MinVersion: tls.VersionTLS13}

	t.Run("handshake-passes", func(t *testing.T) {
		tc := tls.Client(dialTransparent(t, addr), clientCfg)
		retryHandshakeEcho(t, tc, "through the transparent listener")
		e.waitRecord(t, map[string]any{"kind": "transparent", "host": "www1.example.test", "sni": "www1.example.test",
			"sni_retry": "www1.example.test", "sni_result": metrics.SNIMatch, "host_verify": "match", "action": "allow"})
	})

	t.Run("second-hello-elsewhere", func(t *testing.T) {
		// www2.example.test resolves elsewhere; it replaces www1 in the
		// second ClientHello only (same length). In strict mode the
		// tunnel is refused as a first name that resolves elsewhere is;
		// by default it goes on (the server then refuses the changed
		// hello) and the record shows the mismatch.
		for _, strict := range []bool{false, true} {
			cfg := envConfig{dial: n.dial, resolve: []string{"www1.example.test:443:192.0.2.10", "www2.example.test:443:198.51.100.7"}}
			if strict {
				cfg.policy = defaultPolicyKeys(t, `transparent_verify = "strict"`)
			}
			e := newEnv(t, cfg)
			addr := e.redirect(t, "192.0.2.10:443")
			c := dialTransparent(t, addr)
			rc := &recordingConn{Conn: c, r: c}
			rw := &helloRewriter{Conn: rc, from: []byte("www1.example.test"), to: []byte("www2.example.test")}
			if err := tls.Client(rw, clientCfg).Handshake(); err == nil {
				t.Fatalf("strict %v: the handshake succeeded", strict)
			}
			want := map[string]any{"kind": "transparent", "sni": "www1.example.test", "sni_retry": "www2.example.test", "host_verify": "mismatch"}
			if strict {
				if got := rc.Bytes(); !bytes.HasSuffix(got, []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49}) {
					t.Errorf("strict: the client's last bytes %x; want an access_denied alert", got[max(0, len(got)-16):])
				}
				want["rejected"] = metrics.RejectHostVerify
				r := e.waitRecord(t, want)
				if _, ok := r["action"]; ok {
					t.Errorf("strict: the refused tunnel's record has action %v; want none (not a decision)", r["action"])
				}
			} else {
				want["action"] = "allow"
				_ = c.Close() // the tunnel, and its record, end with the client
				e.waitRecord(t, want)
			}
		}
	})

	t.Run("second-hello-blocked", func(t *testing.T) {
		c := dialTransparent(t, addr)
		rc := &recordingConn{Conn: c, r: c}
		// www1.example.test and ksn.kaspersky.com have the same length.
		rw := &helloRewriter{Conn: rc, from: []byte("www1.example.test"), to: []byte("ksn.kaspersky.com")}
		if err := tls.Client(rw, clientCfg).Handshake(); err == nil {
			t.Fatalf("the handshake succeeded")
		}
		if got := rc.Bytes(); !bytes.HasSuffix(got, []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49}) {
			t.Errorf("the client's last bytes %x; want an access_denied alert", got[max(0, len(got)-16):])
		}
		e.waitRecord(t, map[string]any{"kind": "transparent", "sni": "www1.example.test", "sni_retry": "ksn.kaspersky.com",
			"action": "block", "rule": "updates-cutoff", "closed": "blocked"})
	})
}

// TestTransparentUpstreamFailures: an original destination that refuses
// the connection, or that the destination policy refuses, is answered as
// on the proxy port (a 502 or 403 for HTTP; a closed connection for TLS)
// and recorded with the failure.
func TestTransparentUpstreamFailures(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, keys, orig string
		tls              bool
		status           int
		field, value     string // the record's failure field: error or rejected
		counter          series
	}{
		{"http-refused", "", "192.0.2.30:80", false, 502, "error", metrics.ReasonRefused, upstreamErrSeries(metrics.ReasonRefused)},
		{"tls-refused", "", "192.0.2.30:443", true, 502, "error", metrics.ReasonRefused, upstreamErrSeries(metrics.ReasonRefused)},
		{"http-link-local", "", "169.254.169.254:80", false, 403, "rejected", metrics.RejectDestination, rejectedSeries(metrics.RejectDestination)},
		{"tls-link-local", "", "169.254.169.254:443", true, 403, "rejected", metrics.RejectDestination, rejectedSeries(metrics.RejectDestination)},
		{"tls-deny-private", "deny_private = true", "192.0.2.10:443", true, 403, "rejected", metrics.RejectDestination, rejectedSeries(metrics.RejectDestination)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newDocNet() // routes nothing: every dial is refused
			cfg := envConfig{policy: defaultPolicyKeys(t, tt.keys), dial: n.dial}
			e := newEnv(t, cfg)
			addr := e.redirect(t, tt.orig)
			before := e.snapshot(t, tt.counter)
			want := map[string]any{"mode": "transparent", "original_dst": tt.orig, "status": tt.status, tt.field: tt.value, "action": "allow"}
			if tt.tls {
				if _, err := tlsTransparent(t, addr, "www.example.test", nil); err == nil {
					t.Fatalf("TLS handshake succeeded; want the connection closed")
				}
				want["kind"], want["sni_result"] = "transparent", metrics.SNIMatch
			} else {
				c, _, _ := transparentClient(t, addr, nil)
				resp, body := get(t, c, "http://www.example.test/hello")
				if resp.StatusCode != tt.status {
					t.Errorf("%d %q; want %d", resp.StatusCode, body, tt.status)
				}
				for _, frag := range rawErrorFragments {
					if strings.Contains(body, frag) {
						t.Errorf("the reply %q shows %q", body, frag)
					}
				}
				want["kind"] = "http"
			}
			e.waitRecord(t, want)
			e.checkDeltas(t, before, delta{tt.counter, 1})
			if tt.value == metrics.RejectDestination {
				n.checkDialed(t, "")
			}
		})
	}
}
