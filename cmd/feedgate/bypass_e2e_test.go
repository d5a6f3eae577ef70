package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
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
