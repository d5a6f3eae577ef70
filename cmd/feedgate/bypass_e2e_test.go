package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPlainDownloadCutAtCutoffLive: a plain-HTTP download started two
// seconds before the updates cut-off is cut mid-body when the policy clock
// passes it, like a tunnel; curl sees a partial transfer, not a complete one.
func TestPlainDownloadCutAtCutoffLive(t *testing.T) {
	f := newFixture(t)
	inst := f.start(t, "2024-09-29T03:59:58Z")
	started := time.Now()
	res := curl(t, nil, "-x", "http://"+inst.Proxy, "http://s01.upd.kaspersky.com/slow")
	took := time.Since(started)
	if res.exitCode == 0 {
		t.Fatalf("the one-minute download finished (status %s, %d bytes); want it cut at the cut-off", res.status, len(res.body))
	}
	if took > 15*time.Second {
		t.Errorf("curl ran %v; want the download cut about 2 s after it started", took.Round(time.Second))
	}
	if res.status != "200" || len(res.body) == 0 {
		t.Errorf("status %s with %d bytes; want the download running (200) until the cut-off", res.status, len(res.body))
	}
	rec := findRecord(t, inst.waitRecords(1), "s01.upd.kaspersky.com", "http")
	wantFields(t, rec, map[string]any{"action": "log", "rule": "sales-cutoff-flag", "closed": "policy_change", "cut_rule": "updates-cutoff"})
	if got := inst.metric("feedgate_tunnels_closed_total", map[string]string{"reason": "policy_change"}); got != 1 {
		t.Errorf("feedgate_tunnels_closed_total{reason=policy_change} = %v; want 1", got)
	}
}

// TestUnreadableTargetsRefusedLive: request targets whose host the policy
// cannot read, or that carry userinfo, are refused with 400 by the real
// binary and never reach an origin, whichever client sends them.
func TestUnreadableTargetsRefusedLive(t *testing.T) {
	f := newFixture(t)
	inst := f.start(t, afterUpdates, "-resolve", "www.example.test:80:127.0.0.1:"+f.plain.port())
	hits := f.plain.hits.Load()

	// curl sends the host as written.
	res := curl(t, nil, "-x", "http://"+inst.Proxy, "http://ksn.kaspersky.com../")
	if res.status != "400" {
		t.Errorf("curl http://ksn.kaspersky.com../: status %s (stderr %q); want 400", res.status, res.stderr)
	}
	// curl moves userinfo into an Authorization header, so these go raw.
	for _, raw := range []string{
		"GET http://user:pass@www.example.test/ HTTP/1.1\r\nHost: www.example.test\r\n\r\n",
		"GET http://www.example.test@ksn.kaspersky.com/ HTTP/1.1\r\nHost: www.example.test\r\n\r\n",
		"CONNECT ksn%E3%80%82kaspersky.com:443 HTTP/1.1\r\nHost: ksn%E3%80%82kaspersky.com:443\r\n\r\n",
		"CONNECT ksn.kaspersky.com..:443 HTTP/1.1\r\nHost: ksn.kaspersky.com..:443\r\n\r\n",
	} {
		c, err := net.Dial("tcp", inst.Proxy)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, raw)
		var req *http.Request
		if strings.HasPrefix(raw, "CONNECT") {
			req = &http.Request{Method: http.MethodConnect}
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		c.Close()
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: %v, %v; want 400", strings.SplitN(raw, "\r\n", 2)[0], resp, err)
		}
	}
	if got := f.plain.hits.Load(); got != hits {
		t.Errorf("the origin served %d refused requests", got-hits)
	}
	// The proxy goes on serving.
	res = curl(t, nil, "-x", "http://"+inst.Proxy, "http://www.example.test/")
	if res.status != "200" {
		t.Errorf("after the refusals: status %s; want 200", res.status)
	}
}

