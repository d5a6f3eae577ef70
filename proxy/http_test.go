package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// TestHTTPAllowedReachesOrigin: an allowed plain-HTTP request reaches the
// origin, and status, headers and body come back intact.
func TestHTTPAllowedReachesOrigin(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	e := newEnv(t, envConfig{resolve: []string{resolveTo("www.example.test", 80, hostPort(t, o.URL))}})
	c, _ := e.client(t, nil)

	echoBody := bytes.Repeat([]byte("feedgate-post-body-"), 64<<10) // ~1.2 MiB
	tests := []struct {
		name       string
		method     string
		path       string
		body       []byte
		wantStatus int
		wantBody   []byte
		wantHeader map[string]string
	}{
		{name: "get", method: "GET", path: "/hello", wantStatus: 200, wantBody: []byte("hello from origin\n"),
			wantHeader: map[string]string{"X-Origin": "hello", "Content-Type": "text/plain"}},
		{name: "large-body", method: "GET", path: "/big", wantStatus: 200, wantBody: bigBody,
			wantHeader: map[string]string{"Content-Type": "application/octet-stream"}},
		{name: "post-echo", method: "POST", path: "/echo", body: echoBody, wantStatus: 200, wantBody: echoBody,
			wantHeader: map[string]string{"X-Method": "POST"}},
		{name: "put-echo-empty", method: "PUT", path: "/echo", body: []byte{}, wantStatus: 200, wantBody: []byte{},
			wantHeader: map[string]string{"X-Method": "PUT"}},
		{name: "status-404", method: "GET", path: "/status/404", wantStatus: 404, wantBody: []byte{}},
		{name: "status-204", method: "GET", path: "/status/204", wantStatus: 204, wantBody: []byte{}},
		{name: "head", method: "HEAD", path: "/hello", wantStatus: 200, wantBody: []byte{},
			wantHeader: map[string]string{"X-Origin": "hello"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != nil {
				body = bytes.NewReader(tt.body)
			}
			req, err := http.NewRequest(tt.method, "http://www.example.test"+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("reading body: %v", err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			if !bytes.Equal(got, tt.wantBody) {
				t.Errorf("body: got %d bytes (sha256 %x); want %d bytes (sha256 %x)",
					len(got), sha256.Sum256(got), len(tt.wantBody), sha256.Sum256(tt.wantBody))
			}
			for k, v := range tt.wantHeader {
				if g := resp.Header.Get(k); g != v {
					t.Errorf("response header %s = %q; want %q", k, g, v)
				}
			}
			if g := resp.Header.Get("X-Feedgate-Rule"); g != "" {
				t.Errorf("allowed response has X-Feedgate-Rule %q; want none", g)
			}
		})
	}
	if got, want := o.Hits(), len(tests); got != want {
		t.Errorf("origin handled %d requests; want %d", got, want)
	}
}

// TestHTTPAllowedRecordAndBytes: the decision record of an allowed request
// carries its byte counts, and the transfer counters match them.
func TestHTTPAllowedRecordAndBytes(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	e := newEnv(t, envConfig{resolve: []string{resolveTo("www.example.test", 80, hostPort(t, o.URL))}})
	c, _ := e.client(t, nil)
	sent, recv := bytesSeries("none", "none", metrics.DirSent), bytesSeries("none", "none", metrics.DirReceived)
	before := e.snapshot(t, sent, recv)

	body := strings.Repeat("x", 12345)
	resp, err := c.Post("http://www.example.test/echo", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != body {
		t.Fatalf("echoed %d bytes; want %d", len(got), len(body))
	}
	r := e.waitRecord(t, map[string]any{"kind": "http", "host": "www.example.test", "path": "/echo"})
	e.waitIdle(t)
	checkRecord(t, r, map[string]any{
		"msg": "request", "level": "INFO", "method": "POST", "port": 80, "status": 200, "client": "127.0.0.1",
		"action": "allow", "flagged": false, "vendor": "none", "category": "none", "rule": "default",
		"bytes_sent": len(body), "bytes_received": len(body), "policy": "us-bis-kaspersky-2024",
	})
	if _, ok := r["error"]; ok {
		t.Errorf("record of a successful request has error %v; want none", r["error"])
	}
	e.checkDeltas(t, before, delta{sent, float64(len(body))}, delta{recv, float64(len(body))})
}

// TestHTTPHopByHopHeaders: the origin sees Via added and every hop-by-hop
// header removed, while end-to-end headers pass. Raw wire, so that exactly
// these headers are sent.
func TestHTTPHopByHopHeaders(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	e := newEnv(t, envConfig{resolve: []string{resolveTo("www.example.test", 80, hostPort(t, o.URL))}})

	tests := []struct {
		name    string
		proto   string
		extra   string
		wantVia []string
	}{
		{name: "http11", proto: "HTTP/1.1", wantVia: []string{"1.1 feedgate"}},
		{name: "http10", proto: "HTTP/1.0", wantVia: []string{"1.0 feedgate"}},
		{name: "existing-via", proto: "HTTP/1.1", extra: "Via: 1.1 corp-proxy\r\n", wantVia: []string{"1.1 corp-proxy", "1.1 feedgate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := e.dial(t)
			req := "GET http://www.example.test/headers " + tt.proto + "\r\n" +
				"Host: www.example.test\r\n" +
				"Connection: keep-alive, X-Fake-Hop\r\n" +
				"X-Fake-Hop: must-not-pass\r\n" +
				"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n" +
				"Proxy-Connection: keep-alive\r\n" +
				"Keep-Alive: timeout=5\r\n" +
				"X-End-To-End: kept\r\n" +
				tt.extra + "\r\n"
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatal(err)
			}
			resp, body := readResponse(t, bufio.NewReader(conn))
			if resp.StatusCode != 200 || body != "path=/headers\n" {
				t.Fatalf("got %d %q; want 200 %q", resp.StatusCode, body, "path=/headers\n")
			}
			h := o.LastHeader()
			for _, name := range []string{"X-Fake-Hop", "Proxy-Authorization", "Proxy-Connection", "Keep-Alive"} {
				if v, ok := h[name]; ok {
					t.Errorf("origin got %s: %q; want it removed", name, v)
				}
			}
			for _, v := range h.Values("Connection") {
				if strings.Contains(strings.ToLower(v), "x-fake-hop") {
					t.Errorf("origin got Connection: %q; want the client's Connection header removed", v)
				}
			}
			if g := h.Get("X-End-To-End"); g != "kept" {
				t.Errorf("origin got X-End-To-End %q; want %q", g, "kept")
			}
			if g := h.Values("Via"); strings.Join(g, "|") != strings.Join(tt.wantVia, "|") {
				t.Errorf("origin got Via %q; want %q", g, tt.wantVia)
			}
		})
	}
}

// TestHTTPBlockedAfterUpdatesCutoff: after 2024-09-29 a Kaspersky update
// request gets the pre-rendered 403 and never reaches the origin.
func TestHTTPBlockedAfterUpdatesCutoff(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	hosts := []string{"dnl-01.geo.kaspersky.com", "s01.upd.kaspersky.com", "downloads.kaspersky-labs.com"}
	var resolve []string
	for _, h := range hosts {
		resolve = append(resolve, resolveTo(h, 80, hostPort(t, o.URL)))
	}
	e := newEnv(t, envConfig{now: afterCutoffs, resolve: resolve})
	c, _ := e.client(t, nil)

	for _, host := range hosts {
		t.Run(host, func(t *testing.T) {
			resp, body := get(t, c, "http://"+host+"/bases/av/kdb/i386/kdb-i386-0607g.xml.dif")
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("status = %d; want 403", resp.StatusCode)
			}
			if g := resp.Header.Get("X-Feedgate-Rule"); g != "updates-cutoff" {
				t.Errorf("X-Feedgate-Rule = %q; want %q", g, "updates-cutoff")
			}
			if g := resp.Header.Get("Cache-Control"); g != "no-store" {
				t.Errorf("Cache-Control = %q; want %q", g, "no-store")
			}
			for _, want := range []string{
				`policy "us-bis-kaspersky-2024"`,
				"vendor:   kaspersky\n",
				"category: update\n",
				"rule:     updates-cutoff\n",
				"since:    2024-09-29T00:00:00-04:00\n",
			} {
				if !strings.Contains(body, want) {
					t.Errorf("403 body %q does not contain %q", body, want)
				}
			}
			r := e.waitRecord(t, map[string]any{"host": host})
			checkRecord(t, r, map[string]any{
				"kind": "http", "status": 403, "action": "block", "flagged": false, "level": "INFO",
				"vendor": "kaspersky", "category": "update", "rule": "updates-cutoff",
				"bytes_sent": 0, "bytes_received": 0,
			})
		})
	}
	if got := o.Hits(); got != 0 {
		t.Errorf("origin handled %d requests; want 0", got)
	}
}

// TestHTTPDecisionAcrossCutoffs: the same request, decided with the policy
// clock before, at and around both cut-offs.
func TestHTTPDecisionAcrossCutoffs(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	var resolve []string
	for _, h := range []string{"dnl-01.geo.kaspersky.com", "store.kaspersky.com", "opentip.kaspersky.com", "www.example.test"} {
		resolve = append(resolve, resolveTo(h, 80, hostPort(t, o.URL)))
	}
	e := newEnv(t, envConfig{resolve: resolve})
	c, _ := e.client(t, nil)

	tests := []struct {
		name       string
		at         string
		host       string
		wantStatus int
		wantAction string
		wantRule   string
	}{
		{"update/before", "2024-07-01T12:00:00Z", "dnl-01.geo.kaspersky.com", 200, "allow", "default"},
		{"update/just-before-sales", "2024-07-20T03:59:59.999999999Z", "dnl-01.geo.kaspersky.com", 200, "allow", "default"},
		{"update/at-sales", "2024-07-20T04:00:00Z", "dnl-01.geo.kaspersky.com", 200, "log", "sales-cutoff-flag"},
		{"update/just-before-updates", "2024-09-29T03:59:59.999999999Z", "dnl-01.geo.kaspersky.com", 200, "log", "sales-cutoff-flag"},
		{"update/at-updates", "2024-09-29T04:00:00Z", "dnl-01.geo.kaspersky.com", 403, "block", "updates-cutoff"},
		{"store/before", "2024-07-01T12:00:00Z", "store.kaspersky.com", 200, "allow", "default"},
		{"store/at-sales", "2024-07-20T04:00:00Z", "store.kaspersky.com", 403, "block", "sales-cutoff-store"},
		{"store/after", "2024-10-01T12:00:00Z", "store.kaspersky.com", 403, "block", "sales-cutoff-store"},
		{"threat-intel/after", "2024-10-01T12:00:00Z", "opentip.kaspersky.com", 200, "allow", "threat-intel-exempt"},
		{"non-vendor/after", "2024-10-01T12:00:00Z", "www.example.test", 200, "allow", "default"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at, err := time.Parse(time.RFC3339Nano, tt.at)
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Set(at)
			path := "/case/" + string(rune('a'+i))
			resp, _ := get(t, c, "http://"+tt.host+path)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus == 403 {
				if g := resp.Header.Get("X-Feedgate-Rule"); g != tt.wantRule {
					t.Errorf("X-Feedgate-Rule = %q; want %q", g, tt.wantRule)
				}
			}
			r := e.waitRecord(t, map[string]any{"host": tt.host, "path": path})
			checkRecord(t, r, map[string]any{"action": tt.wantAction, "rule": tt.wantRule, "status": tt.wantStatus})
		})
	}
}

