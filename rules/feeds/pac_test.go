package feeds_test

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/feeds"
)

func TestPACGolden(t *testing.T) {
	p := loadDefault(t)
	golden(t, "pac.js", string(feeds.PAC(p, "gw.example.net:3128", false)))
	golden(t, "pac-all.js", string(feeds.PAC(p, "gw.example.net:3128", true)))
}

func TestPAC(t *testing.T) {
	p := loadDefault(t)
	for _, all := range []bool{false, true} {
		js := string(feeds.PAC(p, "gw.example.net:3128", all))
		code := regexp.MustCompile(`(?m)^//.*\n`).ReplaceAllString(js, "")
		if !strings.Contains(js, "function FindProxyForURL(url, host) {") {
			t.Fatalf("PAC has no FindProxyForURL:\n%s", js)
		}
		vendorLine := `  if (feedgateVendorHost(host)) return "PROXY gw.example.net:3128";` + "\n"
		if !strings.Contains(js, vendorLine) {
			t.Errorf("PAC(all=%v) has no vendor branch %q, which must not fall back to DIRECT", all, vendorLine)
		}
		last := `  return "DIRECT";` + "\n"
		if all {
			last = `  return "PROXY gw.example.net:3128";` + "\n"
			if strings.Contains(code, "DIRECT") {
				t.Errorf("PAC(all) returns DIRECT:\n%s", js)
			}
		}
		if strings.Count(code, "DIRECT") > 1 || !strings.Contains(code, last) {
			t.Errorf("PAC(all=%v): want exactly one fallthrough %q", all, last)
		}
		for _, cp := range p.CatalogPatterns() {
			if cp.Pattern.Kind != rules.PatternDomain {
				continue
			}
			if !strings.Contains(js, `"`+cp.Pattern.Key+`"`) || !strings.Contains(js, `".`+cp.Pattern.Key+`"`) {
				t.Errorf("PAC(all=%v) lacks the apex or the names below domain %s", all, cp.Pattern)
			}
		}
	}
	if js := string(feeds.PAC(p, `a"b\c`+"\u00e9", false)); !strings.Contains(js, `"PROXY a\"b\\c\u00e9"`) {
		t.Errorf("PAC does not escape the proxy address as a JavaScript string")
	}
}

// pacSets reads the host arrays back from a generated PAC file.
func pacSets(t *testing.T, js string) (exact, suffixes, globs []string) {
	t.Helper()
	arr := regexp.MustCompile(`(?s)var (feedgate\w+) = \[(.*?)\];`)
	str := regexp.MustCompile(`"([^"]*)"`)
	for _, m := range arr.FindAllStringSubmatch(js, -1) {
		var vals []string
		for _, s := range str.FindAllStringSubmatch(m[2], -1) {
			vals = append(vals, s[1])
		}
		switch m[1] {
		case "feedgateExact":
			exact = vals
		case "feedgateSuffixes":
			suffixes = vals
		case "feedgateGlobs":
			globs = vals
		}
	}
	return exact, suffixes, globs
}

// TestPACCoversVendorHosts reads the PAC file's arrays with the PAC
// functions' meaning and checks that every sample host the proxy classifies
// as a vendor's, or that a rule names, goes to the proxy, and that others
// stay direct.
func TestPACCoversVendorHosts(t *testing.T) {
	// Hosts that a rule of the order policy names; in the default policy
	// they are nobody's.
	orderNamed := map[string]bool{"help.example.com": true, "x.cdn.example.com": true, "lab.example.org": true}
	for _, p := range []*rules.Policy{loadDefault(t), loadOrder(t)} {
		exact, suffixes, globs := pacSets(t, string(feeds.PAC(p, "gw:3128", false)))
		hosts := append(sampleHosts(t), "help.example.com", "x.cdn.example.com", "lab.example.org", "dl-1.example-labs.net", "example.net")
		named := map[string]bool{}
		if p.Name == "order" {
			named = orderNamed
		}
		for _, h := range hosts {
			proxied := slices.Contains(exact, h) ||
				slices.ContainsFunc(suffixes, func(s string) bool { return strings.HasSuffix(h, s) }) ||
				slices.ContainsFunc(globs, func(g string) bool { m, _ := filepath.Match(g, h); return m })
			d := p.Decide(rules.Request{Host: h, Time: afterUpdates})
			if want := d.Vendor != rules.NoVendor || named[h]; proxied != want {
				t.Errorf("policy %s: PAC proxies %s = %v; want %v (vendor %s)", p.Name, h, proxied, want, d.Vendor)
			}
		}
	}
}

// TestPACSignatures checks that a PAC file says it cannot carry the
// policy's signatures, and what that means with and without all.
func TestPACSignatures(t *testing.T) {
	sigs, _, err := rules.Load(rules.Dir{}, "testdata/signatures.toml", rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const cannot = "// Path signatures cannot be expressed in a PAC file, which sees host names\n// only: "
	tests := []struct {
		name string
		p    *rules.Policy
		all  bool
		want []string // in the header; nil: no mention of signatures
	}{
		{"default", loadDefault(t), false, []string{
			cannot + "8 signatures of catalog kaspersky (update-index, component-index,\n// bases-tree, bases-files, updates-tree, bases-diffs, updater-config,\n// rescue-disk) recognise a vendor's traffic on any host by the URL path.\n",
			"// Hosts that serve a vendor's update bases under names no catalog has\n// (internal mirrors) go DIRECT and are never decided by them; set pac_all\n// to send every name through the proxy.\n",
		}},
		{"default, all", loadDefault(t), true, []string{
			cannot + "8 signatures of catalog kaspersky",
			"// Every name goes through the proxy, where they apply.\n",
		}},
		{"one catalog of two", sigs, false, []string{
			cannot + "1 signature of catalog mirrored (update-index) recognises a\n// vendor's traffic",
		}},
		{"no signatures", loadOrder(t), false, nil},
		{"no signatures, all", loadOrder(t), true, nil},
	}
	for _, tt := range tests {
		js := string(feeds.PAC(tt.p, "gw:3128", tt.all))
		head, _, _ := strings.Cut(js, "var ")
		for _, w := range tt.want {
			if !strings.Contains(head, w) {
				t.Errorf("%s: PAC header lacks %q:\n%s", tt.name, w, head)
			}
		}
		if got := strings.Contains(js, "signature"); got != (tt.want != nil) {
			t.Errorf("%s: PAC mentions signatures = %v; want %v:\n%s", tt.name, got, tt.want != nil, head)
		}
		if got, want := strings.Contains(head, "pac_all"), !tt.all && tt.want != nil; got != want {
			t.Errorf("%s: PAC header mentions pac_all = %v; want %v", tt.name, got, want)
		}
	}
}
