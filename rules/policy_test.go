package rules_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/internal/ruletest"
)

// answer is the rule name and action of a decision.
type answer struct {
	rule   string
	action rules.Action
}

func (a answer) String() string { return a.rule + "/" + a.action.String() }

func answerOf(d rules.Decision) answer { return answer{d.RuleName, d.Action} }

func TestDecideCutoffs(t *testing.T) {
	p := loadDefault(t)
	var (
		dflt  = answer{rules.DefaultRule, rules.Allow}
		ti    = answer{"threat-intel-exempt", rules.Allow}
		store = answer{"sales-cutoff-store", rules.Block}
		flag  = answer{"sales-cutoff-flag", rules.Log}
		cut   = answer{"updates-cutoff", rules.Block}
	)
	instants := []time.Time{
		salesCutoff.Add(-time.Second),
		salesCutoff,
		updatesCutoff.Add(-time.Second),
		updatesCutoff,
		time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	tests := []struct {
		host string
		port int
		path string
		want [5]answer // at each of instants
	}{
		// Store is blocked from the sales cut-off on; its rule comes before
		// updates-cutoff and never ends, so it keeps deciding after Sept 29.
		{"store.kaspersky.com", 443, "", [5]answer{dflt, store, store, store, store}},
		{"www.kaspersky.com", 80, "/renewal-center/home", [5]answer{dflt, store, store, store, store}},
		{"s00.upd.kaspersky.com", 443, "", [5]answer{dflt, flag, flag, cut, cut}},
		{"dnl-07.geo.kaspersky.com", 80, "/bases/", [5]answer{dflt, flag, flag, cut, cut}},
		{"activation-v2.kaspersky.com", 443, "", [5]answer{dflt, flag, flag, cut, cut}},
		{"x.ksc.kaspersky.com", 27200, "", [5]answer{dflt, flag, flag, cut, cut}},
		{"ksn-file-geo.kaspersky-labs.com", 443, "", [5]answer{dflt, flag, flag, cut, cut}},
		{"mdr.ksn.kaspersky-labs.com", 443, "", [5]answer{dflt, flag, flag, cut, cut}},
		{"my.kaspersky.com", 443, "", [5]answer{dflt, flag, flag, cut, cut}},
		{"www.kaspersky.com", 443, "", [5]answer{dflt, flag, flag, cut, cut}},
		{"support.kaspersky.co.jp", 443, "", [5]answer{dflt, flag, flag, cut, cut}},
		// Threat Intelligence is exempt, whatever the spelling.
		{"opentip.kaspersky.com", 443, "", [5]answer{ti, ti, ti, ti, ti}},
		{"OPENTIP.Kaspersky.com.", 443, "", [5]answer{ti, ti, ti, ti, ti}},
		{"tip.kaspersky.com", 443, "", [5]answer{ti, ti, ti, ti, ti}},
		// Not Kaspersky.
		{"update.eset.com", 443, "", [5]answer{dflt, dflt, dflt, dflt, dflt}},
		{"notkaspersky.com", 443, "", [5]answer{dflt, dflt, dflt, dflt, dflt}},
		{"93.159.228.1", 443, "", [5]answer{dflt, dflt, dflt, dflt, dflt}},
	}
	for _, tc := range tests {
		for i, at := range instants {
			d := p.Decide(rules.Request{Host: tc.host, Port: tc.port, Path: tc.path, Time: at})
			if got := answerOf(d); got != tc.want[i] {
				t.Errorf("Decide(%s:%d%s at %s) = %v; want %v", tc.host, tc.port, tc.path, fmtTime(at), got, tc.want[i])
			}
			if d.Reported {
				t.Errorf("Decide(%s at %s).Reported = true; want false in enforce mode", tc.host, fmtTime(at))
			}
			checkRuleIndex(t, p, d.Rule, d.RuleName)
		}
	}
}

// checkRuleIndex checks that a rule index and name agree.
func checkRuleIndex(t *testing.T, p *rules.Policy, i int, name string) {
	t.Helper()
	switch {
	case i == -1 && name == rules.DefaultRule:
	case i >= 0 && i < len(p.Rules) && p.Rules[i].Name == name:
	default:
		t.Errorf("rule index %d does not name rule %q", i, name)
	}
}

// The request time is an instant: the zone it is written in does not matter.
func TestDecideTimeZoneOfRequest(t *testing.T) {
	p := loadDefault(t)
	tokyo := time.FixedZone("JST", 9*3600)
	for _, at := range []time.Time{salesCutoff.Add(-time.Nanosecond), salesCutoff} {
		want := p.Decide(rules.Request{Host: "s00.upd.kaspersky.com", Time: at})
		got := p.Decide(rules.Request{Host: "s00.upd.kaspersky.com", Time: at.In(tokyo)})
		if got != want {
			t.Errorf("Decide at %s = %+v; want %+v as at %s", at.In(tokyo), got, want, at)
		}
	}
	if got := answerOf(p.Decide(rules.Request{Host: "s00.upd.kaspersky.com", Time: salesCutoff.Add(-time.Nanosecond)})); got.rule != rules.DefaultRule {
		t.Errorf("Decide 1ns before the sales cut-off = %v; want the default", got)
	}
}

func TestExplain(t *testing.T) {
	p := loadDefault(t)
	type change struct {
		at     time.Time
		rule   string
		action rules.Action
	}
	tests := []struct {
		host  string
		path  string
		at    time.Time
		since time.Time // zero: always held
		next  *change
	}{
		{"s00.upd.kaspersky.com", "", salesCutoff.Add(-time.Second), time.Time{}, &change{salesCutoff, "sales-cutoff-flag", rules.Log}},
		{"s00.upd.kaspersky.com", "", salesCutoff, salesCutoff, &change{updatesCutoff, "updates-cutoff", rules.Block}},
		{"s00.upd.kaspersky.com", "", updatesCutoff.Add(-time.Second), salesCutoff, &change{updatesCutoff, "updates-cutoff", rules.Block}},
		{"s00.upd.kaspersky.com", "", updatesCutoff, updatesCutoff, nil},
		{"s00.upd.kaspersky.com", "", updatesCutoff.AddDate(5, 0, 0), updatesCutoff, nil},
		{"store.kaspersky.com", "", salesCutoff.Add(-time.Second), time.Time{}, &change{salesCutoff, "sales-cutoff-store", rules.Block}},
		{"store.kaspersky.com", "", salesCutoff, salesCutoff, nil},
		// updates-cutoff opens on Sept 29, but the store answer holds on.
		{"store.kaspersky.com", "", updatesCutoff, salesCutoff, nil},
		{"www.kaspersky.com", "/buy", updatesCutoff.Add(time.Hour), salesCutoff, nil},
		{"opentip.kaspersky.com", "", salesCutoff.Add(-time.Second), time.Time{}, nil},
		{"opentip.kaspersky.com", "", updatesCutoff, time.Time{}, nil},
		{"update.eset.com", "", salesCutoff, time.Time{}, nil},
	}
	for _, tc := range tests {
		req := rules.Request{Host: tc.host, Port: 443, Path: tc.path, Time: tc.at}
		e := p.Explain(req)
		name := fmt.Sprintf("Explain(%s%s at %s)", tc.host, tc.path, fmtTime(tc.at))
		if d := p.Decide(req); e.Decision != d {
			t.Errorf("%s.Decision = %+v; want Decide's %+v", name, e.Decision, d)
		}
		if !e.Since.Equal(tc.since) {
			t.Errorf("%s.Since = %s; want %s", name, fmtTime(e.Since), fmtTime(tc.since))
		}
		switch {
		case tc.next == nil && e.Next != nil:
			t.Errorf("%s.Next = %+v; want nil", name, *e.Next)
		case tc.next != nil && e.Next == nil:
			t.Errorf("%s.Next = nil; want a change at %s", name, fmtTime(tc.next.at))
		case tc.next != nil:
			n := e.Next
			if !n.At.Equal(tc.next.at) || n.RuleName != tc.next.rule || n.Action != tc.next.action {
				t.Errorf("%s.Next = %s %s/%s; want %s %s/%s", name,
					fmtTime(n.At), n.RuleName, n.Action, fmtTime(tc.next.at), tc.next.rule, tc.next.action)
			}
			checkRuleIndex(t, p, n.Rule, n.RuleName)
			// Instants are reported in the policy's zone.
			if got, want := n.At.Format(time.RFC3339), tc.next.at.In(p.Location).Format(time.RFC3339); got != want {
				t.Errorf("%s.Next.At = %s; want %s (policy zone %s)", name, got, want, p.Location)
			}
		}
	}
}

func TestNextTransition(t *testing.T) {
	p := loadDefault(t)
	tests := []struct {
		at   time.Time
		want time.Time // zero: none
	}{
		{time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), salesCutoff},
		{salesCutoff.Add(-time.Second), salesCutoff},
		{salesCutoff, updatesCutoff},
		{updatesCutoff.Add(-time.Second), updatesCutoff},
		{updatesCutoff, time.Time{}},
	}
	for _, tc := range tests {
		got, ok := p.NextTransition(tc.at)
		if ok != !tc.want.IsZero() || !got.Equal(tc.want) {
			t.Errorf("NextTransition(%s) = %s, %v; want %s, %v", fmtTime(tc.at), fmtTime(got), ok, fmtTime(tc.want), !tc.want.IsZero())
		}
	}
}

