package rules_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/configs"
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
		for _, req := range slices.Concat(decideRequests, mixRequests, lookalikeRequests) {
			req.Time = at
			if n := testing.AllocsPerRun(100, func() { p.Decide(req) }); n != 0 {
				t.Errorf("Decide(%q) allocates %v times per call; want 0", req.Host, n)
			}
		}
	}
}

// mixRequests is a realistic mix for a gateway that sees plain HTTP: most
// requests are not the vendor's and have long paths, one has a folder
// that is also a signature's literal (index, mobile, updates, ...), a few
// are the vendor's, and one is an update base on an internal mirror that
// only a signature recognises.
var mixRequests = []rules.Request{
	{Method: "GET", Host: "www.example.org", Port: 80, Path: "/wp-content/themes/twentytwentyfour/assets/fonts/inter/Inter-VariableFont_slnt,wght.woff2"},
	{Method: "GET", Host: "deb.debian.org", Port: 80, Path: "/debian/pool/main/o/openssl/libssl3_3.0.11-1~deb12u2_amd64.deb"},
	{Method: "GET", Host: "deb.debian.org", Port: 80, Path: "/debian/dists/bookworm/main/binary-amd64/Packages.xz"},
	{Method: "GET", Host: "registry.example.net", Port: 80, Path: "/@babel/core/-/core-7.24.0.tgz"},
	{Method: "POST", Host: "api.example.com", Port: 80, Path: "/api/v2/users/12345/profile/settings/notifications"},
	{Method: "GET", Host: "cdn.example.net", Port: 80, Path: "/static/js/vendor.4f9c2a1b.chunk.js"},
	{Method: "GET", Host: "cdn.example.net", Port: 80, Path: "/images/products/2024/09/large/IMG_20240915_123456.jpg"},
	{Method: "GET", Host: "download.windowsupdate.com", Port: 80, Path: "/c/msdownload/update/software/secu/2024/09/windows10.0-kb5043064-x64_1234567890abcdef.cab"},
	{Method: "GET", Host: "ctldl.windowsupdate.com", Port: 80, Path: "/msdownload/update/v3/static/trustedr/en/authrootstl.cab"},
	{Method: "GET", Host: "mirror.example.edu", Port: 80, Path: "/ubuntu/pool/universe/c/clamav/clamav_1.0.5+dfsg-1ubuntu0.24.04.1_amd64.deb"},
	{Method: "GET", Host: "fonts.example.com", Port: 80, Path: "/s/roboto/v32/KFOmCnqEu92Fr1Mu4mxKKTU1Kg.woff2"},
	{Method: "GET", Host: "intranet.corp.example", Port: 8080, Path: "/sites/finance/SharedDocuments/Forms/AllItems.aspx"},
	{Method: "GET", Host: "10.1.2.3", Port: 80, Path: "/"},
	{Method: "GET", Host: "news.example.com", Port: 80, Path: "/2024/09/29/technology/commerce-department-kaspersky-ban.html"},
	{Method: "GET", Host: "intranet.corp.example", Port: 8080, Path: "/mobile/app/index.html"},
	{Method: "GET", Host: "dnl-07.geo.kaspersky.com", Port: 80, Path: "/bases/av/kdb/i386/kdb-i386-0607g.xml"},
	{Method: "GET", Host: "www.kaspersky.com", Port: 80, Path: "/renewal-center/home"},
	{Method: "GET", Host: "s07.upd.kaspersky.com", Port: 80, Path: "/index/u0607g.xml"},
	{Method: "GET", Host: "kav-mirror.corp.example", Port: 80, Path: "/kaspersky/updates/bases/av/kdb/i386/dailyc.kdc"},
}

// lookalikeRequests are requests that are not the vendor's but have
// folders and files that signatures name, so that every pattern that
// could match is tried: the worst case of a request that signatures pass.
var lookalikeRequests = []rules.Request{
	{Method: "GET", Host: "intranet.corp.example", Port: 8080, Path: "/knowledge-bases/security/index/Update-Guide.html"},
	{Method: "GET", Host: "www.example.org", Port: 80, Path: "/Blog/2024/09/Updates/Index"},
	{Method: "GET", Host: "files.corp.example", Port: 80, Path: "/updates/LG/H87010f_00.kdz"},
	{Method: "GET", Host: "app.corp.example", Port: 80, Path: "/bases/report-0607.xml"},
}

