package proxy_test

// A goroutine-leak check in the spirit of go.uber.org/goleak, without the
// dependency: remember which goroutines exist, and after the work is done
// wait until every goroutine started since then has ended, ignoring the
// testing package's own. A leaked goroutine is reported with its stack.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// leakWait bounds how long a goroutine may take to end after the work that
// started it. Connections that the proxy closes end their goroutines within
// milliseconds; the longest legitimate straggler is a refused CONNECT's
// lingering close (2 s).
const leakWait = 10 * time.Second

// leakGoroutine is one entry of a full goroutine dump.
type leakGoroutine struct {
	id    int64
	stack string // the whole block, header line included
}

// goroutineDump parses runtime.Stack(all=true) into its "goroutine N [...]"
// blocks.
func goroutineDump() []leakGoroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []leakGoroutine
	for _, block := range strings.Split(string(buf), "\n\n") {
		block = strings.TrimSpace(block)
		if id, ok := goroutineID(block); ok {
			out = append(out, leakGoroutine{id: id, stack: block})
		}
	}
	return out
}

// goroutineID parses the N of a block's "goroutine N [state]:" header.
func goroutineID(block string) (int64, bool) {
	rest, ok := strings.CutPrefix(block, "goroutine ")
	if !ok {
		return 0, false
	}
	num, _, ok := strings.Cut(rest, " [")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(num, 10, 64)
	return id, err == nil
}

// currentGoroutineID is the ID of the calling goroutine.
func currentGoroutineID() int64 {
	buf := make([]byte, 128)
	buf = buf[:runtime.Stack(buf, false)]
	id, _ := goroutineID(string(buf))
	return id
}

// leakIgnoredFrames are function-name prefixes of frames that mark a
// goroutine as belonging to the test framework or the runtime rather than
// to the code under test: test and subtest runners (including tests paused
// in t.Parallel), the signal and trace machinery, and httptest's own
// bookkeeping. Only frame lines are matched, not "created by" lines, so a
// goroutine that test code started is never ignored.
var leakIgnoredFrames = []string{
	"testing.tRunner",
	"testing.(*T).Run",
	"testing.(*T).Parallel",
	"testing.runTests",
	"testing.(*M).",
	"testing.runFuzzing",
	"testing.runFuzzTests",
	"testing.(*F).",
	"os/signal.signal_recv",
	"os/signal.loop",
	"runtime.ensureSigM",
	"runtime/trace.",
	"net/http/httptest.(*Server).logCloseHangDebugInfo",
}

func leakIgnored(stack string) bool {
	for _, line := range strings.Split(stack, "\n")[1:] {
		if strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "created by ") {
			continue
		}
		for _, p := range leakIgnoredFrames {
			if strings.HasPrefix(line, p) {
				return true
			}
		}
	}
	return false
}

// goroutineSet is the IDs of the goroutines alive at one moment.
type goroutineSet map[int64]bool

func liveGoroutines() goroutineSet {
	s := goroutineSet{}
	for _, g := range goroutineDump() {
		s[g.id] = true
	}
	return s
}

// newGoroutines returns the goroutines that are not in before, not the
// caller, and not ignored.
func newGoroutines(before goroutineSet) []leakGoroutine {
	self := currentGoroutineID()
	var out []leakGoroutine
	for _, g := range goroutineDump() {
		if !before[g.id] && g.id != self && !leakIgnored(g.stack) {
			out = append(out, g)
		}
	}
	return out
}

// expectNoNewGoroutines waits up to within for every goroutine started since
// before was taken to end, and fails the test listing the stacks of those
// that did not. It reports whether none leaked.
func expectNoNewGoroutines(t testing.TB, before goroutineSet, within time.Duration, what string) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		leaked := newGoroutines(before)
		if len(leaked) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			stacks := make([]string, len(leaked))
			for i, g := range leaked {
				stacks[i] = g.stack
			}
			t.Errorf("%s: %d goroutine(s) still running %v after the work ended:\n\n%s",
				what, len(leaked), within, strings.Join(stacks, "\n\n"))
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkNoGoroutineLeak fails t if goroutines started during the test are
// still running once it is over. Call it first in the test, before newEnv
// and any origin: cleanups run last-registered first, so this check then
// runs after the proxy has been shut down and the origins closed.
//
// Tests that use it must not call t.Parallel: goroutines of tests running
// alongside would look like leaks.
func checkNoGoroutineLeak(t testing.TB) {
	t.Helper()
	before := liveGoroutines()
	t.Cleanup(func() {
		expectNoNewGoroutines(t, before, leakWait, "after the test and its cleanups")
	})
}

