package rules

import (
	"maps"
	"slices"
	"testing"
)

// TestPatternClassesBruteForce compares patternClasses with the classes
// that match gives every host of a pattern in a universe of hosts built
// from the catalog's own labels and a few others, on every port that
// matters: overlapping label wildcards, refined targets at every level,
// and entries below the pattern's key.
func TestPatternClassesBruteForce(t *testing.T) {
	m := newHostMatcher()
	entries := []struct {
		pattern string
		class   int32
		port    uint16 // 0: any
	}{
		{"a.ex.test", 1, 0},
		{"a*.ex.test", 2, 443},
		{"ab*.ex.test", 3, 0},
		{"*b.ex.test", 4, 0},
		{"*.ex.test", 5, 80},
		{"*.b.ex.test", 6, 0},
		{"=ex.test", 7, 0},
		{"x.y.b.ex.test", 8, 0},
		{"c*d.ex.test", 9, 0},
	}
	for _, e := range entries {
		p := mustPattern(t, e.pattern)
		m.add(p, target{class: e.class, ports: PortRange{e.port, e.port}})
	}
	m.freeze()

	labels := []string{"a", "b", "ab", "abb", "abc", "abcz", "ac", "ba", "bb", "zb", "z", "zz", "q", "qq", "x", "y", "cd", "ccd", "cx", "cxd", "cdd", "dd", "xd", "aab", "cb", "ad", "abd", "cxb", "cxz"}
	var hosts []string
	for _, l1 := range labels {
		hosts = append(hosts, l1+".ex.test")
		for _, l2 := range labels {
			hosts = append(hosts, l1+"."+l2+".ex.test")
			for _, l3 := range []string{"x", "q", "ab"} {
				hosts = append(hosts, l3+"."+l1+"."+l2+".ex.test")
			}
		}
	}
	hosts = append(hosts, "ex.test", "other.test", "x.other.test")

	for _, s := range []string{"*.ex.test", "a*.ex.test", "*b.ex.test", "ab*.ex.test", "abc*.ex.test", "z*.ex.test",
		"c*.ex.test", "*d.ex.test", "cx*.ex.test", "*.b.ex.test", "q*.b.ex.test", "a.ex.test", "zz.ex.test",
		"*.zz.ex.test", "*.y.b.ex.test", "*.other.test", "=ex.test"} {
		p := mustPattern(t, s)
		got := map[int32]bool{}
		m.patternClasses(p, func(c int32, _ bool) { got[c] = true })
		want := map[int32]bool{}
		for _, h := range hosts {
			if !p.Matches(h) {
				continue
			}
			for _, port := range []int{0, 80, 443} {
				tg, _ := match(m, h, port, "")
				c := int32(0)
				if tg != nil {
					c = tg.class
				}
				want[c] = true
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("patternClasses(%s) = %v; the hosts of the pattern are in %v", s, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
	}
}
