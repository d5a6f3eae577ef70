package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// tunnelConn is a client's side of a tunnel: bytes that arrived with the
// CONNECT reply are in its reader.
type tunnelConn struct {
	*net.TCPConn
	r *bufio.Reader
}

func (c tunnelConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// openTunnel sends a CONNECT on a new connection and reads the reply.
func openTunnel(t *testing.T, e *env, target string) (tunnelConn, *http.Response) {
	t.Helper()
	c := e.dial(t)
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	return tunnelConn{c, br}, resp
}

func TestMaxTunnels(t *testing.T) {
	up := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	cfg := policyWith(t, "[limits]\nmax_tunnels = 2")
	cfg.resolve = []string{"www.example.test:443:" + up.Addr()}
	e := newEnv(t, cfg)
	before := e.snapshot(t, rejectedSeries("limit"))
	var open []tunnelConn
	for i := range 2 {
		c, resp := openTunnel(t, e, "www.example.test:443")
		if resp.StatusCode != 200 {
			t.Fatalf("tunnel %d: %s; want 200", i, resp.Status)
		}
		open = append(open, c)
	}
	c, resp := openTunnel(t, e, "www.example.test:443")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || resp.Header.Get("X-Feedgate-Reason") != "limit" {
		t.Errorf("third tunnel: %s Retry-After %q reason %q; want 503 with Retry-After and reason limit",
			resp.Status, resp.Header.Get("Retry-After"), resp.Header.Get("X-Feedgate-Reason"))
	}
	c.Close()
	e.checkDeltas(t, before, delta{rejectedSeries("limit"), 1})
	e.waitRecord(t, map[string]any{"rejected": "limit", "status": 503.0})

	// Closing a tunnel gives its slot back.
	open[0].Close()
	waitFor(t, "a tunnel slot to be free", func() bool {
		c, resp := openTunnel(t, e, "www.example.test:443")
		c.Close()
		return resp.StatusCode == 200
	})
}

func TestMaxConnections(t *testing.T) {
	e := newEnv(t, policyWith(t, "[limits]\nmax_connections = 3\nmax_tunnels = 3"))
	before := e.snapshot(t, rejectedSeries("limit"))
	for range 3 {
		e.dial(t) // held open, idle
	}
	waitFor(t, "the server to count three connections", func() bool {
		c := e.dial(t)
		defer c.Close()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == 503 && resp.Header.Get("Retry-After") != ""
	})
	if got := e.value(t, rejectedSeries("limit")) - before[rejectedSeries("limit").String()]; got < 1 {
		t.Errorf("feedgate_rejected_total{reason=limit} moved by %v; want at least 1", got)
	}
}

// TestTunnelIdleTimeout: a tunnel with no bytes either way is closed after
// tunnel_idle_timeout; one with bytes flowing in a single direction stays.
func TestTunnelIdleTimeout(t *testing.T) {
	silent := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	trickle := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		for range 12 { // 3 s of one byte every 250 ms, then close
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	})
	cfg := policyWith(t, "[limits]\ntunnel_idle_timeout = \"1s\"")
	cfg.resolve = []string{
		"silent.example.test:443:" + silent.Addr(),
		"trickle.example.test:443:" + trickle.Addr(),
	}
	e := newEnv(t, cfg)
	idle := series{"feedgate_tunnels_closed_total", []string{"reason", "idle"}}
	before := e.snapshot(t, idle)

	c, resp := openTunnel(t, e, "silent.example.test:443")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("idle tunnel: read error %v; want EOF when feedgate closes it", err)
	}
	// The record is written after the counter moves.
	e.waitRecord(t, map[string]any{"host": "silent.example.test", "closed": "idle"})
	e.checkDeltas(t, before, delta{idle, 1})

	c, resp = openTunnel(t, e, "trickle.example.test:443")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	got, err := io.ReadAll(c)
	if err != nil || len(got) != 12 {
		t.Errorf("one-way tunnel: read %d bytes, %v; want all 12 and EOF from the upstream", len(got), err)
	}
	c.Close()
	rec := e.waitRecord(t, map[string]any{"host": "trickle.example.test"})
	if rec["closed"] != nil {
		t.Errorf("one-way tunnel record says closed=%v; want it closed by its peers", rec["closed"])
	}
	e.checkDeltas(t, before, delta{idle, 1})
}
