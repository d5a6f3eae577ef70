package rules_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
)

// fixedPolicy names the fuzzed catalog, so that catalogs are fuzzed behind
// a valid policy as well as behind fuzzed ones.
const fixedPolicy = `name = "fuzz-fixed"
catalogs = ["catalog.toml"]

[[rule]]
name = "example-hosts"
hosts = ["*.example.com", "www.example.net"]
action = "block"
from = 2024-09-29T00:00:00Z
`

// load loads a whole configuration file, as feedgate does, and returns its
// policy: the settings' keys beside the policy's must not count as
// unknown.
func load(file string) (*rules.Policy, []rules.Problem, error) {
	c, warns, err := config.Load(rules.Dir{}, file, rules.Options{})
	if c == nil {
		return nil, warns, err
	}
	return c.Policy, warns, err
}

// FuzzLoad writes the fuzzed bytes as a configuration file and as a
// catalog, and loads both the fuzzed file and a fixed one that names the
// catalog.
// Properties: Load never panics; it fails only with a *rules.ConfigError
// whose every problem names its file and either a line within that file, a
// key path, or a read error; warnings are positioned the same way; the
// same input gives the same result twice; and a policy that loads decides
// and explains requests.
func FuzzLoad(f *testing.F) {
	read := func(name string) []byte {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	// The catalog seeds are small (the fuzzer shrinks every input it
	// finds interesting, and shrinking an 18 KiB catalog takes a minute):
	// testdata/catalog/example.toml, which most bad policies name, and the
	// bad catalogs.
	example := read("testdata/catalog/example.toml")
	f.Add([]byte(fixedPolicy), example)
	f.Add(read("../configs/feedgate.toml"), example)
	policies, err := filepath.Glob("testdata/bad/*.toml")
	if err != nil || len(policies) == 0 {
		f.Fatalf("no bad policies in testdata/bad (%v)", err)
	}
	for _, p := range policies {
		f.Add(read(p), example)
	}
	// The configuration's bad files, and policies with client groups,
	// [tls] tables and a parent proxy, with the catalog where the fuzzed
	// policy finds it.
	settings, err := filepath.Glob("config/testdata/bad/*.toml")
	if err != nil || len(settings) == 0 {
		f.Fatalf("no bad configurations in config/testdata/bad (%v)", err)
	}
	for _, p := range append(settings, "testdata/clients.toml", "config/testdata/tls.toml", "testdata/warn/clients.toml") {
		src := string(read(p))
		for _, name := range []string{`"catalog/example.toml"`, `"../../testdata/catalog/example.toml"`, `"../../../testdata/catalog/example.toml"`} {
			src = strings.ReplaceAll(src, name, `"../catalog/example.toml"`)
		}
		f.Add([]byte(src), example)
	}
	catalogs, err := filepath.Glob("testdata/bad/catalog/*.toml")
	if err != nil || len(catalogs) == 0 {
		f.Fatalf("no bad catalogs in testdata/bad/catalog (%v)", err)
	}
	for _, c := range catalogs {
		f.Add([]byte(fixedPolicy), read(c))
	}

	at := time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, policy, catalog []byte) {
		// The catalog is found under each name the seeds use:
		// catalog.toml (the fixed policy), catalog/kaspersky.toml
		// (configs/feedgate.toml) and ../catalog/example.toml (the bad
		// policies).
		dir := filepath.ToSlash(t.TempDir())
		files := map[string][]byte{
			dir + "/p/policy.toml":            policy,
			dir + "/p/fixed.toml":             []byte(fixedPolicy),
			dir + "/p/catalog.toml":           catalog,
			dir + "/p/catalog/kaspersky.toml": catalog,
			dir + "/catalog/example.toml":     catalog,
		}
		for name, b := range files {
			if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(name, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, file := range []string{dir + "/p/policy.toml", dir + "/p/fixed.toml"} {
			p, warns, err := load(file)
			checkProblems(t, file, files, warns)
			p2, warns2, err2 := load(file)
			if errString(err) != errString(err2) || !slices.Equal(warns, warns2) || (p == nil) != (p2 == nil) {
				t.Fatalf("Load(%s) twice: %v / %v, then %v / %v; want the same result", file, err, warns, err2, warns2)
			}
			if err != nil {
				var ce *rules.ConfigError
				if !errors.As(err, &ce) {
					t.Fatalf("Load(%s) error %v (%T); want a *rules.ConfigError", file, err, err)
				}
				if len(ce.Problems) == 0 {
					t.Fatalf("Load(%s) returned a ConfigError without problems", file)
				}
				checkProblems(t, file, files, ce.Problems)
				if p != nil {
					t.Fatalf("Load(%s) returned a policy with error %v", file, err)
				}
				continue
			}
			if p == nil {
				t.Fatalf("Load(%s) returned no policy and no error", file)
			}
			for _, host := range []string{"www.example.com", "dnl-01.geo.kaspersky.com", "activation-v2.kaspersky.com", "[::1]"} {
				for _, client := range fuzzClients {
					req := rules.Request{Host: host, Port: 443, Client: client, Time: at}
					d := p.Decide(req)
					if e := p.Explain(req); e.Decision != d {
						t.Fatalf("Load(%s): Explain(%s from %s).Decision = %+v; want Decide's %+v", file, host, client, e.Decision, d)
					}
					if g := p.ClientGroup(client); g != d.ClientGroup {
						t.Fatalf("Load(%s): ClientGroup(%s) = %q; want Decide's %q", file, client, g, d.ClientGroup)
					}
				}
				p.Intercepts(host)
			}
		}
	})
}

// fuzzClients are client addresses that fuzzed client groups may contain:
// unknown, IPv4, IPv4-mapped and IPv6.
var fuzzClients = []netip.Addr{{}, netip.MustParseAddr("10.9.8.7"), netip.MustParseAddr("::ffff:10.9.8.7"), netip.MustParseAddr("2001:db8::1")}

// checkProblems asserts that every problem names a file and a place in it:
// a line within the file (its content is in files, when the test wrote
// it), or a key path, or else says the file could not be read.
func checkProblems(t *testing.T, loaded string, files map[string][]byte, ps []rules.Problem) {
	t.Helper()
	for _, p := range ps {
		switch {
		case p.File == "":
			t.Errorf("Load(%s): problem %q names no file", loaded, p.Message)
		case p.Message == "":
			t.Errorf("Load(%s): problem %+v has no message", loaded, p)
		case p.Line < 0:
			t.Errorf("Load(%s): problem %q has line %d", loaded, p, p.Line)
		case p.Line == 0 && p.Key == "" && !strings.HasPrefix(p.Message, "cannot read"):
			t.Errorf("Load(%s): problem %q has neither a line nor a key path (and is not a read error)", loaded, p)
		}
		if b, ok := files[p.File]; ok && p.Line > strings.Count(string(b), "\n")+1 {
			t.Errorf("Load(%s): problem %q is at line %d; the file has %d lines", loaded, p, p.Line, strings.Count(string(b), "\n")+1)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// FuzzCanonicalHost checks host normalisation: CanonicalHost never panics;
// it fails exactly when Decide flags the request Invalid, and such a host
// is never a vendor's; the form it returns is its own canonical form, and
// is either a DNS name (lower-case ASCII letters, digits, '-' and '_' in
// labels of 1 to 63, 253 in all, no trailing dot, a last label that is a
// number only in a dotted-decimal IPv4 address) or a lower-case IPv6
// literal without brackets; and the policy decides a name exactly as it decides
// that form, its ASCII upper-case spelling and the form with a trailing
// dot (or, for IPv6, in brackets).
func FuzzCanonicalHost(f *testing.F) {
	p := loadDefault(f)
	for _, tc := range readClassifyCases(f) {
		f.Add(tc.host)
	}
	for _, tc := range readHostCases(f) {
		f.Add(tc.in)
	}
	for _, h := range []string{
		"", ".", "..", "DNL-01.GEO.KASPERSKY.COM.", "[::1]", "[::1].", "::1", "[fe80::1%eth0]",
		"ｋａｓｐｅｒｓｋｙ.com", "kaspersky\u3002com", "kaspersky\uff0ecom", "xn--80ak6aa92e.com", "café.example",
		"KASPERSKY.com", "kaspersky.com.example.net", "notkaspersky.com", strings.Repeat("a.", 130) + "kaspersky.com",
		"dnl-01.geo.kaspersky.com%2e", "\x00", "\xff\xfe", strings.Repeat("a.", 40) + "S07.UPD.KASPERSKY.COM",
	} {
		f.Add(h)
	}
	at := time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC)
	decide := func(host string) rules.Decision {
		return p.Decide(rules.Request{Host: host, Port: 443, Time: at})
	}
	f.Fuzz(func(t *testing.T, host string) {
		d := decide(host)
		c, err := rules.CanonicalHost(host)
		if (err != nil) != d.Invalid {
			t.Fatalf("CanonicalHost(%q) error %v, but Decide's Invalid is %v", host, err, d.Invalid)
		}
		if err != nil {
			if d.Class != 0 {
				t.Fatalf("CanonicalHost(%q) fails, yet Decide classifies it as %s/%s", host, d.Vendor, d.Category)
			}
			return
		}
		if msg := checkCanonicalForm(c); msg != "" {
			t.Fatalf("CanonicalHost(%q) = %q: %s", host, c, msg)
		}
		if again, err := rules.CanonicalHost(c); err != nil || again != c {
			t.Errorf("CanonicalHost(%q) = %q, but CanonicalHost(%q) = %q, %v; want it unchanged", host, c, c, again, err)
		}
		if dc := decide(c); dc != d {
			t.Errorf("Decide(%q) = %+v; want the same as for its canonical form %q: %+v", host, d, c, dc)
		}
		variants := []string{asciiUpper(host), asciiUpper(c)}
		if strings.Contains(c, ":") {
			variants = append(variants, "["+c+"]")
		} else {
			variants = append(variants, c+".", asciiUpper(c)+".")
		}
		for _, v := range variants {
			if cv, err := rules.CanonicalHost(v); err != nil || cv != c {
				t.Errorf("CanonicalHost(%q) = %q, %v; want %q as for %q", v, cv, err, c, host)
			}
			if dv := decide(v); dv != d {
				t.Errorf("Decide(%q) = %+v; want the same as Decide(%q) = %+v", v, dv, host, d)
			}
		}
	})
}

// checkCanonicalForm returns what is wrong with c as a canonical host, ""
// if nothing is.
func checkCanonicalForm(c string) string {
	if strings.Contains(c, ":") {
		a, err := netip.ParseAddr(c)
		if err != nil || !a.Is6() || a.Zone() != "" || strings.ToLower(c) != c {
			return "want a lower-case IPv6 literal without zone"
		}
		return ""
	}
	if c == "" || len(c) > 253 {
		return "want 1 to 253 characters"
	}
	labels := strings.Split(c, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "want labels of 1 to 63 characters (no empty label, no trailing dot)"
		}
		for i := 0; i < len(l); i++ {
			if b := l[i]; !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '-' || b == '_') {
				return fmt.Sprintf("byte %q: want only [a-z0-9_-] in labels", b)
			}
		}
	}
	last := labels[len(labels)-1]
	hex, isHex := strings.CutPrefix(last, "0x")
	if strings.Trim(last, "0123456789") == "" || isHex && strings.Trim(hex, "0123456789abcdef") == "" {
		if a, err := netip.ParseAddr(c); err != nil || !a.Is4() {
			return "a last label that is a number, in a name that is not a dotted-decimal IPv4 address"
		}
	}
	return ""
}
