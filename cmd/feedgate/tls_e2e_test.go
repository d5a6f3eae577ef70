package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSNIBehindInnocuousConnect: curl names an innocuous host in CONNECT
// (feedgate resolves it to the TLS origin) and the Kaspersky host in its
// ClientHello. feedgate refuses it after the updates cut-off and lets it
// through before; a plain TLS request to another host still works.
func TestSNIBehindInnocuousConnect(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		name, at, action string
		ok               bool
	}{
		{"after-cutoff", afterUpdates, "block", false},
		{"before-cutoffs", beforeSales, "allow", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inst := f.start(t, tt.at, "-resolve", "innocuous.test:443:127.0.0.1:"+f.tls.port())
			hits := f.tls.hits.Load()
			res := curl(t, nil, "-x", "http://"+inst.Proxy, "--cacert", f.caFile,
				"--connect-to", "dnl-01.geo.kaspersky.com:443:innocuous.test:443", "https://dnl-01.geo.kaspersky.com/")
			if tt.ok {
				if res.status != "200" || res.body != originPayload {
					t.Fatalf("before the cut-off: status %s body %q (stderr %q); want 200 and the payload", res.status, res.body, res.stderr)
				}
			} else {
				if res.exitCode == 0 || res.body == originPayload {
					t.Fatalf("after the cut-off: curl exit %d status %s body %q; want a refused handshake", res.exitCode, res.status, res.body)
				}
				if f.tls.hits.Load() != hits {
					t.Errorf("the refused request reached the origin")
				}
			}
			rec := findRecord(t, inst.waitRecords(1), "innocuous.test", "connect")
			wantFields(t, rec, map[string]any{"sni": "dnl-01.geo.kaspersky.com", "sni_result": "mismatch",
				"vendor": "kaspersky", "category": "update", "action": tt.action})
			if got := inst.metric("feedgate_sni_checks_total", map[string]string{"result": "mismatch"}); got != 1 {
				t.Errorf("feedgate_sni_checks_total{result=mismatch} = %v; want 1", got)
			}

			// Another host through the same proxy is unaffected.
			res = curl(t, nil, "-x", "http://"+inst.Proxy, "--cacert", f.caFile, "https://www.example.test/")
			if res.status != "200" || res.body != originPayload {
				t.Fatalf("plain TLS to www.example.test: status %s (stderr %q); want 200", res.status, res.stderr)
			}
		})
	}
}

// TestTunnelCutAtCutoffLive: a download through a tunnel opened two seconds
// before the updates cut-off is cut when the policy clock passes it.
func TestTunnelCutAtCutoffLive(t *testing.T) {
	f := newFixture(t)
	inst := f.start(t, "2024-09-29T03:59:58Z")
	started := time.Now()
	res := curl(t, nil, "-x", "http://"+inst.Proxy, "--cacert", f.caFile, "https://s01.upd.kaspersky.com/slow")
	took := time.Since(started)
	if res.exitCode == 0 {
		t.Fatalf("the one-minute download finished (status %s, %d bytes); want it cut at the cut-off", res.status, len(res.body))
	}
	if took > 15*time.Second {
		t.Errorf("curl ran %v; want the tunnel cut about 2 s after it opened", took.Round(time.Second))
	}
	if len(res.body) == 0 {
		t.Errorf("no bytes arrived before the cut-off; want the download running until it")
	}
	rec := findRecord(t, inst.waitRecords(1), "s01.upd.kaspersky.com", "connect")
	wantFields(t, rec, map[string]any{"action": "log", "rule": "sales-cutoff-flag", "closed": "policy_change", "cut_rule": "updates-cutoff"})
	if got := inst.metric("feedgate_tunnels_closed_total", map[string]string{"reason": "policy_change"}); got != 1 {
		t.Errorf("feedgate_tunnels_closed_total{reason=policy_change} = %v; want 1", got)
	}
}

// TestInterceptWithCurl: a CA made by "feedgate ca init" lets curl fetch an
// allowed HTTPS path of an intercepted host, while a blocked path on the
// same host gets feedgate's 403.
func TestInterceptWithCurl(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	out, err := exec.Command(binary, "ca", "init", "-dir", caDir).CombinedOutput()
	if err != nil {
		t.Fatalf("feedgate ca init: %v\n%s", err, out)
	}
	if out, err := exec.Command(binary, "ca", "init", "-dir", caDir).CombinedOutput(); err == nil {
		t.Errorf("a second ca init into the same directory succeeded; want a refusal\n%s", out)
	}
	policy := filepath.Join(dir, "intercept.toml")
	text := fmt.Sprintf(`name = "intercept-test"
timezone = "America/New_York"
catalogs = ["builtin:catalog/kaspersky.toml"]

[[rule]]
name = "sales-cutoff-store"
vendor = "kaspersky"
categories = ["store"]
action = "block"
from = 2024-07-20T00:00:00

[[rule]]
name = "flag"
vendor = "kaspersky"
action = "log"

[tls.intercept]
hosts = ["www.kaspersky.com"]
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
upstream_ca = [%q]
`, f.caFile)
	if err := os.WriteFile(policy, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	inst := f.start(t, betweenCuts, "-config", policy)
	proxyURL := "http://" + inst.Proxy
	feedgateCA := filepath.Join(caDir, "ca.crt")

	res := curl(t, nil, "-x", proxyURL, "--cacert", feedgateCA, "https://www.kaspersky.com/")
	if res.status != "200" || res.body != originPayload {
		t.Fatalf("allowed path: status %s body %q (stderr %q); want 200 and the payload", res.status, res.body, res.stderr)
	}
	res = curl(t, nil, "-x", proxyURL, "--cacert", feedgateCA, "https://www.kaspersky.com/renewal-center/home")
	if res.status != "403" || !strings.Contains(res.headers, "X-Feedgate-Rule: sales-cutoff-store") {
		t.Fatalf("blocked path: status %s headers %q; want 403 from sales-cutoff-store", res.status, res.headers)
	}
	// Without feedgate's CA, curl refuses the interception.
	res = curl(t, nil, "-x", proxyURL, "--cacert", f.caFile, "https://www.kaspersky.com/")
	if res.exitCode != 60 {
		t.Errorf("curl without feedgate's CA: exit %d (stderr %q); want 60 (certificate problem)", res.exitCode, res.stderr)
	}
}
