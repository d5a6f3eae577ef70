package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func getAdmin(t *testing.T, inst *instance, path string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get("http://" + inst.Admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// feedLines is the list entries of a feed, without its comment header.
func feedLines(body string) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out[l] = true
		}
	}
	return out
}

// TestBlockFeedFollowsCutoffs: the EDL of blocked patterns served on the
// admin listener follows the policy clock across both cut-offs.
func TestBlockFeedFollowsCutoffs(t *testing.T) {
	for _, tt := range []struct {
		name, at      string
		want, notWant []string
	}{
		{"before-sales-cutoff", beforeSales, nil, []string{"store.kaspersky.com", "*.upd.kaspersky.com", "kaspersky.com"}},
		{"between-cutoffs", betweenCuts, []string{"store.kaspersky.com"}, []string{"*.upd.kaspersky.com", "kaspersky.com"}},
		{"after-updates-cutoff", afterUpdates, []string{"store.kaspersky.com", "*.upd.kaspersky.com", "kaspersky.com", "*.kaspersky.com"}, []string{"opentip.kaspersky.com"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inst := start(t, "-at", tt.at)
			resp, body := getAdmin(t, inst, "/feeds/kaspersky/block.txt")
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
				t.Fatalf("block feed: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			for _, h := range []string{"# policy: us-bis-kaspersky-2024", "# catalog: kaspersky ", "# at: "} {
				if !strings.Contains(body, h) {
					t.Errorf("feed header lacks %q:\n%s", h, body)
				}
			}
			lines := feedLines(body)
			if tt.want == nil && len(lines) != 0 {
				t.Errorf("block feed before the sales cut-off lists %d patterns; want none", len(lines))
			}
			for _, w := range tt.want {
				if !lines[w] {
					t.Errorf("block feed lacks %q", w)
				}
			}
			for _, w := range tt.notWant {
				if lines[w] {
					t.Errorf("block feed lists %q; want it absent", w)
				}
			}
			for l := range lines {
				if strings.Contains(l, "://") || strings.ContainsAny(l, " /") {
					t.Errorf("feed line %q is not a bare domain pattern", l)
				}
			}
			if resp, _ := getAdmin(t, inst, "/feeds/eset/block.txt"); resp.StatusCode != 404 {
				t.Errorf("feed for an unknown vendor: %d; want 404", resp.StatusCode)
			}
		})
	}
}

