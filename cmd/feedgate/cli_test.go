package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// explainOne runs "feedgate explain -json" for one target at one instant.
func explainOne(t *testing.T, at, target string) map[string]any {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"explain", "-json", "-at", at, target}, &stdout, &stderr); code != 0 {
		t.Fatalf("explain %s: exit %d: %s", target, code, stderr.String())
	}
	var out map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("explain -json output %q: %v", stdout.String(), err)
	}
	return out
}

func TestExplainJSON(t *testing.T) {
	null := any(nil)
	tests := []struct {
		at, target                                  string
		vendor, category, rule, action, next, since any
	}{
		{"2024-07-19T23:59:59-04:00", "dnl-01.geo.kaspersky.com", "kaspersky", "update", "default", "allow", "2024-07-20T00:00:00-04:00", null},
		{"2024-07-20T00:00:00-04:00", "dnl-01.geo.kaspersky.com", "kaspersky", "update", "sales-cutoff-flag", "log", "2024-09-29T00:00:00-04:00", "2024-07-20T00:00:00-04:00"},
		{"2024-07-20T04:00:00Z", "store.kaspersky.com:443", "kaspersky", "store", "sales-cutoff-store", "block", null, "2024-07-20T00:00:00-04:00"},
		{"2024-09-28T23:59:59-04:00", "https://activation-v2.kaspersky.com/activationservice/activationservice.svc", "kaspersky", "licensing", "sales-cutoff-flag", "log", "2024-09-29T00:00:00-04:00", "2024-07-20T00:00:00-04:00"},
		{"2024-09-29T04:00:00Z", "s01.upd.kaspersky.com", "kaspersky", "update", "updates-cutoff", "block", null, "2024-09-29T00:00:00-04:00"},
		{"2024-09-29T00:00:00-04:00", "mdr.ksn.kaspersky-labs.com", "kaspersky", "telemetry", "updates-cutoff", "block", null, "2024-09-29T00:00:00-04:00"},
		{"2024-08-01T00:00:00Z", "http://www.kaspersky.com/renewal-center/home", "kaspersky", "store", "sales-cutoff-store", "block", null, "2024-07-20T00:00:00-04:00"},
		{"2024-08-01T00:00:00Z", "http://www.kaspersky.com/about", "kaspersky", "web", "sales-cutoff-flag", "log", "2024-09-29T00:00:00-04:00", "2024-07-20T00:00:00-04:00"},
		{"2024-08-01T00:00:00Z", "abc.ksc.kaspersky.com:27250", "kaspersky", "licensing", "sales-cutoff-flag", "log", "2024-09-29T00:00:00-04:00", "2024-07-20T00:00:00-04:00"},
		{"2024-08-01T00:00:00Z", "abc.ksc.kaspersky.com:23150", "kaspersky", "portal", "sales-cutoff-flag", "log", "2024-09-29T00:00:00-04:00", "2024-07-20T00:00:00-04:00"},
		{"2025-01-01T00:00:00Z", "opentip.kaspersky.com", "kaspersky", "web", "threat-intel-exempt", "allow", null, null},
		{"2025-01-01T00:00:00Z", "notkaspersky.com", "none", "none", "default", "allow", null, null},
		{"2025-01-01T00:00:00Z", "kaspersky.com.example.net", "none", "none", "default", "allow", null, null},
		{"2025-01-01T00:00:00Z", "update.eset.com", "none", "none", "default", "allow", null, null},
	}
	for _, tt := range tests {
		t.Run(tt.at+" "+tt.target, func(t *testing.T) {
			got := explainOne(t, tt.at, tt.target)
			want := map[string]any{"target": tt.target, "vendor": tt.vendor, "category": tt.category,
				"rule": tt.rule, "action": tt.action, "next_change": tt.next, "since": tt.since}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v; want %v (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}

// TestExplainReadsAsTheProxyDoes: explain decides the path as origins read
// it, and says that a target the proxy cannot read is refused with 400.
// TestExplainSignature checks that explain names the catalog signature,
// the path pattern and where it is defined, for an update base on a host
// that is not Kaspersky's, in JSON and in text, and that -method reaches
// the decision.
func TestExplainSignature(t *testing.T) {
	const target = "http://kav-mirror.corp.example:8080/KLSHARE/Updates/bases/av/kdb/i386/dailyc.kdc"
	got := explainOne(t, "2024-09-29T04:00:00Z", target)
	sig, _ := got["signature"].(map[string]any)
	if got["category"] != "update" || got["match"] != "signature" || got["rule"] != "updates-cutoff" || got["action"] != "block" ||
		sig["name"] != "bases-tree" || sig["pattern"] != "*/bases/av/kdb/*" || !strings.HasPrefix(fmt.Sprint(sig["defined"]), "catalog/kaspersky.toml:") {
		t.Errorf("explain %s = %v; want kaspersky/update by signature bases-tree (*/bases/av/kdb/*), blocked by updates-cutoff", target, got)
	}
	got = explainOne(t, "2024-09-29T04:00:00Z", "https://s01.upd.kaspersky.com/index/u1313g.xml")
	if got["match"] != "host" || got["signature"] != nil {
		t.Errorf("a Kaspersky host: match %v, signature %v; want host and none", got["match"], got["signature"])
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"explain", "-at", "2024-09-29T04:00:00Z", "-method", "HEAD", "http://192.0.2.10/avpup/index/u0607g.xml"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"category:    update (catalog signature update-index, path pattern u0607g.xml, catalog/kaspersky.toml:", "action:      block"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("explain text = %q; want it to contain %q", stdout.String(), want)
		}
	}
}

func TestExplainReadsAsTheProxyDoes(t *testing.T) {
	got := explainOne(t, "2024-10-01T00:00:00Z", "http://www.kaspersky.com/x/..//%62uy/now")
	if got["path"] != "/buy/now" || got["rule"] != "sales-cutoff-store" || got["invalid"] != nil {
		t.Errorf("store path spelled oddly: %v; want path /buy/now decided by sales-cutoff-store", got)
	}
	got = explainOne(t, "2024-10-01T00:00:00Z", "ksn.kaspersky.com..")
	if inv, _ := got["invalid"].(string); !strings.Contains(inv, "empty label") {
		t.Errorf("two trailing dots: invalid = %v; want the reason it is refused", got["invalid"])
	}
	var stdout, stderr bytes.Buffer
	run([]string{"explain", "ksn%2ekaspersky.com"}, &stdout, &stderr)
	if !strings.Contains(stdout.String(), "refused with 400") {
		t.Errorf("explain text for a percent-encoded host = %q; want it to say it is refused with 400", stdout.String())
	}
}

func TestExplainSeveralTargetsOneLineEach(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"explain", "-at", "2024-10-01T00:00:00Z", "s01.upd.kaspersky.com", "example.org", "-json"}, &stdout, &stderr)
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("exit %d, %d lines %q (stderr %q); want 0 and 2 JSON lines", code, len(lines), stdout.String(), stderr.String())
	}
	// The text form names the rule and the change.
	stdout.Reset()
	run([]string{"explain", "-at", "2024-09-28T12:00:00-04:00", "dnl-01.geo.kaspersky.com"}, &stdout, &stderr)
	for _, want := range []string{"rule:        sales-cutoff-flag", "next change: 2024-09-29T00:00:00-04:00: block (rule updates-cutoff)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("explain text %q does not contain %q", stdout.String(), want)
		}
	}
}

func TestExplainBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"explain"},
		{"explain", "-at", "yesterday", "x.com"},
		{"explain", "ftp://x.com/"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code == 0 || stderr.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q; want non-zero with a message", args, code, stderr.String())
		}
	}
}

// TestCheckGoodConfigs checks the shipped policy and prints its timeline.
func TestCheckGoodConfigs(t *testing.T) {
	for _, args := range [][]string{{"check"}, {"check", "-config", "../../configs/feedgate.toml"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
		if stderr.Len() != 0 {
			t.Errorf("%v: unexpected warnings %q", args, stderr.String())
		}
		for _, want := range []string{
			"kaspersky/update\n  before 2024-07-20T00:00:00-04:00",
			"from 2024-09-29T00:00:00-04:00                          block  rule updates-cutoff",
			"kaspersky/store\n  before 2024-07-20T00:00:00-04:00  allow  rule default\n  from 2024-07-20T00:00:00-04:00    block  rule sales-cutoff-store",
		} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("%v: timeline %q does not contain %q", args, stdout.String(), want)
			}
		}
	}
}

// TestCheckBadConfigs runs the real binary's check on every bad config in
// rules/testdata/bad and compares its messages, FILE:LINE and all, with the
// "# want:" lines at the top of each file.
func TestCheckBadConfigs(t *testing.T) {
	const rulesDir = "../../rules"
	files, err := filepath.Glob(filepath.Join(rulesDir, "testdata", "bad", "*.toml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs found in %s/testdata/bad (%v)", rulesDir, err)
	}
	for _, file := range files {
		rel, _ := filepath.Rel(rulesDir, file)
		t.Run(filepath.Base(file), func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(src), "\n# rules-only") {
				// A case about the rules API without built-in
				// catalogs, which the binary always has.
				return
			}
			var want []string
			for _, line := range strings.Split(string(src), "\n") {
				if w, ok := strings.CutPrefix(line, "# want: "); ok {
					want = append(want, w)
				}
			}
			if len(want) == 0 {
				t.Fatalf("%s has no '# want:' lines", file)
			}
			out, err := runBinary(t, rulesDir, "check", "-config", rel)
			code := exitCode(err)
			if got := strings.TrimSpace(out); got != strings.Join(want, "\n") {
				t.Errorf("check %s printed\n%s\nwant\n%s", rel, got, strings.Join(want, "\n"))
			}
			wantCode := 1
			if allWarnings(want) {
				wantCode = 0
			}
			if code != wantCode {
				t.Errorf("check %s: exit %d; want %d", rel, code, wantCode)
			}
		})
	}
}