// TestStorePathSpellingsLive: curl sends store paths as written
// (--path-as-is); the real binary reads them as origins do and blocks
// each as the store page, never as the host's web entry.
func TestStorePathSpellingsLive(t *testing.T) {
	f := newFixture(t)
	inst := f.start(t, betweenCuts)
	for _, path := range []string{"/buy", "/./buy", "//buy", "/x/../buy", "/%62uy", "/BUY/now", "/buy;jsessionid=1"} {
		res := curl(t, nil, "-x", "http://"+inst.Proxy, "--path-as-is", "http://www.kaspersky.com"+path)
		if res.status != "403" || !strings.Contains(res.headers, "X-Feedgate-Rule: sales-cutoff-store") {
			t.Errorf("%s: status %s, headers %q; want 403 from sales-cutoff-store", path, res.status, res.headers)
		}
	}
	// A longer segment is not the store page: between the cut-offs the
	// host's web entry is flagged and forwarded.
	res := curl(t, nil, "-x", "http://"+inst.Proxy, "http://www.kaspersky.com/buyer-guide")
	if res.status != "200" {
		t.Errorf("/buyer-guide: status %s; want 200 (web, flagged)", res.status)
	}
	rec := findRecord(t, inst.waitRecords(8), "www.kaspersky.com", "http")
	if rec["path"] == nil {
		t.Errorf("record without a path: %v", rec)
	}
}

// wsUpstream listens on loopback, answers each connection's upgrade request
// with 101 and hands the connection to serve.
func wsUpstream(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) net.Listener {
	t.Helper()
	ws, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	go func() {
		for {
			c, err := ws.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				fmt.Fprint(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				serve(c, br)
			}()
		}
	}()
	return ws
}

// TestWebsocketCutAtCutoffLive: a websocket to an update host opened two
// seconds before the updates cut-off is closed when the policy clock
// passes it.
func TestWebsocketCutAtCutoffLive(t *testing.T) {
	ws := wsUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprint(c, line)
		}
	})
	inst := start(t, "-at", "2024-09-29T03:59:58Z", "-resolve", "s01.upd.kaspersky.com:80:"+ws.Addr().String())
	c, err := net.Dial("tcp", inst.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET http://s01.upd.kaspersky.com/ws HTTP/1.1\r\nHost: s01.upd.kaspersky.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v; want 101", resp, err)
	}
	started := time.Now()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	for {
		if _, err := fmt.Fprint(c, "ping\n"); err != nil {
			break
		}
		if _, err := br.ReadString('\n'); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if took := time.Since(started); took > 12*time.Second {
		t.Fatalf("the websocket ran %v; want it closed at the cut-off, about 2 s after it opened", took.Round(time.Second))
	}
	rec := findRecord(t, inst.waitRecords(1), "s01.upd.kaspersky.com", "http")
	wantFields(t, rec, map[string]any{"status": float64(101), "closed": "policy_change", "cut_rule": "updates-cutoff"})
}

