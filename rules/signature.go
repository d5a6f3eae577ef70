package rules

import (
	"fmt"
	"math/bits"
	"strings"
	"unicode/utf8"
)

// A catalog's host patterns recognise a vendor by who is asked; its
// signatures recognise it by what is asked. Update bases keep their folder
// structure and file names when an internal mirror, an Update Utility
// share or an OEM serves them, so a request for them is the vendor's
// update traffic on any host. A signature is a set of path patterns on the
// normal form of the request path (see NormalizePath), optionally narrowed
// to methods and ports.
//
// Pattern syntax, on whole segments and case-insensitively:
//
//	/bases/av/kdb/*     anchored at the root: the path starts with the segments
//	*/index/u0607g.xml  a leading "*/": any number of segments first (a mirror
//	                    puts the tree under a prefix of its own)
//	u0607g.xml, *.kdc   no '/': the file name, the path's last segment
//	a final "/*"        one or more segments: everything below the folder
//	"*" as a segment    exactly one segment ("*/bases/*/*/*.kdc")
//	"**" as a segment   zero or more segments
//	"*" in a segment    any characters within it ("kdb-*.xml.dif")
//
// A segment's trailing dots and spaces are ignored (Windows servers drop
// them), and the path ends at a '?' or '#' that decoding put there, as in
// underPath.
//
// Every pattern must hold a literal segment or a literal file extension:
// that is what a request path is first checked for (see sigIndex), so that
// the common request, which no signature matches, costs a table test per
// segment and no pattern match.

// Signature is one catalog signature, as written.
type Signature struct {
	Vendor, Category, Name string
	// Paths are the path patterns, as written; any of them matches.
	Paths []string
	// Methods and Ports narrow the signature; nil means any.
	Methods []string
	Ports   []string
	// File and Line are where the signature is defined.
	File string
	Line int
}

// sigTokKind is what one segment of a pattern matches.
type sigTokKind uint8

const (
	tokLit  sigTokKind = iota // a segment equal to text (lower case)
	tokGlob                   // a segment matching text, with '*' inside
	tokOne                    // any one segment
	tokAny                    // zero or more segments
)

type sigTok struct {
	kind sigTokKind
	text string
	// pre and suf are a glob's literal text before its first '*' and
	// after its last: checked first, they rule out most segments
	// without the backtracking of globFold.
	pre, suf string
}

// sigPattern is one compiled path pattern of a signature.
type sigPattern struct {
	sig  int32 // index into sigMatcher.sigs
	text string
	toks []sigTok
	// reqLits and reqExt are the index bits a path must have for the
	// pattern to match (see sigIndex).
	reqLits, reqExt uint64
}

// compiledSig is a signature's class and narrowing.
type compiledSig struct {
	class   int32
	name    string
	methods []string
	ports   []PortRange
}

// sigMatcher holds every signature of a policy, in catalog order.
type sigMatcher struct {
	sigs []compiledSig
	pats []sigPattern
	idx  sigIndex
	// always is set when some pattern requires nothing the index holds
	// (it ran out of bits), so every path must be tried; alwaysSet has
	// those patterns.
	always    bool
	alwaysSet patSet
	// byLit and byExt are the patterns found by each literal and
	// extension bit (see add).
	byLit, byExt [64]patSet
}

