package hello

import (
	"bytes"
	"unicode"
	"unicode/utf8"

	"github.com/feedgate/feedgate/rules"
)

// usableSNI reports whether CanonicalSNI accepts the host_name b, without
// allocating for an ASCII name.
func usableSNI(b []byte) bool {
	_, ascii, ok := sniHost(b)
	if !ok {
		return false
	}
	if ascii && !lastLabelNumeric(b) {
		// sniHost has checked all that rules.CanonicalHost needs of an
		// ASCII host, which it only lower-cases; a name ending in a
		// number is an IPv4 literal or refused, which it decides.
		return true
	}
	_, ok = CanonicalSNI(b)
	return ok
}

// CanonicalSNI returns the host that a ClientHello's raw host_name names, in
// the canonical form of rules.CanonicalHost (lower case, ASCII, punycode for
// internationalised names), which is what decisions must compare. It
// undoes what servers undo: one trailing dot, which RFC 6066 forbids but
// OpenSSL passes on, and a ":port" suffix, which both servers pass on and
// nginx strips. ok is false for a name that names no host: empty labels,
// characters no host name has (spaces, control characters, '/', ...), or a
// name IDNA refuses. The raw name of an ok answer is printable, so it may
// be logged as it is.
func CanonicalSNI(raw []byte) (host string, ok bool) {
	h, _, ok := sniHost(raw)
	if !ok {
		return "", false
	}
	c, err := rules.CanonicalHost(string(h))
	if err != nil || !canonicalSNIHost(c) {
		return "", false
	}
	return c, true
}

// DNS name limits (RFC 1035), which rules.CanonicalHost enforces too.
const (
	maxDNSLabel = 63
	maxDNSName  = 253
)

// lastLabelNumeric reports whether the host_name's last label (before any
// ":port" or trailing dot) starts with a digit.
func lastLabelNumeric(b []byte) bool {
	if i := bytes.IndexByte(b, ':'); i >= 0 {
		b = b[:i]
	}
	b = bytes.TrimSuffix(b, []byte("."))
	if i := bytes.LastIndexByte(b, '.'); i >= 0 {
		b = b[i+1:]
	}
	return len(b) > 0 && '0' <= b[0] && b[0] <= '9'
}

// sniHost strips a ":port" and then one trailing dot off a raw host_name
// and checks what is left: non-empty labels of letters, digits, '-' and
// '_', or, when ascii is false, of printable non-ASCII UTF-8 as well, which
// IDNA must then vouch for. An IPv4 literal passes (some clients send them,
// RFC 6066 notwithstanding); an IPv6 one does not.
func sniHost(raw []byte) (host []byte, ascii, ok bool) {
	if i := bytes.IndexByte(raw, ':'); i >= 0 {
		port := raw[i+1:]
		if len(port) > 5 {
			return nil, false, false
		}
		for _, c := range port {
			if c < '0' || c > '9' {
				return nil, false, false
			}
		}
		raw = raw[:i]
	}
	if len(raw) > 0 && raw[len(raw)-1] == '.' {
		raw = raw[:len(raw)-1]
	}
	if len(raw) == 0 || len(raw) > maxSNIHostName {
		return nil, false, false
	}
	ascii = true
	label := 0
	for _, c := range raw {
		switch {
		case c == '.':
			if label == 0 || label > maxDNSLabel {
				return nil, false, false
			}
			label = 0
			continue
		case c >= utf8.RuneSelf:
			ascii = false
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return nil, false, false
		}
		label++
	}
	if label == 0 || label > maxDNSLabel || ascii && len(raw) > maxDNSName {
		return nil, false, false
	}
	if !ascii {
		// Format characters (bidi overrides, zero-width joiners) and
		// non-ASCII spaces are not printable; IDNA would map some of
		// them away, but the raw name goes to the log.
		for s := raw; len(s) > 0; {
			r, size := utf8.DecodeRune(s)
			if r == utf8.RuneError && size <= 1 || r >= utf8.RuneSelf && !unicode.IsPrint(r) {
				return nil, false, false
			}
			s = s[size:]
		}
	}
	return raw, ascii, true
}

// canonicalSNIHost reports whether c, an answer of rules.CanonicalHost, is a
// host name: non-empty labels of lower-case letters, digits, '-' and '_'.
// IDNA can yield empty labels (from full-width dots) that the raw check
// could not see.
func canonicalSNIHost(c string) bool {
	if len(c) == 0 || len(c) > maxSNIHostName {
		return false
	}
	label := 0
	for i := 0; i < len(c); i++ {
		switch b := c[i]; {
		case b == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case 'a' <= b && b <= 'z', '0' <= b && b <= '9', b == '-', b == '_':
		default:
			return false
		}
		label++
	}
	return label > 0
}
