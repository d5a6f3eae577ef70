package rules

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// maxHostLen is the longest DNS name we canonicalise in a stack buffer. Longer
// names are not valid DNS names; they are classified as unknown hosts.
const maxHostLen = 255

// hostBuf is the stack buffer a request's canonical host is written into, so
// that classification allocates nothing.
type hostBuf [maxHostLen]byte

// canonicalHost returns the form of host that patterns are compared with:
// ASCII (punycode for internationalised names), lower case, without brackets
// around IPv6 literals and without one trailing dot. A host that is in that
// form already (the usual case) comes back as a substring of itself, s;
// otherwise the canonical form is written into buf and returned as b. ok is
// false when host cannot be a valid name, which callers treat as "not a
// vendor host". It allocates only for non-ASCII input.
func canonicalHost(buf *hostBuf, host string) (s string, b []byte, ok bool) {
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return "", nil, false
	}
	if isCanonical(host) {
		return host, nil, true
	}
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			// The lookup profile converts names as a browser's address bar
			// does before resolving them. A homograph stays a different
			// punycode name, so it never turns into a catalogued domain.
			a, err := idna.Lookup.ToASCII(host)
			if err != nil {
				return "", nil, false
			}
			// A final ideographic full stop becomes a trailing dot
			// only now.
			host = strings.TrimSuffix(a, ".")
			break
		}
	}
	if host == "" || len(host) > len(buf) {
		return "", nil, false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return "", buf[:len(host)], true
}

// isCanonical reports whether host needs no rewriting: lower-case letters,
// digits, '-', '_' and '.' only.
func isCanonical(host string) bool {
	if len(host) > maxHostLen {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// CanonicalHost returns the canonical form of a host name as the catalog
// compares it (see canonicalHost), or an error for a name that cannot be one.
func CanonicalHost(host string) (string, error) {
	var buf hostBuf
	s, b, ok := canonicalHost(&buf, host)
	if !ok {
		return "", fmt.Errorf("invalid host name %q", host)
	}
	if b != nil {
		s = string(b)
	}
	return s, nil
}

// patternKind says how a host pattern matches.
type patternKind uint8

const (
	kindExact  patternKind = iota // the host itself
	kindLabel                     // one wildcard inside the leftmost label
	kindSuffix                    // "*.suffix": any depth below suffix, not suffix itself
	kindDomain                    // a registrable domain: itself and any depth below
)

// hostPattern is a parsed host pattern.
type hostPattern struct {
	kind patternKind
	// key is the exact host, the parent of the wildcard label, or the suffix.
	key string
	// prefix and suffix are the literal parts of the wildcard label.
	prefix, suffix string
}

func (p hostPattern) String() string {
	switch p.kind {
	case kindLabel:
		return p.prefix + "*" + p.suffix + "." + p.key
	case kindSuffix:
		return "*." + p.key
	}
	return p.key
}

var errEmptyPattern = errors.New("empty host pattern")

// parseHostPattern parses an exact host, "*.suffix" or a label wildcard such
// as "dnl-*.geo.example.com". Patterns are written in canonical form (lower
// case, ASCII) so that what the operator reads is what is matched.
func parseHostPattern(s string) (hostPattern, error) {
	if s == "" {
		return hostPattern{}, errEmptyPattern
	}
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/:?#@ ") {
		return hostPattern{}, fmt.Errorf("host pattern %q: want a host name, not a URL (no scheme, port or path)", s)
	}
	first, rest, hasDot := strings.Cut(s, ".")
	if !hasDot {
		if strings.Contains(s, "*") {
			return hostPattern{}, fmt.Errorf("host pattern %q: a wildcard needs a suffix with at least one dot after it", s)
		}
	}
	if strings.Contains(rest, "*") {
		return hostPattern{}, fmt.Errorf("host pattern %q: '*' is allowed only in the leftmost label", s)
	}
	if strings.Count(first, "*") > 1 {
		return hostPattern{}, fmt.Errorf("host pattern %q: at most one '*' in a label", s)
	}
	if hasDot {
		if err := checkName(rest); err != nil {
			return hostPattern{}, fmt.Errorf("host pattern %q: %w", s, err)
		}
	}
	switch {
	case first == "*":
		if !strings.Contains(rest, ".") {
			return hostPattern{}, fmt.Errorf("host pattern %q: suffix %q is a top-level domain; name a registrable domain", s, rest)
		}
		return hostPattern{kind: kindSuffix, key: rest}, nil
	case strings.Contains(first, "*"):
		pre, suf, _ := strings.Cut(first, "*")
		if err := checkLabelChars(pre + suf); err != nil {
			return hostPattern{}, fmt.Errorf("host pattern %q: %w", s, err)
		}
		return hostPattern{kind: kindLabel, key: rest, prefix: pre, suffix: suf}, nil
	}
	if err := checkName(s); err != nil {
		return hostPattern{}, fmt.Errorf("host pattern %q: %w", s, err)
	}
	return hostPattern{kind: kindExact, key: s}, nil
}

// parseDomain parses a registrable domain (no wildcard).
func parseDomain(s string) (hostPattern, error) {
	if strings.Contains(s, "*") {
		return hostPattern{}, fmt.Errorf("domain %q: domains take no wildcard; they cover every host below them", s)
	}
	if err := checkName(s); err != nil {
		return hostPattern{}, fmt.Errorf("domain %q: %w", s, err)
	}
	if !strings.Contains(s, ".") {
		return hostPattern{}, fmt.Errorf("domain %q: a top-level domain cannot be a vendor domain", s)
	}
	return hostPattern{kind: kindDomain, key: s}, nil
}

// checkName checks a lower-case ASCII DNS name.
func checkName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	if len(s) > 253 {
		return errors.New("name longer than 253 characters")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" {
			return errors.New("empty label (leading, trailing or double dot)")
		}
		if len(label) > 63 {
			return fmt.Errorf("label %q longer than 63 characters", label)
		}
		if err := checkLabelChars(label); err != nil {
			return err
		}
	}
	return nil
}

func checkLabelChars(label string) error {
	for _, c := range label {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case 'A' <= c && c <= 'Z':
			return fmt.Errorf("upper-case letter in %q: write patterns in lower case", label)
		default:
			return fmt.Errorf("character %q not allowed in a host name (use punycode for internationalised names)", c)
		}
	}
	return nil
}

// portRange is an inclusive port range; the zero value matches any port.
type portRange struct{ lo, hi uint16 }

func (r portRange) any() bool { return r.lo == 0 && r.hi == 0 }

func (r portRange) contains(port int) bool {
	return r.any() || (port >= int(r.lo) && port <= int(r.hi))
}

func (r portRange) String() string {
	if r.lo == r.hi {
		return strconv.Itoa(int(r.lo))
	}
	return strconv.Itoa(int(r.lo)) + "-" + strconv.Itoa(int(r.hi))
}

// parsePortRange parses "443" or "27200-27299".
func parsePortRange(s string) (portRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || l == 0 || h == 0 {
		return portRange{}, fmt.Errorf("port %q: want a port 1-65535 or a range such as \"27200-27299\"", s)
	}
	if h < l {
		return portRange{}, fmt.Errorf("port range %q: end is before start", s)
	}
	return portRange{uint16(l), uint16(h)}, nil
}