// parseSigPattern compiles a path pattern; see the syntax above.
func parseSigPattern(s string) ([]sigTok, error) {
	bad := func(why string) ([]sigTok, error) { return nil, fmt.Errorf("path pattern %q: %s", s, why) }
	if s == "" {
		return bad("empty")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c >= 0x7f:
			return bad("want printable ASCII (paths are matched decoded; write what the server sees)")
		case 'A' <= c && c <= 'Z':
			return bad(fmt.Sprintf("write it in lower case (%q): paths are matched case-insensitively", strings.ToLower(s)))
		case strings.IndexByte("?#;%\\ ", c) >= 0:
			return bad(fmt.Sprintf("%q is not allowed: a pattern is a decoded path in normal form, without query", c))
		}
	}
	var toks []sigTok
	body := s
	switch {
	case !strings.Contains(s, "/"):
		toks = append(toks, sigTok{kind: tokAny})
	case strings.HasPrefix(s, "*/"):
		toks = append(toks, sigTok{kind: tokAny})
		body = s[2:]
	case strings.HasPrefix(s, "/"):
		body = s[1:]
	default:
		return bad("want a path from the root (\"/bases/...\"), one under any prefix (\"*/bases/...\") or a file name (\"u0607g.xml\")")
	}
	segs := strings.Split(body, "/")
	final := false
	if len(segs) > 1 && segs[len(segs)-1] == "*" {
		// A final "*" is everything below the folder.
		segs, final = segs[:len(segs)-1], true
	}
	anchored := false
	for i, seg := range segs {
		switch {
		case seg == "":
			return bad("empty segment: a folder's contents are \"folder/*\"; a pattern has no \"//\" or trailing '/'")
		case seg == "." || seg == "..":
			return bad("dot segment: paths are matched after dot segments are removed")
		case seg == "**":
			toks = append(toks, sigTok{kind: tokAny})
		case seg == "*":
			toks = append(toks, sigTok{kind: tokOne})
		case strings.Contains(seg, "**"):
			return bad(fmt.Sprintf("segment %q: \"**\" stands for whole segments only", seg))
		case strings.HasSuffix(seg, "."):
			return bad(fmt.Sprintf("segment %q ends in '.', which Windows servers drop: leave it out", seg))
		case strings.Contains(seg, "*"):
			toks = append(toks, sigTok{kind: tokGlob, text: seg, pre: seg[:strings.IndexByte(seg, '*')], suf: seg[strings.LastIndexByte(seg, '*')+1:]})
			if i == len(segs)-1 && !final && globExt(seg) != "" {
				anchored = true
			}
		default:
			toks = append(toks, sigTok{kind: tokLit, text: seg})
			anchored = true
		}
	}
	if final {
		toks = append(toks, sigTok{kind: tokOne}, sigTok{kind: tokAny})
	}
	if !anchored {
		return bad("no literal segment and no literal file extension: a signature must name the structure it recognises, not any path")
	}
	return toks, nil
}

// globExt is the extension a glob file name ends in ("*.kdc": "kdc",
// "kdb-*.xml.dif": "dif"), "" if its end is not literal.
func globExt(glob string) string {
	tail := glob[strings.LastIndexByte(glob, '*')+1:]
	i := strings.LastIndexByte(tail, '.')
	if i < 0 || i == len(tail)-1 {
		return ""
	}
	return tail[i+1:]
}

// pathSegs is a request path cut into segments once, for every pattern
// tried on it: segment k is p[at[k] : at[k+1]-1].
type pathSegs struct {
	p  string
	at []uint32
}

// maxStackSegs is how many segments a path can have before cutting it
// allocates.
const maxStackSegs = 64

// cutSegs cuts p[:end] (p in normal form) into segments, using buf when it
// is large enough; a trailing slash adds no empty segment.
func cutSegs(p string, end int, buf []uint32) pathSegs {
	// A byte loop: segments are short, and IndexByte's setup per
	// segment costs more than it saves.
	at := append(buf[:0], 1)
	for i := 1; i < end; i++ {
		if p[i] == '/' {
			at = append(at, uint32(i+1))
		}
	}
	if last := at[len(at)-1]; int(last) < end {
		// One past the last segment's end, as for the others.
		at = append(at, uint32(end+1))
	}
	if len(at) == 1 {
		// "/": no segment.
		at = at[:0]
		at = append(at, uint32(end+1))
	}
	return pathSegs{p: p, at: at}
}

func (ps *pathSegs) n() int           { return len(ps.at) - 1 }
func (ps *pathSegs) seg(k int) string { return ps.p[ps.at[k] : ps.at[k+1]-1] }

// match reports whether the segments of ps fit the tokens. '*' tokens
// backtrack as in the usual wildcard match, a segment standing for a
// character.
func (sp *sigPattern) match(ps *pathSegs) bool {
	toks := sp.toks
	ti, k, n := 0, 0, ps.n()
	star, starK := -1, 0
	for k < n {
		if ti < len(toks) {
			switch t := &toks[ti]; {
			case t.kind == tokAny:
				star, starK = ti, k
				ti++
				continue
			case t.matches(ps.seg(k)):
				ti++
				k++
				continue
			}
		}
		if star < 0 {
			return false
		}
		// Let the last "**" take one more segment.
		ti = star + 1
		starK++
		k = starK
	}
	for ti < len(toks) && toks[ti].kind == tokAny {
		ti++
	}
	return ti == len(toks)
}

func (t *sigTok) matches(seg string) bool {
	switch t.kind {
	case tokOne:
		return true
	case tokLit:
		return equalFoldLower(trimDotsSpaces(seg), t.text)
	case tokGlob:
		seg = trimDotsSpaces(seg)
		return hasPrefixFold(seg, t.pre) && hasSuffixFold(seg, t.suf) && globFold(t.text, seg)
	}
	return false
}