func allWarnings(lines []string) bool {
	for _, l := range lines {
		if !strings.Contains(l, ": warning: ") {
			return false
		}
	}
	return true
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version"}, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "feedgate ") {
		t.Errorf("version: exit %d, %q; want 0 and \"feedgate ...\"", code, stdout.String())
	}
	if code := run([]string{"frobnicate"}, &stdout, &stderr); code != 2 {
		t.Errorf("unknown command: exit %d; want 2", code)
	}
}

// TestExplainClient: -client picks the client's group, and the rules that
// select groups follow it.
func TestExplainClient(t *testing.T) {
	for _, tt := range []struct {
		client, group, rule, action string
	}{
		{"10.1.2.3", "us-offices", "updates-cutoff-us", "block"},
		{"10.9.0.7", "lab", "default", "allow"},
		{"::ffff:10.1.2.3", "us-offices", "updates-cutoff-us", "block"},
		{"192.0.2.1", "", "default", "allow"},
	} {
		t.Run(tt.client, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run([]string{"explain", "-config", "testdata/clients.toml", "-at", "2024-10-01", "-client", tt.client, "-json", "s01.upd.kaspersky.com"}, &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			var got map[string]any
			if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
				t.Fatalf("%v: %q", err, stdout.String())
			}
			if g, _ := got["client_group"].(string); g != tt.group || got["rule"] != tt.rule || got["action"] != tt.action {
				t.Errorf("group %q rule %v action %v; want %q %s %s", g, got["rule"], got["action"], tt.group, tt.rule, tt.action)
			}
			stdout.Reset()
			run([]string{"explain", "-config", "testdata/clients.toml", "-at", "2024-10-01", "-client", tt.client, "s01.upd.kaspersky.com"}, &stdout, &stderr)
			want := "client group: " + cmp.Or(tt.group, "none")
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("explain text %q does not contain %q", stdout.String(), want)
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"explain", "-client", "not-an-ip", "x.com"}, &stdout, &stderr); code != 2 {
		t.Errorf("explain -client not-an-ip: exit %d; want 2", code)
	}
}
