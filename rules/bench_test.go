package rules_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// decideRequests are ASCII requests of every match shape.
var decideRequests = []rules.Request{
	{Host: "activation-v2.kaspersky.com", Port: 443},                 // exact
	{Host: "s07.upd.kaspersky.com", Port: 443},                       // *.suffix
	{Host: "a.b.upd.kaspersky.com", Port: 443},                       // *.suffix, deeper
	{Host: "dnl-07.geo.kaspersky.com", Port: 80, Path: "/bases/av/"}, // label wildcard
	{Host: "x.ksc.kaspersky.com", Port: 27200},                       // suffix with ports
	{Host: "www.kaspersky.com", Port: 80, Path: "/renewal-center/"},  // path entry
	{Host: "www.kaspersky.com", Port: 80, Path: "/Buy/Checkout"},     // path entry, folded case
	{Host: "www.kaspersky.com", Port: 80, Path: "/buyer-guide"},      // not on a segment boundary
	{Host: "support.kaspersky.co.jp", Port: 443},                     // domain fallback
	{Host: "opentip.kaspersky.com", Port: 443},                       // host rule
	{Host: "update.eset.com", Port: 443},                             // non-vendor
	{Host: "S07.UPD.KASPERSKY.COM.", Port: 443},                      // upper case, trailing dot
	{Host: "[2a03:2480:8000::1]", Port: 443},                         // IPv6 literal
	{Host: "", Port: 443},                                            // empty
}

func TestDecideAllocs(t *testing.T) {
	p := loadDefault(t)
	for _, at := range []time.Time{salesCutoff.Add(-time.Second), salesCutoff, updatesCutoff} {
		for _, req := range decideRequests {
			req.Time = at
			if n := testing.AllocsPerRun(100, func() { p.Decide(req) }); n != 0 {
				t.Errorf("Decide(%q) allocates %v times per call; want 0", req.Host, n)
			}
		}
	}
}

// A path that is not in normal form is rewritten, which allocates; the
// common case, a path in normal form, is BenchmarkDecide's.
func BenchmarkDecideRewrittenPath(b *testing.B) {
	p := loadDefault(b)
	reqs := []rules.Request{
		{Host: "www.kaspersky.com", Port: 80, Path: "/x/../%62uy", Time: updatesCutoff},
		{Host: "www.kaspersky.com", Port: 80, Path: "//renewal-center/./home;jsessionid=0123", Time: updatesCutoff},
	}
	benchDecide(b, p, reqs)
}

func BenchmarkDecide(b *testing.B) {
	p := loadDefault(b)
	reqs := make([]rules.Request, len(decideRequests))
	for i, req := range decideRequests {
		req.Time = updatesCutoff
		reqs[i] = req
	}
	benchDecide(b, p, reqs)
}

// benchDecide cycles through reqs without a division or a copy per
// iteration, so that the harness costs little next to Decide itself.
func benchDecide(b *testing.B, p *rules.Policy, reqs []rules.Request) {
	b.ReportAllocs()
	j := 0
	for b.Loop() {
		p.Decide(reqs[j])
		if j++; j == len(reqs) {
			j = 0
		}
	}
}

// writeLargeCatalog writes a policy and a catalog of n host patterns to dir:
// exact hosts, "*.suffix" patterns and label wildcards under a few domains,
// and returns the policy's path and hosts that hit each kind.
func writeLargeCatalog(tb testing.TB, dir string, n int) (string, []rules.Request) {
	tb.Helper()
	const domains = 5
	var cat strings.Builder
	fmt.Fprintf(&cat, "vendor = \"bench\"\ncategories = [\"exact\", \"suffix\", \"label\", \"web\"]\nfallback = \"web\"\ndomains = [")
	for d := range domains {
		fmt.Fprintf(&cat, "%q, ", fmt.Sprintf("bench%d.test", d))
	}
	cat.WriteString("]\n")
	// Pattern i is of kind i%3; "%s" is where a request puts its own labels.
	pattern := func(i int) string {
		switch i % 3 {
		case 0:
			return fmt.Sprintf("h%d.svc%d.bench%d.test", i, i%50, i%domains)
		case 1:
			return fmt.Sprintf("%%s.z%d.bench%d.test", i, i%domains)
		}
		return fmt.Sprintf("n%d-%%s.grp%d.bench%d.test", i, i%100, i%domains)
	}
	for kind, category := range []string{"exact", "suffix", "label"} {
		fmt.Fprintf(&cat, "\n[[entry]]\ncategory = %q\nhosts = [\n", category)
		for i := kind; i < n; i += 3 {
			fmt.Fprintf(&cat, "  %q,\n", strings.Replace(pattern(i), "%s", "*", 1))
		}
		cat.WriteString("]\n")
	}
	policy := "name = \"bench\"\ncatalogs = [\"catalog.toml\"]\n\n[[rule]]\nname = \"block-bench\"\nvendor = \"bench\"\ncategories = [\"exact\", \"suffix\"]\naction = \"block\"\n"
	for name, data := range map[string]string{"catalog.toml": cat.String(), "policy.toml": policy} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	last := func(kind int) int { return n - 1 - (n-1-kind)%3 } // last pattern of a kind
	reqs := []rules.Request{
		{Host: pattern(last(0))},
		{Host: fmt.Sprintf(pattern(last(1)), "a.b")},
		{Host: fmt.Sprintf(pattern(last(2)), "xyz")},
		{Host: "www.bench3.test"},
		{Host: "update.eset.com"},
		{Host: strings.ToUpper(pattern(0)) + "."},
	}
	return filepath.ToSlash(filepath.Join(dir, "policy.toml")), reqs
}

func BenchmarkDecideLargeCatalog(b *testing.B) {
	file, reqs := writeLargeCatalog(b, b.TempDir(), 10000)
	p := loadFile(b, file)
	want := []string{"exact", "suffix", "label", "web", rules.NoVendor, "exact"}
	for i, req := range reqs {
		if got := p.Decide(req).Category; got != want[i] {
			b.Fatalf("Decide(%q) category = %s; want %s", req.Host, got, want[i])
		}
	}
	benchDecide(b, p, reqs)
}
