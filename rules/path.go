package rules

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A catalog path prefix is only as good as the proxy's idea of which
// resource a request path names, and that is the origin's idea, not the
// bytes on the wire: "/./buy", "//buy", "/x/../buy", "/%62uy" and "/BUY"
// all reach the store page of some origin. Paths are therefore compared in
// a normal form that errs towards what the most lenient common origins do:
//
//   - every %XX escape is decoded, and decoded again until none is left:
//     nginx decodes every escape before location matching (%2F included),
//     and a chain of a CDN or proxy and an application server decodes more
//     than once. IIS's non-standard %uXXXX is decoded as well.
//   - '\' is a '/' (IIS, and Windows file systems behind other servers).
//   - ";params" is cut from every segment, as Tomcat, Jetty and Spring do
//     ("/buy;jsessionid=x" is /buy, and "/x/..;/buy" is /buy there).
//   - repeated slashes are merged (nginx merge_slashes, Apache, IIS) and
//     dot segments removed (RFC 3986 section 5.2.4; a ".." at the root
//     stays at the root, as most servers clamp it).
//
// Errs towards means over-matching: a path normalised this way can land
// under a catalog prefix that a strict origin would not route there, which
// only ever makes the request match the more specific entry of its host,
// the one with the path. Decoding to a fixed point also makes the result
// the same for a path as sent (url.URL.EscapedPath) and as decoded once
// (url.URL.Path), so callers cannot get it wrong.
//
// A decoded NUL is refused rather than normalised: C-based servers end the
// path there ("/buy%00.html" is /buy to them), nginx refuses it with 400,
// and no client has a reason to send one.

var (
	errPathNotAbsolute = errors.New("not an absolute path (want a leading '/')")
	errPathNUL         = errors.New("contains a NUL byte (%00)")
)

// NormalizePath returns the normal form of a request path: the form the
// catalog's path prefixes are compared with, and the one to log. p is a URL
// path, decoded (url.URL.Path) or not (url.URL.EscapedPath): it is
// percent-decoded until no escape is left, so both give the same result.
// The normal form starts with '/', holds no escape, '\', ';', NUL, empty
// segment ("//") or dot segment, and keeps its case and a trailing slash.
// "" (a tunnel's path) stays "". The error says why a path has no normal
// form; a proxy must then refuse the request, since the origin's reading of
// it is unknown. A path in normal form already is returned as is, without
// allocating.
func NormalizePath(p string) (string, error) {
	if pathIsNormal(p) {
		return p, nil
	}
	n, err := normalizePath(p)
	if err != nil {
		return "", fmt.Errorf("invalid path %q: %w", p, err)
	}
	return n, nil
}

// pathIsNormal reports whether p needs no rewriting by normalizePath. It is
// a quick, conservative test for the request path: a literal '%' that
// starts no escape sends a path to the slow path although it is normal.
func pathIsNormal(p string) bool {
	normal, _ := scanPath(p, nil)
	return normal
}

// scanPath is pathIsNormal, and in the same pass over the bytes, with ix,
// the literals and extension of signature patterns that p holds (see
// sigIndex): one pass,
// because the request path is scanned for both on every request. hits is
// only meaningful for a normal p; for a path with bytes beyond ASCII,
// which could fold to a literal's letters, it has every bit.
func scanPath(p string, ix *sigIndex) (normal bool, hits sigHits) {
	return scan(p, ix, false)
}

// scanNormal is scanPath's hits for p in normal form (from normalizePath):
// a literal '%' that starts no escape, which scanPath takes for one, may
// remain there.
func scanNormal(p string, ix *sigIndex) sigHits {
	_, hits := scan(p, ix, true)
	return hits
}

