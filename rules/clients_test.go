package rules_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/internal/ruletest"
)

func TestLoadClientGroups(t *testing.T) {
	p := loadFile(t, "testdata/clients.toml")
	var got []string
	for _, g := range p.ClientGroups {
		got = append(got, fmt.Sprintf("%s=%v", g.Name, g.Prefixes))
	}
	// File order, not the decoder's map order.
	ruletest.DiffLines(t, "groups", got, []string{
		"us-offices=[10.0.0.0/12 192.0.2.7/32 2001:db8:1::/48]",
		"lab=[10.9.0.0/16]",
		"build_farm=[10.9.8.0/24 172.16.5.0/24]",
		"tie-a=[198.51.100.0/24]",
		"tie-b=[198.51.100.0/24]",
	})
	got = nil
	for _, r := range p.Rules {
		got = append(got, fmt.Sprintf("%s clients=%v not_clients=%v", r.Name, r.Clients(), r.NotClients()))
	}
	ruletest.DiffLines(t, "rules", got, []string{
		"lab-updates clients=[lab] not_clients=[]",
		"block-updates clients=[] not_clients=[build_farm]",
		"flag-offices clients=[us-offices] not_clients=[]",
	})
}

func TestDecideClients(t *testing.T) {
	p := loadFile(t, "testdata/clients.toml")
	before, after := updatesCutoff.Add(-time.Second), updatesCutoff
	var (
		dflt    = answer{rules.DefaultRule, rules.Allow}
		lab     = answer{"lab-updates", rules.Allow}
		blocked = answer{"block-updates", rules.Block}
		flagged = answer{"flag-offices", rules.Log}
	)
	tests := []struct {
		host   string
		client string // "" for the zero Addr
		group  string
		want   [2]answer // before and after the updates cut-off
	}{
		// In lab (and us-offices, which is less specific): the lab rule
		// comes first.
		{"upd.example.com", "10.9.1.1", "lab", [2]answer{lab, lab}},
		{"UPD.Example.com.", "10.9.1.1", "lab", [2]answer{lab, lab}},
		{"upd.example.com", "::ffff:10.9.1.1", "lab", [2]answer{lab, lab}},
		// build_farm is the most specific of the three groups here.
		{"upd.example.com", "10.9.8.5", "build_farm", [2]answer{lab, lab}},
		// Offices only: updates are blocked after the cut-off, and
		// everything else is flagged.
		{"upd.example.com", "10.1.2.3", "us-offices", [2]answer{flagged, blocked}},
		{"www.example.com", "10.1.2.3", "us-offices", [2]answer{flagged, flagged}},
		{"update.eset.com", "::ffff:10.1.2.3", "us-offices", [2]answer{flagged, flagged}},
		{"www.example.com", "192.0.2.7", "us-offices", [2]answer{flagged, flagged}},
		{"www.example.com", "2001:db8:1::5", "us-offices", [2]answer{flagged, flagged}},
		{"www.example.com", "10.16.0.1", "", [2]answer{dflt, dflt}},
		{"www.example.com", "192.0.2.8", "", [2]answer{dflt, dflt}},
		// The build farm outside the lab is excepted from the block.
		{"upd.example.com", "172.16.5.1", "build_farm", [2]answer{dflt, dflt}},
		// Clients in no group, and unknown clients, are in no group:
		// block-updates applies to them, the others do not.
		{"upd.example.com", "203.0.113.9", "", [2]answer{dflt, blocked}},
		{"upd.example.com", "", "", [2]answer{dflt, blocked}},
		{"www.example.com", "", "", [2]answer{dflt, dflt}},
		// Two groups with the same network: the first in the file names it.
		{"upd.example.com", "198.51.100.1", "tie-a", [2]answer{dflt, blocked}},
	}
	for _, tc := range tests {
		var client netip.Addr
		if tc.client != "" {
			client = netip.MustParseAddr(tc.client)
		}
		if got := p.ClientGroup(client); got != tc.group {
			t.Errorf("ClientGroup(%s) = %q; want %q", tc.client, got, tc.group)
		}
		for i, at := range []time.Time{before, after} {
			req := rules.Request{Host: tc.host, Port: 443, Client: client, Time: at}
			d := p.Decide(req)
			name := fmt.Sprintf("Decide(%s from %s at %s)", tc.host, tc.client, fmtTime(at))
			if got := answerOf(d); got != tc.want[i] {
				t.Errorf("%s = %v; want %v", name, got, tc.want[i])
			}
			if d.ClientGroup != tc.group {
				t.Errorf("%s.ClientGroup = %q; want %q", name, d.ClientGroup, tc.group)
			}
			if e := p.Explain(req); e.Decision != d {
				t.Errorf("Explain(%s from %s).Decision = %+v; want Decide's %+v", tc.host, tc.client, e.Decision, d)
			}
			if n := testing.AllocsPerRun(20, func() { p.Decide(req) }); n != 0 {
				t.Errorf("%s allocates %v times per call; want 0", name, n)
			}
		}
	}
}

