package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// squidLine is Squid's native access.log format, from its documentation
// (logformat squid: %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt).
var squidLine = regexp.MustCompile(`^(\d+)\.(\d{3}) +(\d+) (\S+) ([A-Z_]+)/(\d{3}) (\d+) ([A-Z]+) (\S+) (\S+) ([A-Z_]+)/(\S+) (\S+)$`)

func TestSquidAccessLog(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	to := newTLSOrigin(t)
	e := newEnv(t, envConfig{squid: true, resolve: []string{
		"www.example.test:80:" + hostPort(t, o.URL),
		"www.example.test:443:" + hostPort(t, to.URL),
		"s01.upd.kaspersky.com:80:" + hostPort(t, o.URL),
	}})
	c, tr := e.client(t, to.roots)
	for _, u := range []string{"http://www.example.test/small", "http://www.example.test/a%20b", "http://s01.upd.kaspersky.com/bases", "https://www.example.test/small", "http://www.example.test:9999/x"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		resp.Body.Close()
	}
	if _, err := c.Get("https://s01.upd.kaspersky.com/"); err == nil {
		t.Fatalf("blocked CONNECT succeeded")
	}
	tr.CloseIdleConnections()
	e.waitIdle(t)
	want := []struct{ code, method, url, hier string }{
		{"TCP_MISS/200", "GET", "http://www.example.test/small", "HIER_DIRECT/www.example.test"},
		{"TCP_MISS/200", "GET", "http://www.example.test/a%20b", "HIER_DIRECT/www.example.test"},
		{"TCP_DENIED/403", "GET", "http://s01.upd.kaspersky.com/bases", "HIER_NONE/-"},
		{"TCP_TUNNEL/200", "CONNECT", "www.example.test:443", "HIER_DIRECT/www.example.test"},
		{"TCP_DENIED/403", "GET", "http://www.example.test:9999/x", "HIER_NONE/-"},
		{"TCP_DENIED/403", "CONNECT", "s01.upd.kaspersky.com:443", "HIER_NONE/-"},
	}
	var lines []string
	waitFor(t, "every request's log line", func() bool {
		lines = strings.Split(strings.TrimSpace(e.log.String()), "\n")
		return len(lines) >= len(want)
	})
	seen := map[string]bool{}
	for _, l := range lines {
		testutil.CheckSquidLine(t, l+"\n")
		m := squidLine.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("line %q does not parse as Squid's native format", l)
			continue
		}
		if m[4] != "127.0.0.1" || m[10] != "-" || m[13] != "-" {
			t.Errorf("line %q: client %q, user %q, type %q; want 127.0.0.1, -, -", l, m[4], m[10], m[13])
		}
		seen[fmt.Sprintf("%s/%s %s %s %s/%s", m[5], m[6], m[8], m[9], m[11], m[12])] = true
	}
	for _, w := range want {
		if k := w.code + " " + w.method + " " + w.url + " " + w.hier; !seen[k] {
			t.Errorf("no line %q in:\n%s", k, e.log.String())
		}
	}
}

// TestJSONRecordFields: every field docs/decision-log.md documents is in the
// records of an allowed plain-HTTP request and of a tunnel.
func TestJSONRecordFields(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	to := newTLSOrigin(t)
	e := newEnv(t, envConfig{resolve: []string{"www.example.test:80:" + hostPort(t, o.URL), "www.example.test:443:" + hostPort(t, to.URL)}})
	c, tr := e.client(t, to.roots)
	get(t, c, "http://www.example.test/small")
	get(t, c, "https://www.example.test/small")
	tr.CloseIdleConnections()
	common := []string{"time", "level", "msg", "kind", "client", "method", "host", "port", "vendor", "category", "rule", "action", "flagged", "status", "bytes_sent", "bytes_received", "duration_seconds", "policy"}
	for kind, extra := range map[string][]string{"http": {"path"}, "connect": {"sni", "sni_result"}} {
		r := e.waitRecord(t, map[string]any{"kind": kind})
		for _, k := range append(common, extra...) {
			if _, ok := r[k]; !ok {
				t.Errorf("%s record has no %q field: %v", kind, k, r)
			}
		}
	}
}

// TestSquidAccessLogHostileTargets sends request targets that decode to
// spaces, CR LF and zones through the proxy: each request still logs
// exactly one line of Squid's format (testutil.CheckSquidLine).
func TestSquidAccessLogHostileTargets(t *testing.T) {
	t.Parallel()
	refuse := func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("this test dials nothing")
	}
	e := newEnv(t, envConfig{squid: true, dial: refuse})
	reqs := []struct{ raw, url string }{
		{"GET http://[fe80::1%25eth0%20x]/a%20b%0D%0Ac HTTP/1.1\r\nHost: [fe80::1%25eth0%20x]\r\n",
			"http://[fe80::1%25eth0%20x]/a%20b%0D%0Ac"},
		{"GET http://www.example.test/x%0D%0A1727582400.000%20forged HTTP/1.1\r\nHost: www.example.test\r\n",
			"http://www.example.test/x%0D%0A1727582400.000%20forged"},
		{"GET http://www.example.test/\xc3\xbc\"<> HTTP/1.1\r\nHost: www.example.test\r\n",
			"http://www.example.test/%C3%BC%22%3C%3E"},
		{"PURGE~|`^ http://www.example.test/ HTTP/1.1\r\nHost: www.example.test\r\n",
			"http://www.example.test/"},
		{"CONNECT [fe80::1%25eth0%20x]:443 HTTP/1.1\r\nHost: [fe80::1%25eth0%20x]:443\r\n",
			"[fe80::1%2525eth0%2520x]:443"},
	}
	for _, r := range reqs {
		c := e.dial(t)
		if _, err := io.WriteString(c, r.raw+"Connection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, c)
	}
	var lines []string
	waitFor(t, "every request's log line", func() bool {
		lines = strings.SplitAfter(e.log.String(), "\n")
		return len(lines) > len(reqs)
	})
	seen := map[string]bool{}
	for _, l := range lines[:len(lines)-1] {
		seen[testutil.CheckSquidLine(t, l)[testutil.SqURL]] = true
	}
	for _, r := range reqs {
		if !seen[r.url] {
			t.Errorf("no line with URL %s in:\n%s", r.url, e.log.String())
		}
	}
}