// TestHTTPLoggedBetweenCutoffs: between the cut-offs Kaspersky traffic
// passes but is flagged at WARN; other traffic is an ordinary INFO record.
func TestHTTPLoggedBetweenCutoffs(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	e := newEnv(t, envConfig{now: betweenCutoffs, resolve: []string{
		resolveTo("dnl-01.geo.kaspersky.com", 80, hostPort(t, o.URL)),
		resolveTo("activation-v2.kaspersky.com", 80, hostPort(t, o.URL)),
		resolveTo("www.example.test", 80, hostPort(t, o.URL)),
	}})
	c, _ := e.client(t, nil)

	tests := []struct {
		host       string
		wantRecord map[string]any
	}{
		{"dnl-01.geo.kaspersky.com", map[string]any{
			"level": "WARN", "action": "log", "flagged": true, "vendor": "kaspersky", "category": "update", "rule": "sales-cutoff-flag"}},
		{"activation-v2.kaspersky.com", map[string]any{
			"level": "WARN", "action": "log", "flagged": true, "vendor": "kaspersky", "category": "licensing", "rule": "sales-cutoff-flag"}},
		{"www.example.test", map[string]any{
			"level": "INFO", "action": "allow", "flagged": false, "vendor": "none", "category": "none", "rule": "default"}},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			resp, body := get(t, c, "http://"+tt.host+"/hello")
			if resp.StatusCode != 200 || body != "hello from origin\n" {
				t.Fatalf("got %d %q; want 200 %q", resp.StatusCode, body, "hello from origin\n")
			}
			r := e.waitRecord(t, map[string]any{"host": tt.host})
			checkRecord(t, r, tt.wantRecord)
			checkRecord(t, r, map[string]any{"status": 200, "kind": "http", "path": "/hello"})
			if _, ok := r["report_only"]; ok {
				t.Errorf("enforce-mode record has report_only = %v; want it absent", r["report_only"])
			}
		})
	}
	if got := o.Hits(); got != len(tests) {
		t.Errorf("origin handled %d requests; want %d", got, len(tests))
	}
}