// BenchmarkDecideMix decides mixRequests under the default policy as it
// is (signatures=kaspersky) and with the catalog's signatures cut off
// (signatures=none), the policy before signatures existed: their ratio is
// what signatures cost a gateway.
func BenchmarkDecideMix(b *testing.B) {
	policy, err := rules.FS{FS: configs.Files()}.ReadFile(configs.DefaultPolicy)
	if err != nil {
		b.Fatal(err)
	}
	catalog, err := rules.FS{FS: configs.Files()}.ReadFile("catalog/kaspersky.toml")
	if err != nil {
		b.Fatal(err)
	}
	before, _, ok := strings.Cut(string(catalog), "\n[[signature]]")
	if !ok {
		b.Fatal("the built-in catalog has no [[signature]]")
	}
	reqs := slices.Clone(mixRequests)
	for i := range reqs {
		reqs[i].Time = updatesCutoff
	}
	lookalikes := slices.Clone(lookalikeRequests)
	for i := range lookalikes {
		lookalikes[i].Time = updatesCutoff
	}
	for _, v := range []struct{ name, catalog string }{{"none", before}, {"kaspersky", string(catalog)}} {
		p := loadMap(b, map[string]string{"feedgate.toml": string(policy), "catalog/kaspersky.toml": v.catalog}, "feedgate.toml")
		if n := len(p.Signatures); (n == 0) != (v.name == "none") {
			b.Fatalf("signatures=%s: the policy has %d signatures", v.name, n)
		}
		b.Run("signatures="+v.name, func(b *testing.B) { benchDecide(b, p, reqs) })
		b.Run("lookalikes/signatures="+v.name, func(b *testing.B) { benchDecide(b, p, lookalikes) })
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

// tunnelRequests is a mix for a gateway that sees HTTPS: most tunnels are
// not the vendor's and name their CONNECT host again in the ClientHello, a
// few are the vendor's, one names a vendor host behind an innocuous
// CONNECT host, one connects to an address and names its host only in the
// ClientHello, one has a second name after a HelloRetryRequest, and one
// sends no server name.
var tunnelRequests = []rules.Tunnel{
	{Target: rules.Request{Host: "www.example.org", Port: 443}, SNI: "www.example.org"},
	{Target: rules.Request{Host: "api.example.com", Port: 443}, SNI: "api.example.com"},
	{Target: rules.Request{Host: "login.example.net", Port: 443}, SNI: "login.example.net"},
	{Target: rules.Request{Host: "fonts.example.com", Port: 443}, SNI: "fonts.example.com"},
	{Target: rules.Request{Host: "download.windowsupdate.com", Port: 443}, SNI: "download.windowsupdate.com"},
	{Target: rules.Request{Host: "update.eset.com", Port: 443}, SNI: "update.eset.com"},
	{Target: rules.Request{Host: "s07.upd.kaspersky.com", Port: 443}, SNI: "s07.upd.kaspersky.com"},
	{Target: rules.Request{Host: "ksn-a-geo.kaspersky-labs.com", Port: 443}, SNI: "ksn-a-geo.kaspersky-labs.com"},
	{Target: rules.Request{Host: "cdn.example.net", Port: 443}, SNI: "dnl-01.geo.kaspersky.com"},
	{Target: rules.Request{Host: "203.0.113.7", Port: 443}, SNI: "www.example.com"},
	{Target: rules.Request{Host: "cdn.example.net", Port: 443}, SNI: "www.example.net", RetrySNI: "www.example.org"},
	{Target: rules.Request{Host: "192.0.2.10", Port: 443}, NoSNI: true},
}

// BenchmarkDecideTunnel decides tunnelRequests as the proxy does once a
// tunnel's ClientHello is read: the CONNECT host and every server name.
func BenchmarkDecideTunnel(b *testing.B) {
	p := loadDefault(b)
	tuns := slices.Clone(tunnelRequests)
	for i := range tuns {
		tuns[i].Target.Time = updatesCutoff
	}
	b.ReportAllocs()
	j := 0
	for b.Loop() {
		p.DecideTunnel(tuns[j])
		if j++; j == len(tuns) {
			j = 0
		}
	}
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
