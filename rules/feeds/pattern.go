package feeds

import (
	"fmt"
	"strings"

	"github.com/feedgate/feedgate/rules"
)

// pat is a parsed host pattern, with the same meaning as in the rules
// package: the name sets below are what the proxy matches, and every
// comparison between patterns here is a comparison of those sets.
type pat struct {
	kind rules.PatternKind
	// key is the exact host, the domain, the suffix of "*.suffix", or the
	// parent of a label wildcard.
	key string
	// pre and suf are the literal parts of a label wildcard's label.
	pre, suf string
}

// parsePat parses a pattern the rules package has validated already, so it
// only splits it.
func parsePat(s string, kind rules.PatternKind) (pat, error) {
	switch kind {
	case rules.PatternExact, rules.PatternDomain:
		return pat{kind: kind, key: s}, nil
	case rules.PatternSuffix:
		if key, ok := strings.CutPrefix(s, "*."); ok {
			return pat{kind: kind, key: key}, nil
		}
	case rules.PatternLabel:
		label, parent, ok := strings.Cut(s, ".")
		pre, suf, star := strings.Cut(label, "*")
		if ok && star {
			return pat{kind: kind, key: parent, pre: pre, suf: suf}, nil
		}
	}
	return pat{}, fmt.Errorf("host pattern %q is not of kind %v", s, kind)
}

func (p pat) String() string {
	switch p.kind {
	case rules.PatternSuffix:
		return "*." + p.key
	case rules.PatternLabel:
		return p.pre + "*" + p.suf + "." + p.key
	}
	return p.key
}

// below reports whether name is strictly below parent.
func below(name, parent string) bool {
	return len(name) > len(parent) && strings.HasSuffix(name, parent) && name[len(name)-len(parent)-1] == '.'
}

func atOrBelow(name, parent string) bool { return name == parent || below(name, parent) }

// matches reports whether host (canonical, no trailing dot) is one of p's
// names.
func (p pat) matches(host string) bool {
	switch p.kind {
	case rules.PatternExact:
		return host == p.key
	case rules.PatternDomain:
		return atOrBelow(host, p.key)
	case rules.PatternSuffix:
		return below(host, p.key)
	}
	if !below(host, p.key) {
		return false
	}
	label := host[:len(host)-len(p.key)-1]
	return !strings.Contains(label, ".") && len(label) > len(p.pre)+len(p.suf) &&
		strings.HasPrefix(label, p.pre) && strings.HasSuffix(label, p.suf)
}

// covers reports whether every name of q is a name of p. It may answer
// false for two label wildcards where one does cover the other in a way
// their literal parts do not show, never true when p does not cover q.
func (p pat) covers(q pat) bool {
	switch p.kind {
	case rules.PatternExact:
		return q.kind == rules.PatternExact && q.key == p.key
	case rules.PatternDomain:
		// Every kind's names are the key or names below it.
		return atOrBelow(q.key, p.key)
	case rules.PatternSuffix:
		switch q.kind {
		case rules.PatternExact, rules.PatternDomain:
			return below(q.key, p.key)
		}
		// q's names are strictly below q.key.
		return atOrBelow(q.key, p.key)
	}
	switch q.kind {
	case rules.PatternExact:
		return p.matches(q.key)
	case rules.PatternLabel:
		return q.key == p.key && strings.HasPrefix(q.pre, p.pre) && strings.HasSuffix(q.suf, p.suf)
	}
	// Names at any depth never fit in one label.
	return false
}

// probeChars are the labels tried when a pattern needs a sample host. A
// one-character label can never match a label wildcard (which needs a
// literal character and at least one more), so only an exact or domain
// pattern of that very name can get in the way.
const probeChars = "0123456789abcdefghijklmnopqrstuvwxyz"

// probe returns a host that is one of q's names and that no pattern in
// others matches unless it covers q: a host that gets the answer every
// name of q gets, except names that a more specific pattern of others
// decides. ok is false if every candidate is taken.
func probe(q pat, others []pat) (host string, ok bool) {
	fits := func(h string) bool {
		for _, o := range others {
			if o.matches(h) && !o.covers(q) {
				return false
			}
		}
		return true
	}
	switch q.kind {
	case rules.PatternExact, rules.PatternDomain:
		// A domain stands for its apex here; callers split it.
		return q.key, fits(q.key)
	}
	for _, c := range probeChars {
		h := string(c) + "." + q.key
		if q.kind == rules.PatternLabel {
			h = q.pre + string(c) + q.suf + "." + q.key
		}
		if fits(h) {
			return h, true
		}
	}
	return "", false
}
