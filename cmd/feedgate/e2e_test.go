package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Policy instants around the default policy's cut-offs (2024-07-20 and
// 2024-09-29, 00:00 America/New_York).
const (
	beforeSales   = "2024-07-01T12:00:00-04:00"
	betweenCuts   = "2024-08-15T12:00:00-04:00"
	afterUpdates  = "2024-10-01T12:00:00-04:00"
	originPayload = "kaspersky bases v1: signature payload\n"
)

// vendorHosts are real catalog names that the tests point at local origins.
var vendorHosts = []string{
	"dnl-01.geo.kaspersky.com", "s01.upd.kaspersky.com", "activation-v2.kaspersky.com",
	"store.kaspersky.com", "www.example.test", "www.kaspersky.com",
}

// fixture is a pair of local origins (plain HTTP and TLS) that every vendor
// host name is resolved to through feedgate's -resolve.
type fixture struct {
	plain, tls *origin
	caFile     string
	pool       *x509.CertPool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	leaf, caFile := testCA(t, vendorHosts...)
	handler := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Origin", "test")
		switch r.URL.Path {
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "short and stout\n")
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		case "/slow":
			slowDownload(w, r)
		default:
			io.WriteString(w, originPayload)
		}
	}
	f := &fixture{plain: newOrigin(t, nil, handler), tls: newOrigin(t, &leaf, handler), caFile: caFile}
	pem, _ := os.ReadFile(caFile)
	f.pool = x509.NewCertPool()
	f.pool.AppendCertsFromPEM(pem)
	return f
}

// resolveArgs points every vendor host at the fixture: port 80 at the plain
// origin and port 443 at the TLS origin.
func (f *fixture) resolveArgs() []string {
	var args []string
	for _, h := range vendorHosts {
		args = append(args,
			"-resolve", h+":80:127.0.0.1:"+f.plain.port(),
			"-resolve", h+":443:127.0.0.1:"+f.tls.port())
	}
	return args
}

func (f *fixture) start(t *testing.T, at string, extra ...string) *instance {
	t.Helper()
	return start(t, append(append([]string{"-at", at}, f.resolveArgs()...), extra...)...)
}

func (f *fixture) goClient(inst *instance) *http.Client {
	pu, _ := url.Parse("http://" + inst.Proxy)
	return &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: f.pool}},
		Timeout:   20 * time.Second,
	}
}

func findRecord(t *testing.T, recs []map[string]any, host string, kind string) map[string]any {
	t.Helper()
	for _, r := range recs {
		if r["host"] == host && r["kind"] == kind {
			return r
		}
	}
	t.Fatalf("no %s decision record for %s in %v", kind, host, recs)
	return nil
}

func wantFields(t *testing.T, rec map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		got := rec[k]
		if n, ok := v.(int); ok {
			v = float64(n)
		}
		if got != v {
			t.Errorf("record %v: field %s = %v; want %v", rec["host"], k, got, v)
		}
	}
}

