package rules

import (
	"maps"
	"math/bits"
	"slices"
	"unsafe"
)

// suffixTable indexes every node of a hostMatcher's tree by its parent and
// a hash of its label, so that the request path probes one flat table per
// level with a hash computed from a word or two of the label, instead of a
// map lookup that hashes and compares strings per level. It is built once,
// after the last pattern is added, and only read afterwards.
type suffixTable struct {
	slots []suffixSlot // open addressing, linear probing, at most half full
	mask  uint64
	nodes []*node // by node.index; nodes[0] is the root
}

// suffixSlot maps (parent, hash of label) to a node. A hash can collide, so
// the walk compares the deepest node's full name with the host once at the
// end: parents are part of the key, so if that name is right, so is every
// ancestor on the chain; if it is wrong, the caller falls back to the map
// walk. A collision therefore costs time, never a wrong answer.
type suffixSlot struct {
	hash   uint64
	parent int32
	node   int32 // 0: empty slot
}

// freeze builds the suffix table. The matcher must not change afterwards.
func (m *hostMatcher) freeze() {
	// Children are numbered in label order, not map order, so that the
	// table (and so the instructions a lookup takes) is the same in every
	// run.
	nodes := []*node{&m.root}
	parents := []int32{0}
	labels := []string{""}
	var number func(n *node)
	number = func(n *node) {
		for _, label := range slices.Sorted(maps.Keys(n.children)) {
			c := n.children[label]
			c.index = int32(len(nodes))
			nodes = append(nodes, c)
			parents = append(parents, n.index)
			labels = append(labels, label)
			number(c)
		}
	}
	number(&m.root)
	size := uint64(8)
	for size < 2*uint64(len(nodes)) {
		size *= 2
	}
	t := suffixTable{slots: make([]suffixSlot, size), mask: size - 1, nodes: nodes}
	for _, c := range nodes[1:] {
		label, parent := labels[c.index], parents[c.index]
		h := labelHash(label, 0, len(label))
		i := slotIndex(h, parent, t.mask)
		for t.slots[i].node != 0 {
			i = (i + 1) & t.mask
		}
		t.slots[i] = suffixSlot{hash: h, parent: parent, node: c.index}
	}
	m.table = t
}

func slotIndex(h uint64, parent int32, mask uint64) uint64 {
	return (h ^ uint64(parent)*0x9e3779b97f4a7c15) & mask
}

func (t *suffixTable) lookup(h uint64, parent int32) *node {
	for i := slotIndex(h, parent, t.mask); ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.node == 0 {
			return nil
		}
		if s.hash == h && s.parent == parent {
			return t.nodes[s.node]
		}
	}
}

