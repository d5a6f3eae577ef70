package rules

import (
	"sort"
	"strings"
)

// Outcome is one combination of class, deciding rule and action that a
// decision of a policy can have: one series of a per-decision counter.
type Outcome struct {
	Class int // index into Policy.Classes
	// Rule is the index of the deciding rule in Policy.Rules, -1 for the
	// default action, or NoSNIRule for the tunnel_without_sni floor.
	Rule int
	// Action is the action in force: in report mode a block is a log, as
	// Decide reports it.
	Action Action
}

// Outcomes returns every outcome that Decide or DecideTunnel can give
// under p, each once, sorted by class, then rule (the default action
// first, the tunnel_without_sni floor last), then action. Metrics create
// their series from it when a policy is loaded, so that rate() sees the
// first request of each.
//
// It is found from the compiled catalog and rules, not by deciding sample
// hosts, and it leaves out neither instants nor clients: a rule counts
// whatever its window and client groups, and whether or not an earlier
// rule always decides first. A rule that selects every class, or a vendor
// and categories, gives an outcome for each of those classes. A rule with
// a host list gives one for each class that a host of its patterns can be
// classified into on some port and path, none/none included when some
// host of a pattern is in no catalog entry on some port or path (see
// hostMatcher.patternClasses), and every signature's class when some host
// is in none or only in a domain's fallback, where a signature on the
// path decides. The tunnel_without_sni floor gives one for
// each class with an outcome whose action is less strict than the floor.
func (p *Policy) Outcomes() []Outcome {
	seen := map[Outcome]bool{}
	add := func(class, rule int, a Action) {
		a, _ = p.effective(a)
		seen[Outcome{Class: class, Rule: rule, Action: a}] = true
	}
	for c := range p.Classes {
		add(c, -1, p.DefaultAction)
	}
	for i, r := range p.Rules {
		for c := range p.Classes {
			if r.all || r.classes[c] {
				add(c, i, r.Action)
			}
		}
		for _, hp := range r.hostList {
			p.catalog.patternClasses(hp, func(c int32, weak bool) {
				add(int(c), i, r.Action)
				if weak && p.sigs != nil {
					for _, s := range p.sigs.sigs {
						add(int(s.class), i, r.Action)
					}
				}
			})
		}
	}
	// DecideTunnel raises a decision whose action in force is less strict
	// than the floor as written: in report mode a floor of block raises a
	// log, even a reported block, to a reported block of its own.
	raised := map[int]bool{}
	for o := range seen {
		if o.Action < p.TunnelWithoutSNI {
			raised[o.Class] = true
		}
	}
	for c := range raised {
		add(c, NoSNIRule, p.TunnelWithoutSNI)
	}

	out := make([]Outcome, 0, len(seen))
	for o := range seen {
		out = append(out, o)
	}
	slot := func(rule int) int {
		if rule == NoSNIRule {
			return len(p.Rules)
		}
		return rule
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch {
		case a.Class != b.Class:
			return a.Class < b.Class
		case a.Rule != b.Rule:
			return slot(a.Rule) < slot(b.Rule)
		}
		return a.Action < b.Action
	})
	return out
}

// classSink receives the classes patternClasses finds; weak marks a
// class that only a domain's fallback gave, or none (0), which a
// signature on the request's path overrides (see Policy.classOf).
type classSink func(class int32, weak bool)

// candidateList is a list of targets in the order match tries them, and
// whether every host of the region being looked at reaches the list (sure)
// or only some may (a label wildcard that some of its labels match).
type candidateList struct {
	targets []target
	sure    bool
}

// reach adds the class of every target that a request can land on when
// its host's candidates are lists: each target up to the first that fits
// every port and path of a list that every host reaches, and none (class
// 0) if there is no such target. A refined target before it fits some
// requests, and is taken for them.
func reach(lists []candidateList, add classSink) {
	for _, l := range lists {
		for _, t := range l.targets {
			add(t.class, t.fallback)
			if l.sure && t.ports.any() && t.path == "" {
				return
			}
		}
	}
	add(0, true)
}

// sure marks target lists that every host of a region reaches.
func sure(lists [][]target) []candidateList {
	out := make([]candidateList, len(lists))
	for i, l := range lists {
		out[i] = candidateList{targets: l, sure: true}
	}
	return out
}

// lineage returns the nodes of name's suffixes that the tree has, from the
// shortest ("com") to the longest, and whether the last one is name
// itself.
func (m *hostMatcher) lineage(name string) (nodes []*node, whole bool) {
	n := &m.root
	for end := len(name); end > 0; {
		start := strings.LastIndexByte(name[:end], '.') + 1
		if n = n.children[name[start:end]]; n == nil {
			return nodes, false
		}
		nodes = append(nodes, n)
		if start == 0 {
			return nodes, true
		}
		end = start - 1
	}
	return nodes, false
}