// TestNoGoroutineLeak drives every path through the proxy (plain HTTP
// allowed, logged and blocked; CONNECT allowed with a TLS handshake,
// blocked, closed by either side first and half-closed; a websocket
// upgrade; upstream failures of every class; a client that gives up), then
// shuts the proxy down while a tunnel and an idle keep-alive connection are
// still open, and checks that every goroutine the proxy started has ended: first with the
// origins still running (so a connection the proxy forgot to close shows
// up as a stuck proxy or origin goroutine), then again after every
// cleanup.
func TestNoGoroutineLeak(t *testing.T) {
	checkNoGoroutineLeak(t)

	o := newOrigin(t)
	to := newTLSOrigin(t)
	// echo copies until the client's EOF, then closes.
	echo := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	// greet writes a banner and closes first.
	greet := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.WriteString(c, "bye from upstream") })
	// sink reads until EOF, then answers and closes.
	sink := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		_, _ = io.Copy(io.Discard, c)
		_, _ = io.WriteString(c, "done")
	})
	resetMid := testutil.NewRawUpstream(t, resetMidBody)
	// resetEarly resets without answering.
	resetEarly := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			_ = c.SetLinger(0)
		}
	})
	// silent reads and never answers, until the proxy closes.
	silent := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	// ws switches protocols, then echoes until the client's EOF.
	ws := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		_, _ = io.Copy(c, br)
	})
	refused := testutil.ClosedPort(t)
	res := newLeakResolver()

	// The proxy's goroutines are those started from here on; the
	// origins' accept loops are older.
	base := liveGoroutines()

	e := newEnv(t, envConfig{
		now:                   betweenCutoffs,
		resolver:              res,
		dialTimeout:           300 * time.Millisecond,
		responseHeaderTimeout: 300 * time.Millisecond,
		resolve: []string{
			resolveTo("www.example.test", 80, hostPort(t, o.URL)),
			resolveTo("dnl-01.geo.kaspersky.com", 80, hostPort(t, o.URL)),
			"www.example.test:443:" + hostPort(t, to.URL),
			"s01.upd.kaspersky.com:443:" + hostPort(t, to.URL),
			"echo.example.test:443:" + echo.Addr(),
			"greet.example.test:443:" + greet.Addr(),
			"sink.example.test:443:" + sink.Addr(),
			"reset.example.test:80:" + resetMid.Addr(),
			"rst.example.test:80:" + resetEarly.Addr(),
			"silent.example.test:80:" + silent.Addr(),
			"ws.example.test:80:" + ws.Addr(),
			"refused.example.test:80:" + refused,
			"refused.example.test:443:" + refused,
		},
	})
	c, tr := e.client(t, to.roots)

	t.Run("http", func(t *testing.T) {
		expectStatuses(t, c, []urlStatus{
			{"http://www.example.test/hello", 200},
			{"http://www.example.test/big", 200},
			{"http://dnl-01.geo.kaspersky.com/bases/x.dif", 200},
			{"http://store.kaspersky.com/", 403},
		})
		// A client that closes its connection after the request.
		resp := rawRequest(t, e, "GET http://www.example.test/hello HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Errorf("GET with Connection: close: status %d; want 200", resp.StatusCode)
		}
		// A body that is abandoned half-way.
		r, err := c.Get("http://www.example.test/big")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r.Body, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	})

	t.Run("connect-tls", func(t *testing.T) {
		for _, host := range []string{"www.example.test", "s01.upd.kaspersky.com"} {
			resp, body := get(t, c, "https://"+host+"/hello")
			if resp.StatusCode != 200 || body != "hello from origin\n" || resp.TLS == nil {
				t.Errorf("GET https://%s/hello: %d %q (TLS %v); want 200 over TLS", host, resp.StatusCode, body, resp.TLS != nil)
			}
		}
		// Tunnels end, and are recorded, when the client closes them.
		tr.CloseIdleConnections()
		e.waitRecords(t, 1, map[string]any{"kind": "connect", "host": "www.example.test", "status": 200, "action": "allow"})
		e.waitRecords(t, 1, map[string]any{"kind": "connect", "host": "s01.upd.kaspersky.com", "status": 200, "action": "log"})
	})

	t.Run("connect-blocked", func(t *testing.T) {
		resp := rawRequest(t, e, connectRequest("store.kaspersky.com:443"))
		if resp.StatusCode != 403 {
			t.Errorf("blocked CONNECT: status %d; want 403", resp.StatusCode)
		}
		// A refused CONNECT whose client never reads nor closes: the
		// proxy's lingering close must still end.
		conn := e.dial(t)
		if _, err := io.WriteString(conn, connectRequest("store.kaspersky.com:443")+strings.Repeat("\x16", 4096)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("connect-upstream-closes-first", func(t *testing.T) {
		conn := e.dial(t)
		if _, err := io.WriteString(conn, connectRequest("greet.example.test:443")); err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(conn)
		if want := established + "bye from upstream"; err != nil || string(all) != want {
			t.Errorf("got %q (%v); want %q then EOF", all, err, want)
		}
		_ = conn.Close()
	})

	t.Run("connect-client-closes-first", func(t *testing.T) {
		conn := e.dial(t)
		if _, err := io.WriteString(conn, connectRequest("echo.example.test:443")+"ping"); err != nil {
			t.Fatal(err)
		}
		want := established + "ping"
		got := make([]byte, len(want))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != want {
			t.Fatalf("tunnel round trip = %q (%v); want %q", got, err, want)
		}
		_ = conn.Close()
		e.waitRecords(t, 1, map[string]any{"kind": "connect", "host": "echo.example.test"})
	})

	t.Run("connect-half-close", func(t *testing.T) {
		conn := e.dial(t)
		if _, err := io.WriteString(conn, connectRequest("sink.example.test:443")); err != nil {
			t.Fatal(err)
		}
		if got := leakReadN(t, conn, len(established)); got != established {
			t.Fatalf("CONNECT reply = %q; want %q", got, established)
		}
		if _, err := io.WriteString(conn, "payload"); err != nil {
			t.Fatal(err)
		}
		if err := conn.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(conn)
		if err != nil || string(all) != "done" {
			t.Errorf("got %q (%v); want %q then EOF", all, err, "done")
		}
		_ = conn.Close()
	})

	t.Run("websocket", func(t *testing.T) {
		// The client closes first; the upstream then sees EOF and closes.
		conn := e.dial(t)
		br := leakWSUpgrade(t, conn)
		if _, err := io.WriteString(conn, "ping\n"); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("websocket echo = %q (%v); want %q", line, err, "ping\n")
		}
		_ = conn.Close()
		e.waitRecords(t, 1, map[string]any{"kind": "http", "host": "ws.example.test", "status": 101})
	})

	t.Run("upstream-faults", func(t *testing.T) {
		expectStatuses(t, c, []urlStatus{
			{"http://nx.example.test/", 502},
			{"http://slow.example.test/", 504},
			{"http://refused.example.test/", 502},
			{"http://rst.example.test/", 502},
			{"http://silent.example.test/", 504},
		})
		for _, target := range []string{"nx.example.test:443", "slow.example.test:443", "refused.example.test:443"} {
			if resp := rawRequest(t, e, connectRequest(target)); resp.StatusCode < 500 {
				t.Errorf("CONNECT %s: status %d; want 5xx", target, resp.StatusCode)
			}
		}
		// Reset part-way through the body: the client sees an error or a
		// short body, whichever comes first.
		if r, err := c.Get("http://reset.example.test/x"); err == nil {
			_, _ = io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		e.waitRecords(t, 1, map[string]any{"kind": "http", "host": "reset.example.test"})
	})

	t.Run("client-gives-up", func(t *testing.T) {
		// The client closes while the proxy waits for the upstream's
		// headers (300 ms): the wait must end with the client.
		conn := e.dial(t)
		if _, err := io.WriteString(conn, "GET http://silent.example.test/gone HTTP/1.1\r\nHost: silent.example.test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		_ = conn.Close()
		e.waitRecords(t, 1, map[string]any{"kind": "http", "path": "/gone"})
	})

	// Connections still open when the proxy shuts down: a tunnel and an
	// idle keep-alive connection. Shutdown closes both and records the
	// tunnel. (A websocket open at shutdown has its own test below.)
	tunnel := e.dial(t)
	if _, err := io.WriteString(tunnel, connectRequest("echo.example.test:443")+"open"); err != nil {
		t.Fatal(err)
	}
	if got := leakReadN(t, tunnel, len(established+"open")); got != established+"open" {
		t.Fatalf("open tunnel round trip = %q; want %q", got, established+"open")
	}
	idle := e.dial(t)
	if _, err := io.WriteString(idle, "GET http://www.example.test/hello HTTP/1.1\r\nHost: www.example.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	idleBR := bufio.NewReader(idle)
	if resp, _ := readResponse(t, idleBR); resp.StatusCode != 200 {
		t.Fatalf("keep-alive request: status %d; want 200", resp.StatusCode)
	}

	// The client side is done with everything else.
	tr.CloseIdleConnections()
	leakWaitInFlight(t, e, 0, 1)

	leakShutdown(t, e)

	// Every connection the proxy held is closed: the clients see EOF.
	for _, cc := range []struct {
		name string
		r    io.Reader
		conn net.Conn
	}{{"tunnel", tunnel, tunnel}, {"idle keep-alive", idleBR, idle}} {
		_ = cc.conn.SetReadDeadline(time.Now().Add(leakWait))
		rest, err := io.ReadAll(cc.r)
		if err != nil && !isReset(err) {
			t.Errorf("%s connection after Shutdown: read %q, %v; want EOF (the proxy must close it)", cc.name, rest, err)
		}
	}
	// Shutdown has written the open tunnel's record.
	recs := matching(e.records(t), map[string]any{"kind": "connect", "host": "echo.example.test"})
	if len(recs) != 2 {
		t.Errorf("echo tunnel records after Shutdown = %d; want 2", len(recs))
	}

	// With the origins still up, nothing the proxy started may survive
	// it: no handler, relay or lingering-close goroutine, and no origin
	// goroutine serving a connection the proxy forgot to close.
	expectNoNewGoroutines(t, base, leakWait, "after the proxy shut down")
	if n := e.value(t, activeSeries(accesslog.KindHTTP)) + e.value(t, activeSeries(accesslog.KindConnect)); n != 0 {
		t.Errorf("feedgate_active_connections = %v after Shutdown; want 0", n)
	}
}

// TestNoLeakWebsocketOpenAtShutdown: a websocket (an upgraded plain-HTTP
// connection) still open when the proxy shuts down is closed like a tunnel:
// Shutdown "closes the tunnels that are still open, so that their records
// are written". Its client sees EOF, its record is in the log when
// Shutdown returns, and none of its goroutines (the handler and goproxy's
// two relays) nor its upstream connection survives.
func TestNoLeakWebsocketOpenAtShutdown(t *testing.T) {
	checkNoGoroutineLeak(t)
	ws := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		_, _ = io.Copy(c, br)
	})
	base := liveGoroutines()
	e := newEnv(t, envConfig{resolve: []string{"ws.example.test:80:" + ws.Addr()}})

	conn := e.dial(t)
	br := leakWSUpgrade(t, conn)
	if _, err := io.WriteString(conn, "open\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "open\n" {
		t.Fatalf("websocket echo = %q (%v); want %q", line, err, "open\n")
	}

	leakShutdown(t, e)
	if recs := matching(e.records(t), map[string]any{"kind": "http", "host": "ws.example.test"}); len(recs) != 1 {
		t.Errorf("websocket records when Shutdown returned = %d; want 1 (Shutdown writes the records of what it closes)", len(recs))
	}
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if rest, err := io.ReadAll(br); err != nil && !isReset(err) {
		t.Errorf("websocket client after Shutdown: read %q, %v; want EOF (the proxy must close it)", rest, err)
	}
	expectNoNewGoroutines(t, base, leakWait, "after the proxy shut down with a websocket open")
	if n := e.value(t, activeSeries(accesslog.KindHTTP)); n != 0 {
		t.Errorf("feedgate_active_connections{kind=\"http\"} = %v after Shutdown; want 0", n)
	}
}

// TestNoLeakConnectHalfClosedAtOnce: a client may send its CONNECT (and
// early bytes) and half-close its side at once, then wait for the answer;
// "half-closes are passed on". The tunnel must be made, the half-close
// relayed, the upstream's answer delivered, and nothing counted as an
// upstream failure. (net/http cancels the request's context when it reads
// EOF from the client; a CONNECT dial under that context fails.)
func TestNoLeakConnectHalfClosedAtOnce(t *testing.T) {
	checkNoGoroutineLeak(t)
	sink := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "done %d", n)
	})
	e := newEnv(t, envConfig{resolve: []string{"sink.example.test:443:" + sink.Addr()}})
	var errSeries []series
	for _, r := range metrics.UpstreamReasons() {
		errSeries = append(errSeries, upstreamErrSeries(r))
	}
	for _, early := range []string{"", "payload"} {
		t.Run(fmt.Sprintf("early-bytes-%d", len(early)), func(t *testing.T) {
			before := e.snapshot(t, errSeries...)
			conn := e.dial(t)
			if _, err := io.WriteString(conn, connectRequest("sink.example.test:443")+early); err != nil {
				t.Fatal(err)
			}
			if err := conn.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			all, err := io.ReadAll(conn)
			if want := established + fmt.Sprintf("done %d", len(early)); err != nil || string(all) != want {
				t.Errorf("got %q (%v); want %q then EOF", all, err, want)
			}
			_ = conn.Close()
			e.waitIdle(t)
			var deltas []delta
			for _, s := range errSeries {
				deltas = append(deltas, delta{s, 0})
			}
			e.checkDeltas(t, before, deltas...)
		})
	}
	recs := e.waitRecords(t, 2, map[string]any{"kind": "connect", "host": "sink.example.test"})
	for _, r := range recs {
		// No usable name, so tunnel_without_sni flags them (the default).
		checkRecord(t, r, map[string]any{"status": 200, "action": "log", "rule": "tunnel_without_sni"})
		if _, ok := r["error"]; ok {
			t.Errorf("record names an upstream error: %v", r)
		}
	}
}