// trimDotsSpaces drops a segment's trailing dots and spaces, as Windows
// does with a file name, unless nothing would be left.
func trimDotsSpaces(seg string) string {
	n := len(seg)
	for n > 0 && (seg[n-1] == '.' || seg[n-1] == ' ') {
		n--
	}
	if n == 0 {
		return seg
	}
	return seg[:n]
}

// equalFoldLower reports whether s is lit (lower-case ASCII) under Unicode
// simple case folding, as underPath compares: 'ſ' is an 's', and the
// Kelvin sign a 'k'.
func equalFoldLower(s, lit string) bool {
	if s == lit {
		// The usual spelling: paths are mostly lower case.
		return true
	}
	i, j := 0, 0
	for ; i < len(s) && j < len(lit); j++ {
		c := s[i]
		if c < utf8.RuneSelf {
			if lowerASCII(c) != lit[j] {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if !foldsTo(r, rune(lit[j])) {
			return false
		}
		i += n
	}
	return i == len(s) && j == len(lit)
}

// hasPrefixFold and hasSuffixFold are a quick test of s against the
// literal ends of a glob (lower-case ASCII): a byte beyond ASCII, which
// could fold to a letter, passes, and globFold decides.
func hasPrefixFold(s, pre string) bool {
	if len(s) < len(pre) {
		return false
	}
	for i := 0; i < len(pre); i++ {
		if c := s[i]; c < utf8.RuneSelf && lowerASCII(c) != pre[i] {
			return false
		} else if c >= utf8.RuneSelf {
			return true
		}
	}
	return true
}

func hasSuffixFold(s, suf string) bool {
	if len(s) < len(suf) {
		return false
	}
	for i := 1; i <= len(suf); i++ {
		if c := s[len(s)-i]; c < utf8.RuneSelf && lowerASCII(c) != suf[len(suf)-i] {
			return false
		} else if c >= utf8.RuneSelf {
			return true
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// globFold matches s against glob (lower-case ASCII, '*' for any run of
// characters), folding case as equalFoldLower does.
func globFold(glob, s string) bool {
	gi, si := 0, 0
	star, starSi := -1, 0
	for si < len(s) {
		if gi < len(glob) && glob[gi] == '*' {
			star, starSi = gi, si
			gi++
			continue
		}
		if gi < len(glob) {
			c := s[si]
			if c < utf8.RuneSelf {
				if lowerASCII(c) == glob[gi] {
					gi++
					si++
					continue
				}
			} else if r, n := utf8.DecodeRuneInString(s[si:]); foldsTo(r, rune(glob[gi])) {
				gi++
				si += n
				continue
			}
		}
		if star < 0 {
			return false
		}
		gi = star + 1
		_, n := utf8.DecodeRuneInString(s[starSi:])
		starSi += n
		si = starSi
	}
	for gi < len(glob) && glob[gi] == '*' {
		gi++
	}
	return gi == len(glob)
}

// match returns the first signature, in catalog order, whose methods and
// ports admit the request and one of whose patterns fits path (normal
// form), or nil. hits is what scanPath found in path.
func (m *sigMatcher) match(hits sigHits, method string, port int, path string) *compiledSig {
	end := hits.end
	// Most patterns end in a file name: the last segment rules out most
	// of them before a walk over the segments.
	last := strings.TrimRight(path[:end], "/")
	last = last[strings.LastIndexByte(last, '/')+1:]
	var buf [maxStackSegs + 1]uint32
	var ps pathSegs
	cand := m.candidates(hits)
	try := func(i int) *compiledSig {
		sp := &m.pats[i]
		if hits.lits&sp.reqLits != sp.reqLits || hits.exts&sp.reqExt != sp.reqExt {
			return nil
		}
		switch t := &sp.toks[len(sp.toks)-1]; t.kind {
		case tokLit, tokGlob:
			if last == "" || !t.matches(last) {
				return nil
			}
		}
		s := &m.sigs[sp.sig]
		if !s.admits(method, port) {
			return nil
		}
		if ps.at == nil {
			ps = cutSegs(path, end, buf[:])
		}
		if sp.match(&ps) {
			return s
		}
		return nil
	}
	// The candidates in index order, which is catalog order.
	for w, bitsOf := range cand {
		for ; bitsOf != 0; bitsOf &= bitsOf - 1 {
			if s := try(w<<6 | bits.TrailingZeros64(bitsOf)); s != nil {
				return s
			}
		}
	}
	for i := maxSetPats; i < len(m.pats); i++ {
		if s := try(i); s != nil {
			return s
		}
	}
	return nil
}

func (s *compiledSig) admits(method string, port int) bool {
	if s.methods != nil {
		ok := false
		for _, m := range s.methods {
			if m == method {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if s.ports != nil {
		for _, r := range s.ports {
			if r.Contains(port) {
				return true
			}
		}
		return false
	}
	return true
}

// maxAnchorLen bounds the literal segments the index holds; a longer
// literal is still matched, but not indexed.
const maxAnchorLen = 63

// sigIndex is what a request path is checked for before any pattern is
// tried: the literal segments of every pattern, and the extensions their
// file names end in, up to 64 of each, each with a bit. A pattern requires
// the bits of its literals and extension (sigPattern.reqLits, reqExt): it
// can only match a path that has them all, so the usual request, which
// has none, costs a table test per segment (see scanPath) and no match.
type sigIndex struct {
	// litSlot[segHash(lit)] is 1 + the index of lit in lits, slotMany if
	// several literals have that hash, 0 if none; extSlot the same for
	// the extensions. A segment whose slot is 0, the usual answer, is no
	// literal, found without a compare.
	litSlot [hashSlots]uint8
	extSlot [hashSlots]uint8
	// lenFirst[n] has bit (b & 31) set for the first byte b of each
	// literal of n bytes (both cases of a letter share it): the test
	// before the hash, which most segments fail.
	lenFirst [maxAnchorLen + 1]uint32
	// extLenLast[n] has bit (b & 31) set for the last byte b of each
	// extension of n bytes: the test before the extension is looked for.
	extLenLast [maxAnchorLen + 1]uint32
	// extLast is every extLenLast[n] together: the test for the last
	// byte of a path, inline in scanPath.
	extLast uint32
	lits    []string // bit i is lits[i]
	exts    []string // bit i is exts[i]
}

// hashSlots sizes the index's slot tables, for at most 64 literals and 64
// extensions.
const hashSlots = 1024

// slotMany marks a slot that several literals share.
const slotMany = 0xff

// segHash hashes a segment of plain ASCII (1 to maxAnchorLen bytes, its
// trailing dots and spaces trimmed) on its length and its first two and
// last two bytes, case-insensitively: x|0x20 is the same for both cases
// of a letter, and equalFoldLower only matches ASCII letters of another
// case.
func segHash(seg string) uint {
	n := len(seg)
	h := uint(n)*0x9e37 ^ uint(seg[0]|0x20)*0x2f ^ uint(seg[n-1]|0x20)*0x3b1
	if n > 1 {
		h ^= uint(seg[1]|0x20)*0x1d7 ^ uint(seg[n-2]|0x20)*0x61
	}
	h ^= h >> 10
	return h & (hashSlots - 1)
}

// slotAdd records literal i (an index into lits or exts) in slots.
func slotAdd(slots *[hashSlots]uint8, h uint, i int) {
	switch slots[h] {
	case 0:
		slots[h] = uint8(i + 1)
	case uint8(i + 1):
	default:
		slots[h] = slotMany
	}
}

// slotFind returns the bit of the text of list that seg is, 0 if none.
func slotFind(slots *[hashSlots]uint8, list []string, seg string) uint64 {
	switch k := slots[segHash(seg)]; k {
	case 0:
		return 0
	case slotMany:
		for i, lit := range list {
			if len(lit) == len(seg) && equalFoldLower(seg, lit) {
				return 1 << i
			}
		}
		return 0
	default:
		if lit := list[k-1]; len(lit) == len(seg) && equalFoldLower(seg, lit) {
			return 1 << (k - 1)
		}
		return 0
	}
}

// sigHits is what scanPath found in a path: the bits of the literal
// segments and of the last segment's extension in the index, and where a
// '?' or '#' ends the path for matching (its length if none does).
type sigHits struct {
	lits, exts uint64
	end        int
}

func (h sigHits) any() bool { return h.lits|h.exts != 0 }

// add indexes a pattern's literals and extension and returns the bits it
// requires. A literal that finds no free bit is not required, which only
// makes the pattern tried more often.
func (ix *sigIndex) add(toks []sigTok) (reqLits, reqExt uint64) {
	for _, t := range toks {
		if t.kind == tokLit && len(t.text) <= maxAnchorLen {
			if bit, ok := bitOf(&ix.lits, t.text); ok {
				slotAdd(&ix.litSlot, segHash(t.text), bits.TrailingZeros64(bit))
				ix.lenFirst[len(t.text)] |= 1 << (t.text[0] & 31)
				reqLits |= bit
			}
		}
	}
	if last := toks[len(toks)-1]; last.kind == tokGlob {
		if ext := globExt(last.text); ext != "" && len(ext) <= maxAnchorLen {
			if bit, ok := bitOf(&ix.exts, ext); ok {
				slotAdd(&ix.extSlot, segHash(ext), bits.TrailingZeros64(bit))
				ix.extLenLast[len(ext)] |= 1 << (ext[len(ext)-1] & 31)
				ix.extLast |= 1 << (ext[len(ext)-1] & 31)
				reqExt = bit
			}
		}
	}
	return reqLits, reqExt
}

// bitOf returns the bit of text in list, adding it if there is room.
func bitOf(list *[]string, text string) (uint64, bool) {
	for i, t := range *list {
		if t == text {
			return 1 << i, true
		}
	}
	if len(*list) == 64 {
		return 0, false
	}
	*list = append(*list, text)
	return 1 << (len(*list) - 1), true
}

// segment returns the bit of the literal seg is, 0 if none. seg is plain
// ASCII.
func (ix *sigIndex) segment(seg string) uint64 {
	seg = trimDotsSpaces(seg)
	if len(seg) > maxAnchorLen {
		return 0
	}
	return slotFind(&ix.litSlot, ix.lits, seg)
}

// ext returns the bit of the extension of seg, the path's last segment,
// 0 if none. seg is plain ASCII.
func (ix *sigIndex) ext(seg string) uint64 {
	seg = trimDotsSpaces(seg)
	k := strings.LastIndexByte(seg, '.')
	if k < 0 || k == len(seg)-1 || len(seg)-k-1 > maxAnchorLen || ix.extLenLast[len(seg)-k-1]&(1<<(seg[len(seg)-1]&31)) == 0 {
		return 0
	}
	return slotFind(&ix.extSlot, ix.exts, seg[k+1:])
}

// add adds a pattern of signature si.
func (m *sigMatcher) add(si int32, text string, toks []sigTok) {
	reqLits, reqExt := m.idx.add(toks)
	i := len(m.pats)
	m.pats = append(m.pats, sigPattern{sig: si, text: text, toks: toks, reqLits: reqLits, reqExt: reqExt})
	if i >= maxSetPats {
		return
	}
	switch {
	case reqLits != 0:
		// One literal is enough to find the pattern by: it is tried
		// when the path has that literal, and checked for the rest.
		m.byLit[bits.TrailingZeros64(reqLits)][i>>6] |= 1 << (i & 63)
	case reqExt != 0:
		m.byExt[bits.TrailingZeros64(reqExt)][i>>6] |= 1 << (i & 63)
	default:
		m.always = true
		m.alwaysSet[i>>6] |= 1 << (i & 63)
	}
}

// maxSetPats is how many patterns candidates finds by their literals; the
// patterns beyond are tried on every path that has any literal.
const maxSetPats = 256

// patSet is a set of patterns, by index.
type patSet [maxSetPats / 64]uint64

// candidates returns the patterns that one of the literals or the
// extension in hits finds (see add): the patterns that can match, and a
// few more. A path has few literals, so this is a few loads, not a test
// of every pattern.
func (m *sigMatcher) candidates(hits sigHits) patSet {
	c := m.alwaysSet
	words := min((len(m.pats)+63)/64, len(c))
	for l := hits.lits; l != 0; l &= l - 1 {
		set := &m.byLit[bits.TrailingZeros64(l)]
		for w := range words {
			c[w] |= set[w]
		}
	}
	for e := hits.exts; e != 0; e &= e - 1 {
		set := &m.byExt[bits.TrailingZeros64(e)]
		for w := range words {
			c[w] |= set[w]
		}
	}
	return c
}

// SignaturePattern returns the path pattern, as written, by which the
// signature of d (a decision of p for a request with path) matched, ""
// if d names no signature. It is for explaining a decision, not for the
// request path.
func (p *Policy) SignaturePattern(d Decision, path string) string {
	if d.Signature == "" || p.sigs == nil {
		return ""
	}
	n, ok := requestPath(path)
	if !ok {
		return ""
	}
	end := len(n)
	if i := strings.IndexAny(n, "?#"); i >= 0 {
		end = i
	}
	ps := cutSegs(n, end, nil)
	for i := range p.sigs.pats {
		sp := &p.sigs.pats[i]
		s := &p.sigs.sigs[sp.sig]
		if int(s.class) == d.Class && s.name == d.Signature && sp.match(&ps) {
			return sp.text
		}
	}
	return ""
}
