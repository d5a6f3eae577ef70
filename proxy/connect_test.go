package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// established is the exact reply to an HTTP/1.1 CONNECT that the proxy lets
// through.
const established = "HTTP/1.1 200 Connection established\r\n\r\n"

// TestConnectBlockedWire: a blocked CONNECT gets exactly one 403 with the
// rule and Connection: close, then EOF, and the upstream is never dialed.
func TestConnectBlockedWire(t *testing.T) {
	t.Parallel()
	o := newTLSOrigin(t)
	targets := []struct {
		target, rule, category string
		early                  int // bytes pipelined behind the CONNECT headers
	}{
		{"s01.upd.kaspersky.com:443", "updates-cutoff", "update", 0},
		{"activation-v2.kaspersky.com:443", "updates-cutoff", "licensing", 0},
		{"store.kaspersky.com:443", "sales-cutoff-store", "store", 0},
		// A client that sends its ClientHello (about 1.5 KiB with Go
		// 1.26's post-quantum key share) without waiting for the reply
		// still reads the whole 403, then EOF.
		{"dnl-01.geo.kaspersky.com:443", "updates-cutoff", "update", 2 << 10},
	}
	var resolve []string
	for _, tt := range targets {
		resolve = append(resolve, tt.target+":"+hostPort(t, o.URL))
	}
	e := newEnv(t, envConfig{now: afterCutoffs, resolve: resolve})

	for _, tt := range targets {
		t.Run(tt.target, func(t *testing.T) {
			conn := e.dial(t)
			early := strings.Repeat("\x16", tt.early)
			if _, err := io.WriteString(conn, connectRequest(tt.target)+early); err != nil {
				t.Fatal(err)
			}
			all, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("reading until EOF: %v (read %q)", err, all)
			}
			br := bufio.NewReader(bytes.NewReader(all))
			resp, body := readResponse(t, br)
			if resp.StatusCode != http.StatusForbidden || resp.Proto != "HTTP/1.1" {
				t.Errorf("status line = %s %s; want HTTP/1.1 403", resp.Proto, resp.Status)
			}
			if g := resp.Header.Get("X-Feedgate-Rule"); g != tt.rule {
				t.Errorf("X-Feedgate-Rule = %q; want %q", g, tt.rule)
			}
			// ReadResponse moves "Connection: close" into resp.Close, so
			// look at the raw header block as well.
			head, _, _ := bytes.Cut(all, []byte("\r\n\r\n"))
			if !resp.Close || !bytes.Contains(append(head, "\r\n"...), []byte("\r\nConnection: close\r\n")) {
				t.Errorf("403 header block %q lacks Connection: close", head)
			}
			if want := "category: " + tt.category + "\n"; !strings.Contains(body, want) {
				t.Errorf("body %q does not contain %q", body, want)
			}
			if rest, _ := io.ReadAll(br); len(rest) != 0 {
				t.Errorf("%d bytes after the 403 (%q); want exactly one response then EOF", len(rest), rest)
			}
			host, _, _ := net.SplitHostPort(tt.target)
			r := e.waitRecord(t, map[string]any{"host": host})
			checkRecord(t, r, map[string]any{
				"kind": "connect", "method": "CONNECT", "port": 443, "status": 403, "action": "block",
				"rule": tt.rule, "vendor": "kaspersky", "category": tt.category, "bytes_sent": 0, "bytes_received": 0,
			})
			if _, ok := r["path"]; ok {
				t.Errorf("connect record has path %v; want none", r["path"])
			}
		})
	}
	if got := o.Conns(); got != 0 {
		t.Errorf("TLS origin accepted %d connections; want 0", got)
	}
}

