package proxy_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// TestUpstreamFaults: every way of failing to reach an upstream maps to a
// status, an X-Feedgate-Error reason, one count of
// feedgate_upstream_errors_total{reason} and the record's error field, for
// plain HTTP and CONNECT alike. No packet leaves loopback: failing names are
// answered (or stalled) by the fake resolver.
func TestUpstreamFaults(t *testing.T) {
	t.Parallel()
	// silent accepts and reads but never answers.
	silent := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	// rst reads the request, then resets the connection without answering.
	rst := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			_ = c.SetLinger(0)
		}
	})
	refused := testutil.ClosedPort(t)
	res := &testutil.Resolver{Hang: map[string]bool{"slow.example.test": true}}
	e := newEnv(t, envConfig{
		resolver:              res,
		dialTimeout:           300 * time.Millisecond,
		responseHeaderTimeout: 300 * time.Millisecond,
		resolve: []string{
			"refused.example.test:80:" + refused,
			"refused.example.test:443:" + refused,
			"silent.example.test:80:" + silent.Addr(),
			"rst.example.test:80:" + rst.Addr(),
		},
	})
	c, _ := e.client(t, nil)

	tests := []struct {
		name       string
		connect    bool
		host       string
		wantStatus int
		wantReason string
	}{
		{"http/dns", false, "nx.example.test", 502, metrics.ReasonDNS},
		{"http/refused", false, "refused.example.test", 502, metrics.ReasonRefused},
		{"http/response-header-timeout", false, "silent.example.test", 504, metrics.ReasonTimeout},
		{"http/reset-before-headers", false, "rst.example.test", 502, metrics.ReasonReset},
		{"connect/dns", true, "nx.example.test", 502, metrics.ReasonDNS},
		{"connect/refused", true, "refused.example.test", 502, metrics.ReasonRefused},
		{"connect/resolve-timeout", true, "slow.example.test", 504, metrics.ReasonTimeout},
	}
	var all []series
	for _, r := range metrics.UpstreamReasons() {
		all = append(all, upstreamErrSeries(r))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.snapshot(t, all...)
			var status int
			var reason, body string
			if tt.connect {
				conn := e.dial(t)
				if _, err := io.WriteString(conn, connectRequest(tt.host+":443")); err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(conn)
				resp, b := readResponse(t, br)
				status, reason, body = resp.StatusCode, resp.Header.Get("X-Feedgate-Error"), b
				if !resp.Close {
					t.Errorf("failed CONNECT reply lacks Connection: close")
				}
				if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
					t.Errorf("after the error reply got %q (%v); want EOF", rest, err)
				}
			} else {
				resp, b := get(t, c, "http://"+tt.host+"/bases/x.dif")
				status, reason, body = resp.StatusCode, resp.Header.Get("X-Feedgate-Error"), b
			}
			if status != tt.wantStatus {
				t.Errorf("status = %d; want %d", status, tt.wantStatus)
			}
			if reason != tt.wantReason {
				t.Errorf("X-Feedgate-Error = %q; want %q", reason, tt.wantReason)
			}
			if !strings.HasPrefix(body, "feedgate: ") || !strings.Contains(body, tt.host) {
				t.Errorf("body = %q; want a feedgate message naming %s", body, tt.host)
			}
			for _, frag := range rawErrorFragments {
				if strings.Contains(body, frag) {
					t.Errorf("body %q contains raw error text %q", body, frag)
				}
			}
			kind := "http"
			if tt.connect {
				kind = "connect"
			}
			r := e.waitRecord(t, map[string]any{"kind": kind, "host": tt.host})
			checkRecord(t, r, map[string]any{"status": tt.wantStatus, "error": tt.wantReason, "action": "allow"})
			e.waitIdle(t)
			var deltas []delta
			for _, s := range all {
				want := 0.0
				if s.labels[1] == tt.wantReason {
					want = 1
				}
				deltas = append(deltas, delta{s, want})
			}
			e.checkDeltas(t, before, deltas...)
		})
	}
	for _, h := range res.Lookups() {
		if h != "nx.example.test" && h != "slow.example.test" {
			t.Errorf("resolver was asked for %q; overridden names must not be resolved", h)
		}
	}
}

