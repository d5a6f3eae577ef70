package rules_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/internal/ruletest"
)

// Each file in testdata/bad breaks one validation rule; its "# want:" lines
// are the exact problems Load must report, in order.
func TestLoadBadConfigs(t *testing.T) {
	ruletest.CheckBadFiles(t, func(file string) (bool, error) {
		p, _, err := rules.Load(rules.Dir{}, file, rules.Options{})
		return p != nil, err
	})
}

// Each file in testdata/warn loads; its "# want:" lines are the exact
// warnings, none if it has no such line.
func TestLoadWarnings(t *testing.T) {
	files, err := filepath.Glob("testdata/warn/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no warning configs: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			p, warns, err := rules.Load(rules.Dir{}, filepath.ToSlash(file), rules.Options{})
			if err != nil {
				t.Fatalf("Load(%s) error: %v; want nil", file, err)
			}
			if p == nil {
				t.Fatalf("Load(%s) policy = nil; want a policy", file)
			}
			var got []string
			for _, w := range warns {
				if !w.Warning {
					t.Errorf("warning %q has Warning = false", w)
				}
				got = append(got, w.String())
			}
			ruletest.DiffLines(t, "warnings", got, ruletest.WantLines(t, file))
		})
	}
}

// The host rules in testdata/warn/port-path-hosts.toml do decide requests that
// the category rule before them does not select, so no warning is due.
func TestHostRuleAfterCategoryRule(t *testing.T) {
	p, _, err := rules.Load(rules.Dir{}, "testdata/warn/port-path-hosts.toml", rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		port int
		path string
		want string
	}{
		{"a.ksn.example.com", 443, "", "log-web"},
		{"a.ksn.example.com", 8000, "", "block-ksn-host"},
		{"www.example.com", 80, "/", "log-web"},
		{"www.example.com", 80, "/buy", "block-shop"},
	}
	for _, tc := range tests {
		d := p.Decide(rules.Request{Host: tc.host, Port: tc.port, Path: tc.path, Time: salesCutoff})
		if d.RuleName != tc.want {
			t.Errorf("Decide(%s:%d%s) rule = %s (%s/%s); want %s", tc.host, tc.port, tc.path, d.RuleName, d.Vendor, d.Category, tc.want)
		}
	}
}

func TestLoadDefaultPolicy(t *testing.T) {
	p := loadDefault(t)
	if p.Name != "us-bis-kaspersky-2024" || p.File != configs.DefaultPolicy {
		t.Errorf("Name, File = %q, %q; want us-bis-kaspersky-2024, %q", p.Name, p.File, configs.DefaultPolicy)
	}
	if p.Location.String() != "America/New_York" || p.Mode != rules.Enforce || p.DefaultAction != rules.Allow {
		t.Errorf("Location, Mode, DefaultAction = %v, %v, %v; want America/New_York, enforce, allow", p.Location, p.Mode, p.DefaultAction)
	}
	if len(p.Catalogs) != 1 || p.Catalogs[0].Vendor != "kaspersky" || p.Catalogs[0].File != "catalog/kaspersky.toml" {
		t.Fatalf("Catalogs = %+v; want the kaspersky catalog from catalog/kaspersky.toml", p.Catalogs)
	}
	wantCats := "update licensing ksn telemetry portal store web"
	if got := strings.Join(p.Catalogs[0].Categories, " "); got != wantCats {
		t.Errorf("categories = %s; want %s", got, wantCats)
	}
	if len(p.Classes) != 8 || p.Classes[0] != (rules.Class{Vendor: rules.NoVendor, Category: rules.NoVendor}) {
		t.Errorf("Classes = %v; want none/none then the 7 kaspersky categories", p.Classes)
	}
	var got []string
	for _, r := range p.Rules {
		got = append(got, r.Name+":"+r.Action.String()+":"+r.Vendor()+":"+strings.Join(r.Categories(), ",")+":"+strings.Join(r.Hosts(), ",")+
			":"+fmtTime(r.From)+":"+fmtTime(r.Until))
	}
	want := []string{
		"threat-intel-exempt:allow:::opentip.kaspersky.com,tip.kaspersky.com:-:-",
		"sales-cutoff-store:block:kaspersky:store::2024-07-20T04:00:00Z:-",
		"sales-cutoff-flag:log:kaspersky:" + strings.ReplaceAll(wantCats, " ", ",") + "::2024-07-20T04:00:00Z:2024-09-29T04:00:00Z",
		"updates-cutoff:block:kaspersky:" + strings.ReplaceAll(wantCats, " ", ",") + "::2024-09-29T04:00:00Z:-",
	}
	ruletest.DiffLines(t, "rules", got, want)
	for i, r := range p.Rules {
		if r.Line == 0 || r.Reason == "" {
			t.Errorf("rule %d (%s): Line = %d, Reason = %q; want both set", i, r.Name, r.Line, r.Reason)
		}
	}
}

// Catalog paths with the builtin: prefix are read from Options.Builtin.
func TestLoadBuiltinCatalog(t *testing.T) {
	p, warns, err := rules.Load(rules.Dir{}, "testdata/builtin.toml", rules.Options{Builtin: rules.FS{FS: configs.Files()}})
	if err != nil || len(warns) > 0 {
		t.Fatalf("Load error %v, warnings %v; want neither", err, warns)
	}
	if len(p.Catalogs) != 1 || p.Catalogs[0].File != "builtin:catalog/kaspersky.toml" {
		t.Errorf("Catalogs = %+v; want builtin:catalog/kaspersky.toml", p.Catalogs)
	}
	d := p.Decide(rules.Request{Host: "dnl-03.geo.kaspersky.com", Time: salesCutoff})
	if got := answerOf(d); got != (answer{"block-updates", rules.Block}) {
		t.Errorf("Decide(dnl-03.geo.kaspersky.com) = %v; want block-updates/block", got)
	}
}

func TestParseAction(t *testing.T) {
	for _, a := range rules.AllActions() {
		if got, ok := rules.ParseAction(a.String()); !ok || got != a {
			t.Errorf("ParseAction(%q) = %v, %v; want %v, true", a.String(), got, ok, a)
		}
	}
	for _, s := range []string{"", "Block", "deny", "invalid"} {
		if _, ok := rules.ParseAction(s); ok {
			t.Errorf("ParseAction(%q) ok = true; want false", s)
		}
	}
}
