package proxy_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// dripPad makes each line of dripHandler larger than the buffers between
// the origin and the client, so that each reaches the client at once.
var dripPad = strings.Repeat("x", 16<<10)

// dripHandler streams a chunked body: one line every 20 ms until the
// client goes away or testutil.WaitLimit passes. It is a large update download that
// is still running when a cut-off comes.
func dripHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(testutil.WaitLimit)
	for i := 0; time.Now().Before(deadline); i++ {
		if _, err := fmt.Fprintf(w, "chunk %d %s\n", i, dripPad); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// wsEcho answers a websocket upgrade with 101 and then echoes lines.
func wsEcho(c *net.TCPConn) {
	br := bufio.NewReader(c)
	if _, err := http.ReadRequest(br); err != nil {
		return
	}
	_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, line); err != nil {
			return
		}
	}
}

// openWebsocket upgrades a new connection through the proxy and returns
// it with its reader, or the refusal's status.
func openWebsocket(t *testing.T, e *env, host string) (*net.TCPConn, *bufio.Reader, int) {
	t.Helper()
	conn := e.dial(t)
	fmt.Fprintf(conn, "GET http://%s/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", host, host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("websocket upgrade through the proxy: %v", err)
	}
	return conn, br, resp.StatusCode
}

func echoLine(t *testing.T, conn net.Conn, br *bufio.Reader, line string) {
	t.Helper()
	if _, err := io.WriteString(conn, line); err != nil {
		t.Fatalf("websocket write: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
	got, err := br.ReadString('\n')
	if err != nil || got != line {
		t.Fatalf("websocket echo: %q, %v; want %q", got, err, line)
	}
	_ = conn.SetReadDeadline(time.Time{})
}

// waitEnd reads r until it ends and reports whether it ended with an error
// (a cut) rather than a clean end of a complete message.
func waitEnd(t *testing.T, conn net.Conn, r io.Reader) error {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("still open %v after it should have been closed", testutil.WaitLimit)
	}
	return err
}

// TestCutEveryPathAtTransition: at the updates cut-off, every connection
// that carries a Kaspersky request is cut, whichever way it entered: a
// plain-HTTP download still streaming (from Kaspersky, and from a mirror
// that only a signature recognises), a websocket, and a download inside
// an intercepted tunnel (and the tunnel itself); on the transparent
// listener, a plain-HTTP download, a TLS connection and a websocket. Each is recorded with
// closed=policy_change and the rule that cut it, and counted once.
func TestCutEveryPathAtTransition(t *testing.T) {
	t.Parallel()
	drip := httptest.NewServer(http.HandlerFunc(dripHandler))
	t.Cleanup(drip.Close)
	ws := testutil.NewRawUpstream(t, wsEcho)

	t.Run("http-download", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{now: updatesCutoff.Add(-2 * time.Second),
			resolve: []string{"s01.upd.kaspersky.com:80:" + hostPort(t, drip.URL), "www.example.test:80:" + hostPort(t, drip.URL)}})
		before := e.snapshot(t, tunnelsClosedSeries(metrics.TunnelPolicyChange))
		kas, kbr := startDownload(t, e, "s01.upd.kaspersky.com")
		other, obr := startDownload(t, e, "www.example.test")
		e.clock.Set(updatesCutoff)
		if err := waitEnd(t, kas, kbr); err == nil {
			t.Errorf("the Kaspersky download ended cleanly after the cut-off; want it cut mid-body")
		}
		r := e.waitRecord(t, map[string]any{"host": "s01.upd.kaspersky.com", "closed": metrics.TunnelPolicyChange})
		checkRecord(t, r, map[string]any{"kind": "http", "cut_rule": "updates-cutoff", "rule": "sales-cutoff-flag", "status": 200})
		// The other download goes on.
		_ = other.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
		if _, err := obr.ReadString('\n'); err != nil {
			t.Errorf("the other download after the cut-off: %v; want it to go on", err)
		}
		e.checkDeltas(t, before, delta{tunnelsClosedSeries(metrics.TunnelPolicyChange), 1})
	})

	// A download from a host that is not Kaspersky's, which a catalog
	// signature made Kaspersky's update traffic: it is decided again at
	// the cut-off with its method and path, and cut; a file of the
	// mirror's own on the same host goes on.
	t.Run("http-download-on-mirror", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{now: updatesCutoff.Add(-2 * time.Second),
			resolve: []string{"kav-mirror.corp.example:80:" + hostPort(t, drip.URL)}})
		before := e.snapshot(t, tunnelsClosedSeries(metrics.TunnelPolicyChange))
		kas := e.dial(t)
		kbr := download(t, kas, "http://kav-mirror.corp.example/KLSHARE/Updates/bases/av/kdb/i386/dailyc.kdc", "kav-mirror.corp.example")
		other := e.dial(t)
		obr := download(t, other, "http://kav-mirror.corp.example/KLSHARE/readme.txt", "kav-mirror.corp.example")
		e.clock.Set(updatesCutoff)
		if err := waitEnd(t, kas, kbr); err == nil {
			t.Errorf("the update download from the mirror ended cleanly after the cut-off; want it cut mid-body")
		}
		r := e.waitRecord(t, map[string]any{"host": "kav-mirror.corp.example", "closed": metrics.TunnelPolicyChange})
		checkRecord(t, r, map[string]any{"kind": "http", "path": "/KLSHARE/Updates/bases/av/kdb/i386/dailyc.kdc", "match": "signature",
			"signature": "bases-tree", "cut_rule": "updates-cutoff", "rule": "sales-cutoff-flag", "status": 200})
		_ = other.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
		if _, err := obr.ReadString('\n'); err != nil {
			t.Errorf("the mirror's own file after the cut-off: %v; want it to go on", err)
		}
		e.checkDeltas(t, before, delta{tunnelsClosedSeries(metrics.TunnelPolicyChange), 1})
	})

	t.Run("websocket", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{now: updatesCutoff.Add(-2 * time.Second),
			resolve: []string{"s01.upd.kaspersky.com:80:" + ws.Addr(), "ws.example.test:80:" + ws.Addr()}})
		before := e.snapshot(t, tunnelsClosedSeries(metrics.TunnelPolicyChange))
		kas, kbr, st := openWebsocket(t, e, "s01.upd.kaspersky.com")
		other, obr, st2 := openWebsocket(t, e, "ws.example.test")
		if st != 101 || st2 != 101 {
			t.Fatalf("upgrades: %d, %d; want 101", st, st2)
		}
		echoLine(t, kas, kbr, "before\n")
		e.clock.Set(updatesCutoff)
		_ = waitEnd(t, kas, kbr)
		r := e.waitRecord(t, map[string]any{"host": "s01.upd.kaspersky.com", "closed": metrics.TunnelPolicyChange})
		checkRecord(t, r, map[string]any{"cut_rule": "updates-cutoff", "status": 101})
		echoLine(t, other, obr, "after\n")
		e.checkDeltas(t, before, delta{tunnelsClosedSeries(metrics.TunnelPolicyChange), 1})
	})

	t.Run("intercepted-download", func(t *testing.T) {
		t.Parallel()
		e, _, pool := interceptEnvWith(t, http.HandlerFunc(dripHandler))
		before := e.snapshot(t, tunnelsClosedSeries(metrics.TunnelPolicyChange))
		c, resp := openTunnel(t, e, "www.kaspersky.com:443")
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "www.kaspersky.com"})
		fmt.Fprint(tc, "GET /updates/drip HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n")
		br := bufio.NewReader(tc)
		dresp, err := http.ReadResponse(br, nil)
		if err != nil || dresp.StatusCode != 200 {
			t.Fatalf("intercepted download: %v, %v", dresp, err)
		}
		if _, err := bufio.NewReader(dresp.Body).ReadString('\n'); err != nil {
			t.Fatalf("first chunk: %v", err)
		}
		e.clock.Set(updatesCutoff)
		_ = c.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
		if _, err := io.Copy(io.Discard, dresp.Body); err == nil {
			t.Errorf("the intercepted download ended cleanly after the cut-off; want it cut")
		}
		e.waitRecord(t, map[string]any{"kind": "mitm", "path": "/updates/drip", "closed": metrics.TunnelPolicyChange, "cut_rule": "updates-cutoff"})
		e.waitRecord(t, map[string]any{"kind": "connect", "host": "www.kaspersky.com", "closed": metrics.TunnelPolicyChange})
		e.checkDeltas(t, before, delta{tunnelsClosedSeries(metrics.TunnelPolicyChange), 2})
	})

	t.Run("transparent-http-download", func(t *testing.T) {
		t.Parallel()
		n := newDocNet()
		n.route("192.0.2.10:80", hostPort(t, drip.URL))
		e := newEnv(t, envConfig{now: updatesCutoff.Add(-2 * time.Second), dial: n.dial,
			resolve: []string{"s01.upd.kaspersky.com:80:192.0.2.10", "www.example.test:80:192.0.2.10"}})
		addr := e.redirect(t, "192.0.2.10:80")
		before := e.snapshot(t, tunnelsClosedSeries(metrics.TunnelPolicyChange))
		kas := dialTransparent(t, addr)
		kbr := download(t, kas, "/updates/drip", "s01.upd.kaspersky.com")
		other := dialTransparent(t, addr)
		obr := download(t, other, "/updates/drip", "www.example.test")
		e.clock.Set(updatesCutoff)
		if err := waitEnd(t, kas, kbr); err == nil {
			t.Errorf("the Kaspersky download ended cleanly after the cut-off; want it cut mid-body")
		}
		r := e.waitRecord(t, map[string]any{"host": "s01.upd.kaspersky.com", "closed": metrics.TunnelPolicyChange})
		checkRecord(t, r, map[string]any{"kind": "http", "mode": "transparent", "original_dst": "192.0.2.10:80",
			"cut_rule": "updates-cutoff", "rule": "sales-cutoff-flag", "status": 200})
		_ = other.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
		if _, err := obr.ReadString('\n'); err != nil {
			t.Errorf("the other download after the cut-off: %v; want it to go on", err)
		}
		e.checkDeltas(t, before, delta{tunnelsClosedSeries(metrics.TunnelPolicyChange), 1})
	})

	t.Run("transparent-tls-download", func(t *testing.T) {
		t.Parallel()
		o := newTLSOriginWith(t, http.HandlerFunc(dripHandler))
		n := newDocNet()
		n.route("192.0.2.10:443", hostPort(t, o.URL))
		e := newEnv(t, envConfig{now: updatesCutoff.Add(-2 * time.Second), dial: n.dial,
			resolve: []string{"s01.upd.kaspersky.com:443:192.0.2.10", "www.example.test:443:192.0.2.10"}})
		addr := e.redirect(t, "192.0.2.10:443")
		before := e.snapshot(t, tunnelsClosedSeries(metrics.TunnelPolicyChange))
		open := func(host string) (*tls.Conn, *bufio.Reader) {
			tc, err := tlsTransparent(t, addr, host, o.roots)
			if err != nil {
				t.Fatalf("TLS to %s: %v", host, err)
			}
			return tc, download(t, tc, "/updates/drip", host)
		}
		kas, kbr := open("s01.upd.kaspersky.com")
		other, obr := open("www.example.test")
		e.clock.Set(updatesCutoff)
		if err := waitEnd(t, kas, kbr); err == nil {
			t.Errorf("the Kaspersky download ended cleanly after the cut-off; want the tunnel cut")
		}
		r := e.waitRecord(t, map[string]any{"kind": "transparent", "host": "s01.upd.kaspersky.com", "closed": metrics.TunnelPolicyChange})
		checkRecord(t, r, map[string]any{"mode": "transparent", "original_dst": "192.0.2.10:443", "sni": "s01.upd.kaspersky.com",
			"cut_rule": "updates-cutoff", "rule": "sales-cutoff-flag", "status": 200})
		_ = other.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
		if _, err := obr.ReadString('\n'); err != nil {
			t.Errorf("the other download after the cut-off: %v; want it to go on", err)
		}
		e.checkDeltas(t, before, delta{tunnelsClosedSeries(metrics.TunnelPolicyChange), 1})
	})

	t.Run("transparent-websocket", func(t *testing.T) {
		t.Parallel()
		n := newDocNet()
		n.route("192.0.2.10:80", ws.Addr())
		e := newEnv(t, envConfig{now: updatesCutoff.Add(-2 * time.Second), dial: n.dial,
			resolve: []string{"s01.upd.kaspersky.com:80:192.0.2.10", "ws.example.test:80:192.0.2.10"}})
		addr := e.redirect(t, "192.0.2.10:80")
		before := e.snapshot(t, tunnelsClosedSeries(metrics.TunnelPolicyChange))
		open := func(host string) (net.Conn, *bufio.Reader) {
			c := dialTransparent(t, addr)
			fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", host)
			br := bufio.NewReader(c)
			if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
				t.Fatalf("websocket to %s: %v, %v; want 101", host, resp, err)
			}
			return c, br
		}
		kas, kbr := open("s01.upd.kaspersky.com")
		other, obr := open("ws.example.test")
		echoLine(t, kas, kbr, "before\n")
		e.clock.Set(updatesCutoff)
		_ = waitEnd(t, kas, kbr)
		r := e.waitRecord(t, map[string]any{"host": "s01.upd.kaspersky.com", "closed": metrics.TunnelPolicyChange})
		checkRecord(t, r, map[string]any{"kind": "http", "mode": "transparent", "cut_rule": "updates-cutoff", "status": 101})
		echoLine(t, other, obr, "after\n")
		e.checkDeltas(t, before, delta{tunnelsClosedSeries(metrics.TunnelPolicyChange), 1})
	})

	t.Run("reload-cuts-download", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{now: beforeCutoffs, resolve: []string{"s01.upd.kaspersky.com:80:" + hostPort(t, drip.URL)}})
		kas, kbr := startDownload(t, e, "s01.upd.kaspersky.com")
		e.srv.SetConfig(policyWith(t, "[[rule]]\nname = \"block-now\"\nvendor = \"kaspersky\"\naction = \"block\"\n").policy)
		if err := waitEnd(t, kas, kbr); err == nil {
			t.Errorf("the download ended cleanly after a reload that blocks it; want it cut")
		}
		e.waitRecord(t, map[string]any{"host": "s01.upd.kaspersky.com", "closed": metrics.TunnelPolicyChange, "cut_rule": "block-now"})
	})
}

// startDownload starts a streaming download through the proxy and reads its
// first line; the reader then goes on with the (chunked) body.
func startDownload(t *testing.T, e *env, host string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c := e.dial(t)
	return c, download(t, c, "http://"+host+"/updates/drip", host)
}

// download sends GET target with Host host on c, a connection through the
// proxy, and reads the first line of the response; the reader then goes
// on with the (chunked) body.
func download(t *testing.T, c net.Conn, target, host string) *bufio.Reader {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("download from %s: %v, %v", host, resp, err)
	}
	body := bufio.NewReader(resp.Body)
	if line, err := body.ReadString('\n'); err != nil || !strings.HasPrefix(line, "chunk ") {
		t.Fatalf("first chunk from %s: %q, %v", host, line, err)
	}
	return body
}