// TestDialTimeoutBoundsResolution: Options.DialTimeout "bounds connecting
// to an upstream", name resolution included, on both paths, whatever the
// injected dialer's own timeout. The dialer here allows an hour, so only
// Options.DialTimeout (300ms) can produce the 504 before the client's hang
// guard gives up. (Own proxy: while this fails, the stuck request is counted
// late, when the client gives up, and would disturb other tests' deltas.)
func TestDialTimeoutBoundsResolution(t *testing.T) {
	t.Parallel()
	res := &testutil.Resolver{Hang: map[string]bool{"slow.example.test": true}}
	e := newEnv(t, envConfig{resolver: res, dialTimeout: 300 * time.Millisecond, dialerTimeout: time.Hour})
	c, _ := e.client(t, nil)
	timeout := upstreamErrSeries(metrics.ReasonTimeout)

	t.Run("connect", func(t *testing.T) {
		before := e.snapshot(t, timeout)
		conn := e.dial(t)
		if _, err := io.WriteString(conn, connectRequest("slow.example.test:443")); err != nil {
			t.Fatal(err)
		}
		resp, body := readResponse(t, bufio.NewReader(conn))
		if resp.StatusCode != 504 || resp.Header.Get("X-Feedgate-Error") != metrics.ReasonTimeout {
			t.Errorf("got %d (X-Feedgate-Error %q, body %q); want 504 timeout", resp.StatusCode, resp.Header.Get("X-Feedgate-Error"), body)
		}
		r := e.waitRecord(t, map[string]any{"kind": "connect", "host": "slow.example.test"})
		checkRecord(t, r, map[string]any{"status": 504, "error": metrics.ReasonTimeout})
		e.waitIdle(t)
		e.checkDeltas(t, before, delta{timeout, 1})
	})
	t.Run("http", func(t *testing.T) {
		before := e.snapshot(t, timeout)
		resp, err := c.Get("http://slow.example.test/bases/x.dif")
		if err != nil {
			t.Fatalf("GET with a resolver that never answers: %v; want a 504 from the proxy after Options.DialTimeout (300ms)", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 504 || resp.Header.Get("X-Feedgate-Error") != metrics.ReasonTimeout {
			t.Errorf("got %d (X-Feedgate-Error %q, body %q); want 504 timeout", resp.StatusCode, resp.Header.Get("X-Feedgate-Error"), body)
		}
		r := e.waitRecord(t, map[string]any{"kind": "http", "host": "slow.example.test"})
		checkRecord(t, r, map[string]any{"status": 504, "error": metrics.ReasonTimeout})
		e.waitIdle(t)
		e.checkDeltas(t, before, delta{timeout, 1})
	})
}

// TestUpstreamResetMidBody: an origin that resets the connection part-way
// through a body gives the client an error or a short body, and the proxy
// keeps serving.
func TestUpstreamResetMidBody(t *testing.T) {
	t.Parallel()
	resetter := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789")
		_ = c.SetLinger(0) // close sends RST
	})
	o := newOrigin(t)
	e := newEnv(t, envConfig{resolve: []string{
		"reset.example.test:80:" + resetter.Addr(),
		resolveTo("www.example.test", 80, hostPort(t, o.URL)),
	}})
	c, _ := e.client(t, nil)

	for i := 0; i < 3; i++ {
		resp, err := c.Get("http://reset.example.test/big.dif")
		switch {
		case err != nil:
			// The client saw the connection fail: fine.
		case resp.StatusCode != 200:
			// The reset overtook the headers: the proxy's own 502.
			resp.Body.Close()
			if resp.StatusCode != 502 || resp.Header.Get("X-Feedgate-Error") != metrics.ReasonReset {
				t.Errorf("round %d: got %d (X-Feedgate-Error %q); want a short 200 body or 502 reset", i, resp.StatusCode, resp.Header.Get("X-Feedgate-Error"))
			}
		default:
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && len(b) == 1000 {
				t.Fatalf("round %d: got a complete 1000-byte body from an upstream that sent 10 bytes", i)
			}
			if len(b) > 10 {
				t.Errorf("round %d: got %d body bytes; the upstream sent 10", i, len(b))
			}
		}
		// The proxy is still serving.
		resp2, body := get(t, c, "http://www.example.test/hello")
		if resp2.StatusCode != 200 || body != "hello from origin\n" {
			t.Fatalf("round %d: request after the reset got %d %q; want 200 %q", i, resp2.StatusCode, body, "hello from origin\n")
		}
	}
	recs := e.waitRecords(t, 3, map[string]any{"host": "reset.example.test"})
	for _, r := range recs {
		if got := r.num("bytes_received"); r.num("status") == 200 && got > 10 {
			t.Errorf("record bytes_received = %v; the upstream sent 10 body bytes", got)
		}
	}
	e.waitIdle(t)
}

