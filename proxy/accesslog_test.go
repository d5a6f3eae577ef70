package proxy_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
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

// TestJSONRecordFields: every field the README documents is in the
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