// TestHTTPReportMode: in report mode a would-be block passes, counted and
// recorded as log with report_only set.
func TestHTTPReportMode(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	e := newEnv(t, envConfig{
		policy: loadTestPolicy(t, "testdata/report.toml"),
		now:    afterCutoffs,
		resolve: []string{
			resolveTo("dnl-01.geo.kaspersky.com", 80, hostPort(t, o.URL)),
			resolveTo("www.example.test", 80, hostPort(t, o.URL)),
		},
	})
	c, _ := e.client(t, nil)
	logged, blocked := requestsSeries("kaspersky", "update", "log", "block-updates"), requestsSeries("kaspersky", "update", "block", "block-updates")
	before := e.snapshot(t, logged, blocked)

	resp, body := get(t, c, "http://dnl-01.geo.kaspersky.com/hello")
	if resp.StatusCode != 200 || body != "hello from origin\n" {
		t.Fatalf("got %d %q; want 200 %q", resp.StatusCode, body, "hello from origin\n")
	}
	if g := resp.Header.Get("X-Feedgate-Rule"); g != "" {
		t.Errorf("X-Feedgate-Rule = %q; want none in report mode", g)
	}
	r := e.waitRecord(t, map[string]any{"host": "dnl-01.geo.kaspersky.com"})
	checkRecord(t, r, map[string]any{
		"action": "log", "flagged": true, "report_only": true, "level": "WARN", "status": 200,
		"rule": "block-updates", "vendor": "kaspersky", "category": "update", "policy": "test-report",
	})

	// Traffic the policy would not block is not report_only.
	get(t, c, "http://www.example.test/hello")
	r = e.waitRecord(t, map[string]any{"host": "www.example.test"})
	if _, ok := r["report_only"]; ok {
		t.Errorf("record of allowed traffic has report_only = %v; want it absent", r["report_only"])
	}
	e.waitIdle(t)
	e.checkDeltas(t, before, delta{logged, 1}, delta{blocked, 0})
	if got := o.Hits(); got != 2 {
		t.Errorf("origin handled %d requests; want 2", got)
	}
}

