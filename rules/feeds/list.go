package feeds

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// Item is one host pattern of a list.
type Item struct {
	// Pattern is the host pattern of the catalog or a rule; a catalog
	// domain whose apex and names below it are both in the list is one
	// item of kind domain.
	Pattern rules.HostPattern
	// Category and Rule say why the pattern is in the list: the category
	// its names are classified into, and the name of the rule that decides
	// them ("default" for the default action).
	Category string
	Rule     string
	// Ports and Path are set only for the refined catalog entries that
	// Refined returns: the entry's port range or path prefix.
	Ports, Path string
}

// region is one host pattern with the answer its names get at an instant.
// A catalog domain is split into two regions, its apex (exact) and the
// names below it (suffix), because more specific patterns and rules can
// give them different answers.
type region struct {
	pat rules.HostPattern
	// domain is set when the region is half of a catalog domain.
	domain bool
	// ports and path are the refinement of a refined catalog entry.
	ports, path string
	d           rules.Decision
}

// snapshot is every pattern of a policy, decided at one instant.
type snapshot struct {
	p  *rules.Policy
	at time.Time
	// regions are the unrefined patterns of the catalogs and of the rules
	// in force, one per distinct pattern, sorted by pattern.
	regions []region
	// refined are the catalog entries with ports or paths.
	refined []region
	pats    []rules.HostPattern // regions' patterns, for probes
}

// newSnapshot decides every pattern of p at at.
//
// Each answer is the proxy's own: Policy.Decide for a probe host, a name of
// the pattern chosen so that no other pattern matches it unless that
// pattern covers the whole of this one (see probe). The probe therefore
// gets the answer that every name of the pattern gets, bar the names of
// more specific patterns, which are regions of their own. Host rules, rule
// order, report mode and catalog precedence are all accounted for by
// Decide itself, rather than re-derived here. Decisions are for port 0 (no
// port) and no path, so refined entries never match a probe; and for a
// client in no client group, as ClassAction: rules limited by clients do
// not apply to a name list that every client shares.
//
// Two label wildcards on one parent that overlap without one covering the
// other can leave the names they share decided by neither probe; no
// catalog does this today.
func newSnapshot(p *rules.Policy, at time.Time) (*snapshot, error) {
	s := &snapshot{p: p, at: at}
	seen := map[rules.HostPattern]int{}
	add := func(q rules.HostPattern, domain bool) {
		if i, ok := seen[q]; ok {
			s.regions[i].domain = s.regions[i].domain || domain
			return
		}
		seen[q] = len(s.regions)
		s.regions = append(s.regions, region{pat: q, domain: domain})
	}
	for _, cp := range p.CatalogPatterns() {
		q := cp.Pattern
		switch {
		case cp.Refined:
			s.refined = append(s.refined, region{pat: q, ports: cp.Ports, path: cp.Path})
		case q.Kind == rules.PatternDomain:
			add(rules.HostPattern{Kind: rules.PatternExact, Key: q.Key}, true)
			add(rules.HostPattern{Kind: rules.PatternSuffix, Key: q.Key}, true)
		default:
			add(q, false)
		}
	}
	for _, r := range p.Rules {
		if !inForce(r, at) {
			continue
		}
		for _, hp := range r.HostPatterns() {
			add(hp, false)
		}
	}
	sort.Slice(s.regions, func(i, j int) bool { return lessPat(s.regions[i].pat, s.regions[j].pat) })
	s.pats = make([]rules.HostPattern, len(s.regions))
	for i := range s.regions {
		s.pats[i] = s.regions[i].pat
	}
	for i := range s.regions {
		d, err := s.decide(s.regions[i].pat, 0, "")
		if err != nil {
			return nil, err
		}
		s.regions[i].d = d
	}
	for i := range s.refined {
		r := &s.refined[i]
		// The lowest port of the range stands for all of it: a range is one
		// catalog entry, with one class.
		port := 0
		if r.ports != "" {
			lo, _, _ := strings.Cut(r.ports, "-")
			n, err := strconv.Atoi(lo)
			if err != nil {
				return nil, fmt.Errorf("catalog entry %s: port range %q: %w", r.pat, r.ports, err)
			}
			port = n
		}
		d, err := s.decide(r.pat, port, r.path)
		if err != nil {
			return nil, err
		}
		r.d = d
	}
	return s, nil
}

// decide returns the decision for the names of q that no more specific
// pattern claims.
func (s *snapshot) decide(q rules.HostPattern, port int, path string) (rules.Decision, error) {
	h, ok := probe(q, s.pats)
	if !ok {
		return rules.Decision{}, fmt.Errorf("no sample host for pattern %s: every candidate is taken by another pattern", q)
	}
	return s.p.Decide(rules.Request{Host: h, Port: port, Path: path, Time: s.at}), nil
}