func TestClassTimeline(t *testing.T) {
	p := loadDefault(t)
	const (
		jul20 = "2024-07-20T00:00:00-04:00"
		sep29 = "2024-09-29T00:00:00-04:00"
	)
	// Segments as "from..until rule/action", times in the policy's zone.
	salesThenUpdates := []string{
		"-.." + jul20 + " default/allow",
		jul20 + ".." + sep29 + " sales-cutoff-flag/log",
		sep29 + "..- updates-cutoff/block",
	}
	tests := []struct {
		vendor, category string
		want             []string
	}{
		{"kaspersky", "store", []string{"-.." + jul20 + " default/allow", jul20 + "..- sales-cutoff-store/block"}},
		{"kaspersky", "update", salesThenUpdates},
		{"kaspersky", "licensing", salesThenUpdates},
		{"kaspersky", "ksn", salesThenUpdates},
		{"kaspersky", "telemetry", salesThenUpdates},
		{"kaspersky", "portal", salesThenUpdates},
		// Host rules (threat-intel-exempt) are not part of class timelines.
		{"kaspersky", "web", salesThenUpdates},
		{rules.NoVendor, rules.NoVendor, []string{"-..- default/allow"}},
	}
	local := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Format(time.RFC3339)
	}
	for _, tc := range tests {
		segs := p.ClassTimeline(classIndex(t, p, tc.vendor, tc.category))
		var got []string
		for _, s := range segs {
			got = append(got, fmt.Sprintf("%s..%s %s/%s", local(s.From), local(s.Until), s.RuleName, s.Action))
			checkRuleIndex(t, p, s.Rule, s.RuleName)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("ClassTimeline(%s/%s) =\n\t%q\nwant\n\t%q", tc.vendor, tc.category, got, tc.want)
		}
	}
}

