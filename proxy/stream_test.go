package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// TestHTTPStreamingIsFlushed: an event stream reaches the client event by
// event; the origin sends the second event only after the client has read
// the first, so a proxy that buffered the response would never deliver it.
func TestHTTPStreamingIsFlushed(t *testing.T) {
	t.Parallel()
	firstRead := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-firstRead:
		case <-time.After(testutil.WaitLimit):
		}
		_, _ = io.WriteString(w, "data: second\n\n")
	}))
	t.Cleanup(origin.Close)
	e := newEnv(t, envConfig{resolve: []string{resolveTo("events.example.test", 80, hostPort(t, origin.URL))}})
	c, _ := e.client(t, nil)

	resp, err := c.Get("http://events.example.test/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first line = %q (%v); want %q", line, err, "data: first\n")
	}
	close(firstRead)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if want := "\ndata: second\n\n"; string(rest) != want {
		t.Errorf("rest of the stream = %q; want %q", rest, want)
	}
	r := e.waitRecord(t, map[string]any{"host": "events.example.test"})
	checkRecord(t, r, map[string]any{"status": 200, "bytes_received": len("data: first\n\ndata: second\n\n")})
}

// TestHTTPWebsocketUpgrade: a plain-HTTP websocket upgrade passes through
// with its Upgrade and Connection headers, and bytes then flow both ways.
func TestHTTPWebsocketUpgrade(t *testing.T) {
	t.Parallel()
	var gotUpgrade, gotConnection string
	ws := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		gotUpgrade, gotConnection = req.Header.Get("Upgrade"), req.Header.Get("Connection")
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		// Echo one line, then close first.
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "echo: "+line)
	})
	e := newEnv(t, envConfig{resolve: []string{"ws.example.test:80:" + ws.Addr()}})

	conn := e.dial(t)
	br := leakWSUpgrade(t, conn)
	if gotUpgrade != "websocket" || !strings.EqualFold(gotConnection, "upgrade") {
		t.Errorf("origin got Upgrade %q, Connection %q; want websocket, Upgrade", gotUpgrade, gotConnection)
	}
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, len("echo: ping\n"))
	if _, err := io.ReadFull(br, echo); err != nil || string(echo) != "echo: ping\n" {
		t.Fatalf("after the upgrade got %q (%v); want %q", echo, err, "echo: ping\n")
	}
	// The upstream has closed; the proxy must close the client side too
	// rather than leave it (and a relay goroutine) open until the client
	// gives up.
	rest, err := io.ReadAll(br)
	if err != nil && !isReset(err) {
		t.Errorf("after the upstream closed: read error %v (read %q); want EOF", err, rest)
	} else if len(rest) != 0 {
		t.Errorf("after the upstream closed got %q; want EOF", rest)
	}
	_ = conn.Close()
	r := e.waitRecord(t, map[string]any{"host": "ws.example.test"})
	checkRecord(t, r, map[string]any{"status": 101, "kind": "http"})
}

// TestSetPolicySwapsDecisions: a new policy takes effect for the next
// request, and Policy reports it.
func TestSetPolicySwapsDecisions(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	e := newEnv(t, envConfig{now: afterCutoffs, resolve: []string{resolveTo("dnl-01.geo.kaspersky.com", 80, hostPort(t, o.URL))}})
	c, _ := e.client(t, nil)

	if got := e.srv.Policy().Name; got != "us-bis-kaspersky-2024" {
		t.Fatalf("Policy().Name = %q; want the default policy", got)
	}
	if resp, _ := get(t, c, "http://dnl-01.geo.kaspersky.com/one"); resp.StatusCode != 403 {
		t.Errorf("under the default policy: status %d; want 403", resp.StatusCode)
	}
	report := loadTestPolicy(t, "testdata/report.toml")
	e.srv.SetConfig(report)
	if got := e.srv.Config(); got != report || e.srv.Policy() != report.Policy {
		t.Errorf("Config() after SetConfig = %q; want %q", got.Policy.Name, report.Policy.Name)
	}
	if resp, _ := get(t, c, "http://dnl-01.geo.kaspersky.com/two"); resp.StatusCode != 200 {
		t.Errorf("under the report policy: status %d; want 200", resp.StatusCode)
	}
	r1 := e.waitRecord(t, map[string]any{"path": "/one"})
	r2 := e.waitRecord(t, map[string]any{"path": "/two"})
	checkRecord(t, r1, map[string]any{"policy": "us-bis-kaspersky-2024", "action": "block"})
	checkRecord(t, r2, map[string]any{"policy": "test-report", "action": "log", "report_only": true})
	if got := e.value(t, requestsSeries("kaspersky", "update", "log", "block-updates")); got != 1 {
		t.Errorf("requests_total for the new policy's rule = %v; want 1", got)
	}
	// The gauges follow the new policy: in report mode the action in
	// force for a would-be blocked class is log.
	if got := metricValue(t, e.reg, "feedgate_policy_action", "vendor", "kaspersky", "category", "update", "action", "log"); got != 1 {
		t.Errorf("policy_action{kaspersky,update,log} under the report policy = %v; want 1", got)
	}
}