// inForce reports whether r can decide anything at t for a client in no
// client group.
func inForce(r *rules.Rule, t time.Time) bool {
	return (r.From.IsZero() || !t.Before(r.From)) && (r.Until.IsZero() || t.Before(r.Until)) && len(r.Clients()) == 0
}

// lessPat orders patterns by their text, then kind, so that an apex comes
// before the suffix of the same domain.
func lessPat(a, b rules.HostPattern) bool {
	if as, bs := a.String(), b.String(); as != bs {
		return as < bs
	}
	return a.Kind < b.Kind
}

// items returns the regions of vendor whose action is action, as items: the
// two halves of a catalog domain that are both in the list are one domain
// item again.
func (s *snapshot) items(vendor string, action rules.Action) []Item {
	in := func(r region) bool { return r.d.Vendor == vendor && r.d.Action == action }
	halves := map[string]int{} // domain → how many of its halves are in
	for _, r := range s.regions {
		if r.domain && in(r) {
			halves[r.pat.Key]++
		}
	}
	var out []Item
	for _, r := range s.regions {
		if !in(r) {
			continue
		}
		it := Item{Pattern: r.pat, Category: r.d.Category, Rule: r.d.RuleName}
		if r.domain && halves[r.pat.Key] == 2 {
			if r.pat.Kind == rules.PatternSuffix {
				continue // the apex stands for both
			}
			it.Pattern.Kind = rules.PatternDomain
		}
		out = append(out, it)
	}
	return out
}

// refinedItems returns the refined entries of vendor whose action on a
// fitting port or path is action.
func (s *snapshot) refinedItems(vendor string, action rules.Action) []Item {
	var out []Item
	for _, r := range s.refined {
		if r.d.Vendor == vendor && r.d.Action == action {
			out = append(out, Item{Pattern: r.pat, Category: r.d.Category, Rule: r.d.RuleName, Ports: r.ports, Path: r.path})
		}
	}
	return out
}

// checkArgs checks the vendor and action that List, Refined and Write take.
func checkArgs(p *rules.Policy, vendor string, action rules.Action) error {
	if action.String() == "invalid" {
		return fmt.Errorf("invalid action %d: want allow, log or block", action)
	}
	var known []string
	for _, c := range p.Catalogs {
		if c.Vendor == vendor {
			return nil
		}
		known = append(known, c.Vendor)
	}
	if len(known) == 0 {
		return fmt.Errorf("unknown vendor %q: policy %s loads no catalog", vendor, p.Name)
	}
	return fmt.Errorf("unknown vendor %q (known: %s)", vendor, strings.Join(known, ", "))
}

// List returns the host patterns of vendor whose names get action at t, in
// the order of their text, each once.
//
// A pattern is a catalog pattern, or a host pattern of a rule in force at
// t; its action is the proxy's answer for its names (see newSnapshot for
// how it is found). So a catalog pattern is listed under the action of its
// class (Policy.ClassAction) unless a rule on explicit hosts decides
// otherwise; the host patterns of such a rule are listed under the answer
// the proxy gives for them, which is the rule's action when it decides
// them. In the default policy, from the updates cut-off, the Threat
// Intelligence hosts opentip.kaspersky.com and tip.kaspersky.com are in
// the allow list and not in the block list, although the domain
// kaspersky.com that contains them is blocked.
//
// A catalog domain is listed as a domain item (the name and every name
// below it) when its apex and the names below it get the same action, and
// as an exact item for its apex and a suffix item ("*.domain") for the
// rest otherwise.
//
// Catalog entries with ports or paths are never listed: a DNS name or a
// firewall's domain entry cannot carry a port or path, and listing their
// host would give every port and path the entry's action. Refined returns
// them. Lists are about names, so they are written for a client in no
// client group.
func List(p *rules.Policy, vendor string, action rules.Action, at time.Time) ([]Item, error) {
	if err := checkArgs(p, vendor, action); err != nil {
		return nil, err
	}
	s, err := newSnapshot(p, at)
	if err != nil {
		return nil, err
	}
	return s.items(vendor, action), nil
}

// Refined returns the catalog entries of vendor with a port range or path
// prefix whose requests get action at t (on a fitting port and path), with
// Ports and Path set. No list can express them; Write counts them as
// skipped.
func Refined(p *rules.Policy, vendor string, action rules.Action, at time.Time) ([]Item, error) {
	if err := checkArgs(p, vendor, action); err != nil {
		return nil, err
	}
	s, err := newSnapshot(p, at)
	if err != nil {
		return nil, err
	}
	return s.refinedItems(vendor, action), nil
}