// TestHTTPDefaultBlockPolicy: with default_action = "block", traffic no rule
// allows gets a 403 from the default rule.
func TestHTTPDefaultBlockPolicy(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	e := newEnv(t, envConfig{
		policy: loadTestPolicy(t, "testdata/default-block.toml"),
		resolve: []string{
			resolveTo("www.example.test", 80, hostPort(t, o.URL)),
			resolveTo("other.example.test", 80, hostPort(t, o.URL)),
		},
	})
	c, _ := e.client(t, nil)

	resp, _ := get(t, c, "http://www.example.test/hello")
	if resp.StatusCode != 200 {
		t.Errorf("allowed host: status = %d; want 200", resp.StatusCode)
	}
	resp, body := get(t, c, "http://other.example.test/hello")
	if resp.StatusCode != 403 {
		t.Errorf("other host: status = %d; want 403", resp.StatusCode)
	}
	if g := resp.Header.Get("X-Feedgate-Rule"); g != "default" {
		t.Errorf("X-Feedgate-Rule = %q; want %q", g, "default")
	}
	for _, want := range []string{"vendor:   none\n", "category: none\n", "rule:     default\n", "since:    always"} {
		if !strings.Contains(body, want) {
			t.Errorf("403 body %q does not contain %q", body, want)
		}
	}
	r := e.waitRecord(t, map[string]any{"host": "other.example.test"})
	checkRecord(t, r, map[string]any{"action": "block", "rule": "default", "status": 403, "policy": "test-default-block"})
	if got := o.Hits(); got != 1 {
		t.Errorf("origin handled %d requests; want 1", got)
	}
}