func TestClassStates(t *testing.T) {
	p := loadDefault(t)
	type state struct {
		action rules.Action
		next   time.Time
	}
	tests := []struct {
		at   time.Time
		want map[rules.Class]state // classes not listed are like kaspersky/update
		upd  state
	}{
		{salesCutoff.Add(-time.Second), map[rules.Class]state{
			{"kaspersky", "store"}: {rules.Allow, salesCutoff},
		}, state{rules.Allow, salesCutoff}},
		{salesCutoff, map[rules.Class]state{
			{"kaspersky", "store"}: {rules.Block, time.Time{}},
		}, state{rules.Log, updatesCutoff}},
		{updatesCutoff.Add(-time.Second), map[rules.Class]state{
			{"kaspersky", "store"}: {rules.Block, time.Time{}},
		}, state{rules.Log, updatesCutoff}},
		{updatesCutoff, map[rules.Class]state{
			{"kaspersky", "store"}: {rules.Block, time.Time{}},
		}, state{rules.Block, time.Time{}}},
	}
	for _, tc := range tests {
		got := p.ClassStates(tc.at)
		if len(got) != len(p.Classes) {
			t.Fatalf("ClassStates(%s) has %d states; want one per class (%d)", fmtTime(tc.at), len(got), len(p.Classes))
		}
		if got[0].Class != (rules.Class{Vendor: rules.NoVendor, Category: rules.NoVendor}) {
			t.Errorf("ClassStates(%s)[0].Class = %v; want none/none", fmtTime(tc.at), got[0].Class)
		}
		for i, s := range got {
			if s.Class != p.Classes[i] {
				t.Errorf("ClassStates(%s)[%d].Class = %v; want %v", fmtTime(tc.at), i, s.Class, p.Classes[i])
			}
			want, ok := tc.want[s.Class]
			switch {
			case ok:
			case s.Class.Vendor == rules.NoVendor:
				want = state{rules.Allow, time.Time{}}
			default:
				want = tc.upd
			}
			if s.Action != want.action || !s.Next.Equal(want.next) {
				t.Errorf("ClassStates(%s) %s/%s = %s next %s; want %s next %s", fmtTime(tc.at),
					s.Class.Vendor, s.Class.Category, s.Action, fmtTime(s.Next), want.action, fmtTime(want.next))
			}
		}
	}
}

