package rules_test

import (
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// outcomeString renders an outcome as "vendor/category rule action".
func outcomeString(p *rules.Policy, o rules.Outcome) string {
	name := rules.DefaultRule
	switch {
	case o.Rule == rules.NoSNIRule:
		name = rules.NoSNIRuleName
	case o.Rule >= 0:
		name = p.Rules[o.Rule].Name
	}
	c := p.Classes[o.Class]
	return c.Vendor + "/" + c.Category + " " + name + " " + o.Action.String()
}

// outcomesPolicy loads testdata/outcomes.toml with its mode and
// tunnel_without_sni floor replaced.
func outcomesPolicy(t *testing.T, mode, floor string) *rules.Policy {
	t.Helper()
	data, err := rules.Dir{}.ReadFile("testdata/outcomes.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), `mode = "enforce"`, `mode = "`+mode+`"`, 1)
	text = strings.Replace(text, `tunnel_without_sni = "log"`, `tunnel_without_sni = "`+floor+`"`, 1)
	deep, err := rules.Dir{}.ReadFile("testdata/catalog/deep.toml")
	if err != nil {
		t.Fatal(err)
	}
	return loadMap(t, map[string]string{"outcomes.toml": text, "catalog/example.toml": exampleCatalog(t), "catalog/deep.toml": string(deep)}, "outcomes.toml")
}

// TestOutcomes pins Policy.Outcomes for testdata/outcomes.toml, in enforce
// and report mode and with two tunnel_without_sni floors, as
// testdata/outcomes.txt lists them, and checks it against the decisions of
// a set of requests: every decision is an outcome, and every class an
// outcome gives a host rule is the class of a host of the rule's patterns.
func TestOutcomes(t *testing.T) {
	text, err := os.ReadFile("testdata/outcomes.txt")
	if err != nil {
		t.Fatal(err)
	}
	type variant struct {
		mode, floor string
		want        []string
	}
	var tests []variant
	for n, line := range strings.Split(string(text), "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case line[0] == '[':
			f := strings.Fields(strings.Trim(line, "[]"))
			if len(f) != 2 {
				t.Fatalf("outcomes.txt:%d: want [mode floor]", n+1)
			}
			tests = append(tests, variant{mode: f[0], floor: f[1]})
		case len(tests) == 0:
			t.Fatalf("outcomes.txt:%d: an outcome before the first [mode floor]", n+1)
		default:
			tests[len(tests)-1].want = append(tests[len(tests)-1].want, strings.Join(strings.Fields(line), " "))
		}
	}
	if len(tests) == 0 {
		t.Fatal("outcomes.txt has no [mode floor]")
	}
	for _, tt := range tests {
		t.Run(tt.mode+"-"+tt.floor, func(t *testing.T) {
			p := outcomesPolicy(t, tt.mode, tt.floor)
			outcomes := p.Outcomes()
			got := make([]string, len(outcomes))
			for i, o := range outcomes {
				got[i] = outcomeString(p, o)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Outcomes() =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
			checkOutcomesDecided(t, p, outcomes)
		})
	}
}

// checkOutcomesDecided decides requests for hosts of every pattern of
// testdata/outcomes.toml and around them, on ports and paths of every
// catalog entry, from both client groups, at instants in and out of the
// rules' windows: every decision and tunnel decision must be an outcome,
// and each host rule's outcomes must have exactly the classes of the
// hosts its patterns match.
func checkOutcomesDecided(t *testing.T, p *rules.Policy, outcomes []rules.Outcome) {
	t.Helper()
	hosts := []string{
		"help.example.com", "intranet.example.org", "upd.example.com", "a.upd.example.com",
		"a.b.upd.example.com", "dl-1.example-labs.net", "dl-.example-labs.net", "dx.example-labs.net",
		"xa.example-labs.net", "example-labs.net", "ab.b.example.com", "b.example.com", "www.example.com",
		"a.ksn.example.com", "a.b.ksn.example.com", "ksn.example.com", "example.com", "foo.example.com",
		"a.example.org", "example.org", "cdn-1.example.net", "example.net", "other.test",
		"a.b.deep.test", "b.deep.test", "x.a.b.deep.test", "deep.test",
	}
	type place struct {
		port int
		path string
	}
	places := []place{{0, ""}, {443, ""}, {8000, ""}, {80, "/"}, {80, "/buy"}, {8000, "/buy/x"}}
	clients := []netip.Addr{netip.MustParseAddr("10.9.1.1"), netip.MustParseAddr("192.0.2.1")}
	instants := []time.Time{
		time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2024, 10, 1, 0, 0, 0, 0, time.UTC),
	}
	set := map[rules.Outcome]bool{}
	for _, o := range outcomes {
		set[o] = true
	}
	check := func(what string, d rules.Decision) {
		if o := (rules.Outcome{Class: d.Class, Rule: d.Rule, Action: d.Action}); !set[o] {
			t.Errorf("%s = %s, not an outcome", what, outcomeString(p, o))
		}
	}
	// hostClasses[rule] are the classes of the hosts the rule's patterns
	// match.
	hostClasses := map[int]map[int]bool{}
	for _, h := range hosts {
		for _, pl := range places {
			for _, c := range clients {
				for _, at := range instants {
					req := rules.Request{Host: h, Port: pl.port, Path: pl.path, Client: c, Time: at}
					d := p.Decide(req)
					check(h+pl.path, d)
					for i, r := range p.Rules {
						for _, hp := range r.HostPatterns() {
							if hp.Matches(h) {
								if hostClasses[i] == nil {
									hostClasses[i] = map[int]bool{}
								}
								hostClasses[i][d.Class] = true
							}
						}
					}
					if pl.path != "" {
						continue
					}
					for _, noSNI := range []bool{false, true} {
						check(h+" tunnel", p.DecideTunnel(rules.Tunnel{Target: req, NoSNI: noSNI}))
					}
				}
			}
		}
	}
	for i, r := range p.Rules {
		if len(r.HostPatterns()) == 0 {
			continue
		}
		want := map[int]bool{}
		for _, o := range outcomes {
			if o.Rule == i {
				want[o.Class] = true
			}
		}
		if !maps.Equal(hostClasses[i], want) {
			t.Errorf("rule %s: the hosts of its patterns are in classes %v; Outcomes gives it %v", r.Name, hostClasses[i], want)
		}
	}
}
