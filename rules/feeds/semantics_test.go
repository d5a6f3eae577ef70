package feeds_test

import (
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/feeds"
)

// notePattern is a pattern named at the start of a header note line, with
// the rules package's meaning.
type notePattern struct{ kind, key, pre, suf string }

func parseNote(s string) notePattern {
	s, _, _ = strings.Cut(s, " ")
	s = strings.TrimSuffix(s, ":")
	if k, ok := strings.CutPrefix(s, "*."); ok {
		return notePattern{kind: "suffix", key: k}
	}
	if label, parent, ok := strings.Cut(s, "."); ok && strings.Contains(label, "*") {
		pre, suf, _ := strings.Cut(label, "*")
		return notePattern{kind: "label", key: parent, pre: pre, suf: suf}
	}
	return notePattern{kind: "exact", key: s}
}

func (n notePattern) matches(h string) bool {
	switch n.kind {
	case "suffix":
		return strings.HasSuffix(h, "."+n.key)
	case "label":
		label, ok := strings.CutSuffix(h, "."+n.key)
		return ok && !strings.Contains(label, ".") && len(label) > len(n.pre)+len(n.suf) &&
			strings.HasPrefix(label, n.pre) && strings.HasSuffix(label, n.suf)
	}
	return h == n.key
}

// notes returns the patterns of the header's skipped and over-matched
// lists.
func notes(f feeds.Format, text string) (skipped, over []notePattern) {
	var cur *[]notePattern
	for _, l := range header(f, text) {
		switch {
		case strings.HasPrefix(l, "skipped:"):
			cur = &skipped
		case strings.HasPrefix(l, "over-matched:"):
			cur = &over
		case strings.HasPrefix(l, "  ") && cur != nil:
			*cur = append(*cur, parseNote(strings.TrimSpace(l)))
		default:
			cur = nil
		}
	}
	return skipped, over
}

func anyMatches(ns []notePattern, h string) bool {
	for _, n := range ns {
		if n.matches(h) {
			return true
		}
	}
	return false
}

// verdict is what a list file says about a name.
type verdict int

const (
	unlisted  verdict = iota
	listed            // in a plain list (edl, hosts, squid)
	sinkholed         // dnsmasq address=, RPZ CNAME .
	passed            // dnsmasq server=/#, RPZ CNAME rpz-passthru.
)

// read returns how the consumer of format f reads name h in the list body:
// a firewall's domain list, a hosts file and Squid's dstdomain as sets;
// dnsmasq by the longest /domain/; an RPZ by the exact owner, else the
// longest wildcard.
func read(f feeds.Format, lines []string, h string) verdict {
	switch f {
	case feeds.EDL:
		for _, l := range lines {
			if s, ok := strings.CutPrefix(l, "*."); (ok && strings.HasSuffix(h, "."+s)) || l == h {
				return listed
			}
		}
	case feeds.Hosts:
		for _, l := range lines {
			if l == "0.0.0.0 "+h {
				return listed
			}
		}
	case feeds.Squid:
		for _, l := range lines {
			if d, ok := strings.CutPrefix(l, "."); (ok && (h == d || strings.HasSuffix(h, l))) || l == h {
				return listed
			}
		}
	case feeds.Dnsmasq:
		best, v := "", unlisted
		for _, l := range lines {
			var name string
			var lv verdict
			switch {
			case strings.HasPrefix(l, "address=/"):
				name, lv = strings.Split(l, "/")[1], sinkholed
			case strings.HasPrefix(l, "server=/"):
				name, lv = strings.Split(l, "/")[1], passed
			}
			if (h == name || strings.HasSuffix(h, "."+name)) && len(name) > len(best) {
				best, v = name, lv
			}
		}
		return v
	case feeds.RPZ:
		best, v := "", unlisted
		for _, l := range lines {
			owner, target, _ := strings.Cut(l, " CNAME ")
			lv := sinkholed
			if target == "rpz-passthru." {
				lv = passed
			}
			if owner == h {
				return lv
			}
			if s, ok := strings.CutPrefix(owner, "*."); ok && strings.HasSuffix(h, "."+s) && len(s) > len(best) {
				best, v = s, lv
			}
		}
		return v
	}
	return unlisted
}

// TestListsAgreeWithProxy reads every generated list as its consumer does
// and checks, for every sample host, that it agrees with the proxy's
// decision, or that the header says why not.
func TestListsAgreeWithProxy(t *testing.T) {
	hosts := sampleHosts(t)
	p := loadDefault(t)
	instants := []time.Time{beforeSales, betweenCuts, time.Date(2024, 9, 29, 3, 59, 59, 0, time.UTC), time.Date(2024, 9, 29, 4, 0, 0, 0, time.UTC), afterUpdates}
	for _, at := range instants {
		for _, a := range rules.AllActions() {
			for _, f := range feeds.Formats() {
				if f == feeds.Hosts && a != rules.Block {
					continue
				}
				text := write(t, f, p, "kaspersky", a, at)
				lines := body(f, text)
				skipped, over := notes(f, text)
				for _, h := range hosts {
					d := p.Decide(rules.Request{Host: h, Time: at})
					v := read(f, lines, h)
					mine := d.Vendor == "kaspersky" && d.Action == a
					where := string(f) + " " + a.String() + " list at " + at.Format(time.RFC3339) + ": " + h
					switch f {
					case feeds.EDL, feeds.Hosts, feeds.Squid:
						if v == listed && !mine && !anyMatches(over, h) {
							t.Errorf("%s is listed, but the proxy says %s/%s (%s) and the header does not say so", where, d.Vendor, d.Action, d.RuleName)
						}
						if v != listed && mine && !anyMatches(skipped, h) {
							t.Errorf("%s is not listed, but the proxy says %s (%s) and the header does not say why", where, d.Action, d.RuleName)
						}
					default:
						if v != unlisted && (v == sinkholed) != (d.Action == rules.Block) && !anyMatches(over, h) {
							t.Errorf("%s reads as %v, but the proxy says %s (%s) and the header does not say so", where, v, d.Action, d.RuleName)
						}
						want := passed
						if a == rules.Block {
							want = sinkholed
						}
						// An exception's line matches the names below it too, which
						// the header reports as over-matched.
						if mine && v != want && !anyMatches(skipped, h) && !anyMatches(over, h) {
							t.Errorf("%s reads as %v, but the proxy says %s (%s) and the header does not say why", where, v, d.Action, d.RuleName)
						}
					}
				}
			}
		}
	}
}