// load64 reads 8 bytes of b at i, little-endian; the compiler turns it into
// one load.
func load64(s string, i int) uint64 {
	b := s[i : i+8]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

// labelHash hashes host[start:end], a label, from whole-word loads: a label
// of up to 8 bytes is read with one load that ends at the label's end (or
// starts at the host's start), longer ones word by word. The value depends
// only on the label's bytes, not on where it sits.
func labelHash(host string, start, end int) uint64 {
	n := end - start
	var w uint64
	switch {
	case n > 8:
		for i := start; i+8 < end; i += 8 {
			w = mix(w ^ load64(host, i))
		}
		w ^= load64(host, end-8)
	case end >= 8:
		// The label's bytes are the top n of the word that ends with it.
		w = load64(host, end-8) >> (64 - 8*n)
	case len(host) >= 8:
		w = load64(host, 0) << (64 - 8*end) >> (64 - 8*n)
	default:
		for i := end - 1; i >= start; i-- {
			w = w<<8 | uint64(host[i])
		}
	}
	return mix(w ^ uint64(n)<<59)
}

// maxLabels bounds the dots matchHashed records; real names have far fewer.
const maxLabels = 32

const (
	ones = 0x0101010101010101
	high = 0x8080808080808080
)

// dotBytes has the top bit set in each byte of w that is '.'.
func dotBytes(w uint64) uint64 {
	x := w ^ ('.' * ones)
	return ^((x&^high + ^uint64(high)) | x) & high
}

// plainBytes reports whether every byte of w is one canonicalHost keeps as
// it is: a lower-case letter, a digit, '-', '.' or '_'. Any other byte
// (upper case, non-ASCII, '%', ':', ...) makes canonicalHost rewrite or
// refuse the host.
func plainBytes(w uint64) bool {
	// With every byte below 0x80, adding 0x80-c sets a byte's top bit iff
	// the byte is at least c, and no carry crosses bytes; a byte of 0x80
	// or more has its top bit set already, so w&high must be 0.
	// The allowed bytes are the ranges '-'..'9' (but '/') and '_'..'z'
	// (but '`').
	lowRange := (w + (0x80-'-')*ones) &^ (w + (0x80-'9'-1)*ones)
	highRange := (w + (0x80-'_')*ones) &^ (w + (0x80-'z'-1)*ones)
	slash, backtick := w^('/'*ones), w^('`'*ones)
	// A byte of slash or backtick is 0 where w has that byte: adding 0x7f
	// sets the top bit of every other byte.
	notSlash := (slash + 0x7f*ones) | slash
	notBacktick := (backtick + 0x7f*ones) | backtick
	return w&high == 0 && (lowRange&notSlash|highRange&notBacktick)&high == high
}

// walkStatus says whether a hashed walk produced an answer.
type walkStatus uint8

const (
	walkOK           walkStatus = iota
	walkNotCanonical            // the host must be rewritten (or refused) by canonicalHost first
	walkFallback                // use the map walk (a hash collision, or an overlong host)
)

// matchHashed is match (see there for the precedence) over the suffix
// table. With checkCanonical it also checks, in the same pass that finds
// the dots, that canonicalHost would take host as it is (see plainBytes,
// and plainLabels), and reports walkNotCanonical if it might not.
func matchHashed(m *hostMatcher, host string, port int, path string, checkCanonical bool) (best *target, rules uint64, st walkStatus) {
	if len(host) > maxHostLen {
		return nil, 0, walkFallback
	}
	// Positions of the dots; a host with more is left to the map walk.
	var dots [maxLabels]uint8
	nd, i := 0, 0
	for ; i+8 <= len(host); i += 8 {
		w := load64(host, i)
		if checkCanonical && !plainBytes(w) {
			return nil, 0, walkNotCanonical
		}
		for d := dotBytes(w); d != 0; d &= d - 1 {
			if nd == len(dots) {
				return nil, 0, walkFallback
			}
			dots[nd] = uint8(i + bits.TrailingZeros64(d)>>3)
			nd++
		}
	}
	if tail := len(host) - i; tail > 0 && len(host) >= 8 {
		// The last word overlaps the ones before it; its bytes already
		// seen are shifted out of the dot mask.
		w := load64(host, len(host)-8)
		if checkCanonical && !plainBytes(w) {
			return nil, 0, walkNotCanonical
		}
		for d := dotBytes(w) >> (64 - 8*tail) << (64 - 8*tail); d != 0; d &= d - 1 {
			if nd == len(dots) {
				return nil, 0, walkFallback
			}
			dots[nd] = uint8(len(host) - 8 + bits.TrailingZeros64(d)>>3)
			nd++
		}
	} else {
		for ; i < len(host); i++ {
			c := host[i]
			if checkCanonical && !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
				return nil, 0, walkNotCanonical
			}
			if c == '.' {
				if nd == len(dots) {
					return nil, 0, walkFallback
				}
				dots[nd] = uint8(i)
				nd++
			}
		}
	}
	if checkCanonical && !plainLabels(host, dots[:nd]) {
		return nil, 0, walkNotCanonical
	}

	w := walkState{port: port, path: path}
	t := &m.table
	var deepest *node
	deepStart := 0
	cur := int32(0)
	end := len(host)
	for k := nd - 1; k >= -1; k-- {
		start := 0
		if k >= 0 {
			start = int(dots[k]) + 1
		}
		n := t.lookup(labelHash(host, start, end), cur)
		if n == nil {
			break
		}
		cur, deepest, deepStart = n.index, n, start
		if k < 0 { // n is the host itself
			w.hostLevel(n)
			break
		}
		w.suffixLevel(n)
		if k == 0 && len(n.globs) > 0 {
			globLevel(&w, n, host[:start-1]) // n is the parent: the host is label.n
		}
		end = start - 1
	}
	if deepest != nil && host[deepStart:] != deepest.key {
		return nil, 0, walkFallback
	}
	return w.best(), w.rules, walkOK
}

// plainLabels reports whether a host of plain bytes, with dots at the
// positions in dots, is a name canonicalHost takes as it is: at most
// maxNameLen long, labels of 1 to maxLabelLen bytes, and a last label that
// does not start with a digit (which canonicalHost must check for an IPv4
// address or a number).
func plainLabels(host string, dots []uint8) bool {
	if host == "" || len(host) > maxNameLen {
		return false
	}
	start := 0
	for _, d := range dots {
		if n := int(d) - start; n == 0 || n > maxLabelLen {
			return false
		}
		start = int(d) + 1
	}
	n := len(host) - start
	return n > 0 && n <= maxLabelLen && (host[start] < '0' || host[start] > '9')
}

// asString views a host as a string without copying. The bytes are a
// canonical host in a request's stack buffer, which is not written while
// the view is in use, and the view is not kept beyond the walk.
func asString[H hostText](host H) string {
	if len(host) == 0 {
		return ""
	}
	if s, ok := any(host).(string); ok {
		return s
	}
	b := []byte(host)
	return unsafe.String(unsafe.SliceData(b), len(b))
}