// TestConnectBlockedClient: through Go's http.Client a blocked https://
// request fails with the proxy's 403 and no tunnel.
func TestConnectBlockedClient(t *testing.T) {
	t.Parallel()
	o := newTLSOrigin(t)
	e := newEnv(t, envConfig{now: afterCutoffs, resolve: []string{"s01.upd.kaspersky.com:443:" + hostPort(t, o.URL)}})
	c, tr := e.client(t, o.roots)
	var gotStatus int
	var gotRule string
	tr.OnProxyConnectResponse = func(_ context.Context, _ *url.URL, _ *http.Request, res *http.Response) error {
		gotStatus, gotRule = res.StatusCode, res.Header.Get("X-Feedgate-Rule")
		return nil
	}
	resp, err := c.Get("https://s01.upd.kaspersky.com/diffs/bases/av/kdb.dif")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET through a blocked tunnel succeeded with %s; want an error", resp.Status)
	}
	if !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("error = %q; want it to name the proxy's 403 (Forbidden)", err)
	}
	if gotStatus != 403 || gotRule != "updates-cutoff" {
		t.Errorf("CONNECT response = %d rule %q; want 403 rule %q", gotStatus, gotRule, "updates-cutoff")
	}
	if got := o.Conns(); got != 0 {
		t.Errorf("TLS origin accepted %d connections; want 0", got)
	}
}

// TestConnectAllowedTLS: an allowed CONNECT carries a TLS request intact,
// and the transfer counters and the record agree on the bytes relayed.
func TestConnectAllowedTLS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, host, vendor, category, action, rule string
		at                                         string
		level                                      string
	}{
		{"update-before-cutoffs", "s01.upd.kaspersky.com", "kaspersky", "update", "allow", "default", "before", "INFO"},
		{"update-between-cutoffs", "s01.upd.kaspersky.com", "kaspersky", "update", "log", "sales-cutoff-flag", "between", "WARN"},
		{"non-vendor-after-cutoffs", "www.example.test", "none", "none", "allow", "default", "after", "INFO"},
	}
	clocks := map[string]envConfig{"before": {now: beforeCutoffs}, "between": {now: betweenCutoffs}, "after": {now: afterCutoffs}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := newTLSOrigin(t)
			cfg := clocks[tt.at]
			cfg.resolve = []string{tt.host + ":443:" + hostPort(t, o.URL)}
			e := newEnv(t, cfg)
			c, tr := e.client(t, o.roots)
			sent, recv := bytesSeries(tt.vendor, tt.category, metrics.DirSent), bytesSeries(tt.vendor, tt.category, metrics.DirReceived)
			reqs := requestsSeries(tt.vendor, tt.category, tt.action, tt.rule)
			before := e.snapshot(t, sent, recv, reqs)

			resp, body := get(t, c, "https://"+tt.host+"/big")
			if resp.StatusCode != 200 || !bytes.Equal([]byte(body), bigBody) {
				t.Fatalf("got %d with %d bytes; want 200 with %d bytes intact", resp.StatusCode, len(body), len(bigBody))
			}
			if resp.TLS == nil {
				t.Fatalf("response did not come over TLS")
			}
			// The tunnel's record is written when it closes.
			tr.CloseIdleConnections()
			r := e.waitRecord(t, map[string]any{"kind": "connect", "host": tt.host})
			e.waitIdle(t)
			checkRecord(t, r, map[string]any{
				"status": 200, "port": 443, "method": "CONNECT", "vendor": tt.vendor, "category": tt.category,
				"action": tt.action, "rule": tt.rule, "level": tt.level,
			})
			dSent := e.value(t, sent) - before[sent.String()]
			dRecv := e.value(t, recv) - before[recv.String()]
			if dSent <= 0 || dRecv <= float64(len(bigBody)) {
				t.Errorf("transferred bytes moved by sent=%v received=%v; want sent > 0 and received > %d", dSent, dRecv, len(bigBody))
			}
			if got := r.num("bytes_sent"); got != dSent {
				t.Errorf("record bytes_sent = %v; want %v (the counter's delta)", got, dSent)
			}
			if got := r.num("bytes_received"); got != dRecv {
				t.Errorf("record bytes_received = %v; want %v (the counter's delta)", got, dRecv)
			}
			e.checkDeltas(t, before, delta{reqs, 1})
			if got := o.Conns(); got != 1 {
				t.Errorf("TLS origin accepted %d connections; want 1", got)
			}
		})
	}
}