// TestUpstreamResetMidBodyIsCounted: a reset while reading the upstream's
// body is a failure to read from the upstream, so it is counted in
// feedgate_upstream_errors_total{reason="reset"} (whose help text says
// "Failures to reach or read from the upstream") and named in the record.
func TestUpstreamResetMidBodyIsCounted(t *testing.T) {
	t.Parallel()
	resetter := testutil.NewRawUpstream(t, resetMidBody)
	e := newEnv(t, envConfig{resolve: []string{"reset.example.test:80:" + resetter.Addr()}})
	c, _ := e.client(t, nil)
	reset := upstreamErrSeries(metrics.ReasonReset)
	before := e.snapshot(t, reset)

	resp, err := c.Get("http://reset.example.test/big.dif")
	if err == nil {
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	r := e.waitRecord(t, map[string]any{"host": "reset.example.test"})
	e.waitIdle(t)
	e.checkDeltas(t, before, delta{reset, 1})
	checkRecord(t, r, map[string]any{"error": metrics.ReasonReset})
}

// TestMalformedInput: bad requests get a 4xx (or a closed connection) and
// the proxy keeps serving. None of them is decided or counted as a request;
// each one that reached the proxy's handler is recorded as rejected
// "invalid" (as Squid logs error:invalid-request), so that scans and
// evasion attempts show in the log.
func TestMalformedInput(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	e := newEnv(t, envConfig{resolve: []string{resolveTo("www.example.test", 80, hostPort(t, o.URL))}})
	c, _ := e.client(t, nil)

	tests := []struct {
		name       string
		raw        string
		wantStatus int // 0: any 4xx or a closed connection
		// recorded: the request reached the handler, which records it;
		// net/http answers the others before there is a request.
		recorded bool
	}{
		{"relative-uri", "GET /bases/x.dif HTTP/1.1\r\nHost: www.example.test\r\n\r\n", 400, true},
		{"connect-without-port", "CONNECT s01.upd.kaspersky.com HTTP/1.1\r\nHost: s01.upd.kaspersky.com\r\n\r\n", 400, true},
		{"connect-port-zero", connectRequest("www.example.test:0"), 400, true},
		{"connect-port-too-big", connectRequest("www.example.test:70000"), 400, true},
		{"connect-port-not-a-number", connectRequest("www.example.test:https"), 400, false},
		{"connect-empty-host", connectRequest(":443"), 400, true},
		{"ftp-scheme", "GET ftp://files.example.test/pub/x HTTP/1.1\r\nHost: files.example.test\r\n\r\n", 400, true},
		{"http-port-too-big", "GET http://www.example.test:99999/ HTTP/1.1\r\nHost: www.example.test:99999\r\n\r\n", 400, true},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 0, false},
		{"no-request-line", "\r\n\r\n\r\n", 0, false},
		{"huge-header", "GET http://www.example.test/ HTTP/1.1\r\nHost: www.example.test\r\nX-Big: " + strings.Repeat("a", 80<<10) + "\r\n\r\n", 431, false},
	}
	invalidSeries := rejectedSeries(metrics.RejectInvalid)
	before := e.snapshot(t, invalidSeries)
	recorded := 0
	served := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := e.dial(t)
			if _, err := io.WriteString(conn, tt.raw); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			switch {
			case err != nil && tt.wantStatus == 0:
				// A closed connection is an acceptable answer.
			case err != nil:
				t.Fatalf("reading the response: %v; want status %d", err, tt.wantStatus)
			case tt.wantStatus == 0 && (resp.StatusCode < 400 || resp.StatusCode > 499):
				t.Errorf("status = %d; want a 4xx or a closed connection", resp.StatusCode)
			case tt.wantStatus != 0 && resp.StatusCode != tt.wantStatus:
				t.Errorf("status = %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			if resp != nil {
				resp.Body.Close()
			}
			// A normal request still succeeds.
			resp2, body := get(t, c, "http://www.example.test/hello")
			if resp2.StatusCode != 200 || body != "hello from origin\n" {
				t.Fatalf("request after %s got %d %q; want 200 %q", tt.name, resp2.StatusCode, body, "hello from origin\n")
			}
			served++
			if tt.recorded {
				recorded++
			}
		})
	}
	e.waitRecords(t, served, map[string]any{"host": "www.example.test", "action": "allow"})
	e.waitRecords(t, recorded, map[string]any{"rejected": metrics.RejectInvalid, "status": 400})
	e.waitIdle(t)
	if n := len(e.records(t)); n != served+recorded {
		t.Errorf("decision records = %d; want %d (the normal requests and the recorded refusals)", n, served+recorded)
	}
	for _, r := range e.records(t) {
		if r["rejected"] != nil {
			if _, decided := r["action"]; decided {
				t.Errorf("a malformed request was decided: %v", r)
			}
		}
	}
	e.checkDeltas(t, before, delta{invalidSeries, float64(recorded)})
	if got := e.value(t, requestsSeries("none", "none", "allow", "default")); got != float64(served) {
		t.Errorf("requests_total{none,none,allow,default} = %v; want %d", got, served)
	}
	if got := o.Hits(); got != served {
		t.Errorf("origin handled %d requests; want %d", got, served)
	}
}

