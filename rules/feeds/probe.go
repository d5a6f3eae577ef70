package feeds

import "github.com/feedgate/feedgate/rules"

// probeChars are the labels tried when a pattern needs a sample host. A
// one-character label can never match a label wildcard (which needs a
// literal character and at least one more), so only an exact or domain
// pattern of that very name can get in the way.
const probeChars = "0123456789abcdefghijklmnopqrstuvwxyz"

// probe returns a host that is one of q's names and that no pattern in
// others matches unless it covers q: a host that gets the answer every
// name of q gets, except names that a more specific pattern of others
// decides. ok is false if every candidate is taken.
func probe(q rules.HostPattern, others []rules.HostPattern) (host string, ok bool) {
	fits := func(h string) bool {
		for _, o := range others {
			if o.Matches(h) && !o.Covers(q) {
				return false
			}
		}
		return true
	}
	switch q.Kind {
	case rules.PatternExact, rules.PatternDomain:
		// A domain stands for its apex here; callers split it.
		return q.Key, fits(q.Key)
	}
	for _, c := range probeChars {
		h := string(c) + "." + q.Key
		if q.Kind == rules.PatternLabel {
			h = q.Prefix + string(c) + q.Suffix + "." + q.Key
		}
		if fits(h) {
			return h, true
		}
	}
	return "", false
}
