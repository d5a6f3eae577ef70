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