func TestReportMode(t *testing.T) {
	p := loadFile(t, "testdata/report.toml")
	if p.Mode != rules.Report || p.Mode.String() != "report" {
		t.Fatalf("Mode = %v; want report", p.Mode)
	}
	tests := []struct {
		host     string
		port     int
		path     string
		want     answer
		reported bool
	}{
		{"s1.upd.example.com", 443, "", answer{"block-updates", rules.Log}, true},
		{"dl-7.example-labs.net", 443, "", answer{"block-updates", rules.Log}, true},
		{"a.ksn.example.com", 8080, "", answer{"log-ksn", rules.Log}, false},
		{"www.example.com", 443, "", answer{"allow-web", rules.Allow}, false},
		// No rule: the default action (block) is reported too.
		{"www.example.com", 80, "/buy/now", answer{rules.DefaultRule, rules.Log}, true},
		{"unrelated.test", 443, "", answer{rules.DefaultRule, rules.Log}, true},
	}
	for _, tc := range tests {
		req := rules.Request{Host: tc.host, Port: tc.port, Path: tc.path, Time: salesCutoff}
		d := p.Decide(req)
		if got := answerOf(d); got != tc.want || d.Reported != tc.reported {
			t.Errorf("Decide(%s:%d%s) = %v reported=%v; want %v reported=%v", tc.host, tc.port, tc.path, got, d.Reported, tc.want, tc.reported)
		}
		if e := p.Explain(req); e.Decision != d {
			t.Errorf("Explain(%s).Decision = %+v; want %+v", tc.host, e.Decision, d)
		}
	}
	for _, s := range p.ClassStates(salesCutoff) {
		if s.Action == rules.Block {
			t.Errorf("ClassStates: %s/%s = block; want no block in report mode", s.Class.Vendor, s.Class.Category)
		}
	}
}