// leakShutdown shuts the proxy down as feedgate run does on SIGTERM: the
// HTTP server first, then the tunnels.
func leakShutdown(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.WaitLimit)
	defer cancel()
	if err := e.hs.Shutdown(ctx); err != nil {
		t.Errorf("http.Server.Shutdown: %v", err)
	}
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Errorf("Server.Shutdown: %v", err)
	}
}

// newLeakResolver answers nothing (every name fails as NXDOMAIN) except
// slow.example.test, which hangs until the dial times out.
func newLeakResolver() *testutil.Resolver {
	return &testutil.Resolver{Hang: map[string]bool{"slow.example.test": true}}
}

// leakWSUpgrade sends a websocket upgrade for ws.example.test on conn and
// reads the 101.
func leakWSUpgrade(t *testing.T, conn net.Conn) *bufio.Reader {
	t.Helper()
	req := "GET http://ws.example.test/chat HTTP/1.1\r\nHost: ws.example.test\r\n" +
		"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade status = %d; want 101", resp.StatusCode)
	}
	return br
}

func leakReadN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v (got %q)", n, err, b)
	}
	return string(b)
}

// leakWaitInFlight waits until exactly httpN plain requests (upgraded
// connections count as one while open) and connectN tunnels are in flight.
func leakWaitInFlight(t *testing.T, e *env, httpN, connectN float64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("active connections to drop to http=%v connect=%v", httpN, connectN), func() bool {
		return e.value(t, activeSeries(accesslog.KindHTTP)) == httpN && e.value(t, activeSeries(accesslog.KindConnect)) == connectN
	})
}

