package rules

import (
	"sort"
	"strings"
)

// target is what a matched pattern points at: a class in the catalog, or just
// "matched" for a rule's own host list.
type target struct {
	class   int32
	ports   portRange
	path    string // path prefix; "" matches every path
	pattern string // the pattern as written, for explain
}

// refinedBefore orders targets on one pattern from most to least specific:
// longer path prefix first, then a port range before any port.
func refinedBefore(a, b target) bool {
	if len(a.path) != len(b.path) {
		return len(a.path) > len(b.path)
	}
	return !a.ports.any() && b.ports.any()
}

func (t *target) matches(port int, path string) bool {
	return t.ports.contains(port) && strings.HasPrefix(path, t.path)
}

// labelGlob is one label-wildcard pattern under a parent name.
type labelGlob struct {
	prefix, suffix string
	targets        []target
}

// hostMatcher answers "which pattern, most specific first, matches this host"
// with map lookups walked label by label: its cost depends on the number of
// labels in the host, never on the number of patterns.
type hostMatcher struct {
	exact  map[string][]target
	label  map[string][]labelGlob // parent name → wildcard labels under it
	suffix map[string][]target    // "*.suffix" patterns, keyed by suffix
	domain map[string][]target    // registrable domains (self and below), least specific
}

func newHostMatcher() *hostMatcher {
	return &hostMatcher{
		exact:  map[string][]target{},
		label:  map[string][]labelGlob{},
		suffix: map[string][]target{},
		domain: map[string][]target{},
	}
}

// add registers a pattern. It reports false if the same pattern with the same
// ports and path was already added.
func (m *hostMatcher) add(p hostPattern, t target) bool {
	t.pattern = p.String()
	ins := func(list []target) ([]target, bool) {
		for _, o := range list {
			if o.ports == t.ports && o.path == t.path {
				return list, false
			}
		}
		list = append(list, t)
		sort.SliceStable(list, func(i, j int) bool { return refinedBefore(list[i], list[j]) })
		return list, true
	}
	var ok bool
	switch p.kind {
	case kindExact:
		m.exact[p.key], ok = ins(m.exact[p.key])
	case kindSuffix:
		m.suffix[p.key], ok = ins(m.suffix[p.key])
	case kindDomain:
		m.domain[p.key], ok = ins(m.domain[p.key])
	case kindLabel:
		globs := m.label[p.key]
		for i := range globs {
			if globs[i].prefix == p.prefix && globs[i].suffix == p.suffix {
				globs[i].targets, ok = ins(globs[i].targets)
				return ok
			}
		}
		var list []target
		list, ok = ins(list)
		globs = append(globs, labelGlob{prefix: p.prefix, suffix: p.suffix, targets: list})
		// A glob with more literal characters is the more specific one.
		sort.SliceStable(globs, func(i, j int) bool {
			return len(globs[i].prefix)+len(globs[i].suffix) > len(globs[j].prefix)+len(globs[j].suffix)
		})
		m.label[p.key] = globs
	}
	return ok
}

func pick(list []target, port int, path string) *target {
	for i := range list {
		if list[i].matches(port, path) {
			return &list[i]
		}
	}
	return nil
}

// match returns the most specific target for a canonical host, or nil.
// Precedence: exact host, then label wildcards on the parent, then "*.suffix"
// from the longest suffix to the shortest, then registrable domains. A pattern
// whose ports or path do not fit falls through to the next, less specific one.
//
// Map lookups use string(b) conversions, which the compiler performs without
// allocating.
func (m *hostMatcher) match(host []byte, port int, path string) *target {
	if t := pick(m.exact[string(host)], port, path); t != nil {
		return t
	}
	if len(m.label) > 0 {
		if dot := indexByte(host, '.'); dot > 0 {
			label := host[:dot]
			for i := range m.label[string(host[dot+1:])] {
				g := &m.label[string(host[dot+1:])][i]
				if len(label) > len(g.prefix)+len(g.suffix) &&
					hasPrefix(label, g.prefix) && hasSuffix(label, g.suffix) {
					if t := pick(g.targets, port, path); t != nil {
						return t
					}
				}
			}
		}
	}
	if len(m.suffix) > 0 {
		for i := 0; i < len(host); i++ {
			if host[i] == '.' {
				if t := pick(m.suffix[string(host[i+1:])], port, path); t != nil {
					return t
				}
			}
		}
	}
	if len(m.domain) > 0 {
		if t := pick(m.domain[string(host)], port, path); t != nil {
			return t
		}
		for i := 0; i < len(host); i++ {
			if host[i] == '.' {
				if t := pick(m.domain[string(host[i+1:])], port, path); t != nil {
					return t
				}
			}
		}
	}
	return nil
}

// uniformClass reports the class host lands in if that class does not
// depend on the port or path; ok is false if it may (or the host is not in
// the catalog). It is for load-time checks, not the request path.
func (m *hostMatcher) uniformClass(host []byte) (class int32, ok bool) {
	var levels [][]target
	levels = append(levels, m.exact[string(host)])
	if dot := indexByte(host, '.'); dot > 0 {
		label := host[:dot]
		for _, g := range m.label[string(host[dot+1:])] {
			if len(label) > len(g.prefix)+len(g.suffix) && hasPrefix(label, g.prefix) && hasSuffix(label, g.suffix) {
				levels = append(levels, g.targets)
			}
		}
	}
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			levels = append(levels, m.suffix[string(host[i+1:])])
		}
	}
	levels = append(levels, m.domain[string(host)])
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			levels = append(levels, m.domain[string(host[i+1:])])
		}
	}
	// Walk in precedence order: the first level with an unrefined target
	// decides, unless a refined target before it could pick another class.
	found := int32(-1)
	for _, list := range levels {
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

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }
func hasSuffix(b []byte, s string) bool { return len(b) >= len(s) && string(b[len(b)-len(s):]) == s }