// TestHTTPClientGoneWhileUpstreamWaits: a client that closes its
// connection while the upstream has not answered cancels the upstream
// request, and the record says so (499). proxy.Front watches the client
// once an exchange has waited a while (TestFrontClientWatch), on the
// proxy port and on the transparent listener alike.
func TestHTTPClientGoneWhileUpstreamWaits(t *testing.T) {
	t.Parallel()
	for _, transparent := range []bool{false, true} {
		name := map[bool]string{false: "proxy-port", true: "transparent"}[transparent]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHangingOrigin()
			o := httptest.NewServer(h)
			t.Cleanup(o.Close)
			// On the transparent listener the connection was going to a
			// documentation address, which the test network routes to
			// the origin.
			n := newDocNet()
			n.route("192.0.2.10:80", hostPort(t, o.URL))
			e := newEnv(t, envConfig{dial: n.dial, resolve: []string{resolveTo("www.example.test", 80, hostPort(t, o.URL))}})
			addr, req := e.addr, "GET http://www.example.test/hang HTTP/1.1\r\nHost: www.example.test\r\n\r\n"
			if transparent {
				addr, req = e.redirect(t, "192.0.2.10:80"), "GET /hang HTTP/1.1\r\nHost: www.example.test\r\n\r\n"
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			h.leaveWhileWaiting(t, c, req)
			want := map[string]any{"path": "/hang", "status": float64(accesslog.StatusClientClosed)}
			if transparent {
				want["mode"] = "transparent"
			}
			e.waitRecord(t, want)
		})
	}
}

// hangingOrigin answers no request before testutil.WaitLimit, and reports
// each request's arrival and the cancellation of its context.
type hangingOrigin struct{ arrived, cancelled chan struct{} }

func newHangingOrigin() *hangingOrigin {
	return &hangingOrigin{arrived: make(chan struct{}, 1), cancelled: make(chan struct{}, 1)}
}

func (h *hangingOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.arrived <- struct{}{}
	select {
	case <-r.Context().Done():
		h.cancelled <- struct{}{}
	case <-time.After(testutil.WaitLimit):
		_, _ = io.WriteString(w, "too late")
	}
}

// leaveWhileWaiting sends req on c, closes c once the request reached the
// origin, and fails t unless the upstream request is then cancelled.
func (h *hangingOrigin) leaveWhileWaiting(t *testing.T, c net.Conn, req string) {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.arrived:
	case <-time.After(testutil.WaitLimit):
		t.Fatal("the request did not reach the origin")
	}
	_ = c.Close()
	select {
	case <-h.cancelled:
	case <-time.After(testutil.WaitLimit):
		t.Fatal("the upstream request was not cancelled after the client went away")
	}
}