// TestConnectWire covers the tunnel byte stream with a raw TCP upstream:
// pipelined early bytes, half-close in both directions, and the reply line.
func TestConnectWire(t *testing.T) {
	t.Parallel()
	// echoUntilEOF echoes everything, then, after the client's half-close,
	// writes "done <n>" and closes.
	echoUntilEOF := func(c *net.TCPConn) {
		n, _ := io.Copy(c, c)
		fmt.Fprintf(c, "done %d", n)
	}
	// sinkThenDone reads until EOF without answering, then writes "done".
	sinkThenDone := func(c *net.TCPConn) {
		_, _ = io.Copy(io.Discard, c)
		_, _ = io.WriteString(c, "done")
	}
	// greetAndClose writes a banner and closes first.
	greetAndClose := func(c *net.TCPConn) {
		_, _ = io.WriteString(c, "bye from upstream")
	}
	echo, sink, greet := testutil.NewRawUpstream(t, echoUntilEOF), testutil.NewRawUpstream(t, sinkThenDone), testutil.NewRawUpstream(t, greetAndClose)
	e := newEnv(t, envConfig{resolve: []string{
		"echo.example.test:443:" + echo.Addr(),
		"sink.example.test:443:" + sink.Addr(),
		"greet.example.test:443:" + greet.Addr(),
	}})

	t.Run("pipelined-bytes-reach-upstream", func(t *testing.T) {
		conn := e.dial(t)
		early := "EARLY-CLIENT-HELLO-BYTES"
		// The CONNECT headers and the first tunnel bytes in one write.
		if _, err := io.WriteString(conn, connectRequest("echo.example.test:443")+early); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		reply := make([]byte, len(established))
		if _, err := io.ReadFull(br, reply); err != nil {
			t.Fatalf("reading the CONNECT reply: %v", err)
		}
		if string(reply) != established {
			t.Fatalf("CONNECT reply = %q; want %q", reply, established)
		}
		echoed := make([]byte, len(early))
		if _, err := io.ReadFull(br, echoed); err != nil {
			t.Fatalf("reading the echo of the pipelined bytes: %v", err)
		}
		if string(echoed) != early {
			t.Errorf("upstream echoed %q; want %q", echoed, early)
		}
		// The tunnel keeps working after the early bytes.
		if _, err := io.WriteString(conn, "second"); err != nil {
			t.Fatal(err)
		}
		if err := conn.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("reading to EOF: %v", err)
		}
		want := "second" + fmt.Sprintf("done %d", len(early)+len("second"))
		if string(rest) != want {
			t.Errorf("after the early bytes got %q; want %q", rest, want)
		}
		r := e.waitRecord(t, map[string]any{"host": "echo.example.test"})
		checkRecord(t, r, map[string]any{"status": 200, "bytes_sent": len(early) + len("second"), "bytes_received": len(early) + len(want)})
	})

	t.Run("half-close-upstream-still-answers", func(t *testing.T) {
		conn := e.dial(t)
		if _, err := io.WriteString(conn, connectRequest("sink.example.test:443")); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		reply := make([]byte, len(established))
		if _, err := io.ReadFull(br, reply); err != nil || string(reply) != established {
			t.Fatalf("CONNECT reply = %q (%v); want %q", reply, err, established)
		}
		if _, err := io.WriteString(conn, "payload for the sink"); err != nil {
			t.Fatal(err)
		}
		if err := conn.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("reading to EOF after CloseWrite: %v", err)
		}
		if string(rest) != "done" {
			t.Errorf("after CloseWrite got %q; want %q", rest, "done")
		}
		r := e.waitRecord(t, map[string]any{"host": "sink.example.test"})
		checkRecord(t, r, map[string]any{"bytes_sent": len("payload for the sink"), "bytes_received": len("done")})
	})

	t.Run("upstream-closes-first", func(t *testing.T) {
		conn := e.dial(t)
		if _, err := io.WriteString(conn, connectRequest("greet.example.test:443")); err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("reading to EOF: %v", err)
		}
		if want := established + "bye from upstream"; string(all) != want {
			t.Errorf("got %q; want %q then EOF", all, want)
		}
		// The upstream's FIN was passed on as a half-close; the tunnel
		// ends (and is recorded) once the client closes its side too.
		_ = conn.Close()
		r := e.waitRecord(t, map[string]any{"host": "greet.example.test"})
		checkRecord(t, r, map[string]any{"status": 200, "bytes_received": len("bye from upstream")})
	})

	t.Run("http10-reply-line", func(t *testing.T) {
		conn := e.dial(t)
		if _, err := io.WriteString(conn, "CONNECT greet.example.test:443 HTTP/1.0\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("reading to EOF: %v", err)
		}
		if want := "HTTP/1.0 200 Connection established\r\n\r\nbye from upstream"; string(all) != want {
			t.Errorf("got %q; want %q", all, want)
		}
	})
	e.waitIdle(t)
}