// TestExportRPZLoadsInBind: the RPZ zone that export writes is a valid zone
// for BIND's own checker, and the other formats come out too.
func TestExportRPZLoadsInBind(t *testing.T) {
	checker, err := exec.LookPath("named-checkzone")
	if err != nil {
		t.Fatalf("named-checkzone (Debian bind9-utils, installed by .ci/run) is needed: %v", err)
	}
	var out, errOut strings.Builder
	if code := run([]string{"export", "-format", "rpz", "-at", afterUpdates}, &out, &errOut); code != 0 {
		t.Fatalf("export -format rpz: exit %d: %s", code, errOut.String())
	}
	zone := filepath.Join(t.TempDir(), "rpz.zone")
	if err := os.WriteFile(zone, []byte(out.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := exec.Command(checker, "rpz.feedgate.example", zone).CombinedOutput()
	if err != nil || !strings.Contains(string(res), "OK") {
		t.Fatalf("named-checkzone: %v\n%s\nzone:\n%s", err, res, out.String())
	}
	for _, f := range []string{"edl", "hosts", "dnsmasq", "squid"} {
		var out, errOut strings.Builder
		if code := run([]string{"export", "-format", f, "-at", afterUpdates}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "kaspersky.com") {
			t.Errorf("export -format %s: exit %d, %d bytes (%s)", f, code, out.Len(), errOut.String())
		}
	}
	if code := run([]string{"export", "-format", "bogus"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("export -format bogus: exit %d; want 2", code)
	}
}

// TestPACInNode: the PAC file, evaluated by Node.js, sends a Kaspersky host
// to the proxy with no DIRECT fallback and another host DIRECT; with
// pac_all, every host goes to the proxy. feedgate export -format pac
// writes the file the admin listener serves.
func TestPACInNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (installed by .ci/run) is needed: %v", err)
	}
	for _, tt := range []struct {
		name, keys, other string
	}{
		{"vendor-only", "pac_proxy = \"proxy.corp.example:3128\"\n", "DIRECT"},
		{"pac_all", "pac_proxy = \"proxy.corp.example:3128\"\npac_all = true\n", "PROXY proxy.corp.example:3128"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			policy := filepath.Join(dir, "policy.toml")
			if err := os.WriteFile(policy, []byte(tt.keys+"catalogs = [\"builtin:catalog/kaspersky.toml\"]\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			inst := start(t, "-config", policy)
			// feedgate export -format pac writes the same file, for a
			// plain web server.
			var exported, errOut strings.Builder
			if code := run([]string{"export", "-format", "pac", "-config", policy}, &exported, &errOut); code != 0 {
				t.Fatalf("export -format pac: exit %d: %s", code, errOut.String())
			}
			for _, path := range []string{"/proxy.pac", "/wpad.dat"} {
				resp, body := getAdmin(t, inst, path)
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ns-proxy-autoconfig" {
					t.Fatalf("%s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
				}
				if body != exported.String() {
					t.Errorf("%s differs from feedgate export -format pac:\n%s\n---\n%s", path, body, exported.String())
				}
				pac := filepath.Join(dir, "proxy.pac")
				if err := os.WriteFile(pac, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
				hosts := []string{"dnl-01.geo.kaspersky.com", "Kaspersky.COM.", "kaspersky.com", "www.example.org", "notkaspersky.com"}
				res, err := exec.Command(node, "testdata/pac-eval.js", pac).CombinedOutput()
				if err != nil {
					t.Fatalf("node with no hosts: %v\n%s", err, res)
				}
				res, err = exec.Command(node, append([]string{"testdata/pac-eval.js", pac}, hosts...)...).CombinedOutput()
				if err != nil {
					t.Fatalf("node: %v\n%s", err, res)
				}
				got := map[string]string{}
				for _, l := range strings.Split(strings.TrimSpace(string(res)), "\n") {
					h, r, _ := strings.Cut(l, "\t")
					got[h] = r
				}
				want := map[string]string{
					"dnl-01.geo.kaspersky.com": "PROXY proxy.corp.example:3128",
					"Kaspersky.COM.":           "PROXY proxy.corp.example:3128",
					"kaspersky.com":            "PROXY proxy.corp.example:3128",
					"www.example.org":          tt.other,
					"notkaspersky.com":         tt.other,
				}
				for h, w := range want {
					if got[h] != w {
						t.Errorf("%s: FindProxyForURL(%q) = %q; want %q", path, h, got[h], w)
					}
				}
			}
		})
	}
}

// TestExportPAC: feedgate export -format pac takes the proxy address from
// -proxy or pac_proxy, and refuses what a PAC file cannot express.
func TestExportPAC(t *testing.T) {
	dir := t.TempDir()
	withProxy := filepath.Join(dir, "pac.toml")
	if err := os.WriteFile(withProxy, []byte("pac_proxy = \"proxy.corp.example:3128\"\ncatalogs = [\"builtin:catalog/kaspersky.toml\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string // in stdout (code 0) or stderr
	}{
		{"pac_proxy", []string{"-config", withProxy}, 0, `return "PROXY proxy.corp.example:3128";`},
		{"-proxy overrides pac_proxy", []string{"-config", withProxy, "-proxy", "gw.corp.example:8080"}, 0, `return "PROXY gw.corp.example:8080";`},
		{"-proxy with the built-in policy", []string{"-proxy", "[2001:db8::1]:3128"}, 0, `return "PROXY [2001:db8::1]:3128";`},
		{"no address", nil, 2, "needs the address clients reach the proxy at"},
		{"bad -proxy", []string{"-proxy", "gw.corp.example"}, 2, `-proxy "gw.corp.example": want HOST:PORT`},
		{"port out of range", []string{"-proxy", "gw.corp.example:70000"}, 2, "want HOST:PORT"},
		{"-at", []string{"-config", withProxy, "-at", afterUpdates}, 2, "-format pac takes no -at"},
		{"-action and -vendor", []string{"-config", withProxy, "-action", "log", "-vendor", "kaspersky"}, 2, "takes no -action, -vendor"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut strings.Builder
			code := run(append([]string{"export", "-format", "pac"}, tt.args...), &out, &errOut)
			got := out.String()
			if code != 0 {
				got = errOut.String()
			}
			if code != tt.code || !strings.Contains(got, tt.want) {
				t.Errorf("exit %d, %q; want exit %d and %q", code, got, tt.code, tt.want)
			}
		})
	}
	var errOut strings.Builder
	if code := run([]string{"export", "-format", "rpz", "-proxy", "gw.corp.example:8080"}, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), "-proxy is for -format pac") {
		t.Errorf("export -format rpz -proxy: exit %d, %q; want 2 and a word on -proxy", code, errOut.String())
	}
}