// resetMidBody is an upstream that announces 1000 body bytes, sends 10
// and resets the connection.
func resetMidBody(c *net.TCPConn) {
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, req.Body)
	_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
	_ = c.SetLinger(0)
}

// faultNet is a docNet with two faulty destinations: dialing panicDial
// panics, and a connection to panicWrite panics at its first write. They
// stand for a bug anywhere between accepting a connection and relaying
// its bytes.
type faultNet struct {
	*docNet
	panicDial  map[string]bool
	panicWrite string
	// writeConns are the connections to panicWrite, to check that
	// feedgate closed them.
	mu         sync.Mutex
	writeConns []*panicWriteConn
}

func (n *faultNet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if n.panicDial[addr] {
		panic("test: the dial of " + addr + " panics")
	}
	c, err := n.docNet.dial(ctx, network, addr)
	if err != nil || addr != n.panicWrite {
		return c, err
	}
	pc := &panicWriteConn{Conn: c}
	n.mu.Lock()
	n.writeConns = append(n.writeConns, pc)
	n.mu.Unlock()
	return pc, nil
}

// openWriteConns counts the connections to panicWrite still open.
func (n *faultNet) openWriteConns() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	open := 0
	for _, c := range n.writeConns {
		if !c.closed.Load() {
			open++
		}
	}
	return open
}

type panicWriteConn struct {
	net.Conn
	closed atomic.Bool
}

func (c *panicWriteConn) Write([]byte) (int, error) { panic("test: a write upstream panics") }

