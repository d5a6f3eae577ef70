package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// maxHostLen is the size of the stack buffer a host is canonicalised into.
// It is more than any canonical host needs (maxNameLen), so that a
// too-long name is refused by length, never by buffer size.
const maxHostLen = 255

// maxNameLen is the longest DNS name in text form, without a trailing dot
// (RFC 1035 section 2.3.4: 255 octets on the wire), and maxLabelLen the
// longest label.
const (
	maxNameLen  = 253
	maxLabelLen = 63
)

// hostBuf is the stack buffer a request's canonical host is written into, so
// that classification allocates nothing.
type hostBuf [maxHostLen]byte

// Why a host has no canonical form. They are values, so that the request
// path reports them without allocating.
var (
	errHostEmpty      = errors.New("empty")
	errHostEmptyLabel = errors.New("empty label (a leading dot, two dots in a row, or more than one trailing dot)")
	errHostLabelLen   = errors.New("label longer than 63 characters")
	errHostLen        = errors.New("longer than 253 characters")
	errHostChar       = errors.New("character not allowed in a host name (want letters, digits, '-', '_' and '.', or an IPv6 literal in brackets)")
	errHostNumeric    = errors.New("ends in a number but is not an IPv4 address in dotted-decimal form")
	errHostIPv6       = errors.New("not an IPv6 address (brackets hold IPv6 literals only, without a zone)")
)

// canonicalHost returns the form of host that patterns are compared with:
// ASCII (punycode for internationalised names), lower case, without brackets
// around IPv6 literals and without one trailing dot. A host in that form already (the usual case) comes back as
// s, a substring of itself; a host that must be rewritten comes back as b,
// in buf. It fails for every spelling that is not a plain DNS name or IP
// literal once mapped as a resolver would: a proxy must not forward what it
// cannot classify. It allocates only for non-ASCII input.
//
// What it accepts is what a resolver looks up. Letters, digits, '-' and
// '_' (real names have underscores: SRV-style labels, some CDNs) in labels
// of 1 to 63 characters, 253 characters in all; one trailing dot (the root
// label); Unicode that IDNA's lookup mapping turns into such a name, as a
// browser's address bar does (full-width letters, U+3002 IDEOGRAPHIC FULL
// STOP as a dot). It refuses '%' and every other byte, empty labels
// ("a..b", "a.b.."), a last label that is a number unless the whole name is
// a dotted-decimal IPv4 address ("127.1" and "0x7f.1" are 127.0.0.1 to
// inet_aton and to browsers), and brackets around anything but an IPv6
// address without a zone.
func canonicalHost(buf *hostBuf, host string) (s string, b []byte, err error) {
	if host == "" {
		return "", nil, errHostEmpty
	}
	if host[0] == '[' {
		if len(host) < 2 || host[len(host)-1] != ']' {
			return "", nil, errHostIPv6
		}
		return canonicalIPv6(buf, host[1:len(host)-1])
	}
	if strings.IndexByte(host, ':') >= 0 {
		// An IPv6 literal without brackets is how canonical forms
		// are written.
		return canonicalIPv6(buf, host)
	}
	name := host
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			// IDNA would read invalid UTF-8 as U+FFFD and give it a
			// punycode name that no client meant.
			if !utf8.ValidString(name) {
				return "", nil, errHostChar
			}
			// The lookup profile converts names as a browser's address bar
			// does before resolving them. A homograph stays a different
			// punycode name, so it never turns into a catalogued domain.
			a, err := idna.Lookup.ToASCII(name)
			if err != nil {
				return "", nil, err
			}
			name = a
			break
		}
	}
	// One trailing dot only, whether it was written as '.' or as a
	// character IDNA maps to one: a second is an empty label.
	name = strings.TrimSuffix(name, ".")
	upper, err := checkHostName(name)
	if err != nil {
		return "", nil, err
	}
	if !upper {
		return name, nil, nil
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return "", buf[:len(name)], nil
}

// checkHostName checks an ASCII name without its trailing dot, and reports
// whether it has upper-case letters to rewrite.
func checkHostName(name string) (upper bool, err error) {
	if name == "" {
		return false, errHostEmpty
	}
	if len(name) > maxNameLen {
		return false, errHostLen
	}
	start, last := 0, 0 // of the current label, of the last one
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '.' {
			switch {
			case i == start:
				return false, errHostEmptyLabel
			case i-start > maxLabelLen:
				return false, errHostLabelLen
			}
			last, start = start, i+1
			continue
		}
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case 'A' <= c && c <= 'Z':
			upper = true
		default:
			return false, errHostChar
		}
	}
	if endsInNumber(name[last:]) {
		if a, err := netip.ParseAddr(name); err != nil || !a.Is4() {
			return false, errHostNumeric
		}
	}
	return upper, nil
}