// urlStatus is a URL and the status a GET of it must get.
type urlStatus struct {
	url    string
	status int
}

// expectStatuses GETs each URL through c and checks its status.
func expectStatuses(t *testing.T, c *http.Client, cases []urlStatus) {
	t.Helper()
	for _, tt := range cases {
		resp, _ := get(t, c, tt.url)
		if resp.StatusCode != tt.status {
			t.Errorf("GET %s: status %d; want %d", tt.url, resp.StatusCode, tt.status)
		}
	}
}

// TestIdleTunnelHoldsTwoGoroutines: an established tunnel, once its TLS
// handshake went through and it sits idle, holds exactly its two copy
// loops, started fresh with small stacks: not net/http's connection
// goroutine, not the goroutine that read its ClientHello and decided it;
// on the proxy port and on the transparent listener alike.
// (docs/performance.md: memory per idle tunnel.)
func TestIdleTunnelHoldsTwoGoroutines(t *testing.T) {
	checkNoGoroutineLeak(t)
	to := newTLSOrigin(t)
	n := newDocNet()
	n.route("192.0.2.10:443", hostPort(t, to.URL))
	e := newEnv(t, envConfig{now: betweenCutoffs, dial: n.dial, resolve: []string{"www.example.test:443:192.0.2.10"}})
	redirected := e.redirect(t, "192.0.2.10:443")
	conns := tlsTunnelPairs(t, e, redirected, to, 10)
	count := func() (pipes, setup int) {
		for _, g := range goroutineDump() {
			switch {
			case strings.Contains(g.stack, "proxy.(*tunnel).pipe"):
				pipes++
			case strings.Contains(g.stack, "proxy.(*Server).ServeTransparent("):
				// the transparent listener's accept loop, not a tunnel's
			case strings.Contains(g.stack, "proxy.(*Server)."):
				setup++ // the handler, the transparent connection's, the checks
			}
		}
		return pipes, setup
	}
	want := 2 * len(conns)
	deadline := time.Now().Add(testutil.WaitLimit)
	pipes, setup := count()
	for (pipes != want || setup != 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		pipes, setup = count()
	}
	if pipes != want || setup != 0 {
		t.Errorf("%d idle tunnels hold %d copy loops and %d goroutines still in the server's handling; want %d and 0", len(conns), pipes, setup, want)
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

// tlsTunnelPairs opens n tunnels to www.example.test (192.0.2.10:443, to)
// through the CONNECT port and n through the transparent listener at
// redirected, each with a TLS handshake done.
func tlsTunnelPairs(t *testing.T, e *env, redirected string, to *tlsOrigin, n int) []*tls.Conn {
	t.Helper()
	var conns []*tls.Conn
	for range n {
		tc, err := tlsThroughTunnel(t, e, "www.example.test:443", "www.example.test", to)
		if err != nil {
			t.Fatalf("TLS through a CONNECT tunnel: %v", err)
		}
		conns = append(conns, tc)
		if tc, err = tlsTransparent(t, redirected, "www.example.test", to.roots); err != nil {
			t.Fatalf("TLS through the transparent listener: %v", err)
		}
		conns = append(conns, tc)
	}
	return conns
}

// TestIdleTunnelHoldsNoCopyBuffer: a tunnel's copy loops take a buffer for
// the bytes in flight and give it back when the socket has nothing more,
// so tunnels that carried 4 MiB each way hold none once idle, whichever
// way they came in. A client that stops reading keeps one (the bytes wait
// in it), which shows the count is live; it gets every byte once it reads.
func TestIdleTunnelHoldsNoCopyBuffer(t *testing.T) {
	to := newTLSOrigin(t)
	n := newDocNet()
	n.route("192.0.2.10:443", hostPort(t, to.URL))
	e := newEnv(t, envConfig{now: betweenCutoffs, dial: n.dial, resolve: []string{"www.example.test:443:192.0.2.10"}})
	redirected := e.redirect(t, "192.0.2.10:443")
	held := func() int64 { return proxy.RelayBuffersHeld(e.srv) }
	waitHeld := func(what string, ok func(int64) bool) {
		t.Helper()
		deadline := time.Now().Add(testutil.WaitLimit)
		for !ok(held()) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if h := held(); !ok(h) {
			t.Fatalf("%s: tunnels hold %d copy buffers", what, h)
		}
	}
	conns := tlsTunnelPairs(t, e, redirected, to, 5)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i, c := range conns {
		if got := tlsGet(t, c, "www.example.test", "/big"); !bytes.Equal(got, bigBody) {
			t.Fatalf("tunnel %d: /big came through as %d bytes, not the %d served", i, len(got), len(bigBody))
		}
	}
	waitHeld("10 idle tunnels", func(h int64) bool { return h == 0 })

	// Eight responses of 4 MiB outgrow the sockets' buffers, so the
	// download direction waits in its write.
	stalled, err := tlsThroughTunnel(t, e, "www.example.test:443", "www.example.test", to)
	if err != nil {
		t.Fatalf("TLS through a CONNECT tunnel: %v", err)
	}
	conns = append(conns, stalled)
	const responses = 8
	if _, err := io.WriteString(stalled, strings.Repeat("GET /big HTTP/1.1\r\nHost: www.example.test\r\n\r\n", responses)); err != nil {
		t.Fatalf("pipelined GETs: %v", err)
	}
	waitHeld("a client that stopped reading", func(h int64) bool { return h >= 1 })
	br := bufio.NewReader(stalled)
	for i := range responses {
		resp, body := readResponse(t, br)
		if resp.StatusCode != http.StatusOK || body != string(bigBody) {
			t.Fatalf("response %d after the stall: status %d, %d bytes; want 200 and the %d served", i, resp.StatusCode, len(body), len(bigBody))
		}
	}
	waitHeld("after the stalled client read everything", func(h int64) bool { return h == 0 })
}
