package rules_test

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"testing/fstest"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// rowString renders a catalog row for comparison.
func rowString(p *rules.Policy, r rules.CatalogPattern) string {
	c := p.Classes[r.Class]
	s := fmt.Sprintf("%s %s %s/%s", r.Pattern, r.Pattern.Kind, c.Vendor, c.Category)
	if r.Ports != "" {
		s += " ports=" + r.Ports
	}
	if r.Path != "" {
		s += " path=" + r.Path
	}
	if r.Refined {
		s += " refined"
	}
	return s
}

func TestCatalogPatterns(t *testing.T) {
	p := loadDefault(t)
	rows := p.CatalogPatterns()
	got := make([]string, len(rows))
	for i, r := range rows {
		got[i] = rowString(p, r)
		if r.Refined != (r.Ports != "" || r.Path != "") {
			t.Errorf("%s: Refined = %v with ports %q and path %q", got[i], r.Refined, r.Ports, r.Path)
		}
	}
	if !sort.SliceIsSorted(rows, func(i, j int) bool { return rows[i].Pattern.String() < rows[j].Pattern.String() }) {
		t.Errorf("rows are not sorted by pattern: %v", got)
	}
	// A sample of every kind, refined or not.
	for _, want := range []string{
		"kaspersky.com domain kaspersky/web",
		"securelist.com.br domain kaspersky/web",
		"*.upd.kaspersky.com suffix kaspersky/update",
		"dnl-*.geo.kaspersky.com label kaspersky/update",
		"ksn-*-geo.kaspersky-labs.com label kaspersky/ksn",
		"activation-v2.kaspersky.com exact kaspersky/licensing",
		"mdr.ksn.kaspersky-labs.com exact kaspersky/telemetry",
		"*.ksc.kaspersky.com suffix kaspersky/licensing ports=27200-27299 refined",
		"*.ksc.kaspersky.com suffix kaspersky/portal ports=23100-23199 refined",
		"*.ksc.kaspersky.com suffix kaspersky/portal ports=23700-23799 refined",
		"*.ksc.kaspersky.com suffix kaspersky/portal ports=29200-29299 refined",
		"www.kaspersky.com exact kaspersky/store path=/buy refined",
		"www.kaspersky.com exact kaspersky/store path=/renewal-center refined",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("CatalogPatterns() has no row %q", want)
		}
	}
	domains := 0
	for _, r := range rows {
		if r.Pattern.Kind == rules.PatternDomain {
			domains++
		}
	}
	if domains != 42 {
		t.Errorf("CatalogPatterns() has %d domain rows; want the catalog's 42 domains", domains)
	}
	// Rows are a copy: changing them changes nothing in the policy.
	rows[0].Pattern.Key = "changed.example"
	if again := p.CatalogPatterns(); again[0].Pattern.Key == "changed.example" {
		t.Error("CatalogPatterns() returned the policy's own storage")
	}
}

// hostRulesPolicy has a rule with every kind of host pattern.
const hostRulesPolicy = `
name = "host-rules"
catalogs = ["catalog/example.toml"]

[[rule]]
name = "hosts"
hosts = ["www.example.com", "*.upd.example.com", "dl-*.example-labs.net"]
action = "allow"

[[rule]]
name = "updates"
vendor = "example"
categories = ["update"]
action = "block"
`

func loadMap(tb testing.TB, files map[string]string, name string) *rules.Policy {
	tb.Helper()
	fsys := fstest.MapFS{}
	for n, data := range files {
		fsys[n] = &fstest.MapFile{Data: []byte(data)}
	}
	p, warns, err := rules.Load(rules.FS{FS: fsys}, name, rules.Options{})
	if err != nil {
		tb.Fatalf("Load(%s) error: %v", name, err)
	}
	if len(warns) > 0 {
		tb.Fatalf("Load(%s) warnings: %v; want none", name, warns)
	}
	return p
}

func exampleCatalog(tb testing.TB) string {
	tb.Helper()
	data, err := rules.Dir{}.ReadFile("testdata/catalog/example.toml")
	if err != nil {
		tb.Fatal(err)
	}
	return string(data)
}