// endsInNumber reports whether a last label makes a name an IPv4 address
// to the WHATWG URL parser and inet_aton: all digits, or "0x" and hex
// digits. No top-level domain looks like that.
func endsInNumber(label string) bool {
	if len(label) >= 2 && label[0] == '0' && (label[1] == 'x' || label[1] == 'X') {
		for i := 2; i < len(label); i++ {
			if !isHex(label[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(label); i++ {
		if label[i] < '0' || label[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// canonicalIPv6 checks an IPv6 literal, without brackets, and lower-cases
// it. It is not rewritten in RFC 5952 form: no pattern names an IP
// literal, and formatting would cost every such request. Zones
// ("fe80::1%eth0") are refused: they name an interface of the client's
// machine, which means nothing to a proxy.
func canonicalIPv6(buf *hostBuf, lit string) (s string, b []byte, err error) {
	if strings.IndexByte(lit, '%') >= 0 || len(lit) > len(buf) {
		return "", nil, errHostIPv6
	}
	if a, err := netip.ParseAddr(lit); err != nil || !a.Is6() {
		return "", nil, errHostIPv6
	}
	upper := false
	for i := 0; i < len(lit); i++ {
		c := lit[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
			upper = true
		}
		buf[i] = c
	}
	if !upper {
		return lit, nil, nil
	}
	return "", buf[:len(lit)], nil
}

// CanonicalHost returns the canonical form of a host name or IP literal, as
// the catalog compares it (see canonicalHost), or an error for a spelling
// that has none. Policy.Decide flags a request with such a host as
// Decision.Invalid; a proxy must refuse it, never forward it.
func CanonicalHost(host string) (string, error) {
	var buf hostBuf
	s, b, err := canonicalHost(&buf, host)
	if err != nil {
		return "", fmt.Errorf("invalid host name %q: %w", host, err)
	}
	if b != nil {
		s = string(b)
	}
	return s, nil
}

var errEmptyPattern = errors.New("empty host pattern")

// parseHostPattern parses an exact host, "*.suffix" or a label wildcard such
// as "dnl-*.geo.example.com". Patterns are written in canonical form (lower
// case, ASCII) so that what the operator reads is what is matched.
func parseHostPattern(s string) (HostPattern, error) {
	if s == "" {
		return HostPattern{}, errEmptyPattern
	}
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/:?#@ ") {
		return HostPattern{}, fmt.Errorf("host pattern %q: want a host name, not a URL (no scheme, port or path)", s)
	}
	first, rest, hasDot := strings.Cut(s, ".")
	if !hasDot {
		if strings.Contains(s, "*") {
			return HostPattern{}, fmt.Errorf("host pattern %q: a wildcard needs a suffix with at least one dot after it", s)
		}
	}
	if strings.Contains(rest, "*") {
		return HostPattern{}, fmt.Errorf("host pattern %q: '*' is allowed only in the leftmost label", s)
	}
	if strings.Count(first, "*") > 1 {
		return HostPattern{}, fmt.Errorf("host pattern %q: at most one '*' in a label", s)
	}
	if hasDot {
		if err := checkName(rest); err != nil {
			return HostPattern{}, fmt.Errorf("host pattern %q: %w", s, err)
		}
	}
	switch {
	case first == "*":
		if !strings.Contains(rest, ".") {
			return HostPattern{}, fmt.Errorf("host pattern %q: suffix %q is a top-level domain; name a registrable domain", s, rest)
		}
		return HostPattern{Kind: PatternSuffix, Key: rest}, nil
	case strings.Contains(first, "*"):
		pre, suf, _ := strings.Cut(first, "*")
		if err := checkLabelChars(pre + suf); err != nil {
			return HostPattern{}, fmt.Errorf("host pattern %q: %w", s, err)
		}
		return HostPattern{Kind: PatternLabel, Key: rest, Prefix: pre, Suffix: suf}, nil
	}
	if err := checkName(s); err != nil {
		return HostPattern{}, fmt.Errorf("host pattern %q: %w", s, err)
	}
	return HostPattern{Kind: PatternExact, Key: s}, nil
}

// parseDomain parses a registrable domain (no wildcard).
func parseDomain(s string) (HostPattern, error) {
	if strings.Contains(s, "*") {
		return HostPattern{}, fmt.Errorf("domain %q: domains take no wildcard; they cover every host below them", s)
	}
	if err := checkName(s); err != nil {
		return HostPattern{}, fmt.Errorf("domain %q: %w", s, err)
	}
	if !strings.Contains(s, ".") {
		return HostPattern{}, fmt.Errorf("domain %q: a top-level domain cannot be a vendor domain", s)
	}
	return HostPattern{Kind: PatternDomain, Key: s}, nil
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

// PortRange is an inclusive port range; the zero value matches any port.
// Catalog entries and the access settings (connect_ports, http_ports)
// write ports the same way.
type PortRange struct{ lo, hi uint16 }

func (r PortRange) any() bool { return r.lo == 0 && r.hi == 0 }

// Contains reports whether port is in the range.
func (r PortRange) Contains(port int) bool {
	return r.any() || (port >= int(r.lo) && port <= int(r.hi))
}

func (r PortRange) String() string {
	if r.lo == r.hi {
		return strconv.Itoa(int(r.lo))
	}
	return strconv.Itoa(int(r.lo)) + "-" + strconv.Itoa(int(r.hi))
}

// ParsePortRange parses "443" or "27200-27299".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || l == 0 || h == 0 {
		return PortRange{}, fmt.Errorf("port %q: want a port 1-65535 or a range such as \"27200-27299\"", s)
	}
	if h < l {
		return PortRange{}, fmt.Errorf("port range %q: end is before start", s)
	}
	return PortRange{uint16(l), uint16(h)}, nil
}