// TestSquidLineHostileTargetsLive: in Squid format, request targets that
// carry encoded spaces, CR/LF or an IPv6 zone still give one line of ten
// fields each, as SIEM parsers split it.
func TestSquidLineHostileTargetsLive(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.toml")
	if err := os.WriteFile(policy, []byte(reloadPolicy("2024-08-01T00:00:00")+"\n[log]\nformat = \"squid\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	inst := f.start(t, betweenCuts, "-config", policy, "-resolve", "www.example.test:80:127.0.0.1:"+f.plain.port())
	targets := []string{
		"GET http://www.example.test/a%20b%0d%0aX%20y HTTP/1.1\r\nHost: www.example.test\r\n\r\n",
		"GET http://[fe80::1%25eth0%20x]/zone HTTP/1.1\r\nHost: www.example.test\r\n\r\n",
		"GET http://www.example.test/%22quoted%22%09tab HTTP/1.1\r\nHost: www.example.test\r\n\r\n",
	}
	for _, raw := range targets {
		c, err := net.Dial("tcp", inst.Proxy)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, raw)
		_, _ = http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
	}
	if err := inst.stop(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(inst.stdout.String()), "\n")
	if len(lines) != len(targets) {
		t.Fatalf("%d lines for %d requests:\n%s", len(lines), len(targets), inst.stdout)
	}
	line := regexp.MustCompile(`^\d+\.\d{3} +\d+ \S+ [A-Z_]+/\d{3} \d+ \S+ \S+ - [A-Z_]+/\S+ \S+$`)
	for _, l := range lines {
		if n := len(strings.Fields(l)); n != 10 || !line.MatchString(l) {
			t.Errorf("line %q has %d fields or is not Squid's native format", l, n)
		}
	}
}

// TestSNISpellingsLive: after the updates cut-off, a CONNECT to an
// innocuous host whose ClientHello names an update host in a spelling that
// servers accept (upper case, one trailing dot, ":port") or that is framed
// as servers still read it (record version 0x0300, the hello split over
// records) is blocked by that name, whichever TLS client sends it:
// OpenSSL's s_client or Go's crypto/tls through a framing relay.
func TestSNISpellingsLive(t *testing.T) {
	f := newFixture(t)
	inst := f.start(t, afterUpdates, "-resolve", "innocuous.test:443:127.0.0.1:"+f.tls.port())
	hits := f.tls.hits.Load()
	names := []string{"DNL-01.GEO.KASPERSKY.COM", "dnl-01.geo.kaspersky.com.", "dnl-01.geo.kaspersky.com:443"}
	for _, name := range names {
		cmd := exec.Command("openssl", "s_client", "-proxy", inst.Proxy, "-connect", "innocuous.test:443",
			"-servername", name, "-verify_quiet", "-brief")
		cmd.Stdin = strings.NewReader("GET / HTTP/1.1\r\nHost: innocuous.test\r\n\r\n")
		out, err := cmd.CombinedOutput()
		if err == nil && strings.Contains(string(out), originPayload) {
			t.Errorf("openssl -servername %q reached the origin after the cut-off:\n%s", name, out)
		}
	}
	for _, frame := range []string{"version-0300", "split"} {
		c, err := net.Dial("tcp", inst.Proxy)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, "CONNECT innocuous.test:443 HTTP/1.1\r\nHost: innocuous.test:443\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v, %v", resp, err)
		}
		tc := tls.Client(&reframer{Conn: c, r: br, mode: frame}, &tls.Config{ServerName: "dnl-01.geo.kaspersky.com", RootCAs: f.pool})
		if err := tc.Handshake(); err == nil {
			t.Errorf("%s: the handshake through the proxy succeeded after the cut-off", frame)
		}
		c.Close()
	}
	recs := inst.waitRecords(len(names) + 2)
	seen := 0
	for _, r := range recs {
		if r["host"] != "innocuous.test" {
			continue
		}
		seen++
		if r["action"] != "block" || r["rule"] != "updates-cutoff" || r["closed"] != "blocked" {
			t.Errorf("record %v; want block by updates-cutoff, closed blocked", r)
		}
	}
	if seen != len(names)+2 {
		t.Errorf("%d records for innocuous.test; want %d", seen, len(names)+2)
	}
	if got := f.tls.hits.Load(); got != hits {
		t.Errorf("the origin served %d requests", got-hits)
	}
}

// reframer rewrites the first record a TLS client writes (its
// ClientHello): with record version 0x0300, or cut into two records.
type reframer struct {
	net.Conn
	r    io.Reader
	mode string
	done bool
}

func (c *reframer) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *reframer) Write(p []byte) (int, error) {
	if c.done || len(p) < 10 || p[0] != 22 {
		return c.Conn.Write(p)
	}
	c.done = true
	body := p[5:]
	var out []byte
	switch c.mode {
	case "version-0300":
		out = append([]byte{22, 3, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	case "split":
		h := len(body) / 2
		out = append(out, 22, 3, 1, byte(h>>8), byte(h))
		out = append(out, body[:h]...)
		out = append(out, 22, 3, 1, byte((len(body)-h)>>8), byte(len(body)-h))
		out = append(out, body[h:]...)
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