// scan is scanPath; with normal, p is known to be in normal form, and a
// '%' is a literal.
func scan(p string, ix *sigIndex, normal bool) (bool, sigHits) {
	var hits sigHits
	if p == "" {
		return true, sigHits{}
	}
	if p[0] != '/' {
		return false, sigHits{}
	}
	// start is where the current segment starts; end is where a '?' or
	// '#' ends the path for matching, and endStart where that segment
	// starts.
	start, end, endStart := 1, len(p), 0
	ascii := true
	for i := 1; i < len(p); i++ {
		c := p[i]
		if !scanSpecial[c] {
			continue
		}
		switch {
		case c >= utf8.RuneSelf:
			ascii = false
			continue
		case c == '?' || c == '#':
			if end == len(p) {
				end, endStart = i, start
			}
			continue
		case c == '%' && normal:
			continue
		case c != '/':
			return false, sigHits{}
		}
		// The test most segments fail, inline; the lookup only when it
		// passes.
		if ix != nil && start < i && i < end {
			if n := i - start; n <= maxAnchorLen && ix.lenFirst[n]&(1<<(p[start]&31)) != 0 || p[i-1] == '.' || p[i-1] == ' ' {
				hits.lits |= ix.segment(p[start:i])
			}
		}
		start = i + 1
		// The segment after this slash must not be empty (unless it is
		// the last one, a trailing slash), "." or "..".
		rest := p[i+1:]
		if rest == "" {
			break
		}
		switch rest[0] {
		case '/':
			return false, sigHits{}
		case '.':
			if len(rest) == 1 || rest[1] == '/' || rest[1] == '.' && (len(rest) == 2 || rest[2] == '/') {
				return false, sigHits{}
			}
		}
	}
	// The first segment was not checked for a dot segment above.
	if len(p) > 1 {
		switch p[1] {
		case '/':
			return false, sigHits{}
		case '.':
			if len(p) == 2 || p[2] == '/' || p[2] == '.' && (len(p) == 3 || p[3] == '/') {
				return false, sigHits{}
			}
		}
	}
	if ix == nil {
		return true, sigHits{}
	}
	hits.end = end
	if !ascii {
		hits.lits, hits.exts = ^uint64(0), ^uint64(0)
		return true, hits
	}
	if end < len(p) {
		start = endStart
	}
	if start < end {
		if n := end - start; n <= maxAnchorLen && ix.lenFirst[n]&(1<<(p[start]&31)) != 0 || p[end-1] == '.' || p[end-1] == ' ' {
			hits.lits |= ix.segment(p[start:end])
		}
	} else if end > 1 {
		// A trailing slash: the last segment, as the patterns see it,
		// is the one before it, whose literal the loop has counted.
		end--
		start = strings.LastIndexByte(p[:end], '/') + 1
	}
	if start < end {
		if c := p[end-1]; ix.extLast&(1<<(c&31)) != 0 || c == '.' || c == ' ' {
			hits.exts |= ix.ext(p[start:end])
		}
	}
	return true, hits
}

// scanSpecial marks the bytes scanPath looks at: those normalizePath
// rewrites; '/', where dot segments and empty segments start; '?' and
// '#', which end a path for matching; and bytes beyond ASCII.
var scanSpecial = func() (t [256]bool) {
	for _, c := range []byte{'%', '\\', ';', 0, '/', '?', '#'} {
		t[c] = true
	}
	for c := utf8.RuneSelf; c < 256; c++ {
		t[c] = true
	}
	return t
}()

// normalizePath rewrites p into normal form. It allocates.
func normalizePath(p string) (string, error) {
	b := []byte(p)
	// Every pass that decodes something makes b shorter, so this ends.
	for {
		n := decodeOnce(b)
		if n == len(b) {
			break
		}
		b = b[:n]
	}
	for i, c := range b {
		switch c {
		case 0:
			return "", errPathNUL
		case '\\':
			b[i] = '/'
		}
	}
	if len(b) == 0 || b[0] != '/' {
		return "", errPathNotAbsolute
	}
	out := make([]byte, 0, len(b))
	trailing := false // the result ends in '/'
	for i := 0; i < len(b); {
		j := i + 1
		for j < len(b) && b[j] != '/' {
			j++
		}
		seg := b[i+1 : j]
		i = j
		for k, c := range seg {
			if c == ';' {
				seg = seg[:k]
				break
			}
		}
		switch string(seg) {
		case "", ".":
			trailing = true
		case "..":
			if k := lastSlash(out); k >= 0 {
				out = out[:k]
			}
			trailing = true
		default:
			out = append(out, '/')
			out = append(out, seg...)
			trailing = false
		}
	}
	if trailing || len(out) == 0 {
		out = append(out, '/')
	}
	return string(out), nil
}

func lastSlash(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '/' {
			return i
		}
	}
	return -1
}

