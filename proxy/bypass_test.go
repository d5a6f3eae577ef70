package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// TestWebsocketCountsAsTunnel: an upgraded connection holds a tunnel slot,
// so max_tunnels bounds websockets and CONNECTs together.
func TestWebsocketCountsAsTunnel(t *testing.T) {
	t.Parallel()
	ws := testutil.NewRawUpstream(t, wsEcho)
	cfg := policyWith(t, "[limits]\nmax_tunnels = 1")
	cfg.resolve = []string{"ws.example.test:80:" + ws.Addr(), "ws.example.test:443:" + ws.Addr()}
	e := newEnv(t, cfg)
	before := e.snapshot(t, rejectedSeries(metrics.RejectLimit))

	first, br, st := openWebsocket(t, e, "ws.example.test")
	if st != 101 {
		t.Fatalf("first websocket: %d; want 101", st)
	}
	echoLine(t, first, br, "hello\n")
	if _, _, st := openWebsocket(t, e, "ws.example.test"); st != http.StatusServiceUnavailable {
		t.Errorf("second websocket with max_tunnels = 1: %d; want 503", st)
	}
	if c, resp := openTunnel(t, e, "ws.example.test:443"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("CONNECT beside a websocket with max_tunnels = 1: %d; want 503", resp.StatusCode)
	} else {
		c.Close()
	}
	e.checkDeltas(t, before, delta{rejectedSeries(metrics.RejectLimit), 2})
	first.Close()
	waitFor(t, "the websocket's slot to be given back", func() bool {
		c, _, st := openWebsocket(t, e, "ws.example.test")
		c.Close()
		return st == 101
	})
}

// TestLongLivedConnectionsBounded: whichever path a connection took, it is
// closed after tunnel_idle_timeout without a byte, and a tunnel or
// websocket is closed at max_tunnel_lifetime however busy it is.
func TestLongLivedConnectionsBounded(t *testing.T) {
	t.Parallel()
	ws := testutil.NewRawUpstream(t, wsEcho)
	echo := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	// An upstream that answers an Expect: 100-continue request with part
	// of a body and then stalls: that request takes net/http's transport,
	// not feedgate's pool.
	stall := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		_, _ = io.Copy(io.Discard, c) // stall until the proxy closes
	})
	resolve := []string{"ws.example.test:80:" + ws.Addr(), "echo.example.test:443:" + echo.Addr(), "stall.example.test:80:" + stall.Addr()}

	t.Run("websocket-idle", func(t *testing.T) {
		t.Parallel()
		cfg := policyWith(t, "[limits]\ntunnel_idle_timeout = \"1s\"")
		cfg.resolve = resolve
		e := newEnv(t, cfg)
		before := e.snapshot(t, tunnelsClosedSeries(metrics.TunnelIdle))
		c, br, st := openWebsocket(t, e, "ws.example.test")
		if st != 101 {
			t.Fatalf("websocket: %d", st)
		}
		_ = waitEnd(t, c, br)
		e.waitRecord(t, map[string]any{"host": "ws.example.test", "closed": metrics.TunnelIdle, "status": 101})
		e.checkDeltas(t, before, delta{tunnelsClosedSeries(metrics.TunnelIdle), 1})
	})

	t.Run("expect-continue-stall", func(t *testing.T) {
		t.Parallel()
		cfg := policyWith(t, "[limits]\ntunnel_idle_timeout = \"1s\"")
		cfg.resolve = resolve
		e := newEnv(t, cfg)
		c := e.dial(t)
		fmt.Fprint(c, "POST http://stall.example.test/upload HTTP/1.1\r\nHost: stall.example.test\r\n"+
			"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err == nil && resp.StatusCode == http.StatusContinue {
			fmt.Fprint(c, "hello")
			resp, err = http.ReadResponse(br, nil)
		}
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
		if body, err := io.ReadAll(resp.Body); err == nil {
			t.Errorf("a stalled body read to a clean end (%q); want it cut", body)
		}
		e.waitRecord(t, map[string]any{"host": "stall.example.test", "closed": metrics.TunnelIdle})
	})

	t.Run("tunnel-lifetime", func(t *testing.T) {
		t.Parallel()
		cfg := policyWith(t, "[limits]\nmax_tunnel_lifetime = \"1s\"\n[tls]\ntunnel_without_sni = \"allow\"")
		cfg.resolve = resolve
		e := newEnv(t, cfg)
		before := e.snapshot(t, tunnelsClosedSeries(metrics.TunnelLifetime))
		c, resp := openTunnel(t, e, "echo.example.test:443")
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		// Busy all the time: the lifetime, not idleness, ends it.
		deadline := time.Now().Add(testutil.WaitLimit)
		var err error
		for time.Now().Before(deadline) {
			if _, err = io.WriteString(c, "busy\n"); err != nil {
				break
			}
			_ = c.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
			if _, err = c.r.ReadString('\n'); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err == nil {
			t.Fatalf("a busy tunnel outlived max_tunnel_lifetime by %v", testutil.WaitLimit)
		}
		e.waitRecord(t, map[string]any{"host": "echo.example.test", "closed": metrics.TunnelLifetime})
		e.checkDeltas(t, before, delta{tunnelsClosedSeries(metrics.TunnelLifetime), 1})
	})

	t.Run("websocket-lifetime", func(t *testing.T) {
		t.Parallel()
		cfg := policyWith(t, "[limits]\nmax_tunnel_lifetime = \"1s\"")
		cfg.resolve = resolve
		e := newEnv(t, cfg)
		c, br, st := openWebsocket(t, e, "ws.example.test")
		if st != 101 {
			t.Fatalf("websocket: %d", st)
		}
		_ = waitEnd(t, c, br)
		e.waitRecord(t, map[string]any{"host": "ws.example.test", "closed": metrics.TunnelLifetime})
	})
}