// TestShutdownClosesTunnels: Shutdown closes open tunnels, and their
// records are in the log by the time it returns.
func TestShutdownClosesTunnels(t *testing.T) {
	t.Parallel()
	echo := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	e := newEnv(t, envConfig{resolve: []string{"echo.example.test:443:" + echo.Addr()}})

	conn := e.dial(t)
	if _, err := io.WriteString(conn, connectRequest("echo.example.test:443")+"ping"); err != nil {
		t.Fatal(err)
	}
	want := established + "ping"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != want {
		t.Fatalf("tunnel round trip = %q (%v); want %q", got, err, want)
	}
	if n := e.value(t, activeSeries(accesslog.KindConnect)); n != 1 {
		t.Errorf("active connect = %v; want 1 while the tunnel is open", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testutil.WaitLimit)
	defer cancel()
	if err := e.hs.Shutdown(ctx); err != nil {
		t.Fatalf("http.Server.Shutdown: %v", err)
	}
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Server.Shutdown: %v", err)
	}
	// No waiting: the record must already be there.
	recs := matching(e.records(t), map[string]any{"kind": "connect", "host": "echo.example.test"})
	if len(recs) != 1 {
		t.Fatalf("connect records after Shutdown = %d; want 1\nlog:\n%s", len(recs), e.log.String())
	}
	checkRecord(t, recs[0], map[string]any{"status": 200, "bytes_sent": 4, "bytes_received": 4})

	rest, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Errorf("client read after Shutdown: %v; want EOF", err)
	}
	if len(rest) != 0 {
		t.Errorf("client read %q after Shutdown; want nothing", rest)
	}
	e.waitIdle(t)
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// TestConnectReportMode: in report mode a would-be blocked CONNECT is
// tunnelled and recorded as log with report_only set.
func TestConnectReportMode(t *testing.T) {
	t.Parallel()
	greet := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.WriteString(c, "hello from the update server") })
	e := newEnv(t, envConfig{
		policy:  loadTestPolicy(t, "testdata/report.toml"),
		now:     afterCutoffs,
		resolve: []string{"s01.upd.kaspersky.com:443:" + greet.Addr()},
	})
	logged := requestsSeries("kaspersky", "update", "log", "block-updates")
	before := e.snapshot(t, logged)

	conn := e.dial(t)
	if _, err := io.WriteString(conn, connectRequest("s01.upd.kaspersky.com:443")); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading to EOF: %v", err)
	}
	if want := established + "hello from the update server"; string(all) != want {
		t.Errorf("got %q; want %q", all, want)
	}
	_ = conn.Close()
	r := e.waitRecord(t, map[string]any{"kind": "connect", "host": "s01.upd.kaspersky.com"})
	checkRecord(t, r, map[string]any{
		"status": 200, "action": "log", "flagged": true, "report_only": true, "level": "WARN", "rule": "block-updates",
	})
	e.waitIdle(t)
	e.checkDeltas(t, before, delta{logged, 1})
	if got := greet.Conns(); got != 1 {
		t.Errorf("upstream accepted %d connections; want 1", got)
	}
}