func TestTimezoneWindows(t *testing.T) {
	p := loadFile(t, "testdata/tz.toml")
	if got := p.Location.String(); got != "America/New_York" {
		t.Fatalf("Location = %s; want America/New_York", got)
	}
	tests := []struct {
		rule        string
		host        string
		port        int
		path        string
		from, until string // UTC
	}{
		{"winter", "s1.upd.example.com", 443, "", "2024-01-15T05:00:00Z", "2024-01-16T05:00:00Z"},
		{"summer", "s1.upd.example.com", 443, "", "2024-07-04T04:00:00Z", "2024-07-05T04:00:00Z"},
		{"offset", "a.ksn.example.com", 8000, "", "2024-02-01T04:00:00Z", "2024-02-02T00:00:00Z"},
		{"spring-day", "www.example.com", 80, "/buy", "2024-03-10T05:00:00Z", "2024-03-11T04:00:00Z"},
		{"fall-day", "www.example.com", 80, "/buy", "2024-11-03T04:00:00Z", "2024-11-04T05:00:00Z"},
		{"fall-ambiguous", "a.ksn.example.com", 8099, "", "2024-11-03T05:30:00Z", "2024-11-03T08:00:00Z"},
		{"strings", "example.com", 443, "", "2024-05-01T04:00:00Z", "2024-05-02T00:00:00Z"},
	}
	byName := map[string]*rules.Rule{}
	for _, r := range p.Rules {
		byName[r.Name] = r
	}
	parse := func(s string) time.Time {
		t.Helper()
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tc := range tests {
		r := byName[tc.rule]
		if r == nil {
			t.Fatalf("no rule %q", tc.rule)
		}
		from, until := parse(tc.from), parse(tc.until)
		if !r.From.Equal(from) || !r.Until.Equal(until) {
			t.Errorf("rule %s window = [%s, %s); want [%s, %s)", tc.rule, fmtTime(r.From), fmtTime(r.Until), tc.from, tc.until)
		}
		// The decision flips exactly at from and at until.
		for _, at := range []struct {
			t      time.Time
			inside bool
		}{
			{from.Add(-time.Second), false},
			{from.Add(-time.Nanosecond), false},
			{from, true},
			{until.Add(-time.Second), true},
			{until, false},
		} {
			d := p.Decide(rules.Request{Host: tc.host, Port: tc.port, Path: tc.path, Time: at.t})
			if (d.RuleName == tc.rule) != at.inside {
				t.Errorf("Decide(%s:%d%s at %s) rule = %s; want rule %s in force: %v",
					tc.host, tc.port, tc.path, fmtTime(at.t), d.RuleName, tc.rule, at.inside)
			}
		}
	}
}

// A local time that the clocks skip (02:30 on the spring-forward day) must not
// put a rule in force while the wall clock still reads an earlier time. A
// loader that rejects the time instead, at the line of "from", is fine too.
func TestTimezoneSpringGap(t *testing.T) {
	const file = "testdata/tz-gap.toml"
	p, _, err := rules.Load(rules.Dir{}, file, rules.Options{})
	if err != nil {
		if got := ruletest.Problems(t, err); len(got) != 1 || !strings.HasPrefix(got[0], file+":10: ") {
			t.Fatalf("Load(%s) problems = %q; want one, at %s:10", file, got, file)
		}
		return
	}
	tests := []struct {
		at     string
		inside bool
	}{
		{"2024-03-10T06:29:59Z", false}, // 01:29:59 EST
		{"2024-03-10T06:30:00Z", false}, // 01:30:00 EST
		{"2024-03-10T06:59:59Z", false}, // 01:59:59 EST, the last second before the gap
		{"2024-03-10T07:30:00Z", true},  // 03:30:00 EDT
	}
	for _, tc := range tests {
		at, err := time.Parse(time.RFC3339, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		d := p.Decide(rules.Request{Host: "gap.example.org", Time: at})
		if (d.RuleName == "spring-gap") != tc.inside {
			t.Errorf("Decide(gap.example.org at %s, %s local) rule = %s; want spring-gap in force: %v (rule from = %s)",
				tc.at, at.In(p.Location).Format("15:04:05 MST"), d.RuleName, tc.inside, fmtTime(p.Rules[0].From))
		}
	}
}