func TestHostPatterns(t *testing.T) {
	p := loadMap(t, map[string]string{"policy.toml": hostRulesPolicy, "catalog/example.toml": exampleCatalog(t)}, "policy.toml")
	tests := []struct {
		rule int
		want []rules.HostPattern
	}{
		{0, []rules.HostPattern{
			{Kind: rules.PatternExact, Key: "www.example.com"},
			{Kind: rules.PatternSuffix, Key: "upd.example.com"},
			{Kind: rules.PatternLabel, Key: "example-labs.net", Prefix: "dl-"},
		}},
		{1, nil},
	}
	for _, tt := range tests {
		r := p.Rules[tt.rule]
		if got := r.HostPatterns(); !slices.Equal(got, tt.want) {
			t.Errorf("rule %s: HostPatterns() = %v; want %v", r.Name, got, tt.want)
		}
	}
	def := loadDefault(t)
	want := []rules.HostPattern{{Key: "opentip.kaspersky.com"}, {Key: "tip.kaspersky.com"}}
	if got := def.Rules[0].HostPatterns(); !slices.Equal(got, want) {
		t.Errorf("default rule %s: HostPatterns() = %v; want %v", def.Rules[0].Name, got, want)
	}
}

func TestClassAction(t *testing.T) {
	p := loadDefault(t)
	web := classIndex(t, p, "kaspersky", "web")
	store := classIndex(t, p, "kaspersky", "store")
	update := classIndex(t, p, "kaspersky", "update")
	tests := []struct {
		class    int
		at       time.Time
		rule     string
		action   rules.Action
		sameHost string // a host of the class that no host rule names: Decide must agree
	}{
		{web, salesCutoff.Add(-time.Nanosecond), rules.DefaultRule, rules.Allow, "support.kaspersky.com"},
		{web, salesCutoff, "sales-cutoff-flag", rules.Log, "support.kaspersky.com"},
		{web, updatesCutoff, "updates-cutoff", rules.Block, "support.kaspersky.com"},
		{store, salesCutoff, "sales-cutoff-store", rules.Block, "store.kaspersky.com"},
		{update, updatesCutoff.Add(-time.Nanosecond), "sales-cutoff-flag", rules.Log, "dnl-03.geo.kaspersky.com"},
		{0, updatesCutoff, rules.DefaultRule, rules.Allow, "example.org"},
	}
	for _, tt := range tests {
		d := p.ClassAction(tt.class, tt.at)
		if d.RuleName != tt.rule || d.Action != tt.action || d.Class != tt.class {
			t.Errorf("ClassAction(%v, %s) = %s/%v class %d; want %s/%v", p.Classes[tt.class], fmtTime(tt.at), d.RuleName, d.Action, d.Class, tt.rule, tt.action)
		}
		h := p.Decide(rules.Request{Host: tt.sameHost, Port: 443, Time: tt.at})
		if h.RuleName != d.RuleName || h.Action != d.Action || h.Class != d.Class {
			t.Errorf("Decide(%s, %s) = %s/%v; ClassAction says %s/%v", tt.sameHost, fmtTime(tt.at), h.RuleName, h.Action, d.RuleName, d.Action)
		}
	}
	// A host that a host rule names keeps that rule's answer; the class
	// answer does not see it.
	h := p.Decide(rules.Request{Host: "opentip.kaspersky.com", Port: 443, Time: updatesCutoff})
	if h.Class != web || h.Action != rules.Allow {
		t.Errorf("Decide(opentip.kaspersky.com) = %v/%v; want web, allowed by its host rule", p.Classes[h.Class], h.Action)
	}
}

func TestClassActionReport(t *testing.T) {
	p := loadFile(t, "testdata/report.toml")
	update := classIndex(t, p, "example", "update")
	d := p.ClassAction(update, updatesCutoff)
	if d.Action != rules.Log || !d.Reported || d.RuleName != "block-updates" {
		t.Errorf("ClassAction(update) in report mode = %s/%v reported=%v; want block-updates/log reported", d.RuleName, d.Action, d.Reported)
	}
}