func TestBetweenCutoffsLogsAndPasses(t *testing.T) {
	f := newFixture(t)
	inst := f.start(t, betweenCuts)
	proxyURL := "http://" + inst.Proxy

	// curl -x: a Kaspersky update host is logged, and reaches the origin intact.
	res := curl(t, nil, "-x", proxyURL, "http://dnl-01.geo.kaspersky.com/bases/av/kdb/i386/base.kdc")
	if res.status != "200" || res.body != originPayload || !strings.Contains(res.headers, "X-Origin: test") {
		t.Fatalf("allowed update via curl: status %s body %q headers %q stderr %q; want 200 and the origin's body", res.status, res.body, res.headers, res.stderr)
	}
	// An origin status passes through unchanged.
	if res := curl(t, nil, "-x", proxyURL, "http://www.example.test/teapot"); res.status != "418" || res.body != "short and stout\n" {
		t.Errorf("teapot: status %s body %q; want 418 from the origin", res.status, res.body)
	}
	// Go's http.Client over CONNECT to the TLS origin: logged, body intact.
	client := f.goClient(inst)
	resp, err := client.Get("https://activation-v2.kaspersky.com/activationservice/activationservice.svc")
	if err != nil {
		t.Fatalf("CONNECT via http.Client: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != originPayload {
		t.Fatalf("CONNECT via http.Client: %d %q; want 200 %q", resp.StatusCode, body, originPayload)
	}
	// Store is blocked from the sales cut-off.
	res = curl(t, nil, "-x", proxyURL, "http://store.kaspersky.com/store")
	if res.status != "403" || !strings.Contains(res.headers, "X-Feedgate-Rule: sales-cutoff-store") {
		t.Errorf("store: status %s headers %q; want 403 with X-Feedgate-Rule: sales-cutoff-store", res.status, res.headers)
	}

	client.CloseIdleConnections()
	recs := inst.waitRecords(4)
	wantFields(t, findRecord(t, recs, "dnl-01.geo.kaspersky.com", "http"), map[string]any{
		"level": "WARN", "action": "log", "flagged": true, "vendor": "kaspersky", "category": "update",
		"rule": "sales-cutoff-flag", "status": 200, "method": "GET", "port": 80,
		"path": "/bases/av/kdb/i386/base.kdc", "bytes_received": len(originPayload), "client": "127.0.0.1",
	})
	wantFields(t, findRecord(t, recs, "www.example.test", "http"), map[string]any{
		"level": "INFO", "action": "allow", "flagged": false, "vendor": "none", "category": "none", "rule": "default", "status": 418,
	})
	wantFields(t, findRecord(t, recs, "store.kaspersky.com", "http"), map[string]any{
		"action": "block", "category": "store", "rule": "sales-cutoff-store", "status": 403,
	})
	// The tunnel's record is written when it closes.
	wantFields(t, findRecord(t, recs, "activation-v2.kaspersky.com", "connect"), map[string]any{
		"level": "WARN", "action": "log", "flagged": true, "category": "licensing", "rule": "sales-cutoff-flag", "status": 200, "port": 443,
	})
}

func TestAfterUpdatesCutoffBlocks(t *testing.T) {
	f := newFixture(t)
	inst := f.start(t, afterUpdates)
	proxyURL := "http://" + inst.Proxy

	// Plain HTTP: 403 with the rule, and the origin never sees the request.
	res := curl(t, nil, "-x", proxyURL, "http://s01.upd.kaspersky.com/bases/av/kdb/i386/base.kdc")
	if res.status != "403" {
		t.Fatalf("blocked HTTP: status %s; want 403 (stderr %q)", res.status, res.stderr)
	}
	if !strings.Contains(res.headers, "X-Feedgate-Rule: updates-cutoff") {
		t.Errorf("blocked HTTP: headers %q; want X-Feedgate-Rule: updates-cutoff", res.headers)
	}
	for _, want := range []string{"vendor:   kaspersky", "category: update", "rule:     updates-cutoff", "since:    2024-09-29T00:00:00-04:00"} {
		if !strings.Contains(res.body, want) {
			t.Errorf("blocked HTTP body %q does not contain %q", res.body, want)
		}
	}

	// CONNECT through https_proxy: curl sees the 403 and no tunnel is made.
	res = curl(t, []string{"https_proxy=" + proxyURL}, "--cacert", f.caFile, "https://dnl-01.geo.kaspersky.com/bases/")
	if res.exitCode == 0 || !strings.Contains(res.stderr, "403") {
		t.Errorf("blocked CONNECT via https_proxy: exit %d stderr %q; want a failed tunnel with 403", res.exitCode, res.stderr)
	}
	// And with -x and -v, the 403 carries the rule header.
	res = curl(t, nil, "-x", proxyURL, "-v", "--cacert", f.caFile, "https://activation-v2.kaspersky.com/")
	if !strings.Contains(res.stderr, "< HTTP/1.1 403 Forbidden") || !strings.Contains(res.stderr, "< X-Feedgate-Rule: updates-cutoff") {
		t.Errorf("blocked CONNECT via -x: stderr %q; want the 403 with X-Feedgate-Rule", res.stderr)
	}
	// Go's http.Client gets an error, not a tunnel.
	if resp, err := f.goClient(inst).Get("https://s01.upd.kaspersky.com/"); err == nil {
		resp.Body.Close()
		t.Errorf("blocked CONNECT via http.Client: got %s; want an error", resp.Status)
	}
	if n, c := f.plain.hits.Load(), f.tls.conns.Load(); n != 0 || c != 0 {
		t.Errorf("origins saw %d requests and %d TLS connections; want none for blocked traffic", n, c)
	}

	// Non-vendor traffic still passes, plain and tunnelled.
	if res := curl(t, nil, "-x", proxyURL, "http://www.example.test/"); res.status != "200" || res.body != originPayload {
		t.Errorf("non-vendor HTTP: %s %q; want 200", res.status, res.body)
	}
	if res := curl(t, []string{"https_proxy=" + proxyURL}, "--cacert", f.caFile, "https://www.example.test/"); res.status != "200" || res.body != originPayload {
		t.Errorf("non-vendor CONNECT: %s %q %q; want 200", res.status, res.body, res.stderr)
	}
	// Threat Intelligence stays reachable (host rule before the cut-off rules).
	if e := explainOne(t, afterUpdates, "opentip.kaspersky.com"); e["action"] != "allow" {
		t.Errorf("opentip after cut-off: %v; want allow", e)
	}

	recs := inst.waitRecords(6)
	wantFields(t, findRecord(t, recs, "dnl-01.geo.kaspersky.com", "connect"), map[string]any{
		"method": "CONNECT", "port": 443, "action": "block", "rule": "updates-cutoff", "status": 403, "category": "update",
	})
	wantFields(t, findRecord(t, recs, "activation-v2.kaspersky.com", "connect"), map[string]any{
		"action": "block", "category": "licensing", "status": 403,
	})

	// Counters moved by exactly what was sent.
	block := map[string]string{"vendor": "kaspersky", "category": "update", "action": "block", "rule": "updates-cutoff"}
	if got := inst.metric("feedgate_requests_total", block); got != 3 {
		t.Errorf("feedgate_requests_total%v = %v; want 3", block, got)
	}
	lic := map[string]string{"vendor": "kaspersky", "category": "licensing", "action": "block", "rule": "updates-cutoff"}
	if got := inst.metric("feedgate_requests_total", lic); got != 1 {
		t.Errorf("feedgate_requests_total%v = %v; want 1", lic, got)
	}
	none := map[string]string{"vendor": "none", "category": "none", "action": "allow", "rule": "default"}
	if got := inst.metric("feedgate_requests_total", none); got != 2 {
		t.Errorf("feedgate_requests_total%v = %v; want 2", none, got)
	}
	upd := map[string]string{"vendor": "kaspersky", "category": "update", "direction": "received"}
	if got := inst.metric("feedgate_transferred_bytes_total", upd); got != 0 {
		t.Errorf("feedgate_transferred_bytes_total%v = %v; want 0: nothing was relayed", upd, got)
	}
	if got := inst.metric("feedgate_policy_action", map[string]string{"vendor": "kaspersky", "category": "update", "action": "block"}); got != 1 {
		t.Errorf("feedgate_policy_action{kaspersky,update,block} = %v; want 1", got)
	}
	for _, kind := range []string{"http", "connect"} {
		if got := inst.metric("feedgate_active_connections", map[string]string{"kind": kind}); got != 0 {
			t.Errorf("feedgate_active_connections{kind=%q} = %v; want 0", kind, got)
		}
	}
}

func TestBeforeSalesCutoffTunnelCountsBytes(t *testing.T) {
	f := newFixture(t)
	inst := f.start(t, beforeSales)
	payload := strings.Repeat("x", 100_000)
	res := curl(t, []string{"https_proxy=http://" + inst.Proxy}, "--cacert", f.caFile,
		"--data-binary", payload, "https://activation-v2.kaspersky.com/echo")
	if res.status != "200" || res.body != payload {
		t.Fatalf("tunnelled POST: status %s, %d bytes (stderr %q); want 200 and the %d bytes echoed", res.status, len(res.body), res.stderr, len(payload))
	}
	rec := findRecord(t, inst.waitRecords(1), "activation-v2.kaspersky.com", "connect")
	wantFields(t, rec, map[string]any{"action": "allow", "rule": "default", "category": "licensing", "status": 200})
	sent, received := rec["bytes_sent"].(float64), rec["bytes_received"].(float64)
	if sent < float64(len(payload)) || received < float64(len(payload)) {
		t.Errorf("tunnel record bytes sent %v received %v; want each at least %d", sent, received, len(payload))
	}
	lic := map[string]string{"vendor": "kaspersky", "category": "licensing"}
	lic["direction"] = "sent"
	if got := inst.metric("feedgate_transferred_bytes_total", lic); got != sent {
		t.Errorf("transferred sent = %v; want %v as in the record", got, sent)
	}
	lic["direction"] = "received"
	if got := inst.metric("feedgate_transferred_bytes_total", lic); got != received {
		t.Errorf("transferred received = %v; want %v as in the record", got, received)
	}
	if got := inst.metric("feedgate_request_duration_seconds", map[string]string{"kind": "connect"}); got != 1 {
		t.Errorf("connect duration count = %v; want 1", got)
	}
}

// TestCutoffHappensLive starts the policy clock two seconds before the
// updates cut-off and watches the same request flip from log to block.
func TestCutoffHappensLive(t *testing.T) {
	f := newFixture(t)
	inst := f.start(t, "2024-09-28T23:59:58-04:00")
	proxyURL := "http://" + inst.Proxy
	if res := curl(t, nil, "-x", proxyURL, "http://s01.upd.kaspersky.com/"); res.status != "200" {
		t.Fatalf("before the cut-off: status %s; want 200", res.status)
	}
	next := inst.metric("feedgate_policy_next_change_timestamp_seconds", map[string]string{"vendor": "kaspersky", "category": "update"})
	if want := float64(time.Date(2024, 9, 29, 4, 0, 0, 0, time.UTC).Unix()); next != want {
		t.Errorf("next change = %v; want %v", next, want)
	}
	deadline := time.Now().Add(15 * time.Second)
	sent := 1
	for {
		res := curl(t, nil, "-x", proxyURL, "http://s01.upd.kaspersky.com/")
		sent++
		if res.status == "403" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s 15s after the cut-off; want 403", res.status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	recs := inst.waitRecords(sent)
	wantFields(t, recs[0], map[string]any{"action": "log", "rule": "sales-cutoff-flag"})
	wantFields(t, recs[len(recs)-1], map[string]any{"action": "block", "rule": "updates-cutoff", "status": 403})
}

// TestShutdownWritesOpenTunnelRecord checks that SIGTERM closes open tunnels
// and that their decision records reach the log before the process exits.
func TestShutdownWritesOpenTunnelRecord(t *testing.T) {
	f := newFixture(t)
	inst := f.start(t, beforeSales)
	c, err := net.Dial("tcp", inst.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT dnl-01.geo.kaspersky.com:443 HTTP/1.1\r\nHost: dnl-01.geo.kaspersky.com:443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v; want 200", resp, err)
	}
	if err := inst.stop(); err != nil {
		t.Fatalf("feedgate exited with %v after SIGTERM; want 0\n%s", err, inst.stderr)
	}
	wantFields(t, findRecord(t, inst.records(), "dnl-01.geo.kaspersky.com", "connect"), map[string]any{"action": "allow", "status": 200})
}

// TestDefaultAddresses runs feedgate with no arguments at all, as the
// README's run command does, and uses it as a proxy.
func TestDefaultAddresses(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:3128", "127.0.0.1:9128"} {
		if l, err := net.Listen("tcp", addr); err != nil {
			t.Fatalf("%s is in use (%v): this test needs feedgate's default ports free", addr, err)
		} else {
			l.Close()
		}
	}
	inst := startExact(t)
	if inst.Proxy != "127.0.0.1:3128" || inst.Admin != "127.0.0.1:9128" {
		t.Fatalf("listening on %s and %s; want 127.0.0.1:3128 and 127.0.0.1:9128", inst.Proxy, inst.Admin)
	}
	// Today is after the updates cut-off: the built-in policy refuses a
	// Kaspersky update tunnel before any name is resolved.
	res := curl(t, nil, "-x", "http://127.0.0.1:3128", "-v", "https://s01.upd.kaspersky.com/")
	if !strings.Contains(res.stderr, "< HTTP/1.1 403 Forbidden") || !strings.Contains(res.stderr, "< X-Feedgate-Rule: updates-cutoff") {
		t.Errorf("through the default proxy: %q; want the updates cut-off's 403", res.stderr)
	}
	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		resp, err := http.Get("http://127.0.0.1:9128" + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != want {
			t.Errorf("GET %s: %d %q; want 200 %q", path, resp.StatusCode, b, want)
		}
	}
	if got := inst.metric("feedgate_build_info", nil); got != 1 {
		t.Errorf("feedgate_build_info = %v; want 1", got)
	}
}

func TestBadResolveFlag(t *testing.T) {
	out, err := runBinary(t, "", "run", "-resolve", "no-port-here")
	if code := exitCode(err); code != 2 || !strings.Contains(out, "want HOST:PORT:ADDR") {
		t.Errorf("bad -resolve: exit %d, output %q; want 2 and a usage hint", code, out)
	}
}

func runBinary(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(interface{ ExitCode() int }); ok {
		return ee.ExitCode()
	}
	return -1
}

// TestRefusesToBeAnOpenProxy: listening beyond loopback needs an explicit
// allowed_clients, and starts with one.
func TestRefusesToBeAnOpenProxy(t *testing.T) {
	out, err := runBinary(t, "", "run", "-listen", "0.0.0.0:0", "-admin", "127.0.0.1:0")
	if code := exitCode(err); code != 1 || !strings.Contains(out, "open proxy") || !strings.Contains(out, "allowed_clients") {
		t.Errorf("-listen 0.0.0.0 without allowed_clients: exit %d, %q; want 1 and an explanation", code, out)
	}
	policy := filepath.Join(t.TempDir(), "gateway.toml")
	src := "allowed_clients = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\ncatalogs = [\"builtin:catalog/kaspersky.toml\"]\n"
	if err := os.WriteFile(policy, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	inst := startExact(t, "run", "-config", policy, "-listen", "0.0.0.0:0", "-admin", "127.0.0.1:0")
	if !strings.HasPrefix(inst.Proxy, "0.0.0.0:") && !strings.HasPrefix(inst.Proxy, "[::]:") {
		t.Errorf("listening on %s; want all interfaces", inst.Proxy)
	}
}

// slowDownload is a download that takes a minute: a byte every 100 ms,
// until the client goes away.
func slowDownload(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	for range 600 {
		if _, err := io.WriteString(w, "."); err != nil || rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