// TestMaxConnectionsPerClient: one client address gets at most
// max_connections_per_client connections, tunnels included; beyond it, 429.
func TestMaxConnectionsPerClient(t *testing.T) {
	t.Parallel()
	echo := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	o := newOrigin(t)
	cfg := policyWith(t, "[limits]\nmax_connections_per_client = 2\n[tls]\ntunnel_without_sni = \"allow\"")
	cfg.resolve = []string{"echo.example.test:443:" + echo.Addr(), "www.example.test:80:" + hostPort(t, o.URL)}
	e := newEnv(t, cfg)
	before := e.snapshot(t, rejectedSeries(metrics.RejectClientLimit))

	tun, resp := openTunnel(t, e, "echo.example.test:443")
	if resp.StatusCode != 200 {
		t.Fatalf("tunnel: %d", resp.StatusCode)
	}
	roundTrip(t, tun, "one\n")
	// The second connection becomes a tunnel too: the cap counts the
	// connection and its tunnel once.
	tun2, resp := openTunnel(t, e, "echo.example.test:443")
	if resp.StatusCode != 200 {
		t.Fatalf("second tunnel at the cap: %d; want 200", resp.StatusCode)
	}
	roundTrip(t, tun2, "two\n")
	c := e.dial(t)
	resp3, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp3.StatusCode != http.StatusTooManyRequests || resp3.Header.Get("X-Feedgate-Reason") != metrics.RejectClientLimit {
		t.Fatalf("third connection: %v, %v; want 429 with reason %s", resp3, err, metrics.RejectClientLimit)
	}
	c.Close()
	e.checkDeltas(t, before, delta{rejectedSeries(metrics.RejectClientLimit), 1})

	// Closing gives the slots back.
	tun.Close()
	tun2.Close()
	hc, _ := e.client(t, nil)
	waitFor(t, "the client's connections to be given back", func() bool {
		resp, err := hc.Get("http://www.example.test/hello")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// TestReloadWhileAwaitingClientHello: a tunnel admitted under one policy
// whose ClientHello arrives after a reload is decided under the new one.
func TestReloadWhileAwaitingClientHello(t *testing.T) {
	t.Parallel()
	o := newTLSOrigin(t)
	e := newEnv(t, envConfig{now: beforeCutoffs, roots: o.roots, resolve: []string{"s01.upd.kaspersky.com:443:" + hostPort(t, o.URL)}})
	c, resp := openTunnel(t, e, "s01.upd.kaspersky.com:443")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT before the cut-offs: %d; want 200", resp.StatusCode)
	}
	e.srv.SetConfig(policyWith(t, "[[rule]]\nname = \"block-now\"\nvendor = \"kaspersky\"\naction = \"block\"\n").policy)
	tc := tls.Client(c, &tls.Config{RootCAs: o.roots, ServerName: "s01.upd.kaspersky.com"})
	_ = tc.SetDeadline(time.Now().Add(testutil.WaitLimit))
	if err := tc.Handshake(); err == nil {
		t.Fatalf("TLS through a tunnel the new policy blocks: handshake succeeded")
	}
	e.waitRecord(t, map[string]any{"host": "s01.upd.kaspersky.com", "rule": "block-now", "action": "block", "closed": "blocked"})
	if n := o.Hits(); n != 0 {
		t.Errorf("origin served %d requests; want 0", n)
	}
}

// recordingConn keeps every byte read through it.
type recordingConn struct {
	net.Conn
	r   io.Reader
	mu  sync.Mutex
	got bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	c.got.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.got.Bytes())
}

// TestNoUpstreamBytesBeforeDecision: a server that speaks first gets no byte
// to the client before the tunnel is decided on the client's first bytes,
// so neither a blocked name in the ClientHello nor a client that
// half-closes at once (and so sends no name) gets around a block.
func TestNoUpstreamBytesBeforeDecision(t *testing.T) {
	t.Parallel()
	const banner = "BANNER from a server that speaks first\n"
	first := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		_, _ = io.WriteString(c, banner)
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()
	})
	tests := []struct {
		name, keys  string
		hello       string // the ClientHello's server name; "" sends none and half-closes
		wantBanner  bool
		wantRule    string
		wantAction  string
		wantSNIStat string
	}{
		{"half-close-blocked-without-sni", "[tls]\ntunnel_without_sni = \"block\"", "", false, "tunnel_without_sni", "block", metrics.SNINone},
		{"kaspersky-sni-behind-innocuous-host", "", "dnl-01.geo.kaspersky.com", false, "updates-cutoff", "block", metrics.SNIMismatch},
		{"half-close-flagged-then-flows", "", "", true, "tunnel_without_sni", "log", metrics.SNINone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := policyWith(t, tt.keys)
			if tt.keys == "" {
				cfg = envConfig{}
			}
			cfg.resolve = []string{"www.example.test:443:" + first.Addr()}
			e := newEnv(t, cfg)
			c, resp := openTunnel(t, e, "www.example.test:443")
			if resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %d", resp.StatusCode)
			}
			rc := &recordingConn{Conn: c, r: c}
			// Give the server's banner time to reach feedgate first.
			time.Sleep(100 * time.Millisecond)
			if tt.hello == "" {
				_ = c.CloseWrite()
				_ = c.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
				_, _ = io.Copy(io.Discard, rc)
			} else {
				tc := tls.Client(rc, &tls.Config{ServerName: tt.hello, InsecureSkipVerify: true})
				_ = tc.SetDeadline(time.Now().Add(testutil.WaitLimit))
				if err := tc.Handshake(); err == nil {
					t.Fatalf("handshake through a blocked tunnel succeeded")
				}
			}
			got := rc.Bytes()
			if has := strings.Contains(string(got), banner); has != tt.wantBanner {
				t.Errorf("client got %q; banner present = %v, want %v", got, has, tt.wantBanner)
			}
			e.waitRecord(t, map[string]any{"host": "www.example.test", "rule": tt.wantRule, "action": tt.wantAction, "sni_result": tt.wantSNIStat})
		})
	}
}