// Explain follows the client's rules on the timeline too.
func TestExplainClients(t *testing.T) {
	p := loadFile(t, "testdata/clients.toml")
	at := updatesCutoff.Add(-time.Hour)
	for _, tc := range []struct {
		client string
		next   string // rule of the next change, "" for none
	}{
		{"203.0.113.9", "block-updates"},
		{"10.9.1.1", ""},
		{"172.16.5.1", ""},
	} {
		e := p.Explain(rules.Request{Host: "upd.example.com", Port: 443, Client: netip.MustParseAddr(tc.client), Time: at})
		got := ""
		if e.Next != nil {
			got = e.Next.RuleName
		}
		if got != tc.next {
			t.Errorf("Explain(upd.example.com from %s).Next = %q; want %q", tc.client, got, tc.next)
		}
	}
}

// Class answers, for metrics, are those for a client in no group.
func TestClassStatesClients(t *testing.T) {
	p := loadFile(t, "testdata/clients.toml")
	for _, tc := range []struct {
		category string
		at       time.Time
		want     rules.Action
	}{
		{"update", updatesCutoff.Add(-time.Second), rules.Allow},
		{"update", updatesCutoff, rules.Block},
		{"web", updatesCutoff, rules.Allow}, // flag-offices is for offices only
	} {
		c := classIndex(t, p, "example", tc.category)
		if got := p.ClassStates(tc.at)[c].Action; got != tc.want {
			t.Errorf("ClassStates(%s)[example/%s] = %v; want %v", fmtTime(tc.at), tc.category, got, tc.want)
		}
	}
	var got []string
	for _, s := range p.ClassTimeline(classIndex(t, p, "example", "update")) {
		got = append(got, fmtTime(s.From)+".."+fmtTime(s.Until)+" "+s.RuleName)
	}
	ruletest.DiffLines(t, "timeline of example/update", got, []string{
		"-.." + fmtTime(updatesCutoff) + " default",
		fmtTime(updatesCutoff) + "..- block-updates",
	})
}

// A policy without groups puts every client in none.
func TestClientGroupNone(t *testing.T) {
	p := loadDefault(t)
	if len(p.ClientGroups) != 0 {
		t.Errorf("default policy ClientGroups = %v; want none", p.ClientGroups)
	}
	if g := p.ClientGroup(netip.MustParseAddr("10.0.0.1")); g != "" {
		t.Errorf("ClientGroup = %q; want \"\"", g)
	}
	d := p.Decide(rules.Request{Host: "upd.kaspersky.com", Client: netip.MustParseAddr("10.0.0.1"), Time: updatesCutoff})
	if d.ClientGroup != "" {
		t.Errorf("Decide().ClientGroup = %q; want \"\"", d.ClientGroup)
	}
	for _, r := range p.Rules {
		if r.Clients() != nil || r.NotClients() != nil {
			t.Errorf("rule %s: Clients, NotClients = %v, %v; want nil", r.Name, r.Clients(), r.NotClients())
		}
	}
}

func BenchmarkDecideClients(b *testing.B) {
	p := loadFile(b, "testdata/clients.toml")
	var reqs []rules.Request
	for _, c := range []string{"10.9.1.1", "10.1.2.3", "203.0.113.9", "::ffff:10.9.8.5"} {
		for _, h := range []string{"upd.example.com", "www.example.com", "update.eset.com"} {
			reqs = append(reqs, rules.Request{Host: h, Port: 443, Client: netip.MustParseAddr(c), Time: updatesCutoff})
		}
	}
	benchDecide(b, p, reqs)
}
