package rules

import (
	"slices"
	"sort"
	"strings"
)

// target is what a matched pattern points at: a class in the catalog, or just
// "matched" for a rule's own host list.
type target struct {
	class   int32
	ports   PortRange
	path    string // path prefix in normal form; "" matches every path, even a tunnel's
	pattern string // the pattern as written, for explain
	// fallback marks a catalog's domains: the guess for a host no entry
	// names, which a signature overrides (see Policy.classOf).
	fallback bool
}

// refinedBefore orders targets on one pattern from most to least specific:
// longer path prefix first ("/" before none), whole segments before a
// glob of the same text ("/buy" before "/buy*", which also matches
// "/buyer"), then a port range before any port.
func refinedBefore(a, b target) bool {
	if (a.path == "") != (b.path == "") {
		return b.path == ""
	}
	ak, ag := pathKey(a.path)
	bk, bg := pathKey(b.path)
	if len(ak) != len(bk) {
		return len(ak) > len(bk)
	}
	if ag != bg {
		return bg
	}
	return !a.ports.any() && b.ports.any()
}

// samePaths reports whether two catalog path prefixes match the same
// request paths.
func samePaths(a, b string) bool {
	if a == "" || b == "" {
		return a == b
	}
	ak, ag := pathKey(a)
	bk, bg := pathKey(b)
	return ak == bk && ag == bg
}

func (t *target) matches(port int, path string) bool {
	return t.ports.Contains(port) && (t.path == "" || underPath(path, t.path))
}

// labelGlob is one label-wildcard pattern under a parent name.
type labelGlob struct {
	prefix, suffix string
	targets        []target
	rules          uint64 // rules (bits) whose host list has this pattern
}

// hostText is a canonical host as a string (the request's own, when it was
// canonical already) or as bytes in a stack buffer (when it had to be
// rewritten); the matcher is instantiated for both so that neither copies
// nor allocates.
type hostText interface{ ~string | ~[]byte }

func matchesLabel[H hostText](g *labelGlob, label H) bool {
	return len(label) > len(g.prefix)+len(g.suffix) && hasPrefix(label, g.prefix) && hasSuffix(label, g.suffix)
}

// node is one name in a tree of reversed labels ("com" → "kaspersky" →
// "upd"). It holds every pattern keyed by its name: the name itself,
// wildcard labels directly under it, "*.name", and name as a registrable
// domain.
type node struct {
	children map[string]*node // keyed by the next label to the left
	exact    []target
	globs    []labelGlob
	suffix   []target
	domain   []target
	// Rules (bits) whose host list names this host exactly, or "*.name".
	ruleExact, ruleSuffix uint64
	key                   string // the full name, "" for the root
	index                 int32  // in suffixTable.nodes; 0 for the root
}

// hostMatcher answers "which pattern, most specific first, matches this
// host", and which rules' host lists match it, in one walk down the tree
// from the host's last label, with one lookup of a short label per level:
// its cost depends on the number of labels in the host, never on the
// number of patterns, and a name outside every catalogued domain stops
// after a lookup or two.
type hostMatcher struct {
	root  node
	table suffixTable // built by freeze; empty until then
}

func newHostMatcher() *hostMatcher { return &hostMatcher{} }

func (m *hostMatcher) node(name string) *node {
	n := &m.root
	full := name
	for name != "" {
		i := strings.LastIndexByte(name, '.')
		label := name[i+1:]
		if n.children == nil {
			n.children = map[string]*node{}
		}
		c := n.children[label]
		if c == nil {
			c = &node{key: full[i+1:]} // name is always a prefix of full
			n.children[label] = c
		}
		n = c
		if i < 0 {
			break
		}
		name = name[:i]
	}
	return n
}

func (n *node) glob(p HostPattern) *labelGlob {
	for i := range n.globs {
		if n.globs[i].prefix == p.Prefix && n.globs[i].suffix == p.Suffix {
			return &n.globs[i]
		}
	}
	n.globs = append(n.globs, labelGlob{prefix: p.Prefix, suffix: p.Suffix})
	// A glob with more literal characters is the more specific one.
	sort.SliceStable(n.globs, func(i, j int) bool {
		return len(n.globs[i].prefix)+len(n.globs[i].suffix) > len(n.globs[j].prefix)+len(n.globs[j].suffix)
	})
	return n.glob(p)
}

// add registers a pattern. It reports false if the same pattern with the same
// ports and path was already added.
func (m *hostMatcher) add(p HostPattern, t target) bool {
	t.pattern = p.String()
	ins := func(list *[]target) bool {
		for _, o := range *list {
			if o.ports == t.ports && samePaths(o.path, t.path) {
				return false
			}
		}
		*list = append(*list, t)
		sort.SliceStable(*list, func(i, j int) bool { return refinedBefore((*list)[i], (*list)[j]) })
		return true
	}
	n := m.node(p.Key)
	switch p.Kind {
	case PatternExact:
		return ins(&n.exact)
	case PatternSuffix:
		return ins(&n.suffix)
	case PatternDomain:
		return ins(&n.domain)
	}
	return ins(&n.glob(p).targets)
}

// addRule records that rule bit selects hosts matching p.
func (m *hostMatcher) addRule(p HostPattern, bit uint64) {
	n := m.node(p.Key)
	switch p.Kind {
	case PatternExact:
		n.ruleExact |= bit
	case PatternSuffix:
		n.ruleSuffix |= bit
	case PatternLabel:
		n.glob(p).rules |= bit
	}
}