// ancestorLists returns the candidates of a host below the last of nodes
// (its deepest ancestor in the tree) that is neither in the tree nor
// matched by a label wildcard: the suffixes and then the domains of its
// ancestors, deepest first.
func ancestorLists(nodes []*node) []candidateList {
	var out []candidateList
	for i := len(nodes) - 1; i >= 0; i-- {
		out = append(out, candidateList{targets: nodes[i].suffix, sure: true})
	}
	for i := len(nodes) - 1; i >= 0; i-- {
		out = append(out, candidateList{targets: nodes[i].domain, sure: true})
	}
	return out
}

// covers reports whether every label g matches is a label o matches too.
// It may answer false where the literal parts do not show it.
func (g *labelGlob) covers(o *labelGlob) bool {
	return strings.HasPrefix(o.prefix, g.prefix) && strings.HasSuffix(o.suffix, g.suffix)
}

// overlaps reports whether some label matches both g and o: the longer
// literal prefix, many characters, then the longer literal suffix does
// unless their prefixes or their suffixes disagree.
func (g *labelGlob) overlaps(o *labelGlob) bool {
	pre := strings.HasPrefix(g.prefix, o.prefix) || strings.HasPrefix(o.prefix, g.prefix)
	suf := strings.HasSuffix(g.suffix, o.suffix) || strings.HasSuffix(o.suffix, g.suffix)
	return pre && suf
}

// patternClasses adds every class that a host of p can be classified into
// on some port and path, and 0 (none) if a host of p can be in no catalog
// entry. The hosts of p fall into regions, each with its own candidate
// lists: the names of the tree, which match decides exactly; the labels
// directly below a name of the tree, by the first label wildcard of that
// name that matches them; and every other host, which only the suffixes
// and domains above it match.
//
// The answer is exact for an exact host. For wildcards it may add a class
// that no host reaches, where label wildcards overlap in ways their literal
// parts do not show; it never leaves out a class that a host reaches.
func (m *hostMatcher) patternClasses(p HostPattern, add classSink) {
	if p.Kind == PatternExact || p.Kind == PatternDomain {
		reach(sure(m.candidates(p.Key)), add)
		if p.Kind == PatternExact {
			return
		}
	}
	nodes, whole := m.lineage(p.Key)
	if !whole {
		// Nothing in the tree at or below p.Key: every host of p is at
		// least two labels below the deepest ancestor the tree has.
		reach(ancestorLists(nodes), add)
		return
	}
	key := nodes[len(nodes)-1]
	if p.Kind == PatternLabel {
		label := labelGlob{prefix: p.Prefix, suffix: p.Suffix}
		for name, c := range key.children {
			if matchesLabel(&label, name) {
				reach(sure(m.candidates(c.key)), add)
			}
		}
		m.labelsBelow(nodes, &label, add)
		return
	}
	// "*.key" and the names below a domain: every host at any depth.
	for _, c := range key.children {
		m.subtree(append(nodes[:len(nodes):len(nodes)], c), add)
	}
	m.labelsBelow(nodes, &labelGlob{}, add)
}

// subtree adds the classes of the last of nodes and of every host below
// it.
func (m *hostMatcher) subtree(nodes []*node, add classSink) {
	n := nodes[len(nodes)-1]
	reach(sure(m.candidates(n.key)), add)
	for _, c := range n.children {
		m.subtree(append(nodes[:len(nodes):len(nodes)], c), add)
	}
	m.labelsBelow(nodes, &labelGlob{}, add)
}

// labelsBelow adds the classes of the hosts one label below the last of
// nodes whose label q matches (the empty glob: every label) and that are
// not in the tree, by the first of its label wildcards that matches them,
// or none. With the empty glob, the last region, labels that no wildcard
// matches, stands for the hosts two or more labels below as well: only the
// suffixes and domains above match them too.
func (m *hostMatcher) labelsBelow(nodes []*node, q *labelGlob, add classSink) {
	n := nodes[len(nodes)-1]
	rest := ancestorLists(nodes)
	for j := range n.globs {
		g := &n.globs[j]
		if !g.overlaps(q) || coveredBefore(n.globs[:j], g, q) {
			continue // no label of q has g as its first wildcard
		}
		lists := []candidateList{{targets: g.targets, sure: true}}
		for k := j + 1; k < len(n.globs); k++ {
			o := &n.globs[k]
			if o.overlaps(g) && o.overlaps(q) {
				lists = append(lists, candidateList{targets: o.targets, sure: o.covers(g) || o.covers(q)})
			}
		}
		reach(append(lists, rest...), add)
	}
	if !coveredBefore(n.globs, q, q) {
		reach(rest, add) // a label of q that no wildcard matches
	}
}

// coveredBefore reports whether one of globs covers g or q, so that no
// label of q that g matches gets past them.
func coveredBefore(globs []labelGlob, g, q *labelGlob) bool {
	for i := range globs {
		if globs[i].covers(g) || globs[i].covers(q) {
			return true
		}
	}
	return false
}
