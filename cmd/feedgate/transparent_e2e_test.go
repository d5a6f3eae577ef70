package main

// End-to-end tests of the transparent listener (issue 13), with real
// kernel redirection: a client that has no proxy settings talks to the
// origin's addresses, the gateway's nftables rule sends its connections to
// feedgate's transparent port, and feedgate decides them as it decides
// explicit requests. The harness is in netns_test.go.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// transparentArgs are feedgate's transparent listeners in the gateway.
func transparentArgs() []string {
	return []string{"-transparent", fmt.Sprintf("0.0.0.0:%d", redirectTo), "-transparent", fmt.Sprintf("[::]:%d", redirectTo)}
}

// startTransparent runs feedgate in the gateway with its transparent
// listeners, the policy clock at at, every origin name resolved to
// resolved, and the default policy with top added to its top-level keys
// and tlsKeys to its [tls] table.
func (n *topology) startTransparent(t *testing.T, at string, resolved netip.Addr, top, tlsKeys string) *instance {
	t.Helper()
	args := append(transparentArgs(), "-at", at)
	return n.feedgate(t, transparentPolicy(t, top, tlsKeys), append(args, resolveTo(resolved)...)...)
}

// recordsWith returns the records whose fields are as sel says (a nil
// value: the field is absent).
func recordsWith(recs []map[string]any, sel map[string]any) []map[string]any {
	var out []map[string]any
next:
	for _, r := range recs {
		for k, v := range sel {
			if n, ok := v.(int); ok {
				v = float64(n)
			}
			if r[k] != v {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}

// oneRecord returns the one record that sel selects, and checks want on
// it.
func oneRecord(t *testing.T, recs []map[string]any, sel, want map[string]any) map[string]any {
	t.Helper()
	got := recordsWith(recs, sel)
	if len(got) != 1 {
		t.Fatalf("%d records with %v; want 1, in:\n%v", len(got), sel, recs)
	}
	wantFields(t, got[0], want)
	return got[0]
}

// transparentFields are the fields every record of a transparent
// connection has, from client to the original destination dst.
func transparentFields(client netip.Addr, dst string, more map[string]any) map[string]any {
	m := map[string]any{"mode": "transparent", "original_dst": dst, "client": client.String()}
	for k, v := range more {
		m[k] = v
	}
	return m
}

// settled waits until feedgate holds no connection open: the transparent
// gauge and the http gauge (transparent HTTP requests count as http) are
// back to 0.
func settled(t *testing.T, inst *instance) {
	t.Helper()
	waitMetric(t, inst, "feedgate_active_connections", map[string]string{"kind": "transparent"}, 0)
	waitMetric(t, inst, "feedgate_active_connections", map[string]string{"kind": "http"}, 0)
}

// wantMetric checks one series.
func wantMetric(t *testing.T, inst *instance, name string, labels map[string]string, want float64) {
	t.Helper()
	if got := inst.metric(name, labels); got != want {
		t.Errorf("%s%v = %v; want %v", name, labels, got, want)
	}
}

// outcome is a series of feedgate_requests_total.
func outcome(vendor, category, action, rule string) map[string]string {
	return map[string]string{"vendor": vendor, "category": category, "action": action, "rule": rule}
}

// The outcomes of the default policy that these tests see.
func allowNone() map[string]string {
	return outcome("none", "none", "allow", "default")
}

func blockUpdates() map[string]string {
	return outcome("kaspersky", "update", "block", "updates-cutoff")
}

func flagUpdates() map[string]string {
	return outcome("kaspersky", "update", "log", "sales-cutoff-flag")
}

func flagNoSNI() map[string]string {
	return outcome("none", "none", "log", "tunnel_without_sni")
}

func blockNoSNI() map[string]string {
	return outcome("none", "none", "block", "tunnel_without_sni")
}

// kindSeries is the series of a metric labelled by kind alone.
func kindSeries(k string) map[string]string { return map[string]string{"kind": k} }

// metricSum is the sum of every series of name.
func metricSum(inst *instance, name string) float64 {
	fam, ok := inst.scrape()[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, m := range fam.Metric {
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		}
	}
	return sum
}

// exchange sends req on c as it is and reads one response.
func exchange(t *testing.T, c net.Conn, br *bufio.Reader, req string) (*http.Response, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write %q: %v", req, err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response to %q: %v", req, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("body of the response to %q: %v", req, err)
	}
	return resp, string(body)
}

// wantTLSAlert checks that curl failed the handshake on feedgate's
// access_denied alert: exit status 35, SSL connect error.
func wantTLSAlert(t *testing.T, what string, res curlResult) {
	t.Helper()
	if res.exitCode != 35 || !strings.Contains(res.stderr, "access denied") || res.body != "" {
		t.Errorf("%s: curl exit %d status %s body %q stderr %q; want exit 35 on a TLS access_denied alert", what, res.exitCode, res.status, res.body, res.stderr)
	}
}

// TestTransparentAllowedPassesIntact: with no proxy configured, allowed
// HTTP and HTTPS reach the origin through feedgate as the origin sent
// them, with the client's Host, to the address the client dialed; each
// request on a keep-alive connection is decided on its own; the records
// and counters are exact.
func TestTransparentAllowedPassesIntact(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	n.redirect(t)
	for _, f := range families() {
		t.Run(f.name, func(t *testing.T) {
			inst := n.startTransparent(t, afterUpdates, f.origin, "", "")
			tlsConns0, tlsHits0 := o.tls.counts(f.origin)
			_, plainHits0 := o.plain.counts(f.origin)
			resolve80 := "www.example.test:80:" + curlAddr(f.origin)
			resolve443 := "www.example.test:443:" + curlAddr(f.origin)

			res := n.curl(t, "--resolve", resolve80, "http://www.example.test/teapot")
			if res.status != "418" || res.body != "short and stout\n" ||
				!strings.Contains(res.headers, "X-Origin: test") || !strings.Contains(res.headers, "X-Origin-Host: www.example.test") {
				t.Errorf("curl http: status %s body %q headers %q stderr %q; want the origin's 418 for Host www.example.test", res.status, res.body, res.headers, res.stderr)
			}
			res = n.curl(t, "--cacert", o.caFile, "--resolve", resolve443, "https://www.example.test/")
			if res.status != "200" || res.body != originPayload || !strings.Contains(res.headers, "X-Origin-Host: www.example.test") {
				t.Errorf("curl https: status %s body %q headers %q stderr %q; want the origin's 200", res.status, res.body, res.headers, res.stderr)
			}

			client := n.client.httpClient(map[string]netip.Addr{"www.example.test": f.origin}, o.pool)
			for _, c := range []struct {
				url    string
				status int
				body   string
			}{
				{"http://www.example.test/", 200, originPayload},
				{"https://www.example.test/teapot", 418, "short and stout\n"},
			} {
				resp, err := client.Get(c.url)
				if err != nil {
					t.Errorf("Go client %s: %v", c.url, err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != c.status || string(body) != c.body || resp.Header.Get("X-Origin-Host") != "www.example.test" {
					t.Errorf("Go client %s: %d %q %v; want %d %q from the origin", c.url, resp.StatusCode, body, resp.Header, c.status, c.body)
				}
			}
			client.CloseIdleConnections()

			// One keep-alive connection, two hosts: each request is
			// decided by its own Host.
			conn, err := n.client.dial(context.Background(), "tcp", dst(f.origin, 80))
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, body := exchange(t, conn, br, "GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
			if resp.StatusCode != 200 || body != originPayload {
				t.Errorf("keep-alive, allowed host: %d %q; want 200 and the payload", resp.StatusCode, body)
			}
			resp, _ = exchange(t, conn, br, "GET /bases/av/kdb/i386/base.kdc HTTP/1.1\r\nHost: dnl-01.geo.kaspersky.com\r\n\r\n")
			if resp.StatusCode != 403 || resp.Header.Get("X-Feedgate-Rule") != "updates-cutoff" {
				t.Errorf("keep-alive, blocked host: %d %v; want 403 with X-Feedgate-Rule: updates-cutoff", resp.StatusCode, resp.Header)
			}
			conn.Close()

			// The origin saw every allowed request, at the address the
			// client dialed, and nothing else.
			tlsConns, tlsHits := o.tls.counts(f.origin)
			_, plainHits := o.plain.counts(f.origin)
			if tlsConns-tlsConns0 != 2 || tlsHits-tlsHits0 != 2 || plainHits-plainHits0 != 3 {
				t.Errorf("the origin saw %d TLS connections, %d TLS requests, %d HTTP requests; want 2, 2, 3",
					tlsConns-tlsConns0, tlsHits-tlsHits0, plainHits-plainHits0)
			}

			settled(t, inst)
			recs := exactRecords(t, inst, 6)
			http80, tls443 := dst(f.origin, 80), dst(f.origin, 443)
			allowed := map[string]any{"vendor": "none", "category": "none", "action": "allow", "rule": "default", "host_verify": "match"}
			oneRecord(t, recs, map[string]any{"kind": "http", "path": "/teapot"}, transparentFields(f.client, http80, allowed))
			oneRecord(t, recs, map[string]any{"kind": "http", "path": "/teapot"}, map[string]any{"host": "www.example.test", "port": 80, "method": "GET", "status": 418})
			for _, r := range recordsWith(recs, map[string]any{"kind": "http", "path": "/", "host": "www.example.test"}) {
				wantFields(t, r, transparentFields(f.client, http80, allowed))
				wantFields(t, r, map[string]any{"method": "GET", "status": 200, "bytes_received": len(originPayload)})
			}
			if got := recordsWith(recs, map[string]any{"kind": "http", "path": "/", "host": "www.example.test"}); len(got) != 2 {
				t.Errorf("%d records of GET / for www.example.test; want 2 (Go's client, the keep-alive connection)", len(got))
			}
			oneRecord(t, recs, map[string]any{"kind": "http", "host": "dnl-01.geo.kaspersky.com"}, transparentFields(f.client, http80, map[string]any{
				"path": "/bases/av/kdb/i386/base.kdc", "status": 403, "vendor": "kaspersky", "category": "update",
				"action": "block", "rule": "updates-cutoff", "host_verify": "match",
			}))
			tunnels := recordsWith(recs, map[string]any{"kind": "transparent"})
			if len(tunnels) != 2 {
				t.Errorf("%d transparent connection records; want 2 (curl, Go's client)", len(tunnels))
			}
			for _, r := range tunnels {
				wantFields(t, r, transparentFields(f.client, tls443, allowed))
				wantFields(t, r, map[string]any{"method": "", "host": "www.example.test", "port": 443, "sni": "www.example.test", "sni_result": "match"})
			}

			wantMetric(t, inst, "feedgate_requests_total", allowNone(), 5)
			wantMetric(t, inst, "feedgate_requests_total", blockUpdates(), 1)
			wantMetric(t, inst, "feedgate_host_verify_total", map[string]string{"result": "match"}, 6)
			wantMetric(t, inst, "feedgate_request_duration_seconds", kindSeries("http"), 4)
			wantMetric(t, inst, "feedgate_request_duration_seconds", kindSeries("transparent"), 2)
		})
	}
}

// TestTransparentBlockedAfterCutoff: after the updates cut-off a Kaspersky
// host gets feedgate's 403 over HTTP, and a TLS access_denied alert over
// HTTPS, and the origin sees no request (HTTP) and no connection (TLS).
func TestTransparentBlockedAfterCutoff(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	n.redirect(t)
	for _, f := range families() {
		t.Run(f.name, func(t *testing.T) {
			inst := n.startTransparent(t, afterUpdates, f.origin, "", "")
			tlsConns0, _ := o.tls.counts(netip.Addr{})
			plainConns0, plainHits0 := o.plain.counts(netip.Addr{})

			res := n.curl(t, "--resolve", "dnl-01.geo.kaspersky.com:80:"+curlAddr(f.origin), "http://dnl-01.geo.kaspersky.com/bases/av/kdb/i386/base.kdc")
			if res.status != "403" || !strings.Contains(res.headers, "X-Feedgate-Rule: updates-cutoff") {
				t.Errorf("blocked HTTP: status %s headers %q stderr %q; want 403 with X-Feedgate-Rule: updates-cutoff", res.status, res.headers, res.stderr)
			}
			for _, want := range []string{"vendor:   kaspersky", "category: update", "rule:     updates-cutoff"} {
				if !strings.Contains(res.body, want) {
					t.Errorf("blocked HTTP body %q does not contain %q", res.body, want)
				}
			}
			res = n.curl(t, "--cacert", o.caFile, "--resolve", "dnl-01.geo.kaspersky.com:443:"+curlAddr(f.origin), "https://dnl-01.geo.kaspersky.com/bases/")
			wantTLSAlert(t, "blocked HTTPS", res)

			client := n.client.httpClient(map[string]netip.Addr{"s01.upd.kaspersky.com": f.origin}, o.pool)
			if resp, err := client.Get("https://s01.upd.kaspersky.com/"); err == nil {
				resp.Body.Close()
				t.Errorf("Go client to a blocked host: %d; want a TLS access_denied alert", resp.StatusCode)
			} else if !strings.Contains(err.Error(), "access denied") {
				t.Errorf("Go client to a blocked host: %v; want a TLS access_denied alert", err)
			}
			client.CloseIdleConnections()

			if c, _ := o.tls.counts(netip.Addr{}); c != tlsConns0 {
				t.Errorf("the TLS origin saw %d connections; want none", c-tlsConns0)
			}
			if _, h := o.plain.counts(netip.Addr{}); h != plainHits0 {
				t.Errorf("the HTTP origin saw %d requests; want none", h-plainHits0)
			}
			if c, _ := o.plain.counts(netip.Addr{}); c != plainConns0 {
				t.Logf("feedgate connected to the HTTP origin %d times for a blocked request (no request was sent)", c-plainConns0)
			}

			settled(t, inst)
			recs := exactRecords(t, inst, 3)
			blocked := map[string]any{"vendor": "kaspersky", "category": "update", "action": "block", "rule": "updates-cutoff"}
			oneRecord(t, recs, map[string]any{"host": "dnl-01.geo.kaspersky.com", "kind": "http"}, transparentFields(f.client, dst(f.origin, 80), blocked))
			oneRecord(t, recs, map[string]any{"host": "dnl-01.geo.kaspersky.com", "kind": "http"}, map[string]any{"method": "GET", "port": 80, "path": "/bases/av/kdb/i386/base.kdc", "status": 403})
			for _, host := range []string{"dnl-01.geo.kaspersky.com", "s01.upd.kaspersky.com"} {
				oneRecord(t, recs, map[string]any{"host": host, "kind": "transparent"}, transparentFields(f.client, dst(f.origin, 443), blocked))
				oneRecord(t, recs, map[string]any{"host": host, "kind": "transparent"}, map[string]any{"method": "", "port": 443, "sni": host, "sni_result": "match"})
			}
			wantMetric(t, inst, "feedgate_requests_total", blockUpdates(), 3)
			wantMetric(t, inst, "feedgate_requests_total", allowNone(), 0)
			wantMetric(t, inst, "feedgate_request_duration_seconds", kindSeries("http"), 1)
			wantMetric(t, inst, "feedgate_request_duration_seconds", kindSeries("transparent"), 2)

			// The status page counts them as transparent traffic and
			// lists them among the latest blocked requests.
			var traffic struct {
				Hour struct{ Explicit, Transparent, Blocked uint64 }
			}
			adminJSON(t, inst, "/api/v1/traffic", &traffic)
			if traffic.Hour.Transparent != 3 || traffic.Hour.Explicit != 0 {
				t.Errorf("/api/v1/traffic: last hour %d transparent, %d explicit; want 3 and 0", traffic.Hour.Transparent, traffic.Hour.Explicit)
			}
			var latest struct {
				Decisions []struct{ Mode, Action, Host string }
			}
			adminJSON(t, inst, "/api/v1/decisions?action=block", &latest)
			if len(latest.Decisions) != 3 {
				t.Errorf("/api/v1/decisions lists %d blocked requests; want 3: %+v", len(latest.Decisions), latest.Decisions)
			}
			for _, d := range latest.Decisions {
				if d.Mode != "transparent" {
					t.Errorf("/api/v1/decisions: %+v; want mode transparent", d)
				}
			}

			quicDropped(t, n, f)
			// With feedgate down, the redirect finds no listener.
			failsClosed(t, n, o, f, inst)
		})
	}
}

// adminJSON decodes a JSON answer of the admin listener into v.
func adminJSON(t *testing.T, inst *instance, path string, v any) {
	t.Helper()
	c := inst.adminClient
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Get("http://" + inst.Admin + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// TestTransparentSignatureOnMirror: plain HTTP that the firewall
// redirects is decided with its path, as on the proxy port: after the
// updates cut-off an update base on an internal mirror gets feedgate's
// 403, named by its signature, and never reaches the mirror, while the
// mirror's own file passes.
func TestTransparentSignatureOnMirror(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	n.redirect(t)
	for _, f := range families() {
		t.Run(f.name, func(t *testing.T) {
			inst := n.startTransparent(t, afterUpdates, f.origin, "", "")
			resolve := mirrorHost + ":80:" + curlAddr(f.origin)
			_, hits0 := o.plain.counts(netip.Addr{})
			for _, tc := range []struct{ path, signature string }{
				{mirrorBase, "bases-tree"},
				{mirrorIndex, "update-index"},
			} {
				res := n.curl(t, "--resolve", resolve, "http://"+mirrorHost+tc.path)
				if res.status != "403" || !strings.Contains(res.headers, "X-Feedgate-Rule: updates-cutoff") ||
					!strings.Contains(res.headers, "X-Feedgate-Signature: "+tc.signature) {
					t.Errorf("%s: status %s headers %q stderr %q; want 403 from updates-cutoff, signature %s", tc.path, res.status, res.headers, res.stderr, tc.signature)
				}
			}
			if _, h := o.plain.counts(netip.Addr{}); h != hits0 {
				t.Errorf("the mirror served %d requests for blocked update files; want none", h-hits0)
			}
			if res := n.curl(t, "--resolve", resolve, "http://"+mirrorHost+mirrorReadme); res.status != "200" || res.body != originPayload {
				t.Errorf("%s: status %s body %q stderr %q; want 200 and the payload", mirrorReadme, res.status, res.body, res.stderr)
			}

			settled(t, inst)
			recs := exactRecords(t, inst, 3)
			blocked := func(sig string) map[string]any {
				return transparentFields(f.client, dst(f.origin, 80), map[string]any{"vendor": "kaspersky", "category": "update",
					"match": "signature", "signature": sig, "action": "block", "rule": "updates-cutoff", "status": 403, "host_verify": "match"})
			}
			oneRecord(t, recs, map[string]any{"kind": "http", "path": mirrorBase}, blocked("bases-tree"))
			oneRecord(t, recs, map[string]any{"kind": "http", "path": mirrorIndex}, blocked("update-index"))
			oneRecord(t, recs, map[string]any{"kind": "http", "path": mirrorReadme},
				transparentFields(f.client, dst(f.origin, 80), map[string]any{"vendor": "none", "match": nil, "action": "allow", "status": 200}))
			wantMetric(t, inst, "feedgate_requests_total", blockUpdates(), 2)
		})
	}
}

// TestTransparentTLSCutAtCutoff: transparent TLS downloads opened seconds
// before the updates cut-off, over IPv4 and IPv6 at once, are cut when the
// policy clock passes it, as a CONNECT tunnel is.
func TestTransparentTLSCutAtCutoff(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	n.redirect(t)
	// The policy clock starts four seconds before the cut-off
	// (2024-09-29T04:00:00Z).
	inst := n.startTransparent(t, "2024-09-29T03:59:56Z", ipv4().origin, "", "")
	t.Run("downloads", func(t *testing.T) {
		for _, f := range families() {
			t.Run(f.name, func(t *testing.T) {
				t.Parallel()
				started := time.Now()
				res := n.curl(t, "--cacert", o.caFile, "--resolve", "s01.upd.kaspersky.com:443:"+curlAddr(f.origin), "https://s01.upd.kaspersky.com/slow")
				took := time.Since(started)
				if res.exitCode == 0 {
					t.Fatalf("the one-minute download finished (status %s, %d bytes); want it cut at the cut-off", res.status, len(res.body))
				}
				if res.body == "" {
					t.Errorf("no bytes arrived before the cut-off (curl exit %d, stderr %q); want the download running until it", res.exitCode, res.stderr)
				}
				if took > 15*time.Second {
					t.Errorf("curl ran %v; want the connection cut about 4 s after it opened", took.Round(time.Second))
				}
			})
		}
	})
	settled(t, inst)
	recs := exactRecords(t, inst, 2)
	for _, f := range families() {
		oneRecord(t, recs, map[string]any{"original_dst": dst(f.origin, 443)}, transparentFields(f.client, dst(f.origin, 443), map[string]any{
			"kind": "transparent", "host": "s01.upd.kaspersky.com", "sni": "s01.upd.kaspersky.com", "port": 443,
			"vendor": "kaspersky", "category": "update", "action": "log", "rule": "sales-cutoff-flag",
			"closed": "policy_change", "cut_rule": "updates-cutoff",
		}))
	}
	wantMetric(t, inst, "feedgate_requests_total", flagUpdates(), 2)
	wantMetric(t, inst, "feedgate_request_duration_seconds", kindSeries("transparent"), 2)
}

// TestTransparentForgedName: a client that names one host (SNI, Host) and
// dials an address that host does not resolve to. feedgate never routes
// by the name: the upstream is the address dialed. In log mode the
// mismatch is recorded and counted and the request passes; in strict mode
// it is refused (409, or a TLS alert) before the origin sees anything. A
// name that resolves to the address passes in both; a name that does not
// resolve at all is "unverified", a mismatch in strict mode.
func TestTransparentForgedName(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	n.redirect(t)
	v4, v6 := ipv4(), ipv6()
	// Every name resolves (with -resolve) to v4.origin only; the client
	// dials v4.forged, another origin address, or the IPv6 one.
	type attempt struct {
		name    string
		args    []string
		dst     string         // the original destination
		sel     map[string]any // selects its record
		verify  string         // its host_verify
		https   bool
		logBody string // the body it gets in log mode
	}
	attempts := []attempt{
		{"forged-sni", []string{"--resolve", "www.example.test:443:" + curlAddr(v4.forged), "https://www.example.test/"},
			dst(v4.forged, 443), map[string]any{"kind": "transparent", "original_dst": dst(v4.forged, 443)}, "mismatch", true, originPayload},
		{"forged-host", []string{"--resolve", "www.example.test:80:" + curlAddr(v4.forged), "http://www.example.test/teapot"},
			dst(v4.forged, 80), map[string]any{"kind": "http", "original_dst": dst(v4.forged, 80)}, "mismatch", false, "short and stout\n"},
		{"forged-sni-ipv6", []string{"--resolve", "www.example.test:443:" + curlAddr(v6.origin), "https://www.example.test/"},
			dst(v6.origin, 443), map[string]any{"kind": "transparent", "original_dst": dst(v6.origin, 443)}, "mismatch", true, originPayload},
		{"unresolvable-host", []string{"--resolve", "nowhere.example.test:80:" + curlAddr(v4.origin), "http://nowhere.example.test/"},
			dst(v4.origin, 80), map[string]any{"kind": "http", "original_dst": dst(v4.origin, 80), "host": "nowhere.example.test"}, "unverified", false, originPayload},
	}
	verified := []attempt{
		{"verified-sni", []string{"--resolve", "www.example.test:443:" + curlAddr(v4.origin), "https://www.example.test/"},
			dst(v4.origin, 443), map[string]any{"kind": "transparent", "original_dst": dst(v4.origin, 443), "host": "www.example.test"}, "match", true, originPayload},
		{"verified-host", []string{"--resolve", "www.example.test:80:" + curlAddr(v4.origin), "http://www.example.test/"},
			dst(v4.origin, 80), map[string]any{"kind": "http", "original_dst": dst(v4.origin, 80), "host": "www.example.test"}, "match", false, originPayload},
	}
	clientOf := func(a attempt) netip.Addr {
		return familyOf(netip.MustParseAddrPort(a.dst).Addr()).client
	}

	t.Run("log", func(t *testing.T) {
		inst := n.startTransparent(t, afterUpdates, v4.origin, "", "")
		for _, a := range attempts {
			origin := o.plain
			if a.https {
				origin = o.tls
			}
			to := netip.MustParseAddrPort(a.dst).Addr()
			conns0, hits0 := origin.counts(to)
			allConns0, allHits0 := origin.counts(netip.Addr{})
			res := n.curl(t, append([]string{"--cacert", o.caFile}, a.args...)...)
			if res.exitCode != 0 || res.body != a.logBody {
				t.Errorf("%s: curl exit %d status %s body %q stderr %q; want it through, as in log mode", a.name, res.exitCode, res.status, res.body, res.stderr)
			}
			// Never routed by the name: the origin saw it at the
			// address the client dialed, and nowhere else.
			conns, hits := origin.counts(to)
			allConns, allHits := origin.counts(netip.Addr{})
			if hits-hits0 != 1 || allHits-allHits0 != 1 || a.https && (conns-conns0 != 1 || allConns-allConns0 != 1) {
				t.Errorf("%s: the origin saw %d connections and %d requests at %v, %d and %d in all; want it once, at the address dialed",
					a.name, conns-conns0, hits-hits0, to, allConns-allConns0, allHits-allHits0)
			}
		}
		settled(t, inst)
		recs := exactRecords(t, inst, len(attempts))
		for _, a := range attempts {
			oneRecord(t, recs, a.sel, transparentFields(clientOf(a), a.dst, map[string]any{
				"host_verify": a.verify, "action": "allow", "rule": "default", "rejected": nil,
			}))
		}
		wantMetric(t, inst, "feedgate_host_verify_total", map[string]string{"result": "mismatch"}, 3)
		wantMetric(t, inst, "feedgate_host_verify_total", map[string]string{"result": "unverified"}, 1)
		wantMetric(t, inst, "feedgate_host_verify_total", map[string]string{"result": "match"}, 0)
		wantMetric(t, inst, "feedgate_rejected_total", map[string]string{"reason": "host_verify"}, 0)
		wantMetric(t, inst, "feedgate_requests_total", allowNone(), float64(len(attempts)))
	})

	t.Run("strict", func(t *testing.T) {
		inst := n.startTransparent(t, afterUpdates, v4.origin, `transparent_verify = "strict"`+"\n", "")
		tlsConns0, _ := o.tls.counts(netip.Addr{})
		_, plainHits0 := o.plain.counts(netip.Addr{})
		for _, a := range attempts {
			res := n.curl(t, append([]string{"--cacert", o.caFile}, a.args...)...)
			if a.https {
				wantTLSAlert(t, a.name, res)
			} else if res.status != "409" || !strings.Contains(res.headers, "X-Feedgate-Reason: host_verify") {
				t.Errorf("%s: status %s headers %q stderr %q; want 409 with X-Feedgate-Reason: host_verify", a.name, res.status, res.headers, res.stderr)
			}
		}
		if c, _ := o.tls.counts(netip.Addr{}); c != tlsConns0 {
			t.Errorf("the TLS origin saw %d connections for refused names; want none", c-tlsConns0)
		}
		if _, h := o.plain.counts(netip.Addr{}); h != plainHits0 {
			t.Errorf("the HTTP origin saw %d requests for refused names; want none", h-plainHits0)
		}
		for _, a := range verified {
			res := n.curl(t, append([]string{"--cacert", o.caFile}, a.args...)...)
			if res.status != "200" || res.body != a.logBody {
				t.Errorf("%s: status %s body %q stderr %q; want the origin's 200: strict refuses only names that do not match", a.name, res.status, res.body, res.stderr)
			}
		}
		settled(t, inst)
		recs := exactRecords(t, inst, len(attempts)+len(verified))
		for _, a := range attempts {
			r := oneRecord(t, recs, a.sel, transparentFields(clientOf(a), a.dst, map[string]any{"rejected": "host_verify"}))
			if !a.https {
				wantFields(t, r, map[string]any{"status": 409})
			}
		}
		for _, a := range verified {
			oneRecord(t, recs, a.sel, transparentFields(clientOf(a), a.dst, map[string]any{
				"host_verify": "match", "action": "allow", "rule": "default", "rejected": nil, "status": 200,
			}))
		}
		wantMetric(t, inst, "feedgate_rejected_total", map[string]string{"reason": "host_verify"}, float64(len(attempts)))
		wantMetric(t, inst, "feedgate_host_verify_total", map[string]string{"result": "mismatch"}, 3)
		wantMetric(t, inst, "feedgate_host_verify_total", map[string]string{"result": "unverified"}, 1)
		wantMetric(t, inst, "feedgate_host_verify_total", map[string]string{"result": "match"}, float64(len(verified)))
		wantMetric(t, inst, "feedgate_requests_total", allowNone(), float64(len(verified)))
	})
}

// TestTransparentLoopGuard: a connection whose original destination is
// feedgate's own explicit port (the gateway redirects the client's
// connections to 3128 too) is closed, and so is a connection made to the
// transparent port directly, which has no original destination; neither
// is decided by the policy.
func TestTransparentLoopGuard(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	n.redirect(t)
	v4, v6 := ipv4(), ipv6()
	inst := n.startTransparent(t, afterUpdates, v4.origin, "", "")
	tlsConns0, _ := o.tls.counts(netip.Addr{})
	plainConns0, _ := o.plain.counts(netip.Addr{})
	for _, c := range []struct{ what, url string }{
		{"loop", "http://" + dst(v4.gwClient, gwProxyPort) + "/"},
		{"direct-ipv4", "http://" + dst(v4.gwClient, redirectTo) + "/"},
		{"direct-ipv6", "http://" + dst(v6.gwClient, redirectTo) + "/"},
		{"direct-tls", "https://" + dst(v4.gwClient, redirectTo) + "/"},
	} {
		res := n.curl(t, "-g", "--cacert", o.caFile, c.url)
		// 52: empty reply; 56: connection reset; 35: TLS handshake
		// ended by the close.
		if res.status != "000" || res.body != "" || res.exitCode != 52 && res.exitCode != 56 && res.exitCode != 35 {
			t.Errorf("%s: curl exit %d status %s body %q stderr %q; want the connection closed unanswered", c.what, res.exitCode, res.status, res.body, res.stderr)
		}
	}
	if c, _ := o.tls.counts(netip.Addr{}); c != tlsConns0 {
		t.Errorf("the TLS origin saw %d connections; want none", c-tlsConns0)
	}
	if c, _ := o.plain.counts(netip.Addr{}); c != plainConns0 {
		t.Errorf("the HTTP origin saw %d connections; want none", c-plainConns0)
	}
	settled(t, inst)
	recs := exactRecords(t, inst, 4)
	oneRecord(t, recs, map[string]any{"rejected": "destination"},
		transparentFields(v4.client, dst(v4.gwClient, gwProxyPort), nil))
	invalid := recordsWith(recs, map[string]any{"rejected": "invalid"})
	if len(invalid) != 3 {
		t.Errorf("%d records rejected invalid; want 3 (the direct connections)\n%v", len(invalid), recs)
	}
	for _, r := range invalid {
		wantFields(t, r, map[string]any{"mode": "transparent"})
	}
	if got := len(recordsWith(invalid, map[string]any{"client": v6.client.String()})); got != 1 {
		t.Errorf("%d invalid records from %v; want 1", got, v6.client)
	}
	wantMetric(t, inst, "feedgate_rejected_total", map[string]string{"reason": "destination"}, 1)
	wantMetric(t, inst, "feedgate_rejected_total", map[string]string{"reason": "invalid"}, 3)
	if got := metricSum(inst, "feedgate_requests_total"); got != 0 {
		t.Errorf("feedgate_requests_total sums to %v; want 0: refused connections are not decided", got)
	}
}

// garbage is a client's first bytes that are neither a TLS record nor an
// HTTP request.
const garbage = "\x00\xffGARBAGE\r\n\r\n"

// dribbleConn writes its first left bytes size at a time, pause apart, as
// a slow client does.
type dribbleConn struct {
	net.Conn
	size, left int
	pause      time.Duration
}

func (c *dribbleConn) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 && c.left > 0 {
		k := min(c.size, len(p), c.left)
		m, err := c.Conn.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p, c.left = p[k:], c.left-k
		time.Sleep(c.pause)
	}
	if len(p) == 0 {
		return n, nil
	}
	m, err := c.Conn.Write(p)
	return n + m, err
}

// TestTransparentHostileInput: what the first bytes of a transparent
// connection cannot decide. Garbage is neither TLS nor HTTP: it is decided
// by the original destination alone, flagged by tunnel_without_sni, and
// relayed (to port 443, which connect_ports allows whatever its reading
// for a transparent connection). A client that dribbles its request or ClientHello is decided by
// the whole of it. A client that says nothing is decided by the original
// destination once sni_timeout (1 s here) has passed, and then relayed.
// With tunnel_without_sni = "block" garbage goes nowhere.
func TestTransparentHostileInput(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	n.redirect(t)
	ctx := context.Background()
	for _, f := range families() {
		t.Run(f.name, func(t *testing.T) {
			inst := n.startTransparent(t, afterUpdates, f.origin, "", "")
			dial := func(port int) net.Conn {
				t.Helper()
				c, err := n.client.dial(ctx, "tcp", dst(f.origin, port))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				_ = c.SetDeadline(time.Now().Add(15 * time.Second))
				return c
			}
			// Garbage: relayed to the original destination, whose TLS
			// server takes the connection and drops it.
			tlsConns0, _ := o.tls.counts(f.origin)
			c := dial(443)
			if _, err := io.WriteString(c, garbage); err != nil {
				t.Fatal(err)
			}
			// The origin may reset rather than close: either ends it.
			if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("garbage: %v; want the connection closed by the origin", err)
			}
			c.Close()
			if conns, _ := o.tls.counts(f.origin); conns-tlsConns0 != 1 {
				t.Errorf("garbage: the origin saw %d connections; want 1", conns-tlsConns0)
			}

			// A request dribbled a byte at a time.
			c = dial(80)
			dc := &dribbleConn{Conn: c, size: 1, left: 1 << 20, pause: 5 * time.Millisecond}
			resp, body := exchange(t, dc, bufio.NewReader(c), "GET /teapot HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 418 || body != "short and stout\n" || resp.Header.Get("X-Origin-Host") != "www.example.test" {
				t.Errorf("dribbled request: %d %q %v; want the origin's 418", resp.StatusCode, body, resp.Header)
			}
			c.Close()

			// ClientHellos dribbled 64 bytes at a time: a blocked name
			// gets the alert and the origin no connection; an allowed
			// one gets through.
			tlsConns0, _ = o.tls.counts(netip.Addr{})
			tc := tls.Client(&dribbleConn{Conn: dial(443), size: 64, left: 1 << 20, pause: 10 * time.Millisecond},
				&tls.Config{ServerName: "dnl-01.geo.kaspersky.com", RootCAs: o.pool})
			if err := tc.Handshake(); err == nil || !strings.Contains(err.Error(), "access denied") {
				t.Errorf("dribbled ClientHello for a blocked host: %v; want a TLS access_denied alert", err)
			}
			tc.Close()
			if conns, _ := o.tls.counts(netip.Addr{}); conns != tlsConns0 {
				t.Errorf("dribbled ClientHello for a blocked host: the origin saw %d connections; want none", conns-tlsConns0)
			}
			tc = tls.Client(&dribbleConn{Conn: dial(443), size: 64, left: 1 << 20, pause: 10 * time.Millisecond},
				&tls.Config{ServerName: "www.example.test", RootCAs: o.pool})
			resp, body = exchange(t, tc, bufio.NewReader(tc), "GET / HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 200 || body != originPayload {
				t.Errorf("dribbled ClientHello for an allowed host: %d %q; want the origin's 200", resp.StatusCode, body)
			}
			// A tunnel ends when both sides have closed.
			tc.Close()

			// Silence: decided after sni_timeout by the address alone,
			// then relayed; the client's later handshake reaches the
			// origin.
			tlsConns0, _ = o.tls.counts(f.origin)
			start := time.Now()
			c = dial(443)
			waitFor(t, "the silent connection relayed to the origin", func() (bool, string) {
				conns, _ := o.tls.counts(f.origin)
				return conns-tlsConns0 == 1, fmt.Sprintf("%d connections", conns-tlsConns0)
			})
			if took := time.Since(start); took < 900*time.Millisecond {
				t.Errorf("a silent connection reached the origin after %v; want it decided after sni_timeout (1 s)", took)
			}
			tc = tls.Client(c, &tls.Config{ServerName: "www.example.test", RootCAs: o.pool})
			resp, body = exchange(t, tc, bufio.NewReader(tc), "GET / HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 200 || body != originPayload {
				t.Errorf("handshake after the silence: %d %q; want the origin's 200", resp.StatusCode, body)
			}
			tc.Close()

			settled(t, inst)
			recs := exactRecords(t, inst, 5)
			bare := map[string]any{"kind": "transparent", "method": "", "host": f.origin.String(), "host_verify": nil,
				"vendor": "none", "category": "none", "action": "log", "rule": "tunnel_without_sni"}
			oneRecord(t, recs, map[string]any{"sni_result": "not_tls"}, transparentFields(f.client, dst(f.origin, 443), bare))
			oneRecord(t, recs, map[string]any{"sni_result": "not_tls"}, map[string]any{"port": 443})
			oneRecord(t, recs, map[string]any{"kind": "http"}, transparentFields(f.client, dst(f.origin, 80), map[string]any{
				"host": "www.example.test", "path": "/teapot", "status": 418, "host_verify": "match", "action": "allow",
			}))
			oneRecord(t, recs, map[string]any{"kind": "transparent", "host": "dnl-01.geo.kaspersky.com"}, transparentFields(f.client, dst(f.origin, 443), map[string]any{
				"sni": "dnl-01.geo.kaspersky.com", "sni_result": "match", "action": "block", "rule": "updates-cutoff",
			}))
			oneRecord(t, recs, map[string]any{"kind": "transparent", "host": "www.example.test"}, transparentFields(f.client, dst(f.origin, 443), map[string]any{
				"sni": "www.example.test", "sni_result": "match", "action": "allow", "host_verify": "match",
			}))
			oneRecord(t, recs, map[string]any{"sni_result": "timeout"}, transparentFields(f.client, dst(f.origin, 443), bare))
			oneRecord(t, recs, map[string]any{"sni_result": "timeout"}, map[string]any{"port": 443})
			wantMetric(t, inst, "feedgate_requests_total", flagNoSNI(), 2)
			wantMetric(t, inst, "feedgate_requests_total", blockUpdates(), 1)
			wantMetric(t, inst, "feedgate_requests_total", allowNone(), 2)
			wantMetric(t, inst, "feedgate_request_duration_seconds", kindSeries("http"), 1)
			wantMetric(t, inst, "feedgate_request_duration_seconds", kindSeries("transparent"), 4)
		})
	}

	t.Run("tunnel_without_sni-block", func(t *testing.T) {
		v4 := ipv4()
		inst := n.startTransparent(t, afterUpdates, v4.origin, "", `tunnel_without_sni = "block"`)
		tlsConns0, _ := o.tls.counts(netip.Addr{})
		c, err := n.client.dial(ctx, "tcp", dst(v4.origin, 443))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, garbage); err != nil {
			t.Fatal(err)
		}
		if got, _ := io.ReadAll(c); len(got) != 0 {
			t.Errorf("garbage with tunnel_without_sni = block: got %q; want the connection closed unanswered", got)
		}
		if conns, _ := o.tls.counts(netip.Addr{}); conns != tlsConns0 {
			t.Errorf("the origin saw %d connections; want none", conns-tlsConns0)
		}
		settled(t, inst)
		recs := exactRecords(t, inst, 1)
		wantFields(t, recs[0], transparentFields(v4.client, dst(v4.origin, 443), map[string]any{
			"kind": "transparent", "host": v4.origin.String(), "port": 443, "sni_result": "not_tls",
			"vendor": "none", "action": "block", "rule": "tunnel_without_sni",
		}))
		wantMetric(t, inst, "feedgate_requests_total", blockNoSNI(), 1)
	})
}

// TestTransparentMark: with transparent_mark, every socket feedgate opens
// upstream carries the mark, so that a firewall rule can leave feedgate's
// own traffic alone; an nftables counter in the gateway's output hook sees
// the marked packets of a transparent request, and no unmarked packet to
// the origin.
func TestTransparentMark(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	n.redirect(t)
	f := ipv4()
	const rules = `table inet fgmark {
	chain out {
		type filter hook output priority 0;
		tcp dport 80 meta mark 42 counter
		tcp dport 80 meta mark != 42 counter
	}
}
`
	file := filepath.Join(t.TempDir(), "mark.nft")
	if err := os.WriteFile(file, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(n.ip, "netns", "exec", string(n.gw), n.nft, "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("nft -f (in %s): %v\n%s", n.gw, err, out)
	}
	inst := n.startTransparent(t, afterUpdates, f.origin, "transparent_mark = 42\n", "")
	_, hits0 := o.plain.counts(f.origin)
	res := n.curl(t, "--resolve", "www.example.test:80:"+curlAddr(f.origin), "http://www.example.test/")
	if res.status != "200" || res.body != originPayload {
		t.Fatalf("curl: status %s body %q stderr %q; want the origin's 200", res.status, res.body, res.stderr)
	}
	if _, hits := o.plain.counts(f.origin); hits != hits0+1 {
		t.Errorf("the origin saw %d requests; want 1", hits-hits0)
	}
	out, err := exec.Command(n.ip, "netns", "exec", string(n.gw), n.nft, "list", "chain", "inet", "fgmark", "out").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list chain: %v\n%s", err, out)
	}
	counters := regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(string(out), -1)
	if len(counters) != 2 {
		t.Fatalf("nft list chain: %d counters in\n%s", len(counters), out)
	}
	if counters[0][1] == "0" || counters[1][1] != "0" {
		t.Errorf("packets to port 80 from the gateway: %s marked 42, %s not; want some marked and none unmarked\n%s", counters[0][1], counters[1][1], out)
	}
	oneRecord(t, exactRecords(t, inst, 1), map[string]any{"mode": "transparent", "host": "www.example.test"}, map[string]any{"status": 200})
}

// tproxyMark marks the packets the gateway delivers to feedgate's TPROXY
// sockets; its policy route makes them local.
const tproxyMark = 1

// tproxy sets the gateway up for TPROXY instead of REDIRECT, with the
// ruleset of docs/transparent.md (TPROXY with nftables), read from the
// document, and its policy routes: the client's web traffic keeps its
// destination address and is delivered to feedgate's transparent sockets
// (IP_TRANSPARENT), marked, and the mark's routing table makes every
// address local. What no feedgate socket takes (feedgate is down) is
// refused in forward, not sent on, and QUIC is dropped.
func (n *topology) tproxy(t *testing.T) {
	t.Helper()
	rules := docRuleset(t, "### TPROXY with nftables")
	rules = strings.ReplaceAll(rules, `"lan0"`, strconv.Quote(gwClientIf))
	rules = strings.Replace(rules, "table inet feedgate {", "table inet "+nftTable+" {", 1)
	if !strings.Contains(rules, fmt.Sprintf("tproxy to :%d meta mark set %d", redirectTo, tproxyMark)) {
		t.Fatalf("the documented TPROXY ruleset no longer sends to :%d with mark %d; the test's constants need updating:\n%s", redirectTo, tproxyMark, rules)
	}
	file := filepath.Join(t.TempDir(), "tproxy.nft")
	if err := os.WriteFile(file, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(n.ip, "netns", "exec", string(n.gw), n.nft, "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("nft -f (in %s): %v\n%s", n.gw, err, out)
	}
	mark := fmt.Sprint(tproxyMark)
	for _, fam := range []struct{ flag, all string }{{"-4", "0.0.0.0/0"}, {"-6", "::/0"}} {
		n.run("-n", string(n.gw), fam.flag, "rule", "add", "fwmark", mark, "lookup", "100")
		n.run("-n", string(n.gw), fam.flag, "route", "add", "local", fam.all, "dev", "lo", "table", "100")
	}
}

// TestTransparentTProxy: with TPROXY (transparent_tproxy) the gateway
// delivers the client's connections to feedgate without rewriting their
// destination; feedgate reads it from the socket's local address and
// decides and relays them as it does redirected ones, over IPv4 and IPv6,
// plain HTTP and TLS, allowed and blocked. With feedgate down, the
// documented ruleset fails closed.
func TestTransparentTProxy(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	n.tproxy(t)
	for _, f := range families() {
		t.Run(f.name, func(t *testing.T) {
			args := append(transparentArgs(), "-transparent.tproxy", "-at", afterUpdates)
			inst := n.feedgate(t, transparentPolicy(t, "", ""), append(args, resolveTo(f.origin)...)...)
			_, plainHits0 := o.plain.counts(f.origin)
			_, tlsHits0 := o.tls.counts(f.origin)

			res := n.curl(t, "--resolve", "www.example.test:80:"+curlAddr(f.origin), "http://www.example.test/teapot")
			if res.status != "418" || res.body != "short and stout\n" || !strings.Contains(res.headers, "X-Origin-Host: www.example.test") {
				t.Errorf("curl http: status %s body %q headers %q stderr %q; want the origin's 418", res.status, res.body, res.headers, res.stderr)
			}
			res = n.curl(t, "--cacert", o.caFile, "--resolve", "www.example.test:443:"+curlAddr(f.origin), "https://www.example.test/")
			if res.status != "200" || res.body != originPayload {
				t.Errorf("curl https: status %s body %q stderr %q; want the origin's 200", res.status, res.body, res.stderr)
			}
			res = n.curl(t, "--resolve", "dnl-01.geo.kaspersky.com:80:"+curlAddr(f.origin), "http://dnl-01.geo.kaspersky.com/bases/av/kdb/i386/base.kdc")
			if res.status != "403" || !strings.Contains(res.headers, "X-Feedgate-Rule: updates-cutoff") {
				t.Errorf("blocked HTTP: status %s headers %q stderr %q; want 403 from updates-cutoff", res.status, res.headers, res.stderr)
			}
			res = n.curl(t, "--cacert", o.caFile, "--resolve", "dnl-01.geo.kaspersky.com:443:"+curlAddr(f.origin), "https://dnl-01.geo.kaspersky.com/bases/")
			wantTLSAlert(t, "blocked HTTPS", res)

			if _, h := o.plain.counts(f.origin); h != plainHits0+1 {
				t.Errorf("the HTTP origin got %d requests; want 1 (the allowed one)", h-plainHits0)
			}
			if _, h := o.tls.counts(f.origin); h != tlsHits0+1 {
				t.Errorf("the TLS origin got %d requests; want 1 (the allowed one)", h-tlsHits0)
			}
			settled(t, inst)
			recs := exactRecords(t, inst, 4)
			allowed := map[string]any{"action": "allow", "rule": "default"}
			blocked := map[string]any{"vendor": "kaspersky", "category": "update", "action": "block", "rule": "updates-cutoff"}
			oneRecord(t, recs, map[string]any{"host": "www.example.test", "kind": "http"}, transparentFields(f.client, dst(f.origin, 80), allowed))
			oneRecord(t, recs, map[string]any{"host": "www.example.test", "kind": "transparent"}, transparentFields(f.client, dst(f.origin, 443), allowed))
			oneRecord(t, recs, map[string]any{"host": "dnl-01.geo.kaspersky.com", "kind": "http"}, transparentFields(f.client, dst(f.origin, 80), blocked))
			oneRecord(t, recs, map[string]any{"host": "dnl-01.geo.kaspersky.com", "kind": "transparent"}, transparentFields(f.client, dst(f.origin, 443), blocked))

			quicDropped(t, n, f)
			failsClosed(t, n, o, f, inst)
		})
	}
}

// failsClosed stops inst and checks that the gateway then refuses the
// client's connections to a blocked update server, plain and TLS, instead
// of forwarding them: the origin sees nothing.
func failsClosed(t *testing.T, n *topology, o *origins, f family, inst *instance) {
	t.Helper()
	if err := inst.stop(); err != nil {
		t.Fatalf("stopping feedgate: %v", err)
	}
	_, plainHits0 := o.plain.counts(f.origin)
	_, tlsHits0 := o.tls.counts(f.origin)
	for _, url := range []string{"http://dnl-01.geo.kaspersky.com/bases/av/kdb/i386/base.kdc", "https://dnl-01.geo.kaspersky.com/bases/"} {
		res := n.curl(t, "--cacert", o.caFile, "--connect-timeout", "5",
			"--resolve", "dnl-01.geo.kaspersky.com:80:"+curlAddr(f.origin), "--resolve", "dnl-01.geo.kaspersky.com:443:"+curlAddr(f.origin), url)
		if res.exitCode != 7 {
			t.Errorf("curl %s with feedgate down: exit %d, status %s, stderr %q; want the connection refused (exit 7)", url, res.exitCode, res.status, res.stderr)
		}
	}
	if _, h := o.plain.counts(f.origin); h != plainHits0 {
		t.Errorf("with feedgate down the HTTP origin got %d requests; want none", h-plainHits0)
	}
	if _, h := o.tls.counts(f.origin); h != tlsHits0 {
		t.Errorf("with feedgate down the TLS origin got %d requests; want none", h-tlsHits0)
	}
}

// docRuleset returns the first nftables table in docs/transparent.md after
// the line heading.
func docRuleset(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/transparent.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("docs/transparent.md has no %q", heading)
	}
	doc = doc[i:]
	start := strings.Index(doc, "table inet feedgate {")
	end := strings.Index(doc[max(start, 0):], "\n}\n")
	if start < 0 || end < 0 {
		t.Fatalf("no nftables table under %q in docs/transparent.md", heading)
	}
	return doc[start : start+end+3]
}

// quicDropped sends a UDP datagram from the client to the origin's port
// 443 and checks that the gateway's forward rule counted and dropped it:
// the origin's UDP socket gets nothing.
func quicDropped(t *testing.T, n *topology, f family) {
	t.Helper()
	var pc net.PacketConn
	if err := n.origin.do(func() (err error) {
		pc, err = net.ListenPacket("udp", dst(f.origin, 443))
		return err
	}); err != nil {
		t.Fatalf("UDP listener on the origin: %v", err)
	}
	defer pc.Close()
	before := quicDrops(t, n)
	if err := n.client.do(func() error {
		c, err := net.Dial("udp", dst(f.origin, 443))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("a QUIC Initial would be here"))
		return err
	}); err != nil {
		t.Fatalf("UDP from the client: %v", err)
	}
	waitFor(t, "the gateway to count the dropped datagram", func() (bool, string) {
		c := quicDrops(t, n)
		return c > before, fmt.Sprintf("%d drops counted, %d before", c, before)
	})
	_ = pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, from, err := pc.ReadFrom(make([]byte, 64)); err == nil {
		t.Errorf("the origin got a UDP datagram to port 443 from %v; want it dropped at the gateway", from)
	}
}

// quicDrops reads the packet count of the gateway's QUIC drop rule.
func quicDrops(t *testing.T, n *topology) int {
	t.Helper()
	out, err := exec.Command(n.ip, "netns", "exec", string(n.gw), n.nft, "list", "chain", "inet", nftTable, "forward").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list chain forward: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`udp dport 443 counter packets (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no counted QUIC drop rule in the gateway's forward chain:\n%s", out)
	}
	c, _ := strconv.Atoi(string(m[1]))
	return c
}