func pick(list []target, port int, path string) *target {
	for i := range list {
		if list[i].matches(port, path) {
			return &list[i]
		}
	}
	return nil
}

// match returns the most specific target for a canonical host (or nil) and
// the bits of the rules whose host lists match it.
//
// Precedence: exact host, then label wildcards on the parent, then "*.suffix"
// from the longest suffix to the shortest, then registrable domains (longest
// first). A pattern whose ports or path do not fit falls through to the next,
// less specific one. The walk goes from the shortest suffix to the host
// itself, so a deeper fit replaces a shallower one of the same kind.
//
// The request path walks the suffix table (matchHashed); the map walk,
// matchTree, is the reference it falls back on.
func match[H hostText](m *hostMatcher, host H, port int, path string) (best *target, rules uint64) {
	if m.table.slots != nil {
		if t, r, st := matchHashed(m, asString(host), port, path, false); st == walkOK {
			return t, r
		}
	}
	return matchTree(m, host, port, path)
}

// matchTree is match by map lookups, one per label. Lookups use string(b)
// conversions, which the compiler performs without allocating.
func matchTree[H hostText](m *hostMatcher, host H, port int, path string) (best *target, rules uint64) {
	w := walkState{port: port, path: path}
	n := &m.root
	end := len(host)
	for end > 0 {
		start := lastIndexByte(host[:end], '.') + 1
		n = n.children[string(host[start:end])]
		if n == nil {
			break
		}
		if start == 0 { // n is the host itself
			w.hostLevel(n)
			break
		}
		w.suffixLevel(n)
		if len(n.globs) > 0 && lastIndexByte(host[:start-1], '.') < 0 {
			globLevel(&w, n, host[:start-1]) // n is the parent: the host is label.n
		}
		end = start - 1
	}
	return w.best(), w.rules
}

// walkState gathers one host's matches level by level, for both walks:
// the most specific target of each kind so far and the rules' bits.
type walkState struct {
	exact, glob, suffix, domain *target
	rules                       uint64
	port                        int
	path                        string
}

// hostLevel takes the node of the host itself.
func (w *walkState) hostLevel(n *node) {
	w.rules |= n.ruleExact
	w.exact = pick(n.exact, w.port, w.path)
	if t := pick(n.domain, w.port, w.path); t != nil {
		w.domain = t
	}
}

// suffixLevel takes the node of a proper suffix of the host; a deeper fit
// replaces a shallower one.
func (w *walkState) suffixLevel(n *node) {
	w.rules |= n.ruleSuffix
	if t := pick(n.suffix, w.port, w.path); t != nil {
		w.suffix = t
	}
	if t := pick(n.domain, w.port, w.path); t != nil {
		w.domain = t
	}
}

// globLevel takes the label wildcards of n, the host's parent, for the
// host's leftmost label.
func globLevel[H hostText](w *walkState, n *node, label H) {
	for j := range n.globs {
		g := &n.globs[j]
		if matchesLabel(g, label) {
			w.rules |= g.rules
			if w.glob == nil {
				w.glob = pick(g.targets, w.port, w.path)
			}
		}
	}
}

// best applies the precedence: exact host, label wildcard, "*.suffix",
// registrable domain.
func (w *walkState) best() *target {
	switch {
	case w.exact != nil:
		return w.exact
	case w.glob != nil:
		return w.glob
	case w.suffix != nil:
		return w.suffix
	}
	return w.domain
}

// uniformClass reports the class host lands in if that class does not
// depend on the port or path; ok is false if it may (or the host is not in
// the catalog). It is for load-time checks, not the request path.
func (m *hostMatcher) uniformClass(host []byte) (class int32, ok bool) {
	// The first level with an unrefined target decides, unless a refined
	// target before it could pick another class.
	found := int32(-1)
	for _, list := range m.candidates(string(host)) {
		for _, t := range list {
			if found >= 0 && t.class != found {
				return 0, false
			}
			found = t.class
			if t.ports.any() && t.path == "" {
				return found, true
			}
		}
	}
	return 0, false
}

// candidates returns the target lists whose patterns match host, in the
// order match tries them: exact, label wildcards, suffixes and domains,
// each deepest first. match picks the first target that fits the port and
// path. It is for load-time questions, not the request path.
func (m *hostMatcher) candidates(host string) [][]target {
	var exact, globs, suffixes, domains [][]target
	n := &m.root
	for end := len(host); end > 0; {
		start := lastIndexByte(host[:end], '.') + 1
		if n = n.children[host[start:end]]; n == nil {
			break
		}
		domains = append([][]target{n.domain}, domains...)
		if start == 0 {
			exact = append(exact, n.exact)
			break
		}
		suffixes = append([][]target{n.suffix}, suffixes...)
		if lastIndexByte(host[:start-1], '.') < 0 {
			for _, g := range n.globs {
				if matchesLabel(&g, host[:start-1]) {
					globs = append(globs, g.targets)
				}
			}
		}
		end = start - 1
	}
	return slices.Concat(exact, globs, suffixes, domains)
}

func lastIndexByte[H hostText](b H, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func hasPrefix[H hostText](b H, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }
func hasSuffix[H hostText](b H, s string) bool {
	return len(b) >= len(s) && string(b[len(b)-len(s):]) == s
}