// helloRewriter is a client connection that rewrites one name into another
// of the same length in everything written after the first write: the
// second ClientHello of a TLS 1.3 handshake that got a HelloRetryRequest.
// (The handshake then fails at its end, because the transcripts differ;
// the proxy has decided long before.)
type helloRewriter struct {
	net.Conn
	from, to []byte
	writes   int
}

func (c *helloRewriter) Write(p []byte) (int, error) {
	c.writes++
	if c.writes > 1 {
		p = bytes.ReplaceAll(p, c.from, c.to)
	}
	return c.Conn.Write(p)
}

// TestTunnelHelloRetryRequest: a TLS 1.3 handshake whose server asks for another
// key share (a HelloRetryRequest) passes through the proxy intact, and the
// second ClientHello it brings is decided too: one that names a blocked
// host ends the tunnel.
func TestTunnelHelloRetryRequest(t *testing.T) {
	t.Parallel()
	ln, cert := retryServer(t)
	roots := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	roots.AddCert(leaf)
	// www1.example.test and ksn.kaspersky.com have the same length.
	e := newEnv(t, envConfig{resolve: []string{"www1.example.test:443:" + ln.Addr().String()}})
	clientCfg := func() *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: "www1.example.test", InsecureSkipVerify: true,
			CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}, MinVersion: tls.VersionTLS13}
	}

	t.Run("handshake-passes", func(t *testing.T) {
		c, resp := openTunnel(t, e, "www1.example.test:443")
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		tc := tls.Client(c, clientCfg())
		_ = tc.SetDeadline(time.Now().Add(testutil.WaitLimit))
		retryHandshakeEcho(t, tc, "through the proxy")
		e.waitRecord(t, map[string]any{"host": "www1.example.test", "sni": "www1.example.test", "sni_retry": "www1.example.test", "action": "allow"})
	})

	t.Run("second-hello-blocked", func(t *testing.T) {
		c, resp := openTunnel(t, e, "www1.example.test:443")
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		rc := &recordingConn{Conn: c, r: c}
		rw := &helloRewriter{Conn: rc, from: []byte("www1.example.test"), to: []byte("ksn.kaspersky.com")}
		tc := tls.Client(rw, clientCfg())
		_ = tc.SetDeadline(time.Now().Add(testutil.WaitLimit))
		if err := tc.Handshake(); err == nil {
			t.Fatalf("the handshake succeeded")
		}
		if got := rc.Bytes(); !bytes.HasSuffix(got, []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49}) {
			t.Errorf("the client's last bytes %x; want an access_denied alert", got[max(0, len(got)-16):])
		}
		e.waitRecord(t, map[string]any{"host": "www1.example.test", "sni": "www1.example.test", "sni_retry": "ksn.kaspersky.com",
			"action": "block", "rule": "updates-cutoff", "closed": "blocked"})
	})
}

// retryHandshakeEcho completes a handshake that the server answers with a
// HelloRetryRequest (it takes only P-256 and the client offers X25519
// first), checks that P-256 was negotiated, echoes a ping and closes.
func retryHandshakeEcho(t *testing.T, tc *tls.Conn, through string) {
	t.Helper()
	if err := tc.Handshake(); err != nil {
		t.Fatalf("a handshake with a HelloRetryRequest %s: %v", through, err)
	}
	if got := tc.ConnectionState().CurveID; got != tls.CurveP256 {
		t.Errorf("negotiated %v; want P-256 after the retry", got)
	}
	if _, err := io.WriteString(tc, "ping"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(tc, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo over TLS: %q, %v", b, err)
	}
	tc.Close()
}

// retryServer is a TLS 1.3 echo server that takes only P-256, so that a
// client offering an X25519 key share first gets a HelloRetryRequest.
func retryServer(t *testing.T) (net.Listener, tls.Certificate) {
	t.Helper()
	cert, err := testCert()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
		CurvePreferences: []tls.CurveID{tls.CurveP256}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
	return ln, cert
}