// decodeOnce decodes every %XX and %uXXXX escape of b in place, in one
// left-to-right pass, and returns the new length. A '%' that starts no
// escape is a literal '%'.
func decodeOnce(b []byte) int {
	w := 0
	for r := 0; r < len(b); {
		c := b[r]
		if c == '%' {
			if r+2 < len(b) && isHex(b[r+1]) && isHex(b[r+2]) {
				b[w] = unhex(b[r+1])<<4 | unhex(b[r+2])
				w++
				r += 3
				continue
			}
			if r+5 < len(b) && (b[r+1] == 'u' || b[r+1] == 'U') && isHex(b[r+2]) && isHex(b[r+3]) && isHex(b[r+4]) && isHex(b[r+5]) {
				u := rune(unhex(b[r+2]))<<12 | rune(unhex(b[r+3]))<<8 | rune(unhex(b[r+4]))<<4 | rune(unhex(b[r+5]))
				// A rune takes at most 3 bytes for 16 bits, fewer
				// than the 6 of its escape, so w stays behind r.
				w += utf8.EncodeRune(b[w:], u)
				r += 6
				continue
			}
		}
		b[w] = c
		w++
		r++
	}
	return w
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// requestPath returns the normal form of a request path for matching; ok
// is false when it has none. A path in normal form (the usual case) costs
// a scan and no allocation.
func requestPath(p string) (norm string, ok bool) {
	if pathIsNormal(p) {
		return p, true
	}
	norm, err := normalizePath(p)
	return norm, err == nil
}

// pathKey is what a catalog path prefix compares: without a trailing '/',
// which changes nothing, and without a trailing '*', reported as glob.
func pathKey(prefix string) (key string, glob bool) {
	if key, glob = strings.CutSuffix(prefix, "*"); glob {
		return key, true
	}
	return strings.TrimSuffix(prefix, "/"), false
}

// underPath compares a normal-form request path with a catalog prefix
// (normal form, lower case) segment by segment: "/buy" matches "/buy",
// "/buy/" and "/buy/x", never "/buyer-guide"; "/bases/" matches the same
// as "/bases"; only a final '*' ("/buy_*") matches within a segment.
//
// Case is folded because IIS and many CDNs and application routers match
// paths case-insensitively (/BUY is /buy to them), Unicode case included
// (the long s 'ſ' is an 's' to .NET's OrdinalIgnoreCase). A segment's
// trailing dots and spaces are ignored because Windows drops them ("/buy."
// is /buy to IIS's file mapping), and '?' and '#' end a path as well, for
// the chains that forward a decoded %3F or %23 unescaped.
func underPath(p, prefix string) bool {
	if p == "" {
		return false
	}
	prefix, glob := pathKey(prefix)
	i, j := 0, 0
	// The usual path has the prefix's case, and a plain comparison
	// settles it.
	if len(p) >= len(prefix) && p[:len(prefix)] == prefix {
		i, j = len(prefix), len(prefix)
	}
	for j < len(prefix) {
		if i == len(p) {
			return false
		}
		a, b := p[i], prefix[j]
		if a < utf8.RuneSelf && b < utf8.RuneSelf {
			if a == b || 'A' <= a && a <= 'Z' && a+('a'-'A') == b {
				i++
				j++
				continue
			}
			if b == '/' && (a == '.' || a == ' ') {
				if k := skipDotsSpaces(p, i); k < len(p) && p[k] == '/' {
					i = k
					continue
				}
			}
			return false
		}
		r, n := utf8.DecodeRuneInString(p[i:])
		rc, m := utf8.DecodeRuneInString(prefix[j:])
		if r == utf8.RuneError || rc == utf8.RuneError {
			// Invalid UTF-8 compares byte by byte.
			if a != b {
				return false
			}
			i++
			j++
			continue
		}
		if !foldsTo(r, rc) {
			return false
		}
		i += n
		j += m
	}
	if glob {
		return true
	}
	k := skipDotsSpaces(p, i)
	return k == len(p) || p[k] == '/' || p[k] == '?' || p[k] == '#'
}

func skipDotsSpaces(p string, i int) int {
	for i < len(p) && (p[i] == '.' || p[i] == ' ') {
		i++
	}
	return i
}

// foldsTo reports whether r is c under Unicode simple case folding.
func foldsTo(r, c rune) bool {
	if r == c {
		return true
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f == c {
			return true
		}
	}
	return false
}

// parseCatalogPath checks a catalog path prefix: an absolute path in
// normal form and lower case, so that what the operator reads is what is
// matched, with at most a final '*' after a segment's first character.
func parseCatalogPath(s string) (string, error) {
	if !strings.HasPrefix(s, "/") || strings.ContainsAny(s, "?# ") {
		return "", fmt.Errorf("path prefix %q: want an absolute path such as \"/bases/\", without query", s)
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("path prefix %q: control character %q", s, c)
		}
	}
	base, glob := strings.CutSuffix(s, "*")
	if strings.Contains(base, "*") || glob && strings.HasSuffix(base, "/") {
		return "", fmt.Errorf("path prefix %q: '*' is allowed only at the end, after part of a segment (\"/buy_*\"); \"/bases/\" already matches everything under /bases", s)
	}
	n := base
	if !pathIsNormal(base) {
		var err error
		if n, err = normalizePath(base); err != nil {
			return "", fmt.Errorf("path prefix %q: %w", s, err)
		}
	}
	if lower := lowerPath(n); lower != base {
		if glob {
			lower += "*"
		}
		return "", fmt.Errorf("path prefix %q is not in normal form: write %q (paths are matched decoded, case-insensitively, without dot segments, repeated slashes or ;parameters)", s, lower)
	}
	return s, nil
}

// lowerPath lower-cases every letter of p.
func lowerPath(p string) string {
	return strings.Map(unicode.ToLower, p)
}