func (c *panicWriteConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// TestPanicIsContained: a panic while feedgate serves a connection, on any
// way in (a plain-HTTP request and a CONNECT on the proxy port, a TLS and
// a plain-HTTP connection on the transparent listener), before or after
// the tunnel is handed to its own goroutines, costs that connection and
// nothing else. The panic reaches the operational log as an error with
// its stack, the request's record is written, the connection and the
// upstream are closed, the gauges drop back and the slot is given back
// (max_tunnels = 1: the tunnel after each panic needs it), and the proxy
// serves the next request and tunnel.
func TestPanicIsContained(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	to := newTLSOrigin(t)
	n := &faultNet{docNet: newDocNet(), panicDial: map[string]bool{"192.0.2.50:80": true, "192.0.2.50:443": true}, panicWrite: "192.0.2.51:443"}
	n.route("192.0.2.10:80", hostPort(t, o.URL))
	n.route("192.0.2.10:443", hostPort(t, to.URL))
	n.route("192.0.2.51:443", hostPort(t, to.URL))
	opsLog := &testutil.SyncBuffer{}
	cfg := policyWith(t, "[limits]\nmax_tunnels = 1\n")
	cfg.dial, cfg.errorLog = n.dial, opsLog
	cfg.resolve = []string{
		"www.example.test:80:192.0.2.10", "www.example.test:443:192.0.2.10",
		"dial.example.test:80:192.0.2.50", "dial.example.test:443:192.0.2.50",
		"write.example.test:443:192.0.2.51",
	}
	e := newEnv(t, cfg)
	transparent := map[string]string{
		"dial:80": e.redirect(t, "192.0.2.50:80"), "dial:443": e.redirect(t, "192.0.2.50:443"),
		"write:443": e.redirect(t, "192.0.2.51:443"),
	}
	c, _ := e.client(t, to.roots)

	for _, tt := range []struct {
		name  string
		fault func(t *testing.T)
		// record is the record the connection must leave.
		record map[string]any
		// write: the fault is the upstream connection's first write,
		// which must be closed afterwards.
		write bool
	}{
		{"http-dial", func(t *testing.T) {
			if resp, err := c.Get("http://dial.example.test/hello"); err == nil {
				resp.Body.Close()
				t.Fatalf("GET answered %d; want the connection closed", resp.StatusCode)
			}
		}, map[string]any{"kind": "http", "host": "dial.example.test"}, false},
		{"connect-dial", func(t *testing.T) {
			conn := e.dial(t)
			if _, err := io.WriteString(conn, connectRequest("dial.example.test:443")); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, conn, nil)
		}, map[string]any{"kind": "connect", "host": "dial.example.test"}, false},
		{"connect-write", func(t *testing.T) {
			if resp, err := c.Get("https://write.example.test/hello"); err == nil {
				resp.Body.Close()
				t.Fatalf("GET answered %d; want the tunnel closed", resp.StatusCode)
			}
		}, map[string]any{"kind": "connect", "host": "write.example.test"}, true},
		{"transparent-tls-dial", func(t *testing.T) {
			if _, err := tlsTransparent(t, transparent["dial:443"], "www.example.test", to.roots); err == nil {
				t.Fatal("TLS handshake succeeded; want the connection closed")
			}
		}, map[string]any{"kind": "transparent", "original_dst": "192.0.2.50:443"}, false},
		{"transparent-tls-write", func(t *testing.T) {
			if _, err := tlsTransparent(t, transparent["write:443"], "www.example.test", to.roots); err == nil {
				t.Fatal("TLS handshake succeeded; want the connection closed")
			}
		}, map[string]any{"kind": "transparent", "original_dst": "192.0.2.51:443"}, true},
		{"transparent-http-dial", func(t *testing.T) {
			conn := dialTransparent(t, transparent["dial:80"])
			if _, err := io.WriteString(conn, "GET /hello HTTP/1.1\r\nHost: www.example.test\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, conn, nil)
		}, map[string]any{"kind": "http", "mode": "transparent", "original_dst": "192.0.2.50:80"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			panicsBefore := strings.Count(opsLog.String(), "level=ERROR msg=")
			tt.fault(t)
			waitFor(t, "the panic in the operational log", func() bool {
				return strings.Count(opsLog.String(), "level=ERROR msg=") > panicsBefore
			})
			if logged := opsLog.String(); !strings.Contains(logged, "panic") || !strings.Contains(logged, "goroutine ") {
				t.Errorf("the operational log has no panic with its stack:\n%s", logged)
			}
			e.waitRecord(t, tt.record)
			e.waitIdle(t)
			if tt.write {
				waitFor(t, "the upstream connection to close", func() bool { return n.openWriteConns() == 0 })
			}
			// The proxy serves on, and the one tunnel slot is free.
			if resp, body := get(t, c, "https://www.example.test/hello"); resp.StatusCode != http.StatusOK {
				t.Errorf("a tunnel after the panic: %d %q; want 200", resp.StatusCode, body)
			}
			if resp, body := get(t, c, "http://www.example.test/hello"); resp.StatusCode != http.StatusOK {
				t.Errorf("a request after the panic: %d %q; want 200", resp.StatusCode, body)
			}
			c.CloseIdleConnections()
			e.waitIdle(t)
		})
	}
	// A plain-HTTP handler that panicked never disarmed the watch Front
	// starts on its client after 250 ms (the default ClientWatchDelay);
	// fired on the released connection, it once took the whole process
	// down. Outlive it, then serve again.
	time.Sleep(3 * 250 * time.Millisecond)
	if resp, body := get(t, c, "http://www.example.test/hello"); resp.StatusCode != http.StatusOK {
		t.Errorf("a request after the watch delay: %d %q; want 200", resp.StatusCode, body)
	}
}
