package rules_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/rules"
)

// TestDecideTunnel runs testdata/tunnel.txt: the tunnel decision on the
// built-in policy, with the SNI, a HelloRetryRequest's second name, the
// tunnel_without_sni floor and report mode.
func TestDecideTunnel(t *testing.T) {
	text, err := os.ReadFile("testdata/tunnel.txt")
	if err != nil {
		t.Fatal(err)
	}
	policies := map[string]*rules.Policy{}
	policy := func(floor string, report bool) *rules.Policy {
		key := floor + strconv.FormatBool(report)
		if p := policies[key]; p != nil {
			return p
		}
		extra := ""
		if floor != "" {
			extra += "[tls]\ntunnel_without_sni = \"" + floor + "\"\n"
		}
		p := builtinWith(t, report, extra)
		policies[key] = p
		return p
	}
	for n, line := range strings.Split(string(text), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != 6 {
			t.Fatalf("tunnel.txt:%d: want 6 |-separated fields", n+1)
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		want := strings.Fields(f[5])
		if len(want) < 4 {
			t.Fatalf("tunnel.txt:%d: want vendor category rule action", n+1)
		}
		floor, report := "", false
		for _, opt := range want[4:] {
			switch {
			case opt == "report":
				report = true
			case strings.HasPrefix(opt, "floor="):
				floor = strings.TrimPrefix(opt, "floor=")
			default:
				t.Fatalf("tunnel.txt:%d: unknown option %q", n+1, opt)
			}
		}
		p := policy(floor, report)
		at, err := time.ParseInLocation("2006-01-02T15:04:05", f[0], p.Location)
		if err != nil {
			t.Fatalf("tunnel.txt:%d: %v", n+1, err)
		}
		host, portText, _ := strings.Cut(f[1], ":")
		port, _ := strconv.Atoi(portText)
		dash := func(s string) string {
			if s == "-" {
				return ""
			}
			return s
		}
		tun := rules.Tunnel{Target: rules.Request{Host: host, Port: port, Time: at},
			SNI: dash(f[2]), RetrySNI: dash(f[3]), NoSNI: f[4] == "true"}
		d := p.DecideTunnel(tun)
		got := []string{d.Vendor, d.Category, d.RuleName, d.Action.String()}
		if strings.Join(got, " ") != strings.Join(want[:4], " ") {
			t.Errorf("tunnel.txt:%d: %+v: got %v; want %v", n+1, tun, got, want[:4])
		}
		if report && d.Action == rules.Log && (d.RuleName == "updates-cutoff" || d.RuleName == rules.NoSNIRuleName) && !d.Reported {
			t.Errorf("tunnel.txt:%d: a block let through by report mode is not marked Reported", n+1)
		}
	}
}

// builtinWith loads the built-in policy, in report mode if report is set,
// with tables appended.
func builtinWith(t *testing.T, report bool, tables string) *rules.Policy {
	t.Helper()
	b, err := fs.ReadFile(configs.Files(), configs.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), `catalogs = ["catalog/kaspersky.toml"]`, `catalogs = ["builtin:catalog/kaspersky.toml"]`, 1)
	if report {
		text = strings.Replace(text, "mode = \"enforce\"", "mode = \"report\"", 1)
	}
	text += "\n" + tables
	file := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _, err := rules.Load(rules.Dir{}, file, rules.Options{Builtin: rules.FS{FS: configs.Files()}})
	if err != nil {
		t.Fatalf("loading the built-in policy (report %v) with %q: %v", report, tables, err)
	}
	return p
}
