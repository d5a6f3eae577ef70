package accesslog

import (
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/feedgate/feedgate/rules"
)

// Squid is a Sink that writes each record as a line of Squid's native
// access.log format, so that log analysers and SIEM parsers written for
// Squid read feedgate's log unchanged:
//
//	time.ms elapsed client code/status bytes method URL user hierarchy/peer type
//	%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt
//
// bytes is what went to the client; a CONNECT's URL is host:port. Result
// codes: TCP_DENIED for blocked or refused requests (with HIER_NONE),
// TCP_TUNNEL for tunnels, TCP_MISS for forwarded requests (feedgate does
// not cache), TCP_MISS_ABORTED when the client left first. The policy's
// answer (rule, action) is not in this format; use the JSON format for it.
//
// Parsers split the line on whitespace, so every field is one token of
// printable ASCII whatever the record holds: see appendSquidLine.
type Squid struct {
	mu sync.Mutex
	w  io.Writer
}

// NewSquid writes Squid access.log lines to w.
func NewSquid(w io.Writer) *Squid { return &Squid{w: w} }

// squidBufs holds line buffers, so that a line costs no allocation. A
// line is at most four fields of maxSquidField and some numbers, so no
// buffer grows past about 33 KiB.
var squidBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Write implements Sink.
func (h *Squid) Write(r *Record) error {
	bp := squidBufs.Get().(*[]byte)
	line := appendSquidLine((*bp)[:0], r)
	h.mu.Lock()
	_, err := h.w.Write(line)
	h.mu.Unlock()
	*bp = line
	squidBufs.Put(bp)
	return err
}

// appendSquidLine appends the record's line, newline included. Numbers
// are clamped into what the format's fields can hold, and every string
// from the record is escaped into one token (see the escape sets below),
// so no value can add a field or a line.
func appendSquidLine(b []byte, s *Record) []byte {
	ms := s.Time.UnixMilli()
	code, hierDirect := "TCP_MISS", true
	switch {
	case s.Decided && s.Decision.Action == rules.Block || s.Rejected != "" || s.Closed == ClosedBlocked:
		code, hierDirect = "TCP_DENIED", false
	case s.Status == StatusClientClosed:
		code = "TCP_MISS_ABORTED"
	case s.Kind == KindConnect || s.Kind == KindTransparent:
		code = "TCP_TUNNEL"
	}
	if s.Error != "" && s.Status >= 500 {
		hierDirect = false
	}

	ms = max(ms, 0)
	b = strconv.AppendInt(b, ms/1000, 10)
	b = append(b, '.')
	b = appendPadded(b, ms%1000, 3, '0')
	b = append(b, ' ')
	b = appendPadded(b, max(s.Duration.Milliseconds(), 0), 6, ' ')
	b = append(b, ' ')
	b = appendSquidClient(b, s.Client)
	b = append(b, ' ')
	b = append(b, code...)
	b = append(b, '/')
	status := int64(s.Status)
	if status < 0 || status > 999 {
		// Squid's 000 is "no status": what it writes when it has none.
		status = 0
	}
	b = appendPadded(b, status, 3, '0')
	b = append(b, ' ')
	b = strconv.AppendInt(b, max(s.Received, 0), 10)
	b = append(b, ' ')
	if s.Method == "" {
		b = append(b, '-')
	} else {
		b = appendEscaped(b, s.Method, &methodSafe, len(b)+maxSquidField)
	}
	b = append(b, ' ')
	b = appendSquidURL(b, s)
	b = append(b, " - "...)
	if hierDirect {
		b = append(b, "HIER_DIRECT/"...)
		b = appendSquidPeer(b, s.Host)
	} else {
		b = append(b, "HIER_NONE/-"...)
	}
	// The user is always "-" (feedgate does not authenticate clients) and
	// so is the content type, which feedgate does not record.
	return append(b, " -\n"...)
}

// appendPadded appends a non-negative n right-aligned in width with pad.
func appendPadded(b []byte, n int64, width int, pad byte) []byte {
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], n, 10)
	for i := len(d); i < width; i++ {
		b = append(b, pad)
	}
	return append(b, d...)
}

// maxSquidField bounds each field built from request data. It is Squid's
// MAX_URL, the longest URL Squid logs: a megabyte-long request target
// would otherwise make a line that syslog relays truncate or split, and a
// split turns the tail of an attacker's URL into a line of its own. A
// longer field is cut, as Squid cuts it, but never inside an escape.
const maxSquidField = 8192

// The escape sets: bytes written as they are; every other byte is written
// as %XX with upper-case hex, as Squid's rfc1738 escaping writes it. None
// holds a space, a control byte, DEL or a non-ASCII byte, so an escaped
// field is one token of printable ASCII, and none holds '%', so every
// field decodes back to exactly what the record held.
var (
	// pathSafe is for the URL path: RFC 3986's pchar and '/', unescaped.
	// It is stricter than Squid's rfc1738_escape_unescaped, which also
	// keeps '%' (the record's path is decoded, so a '%' in it is a
	// literal one) and '?' (a path holding one must not decode as a
	// query); Squid 5.7 does not even apply that to %ru, and logs raw
	// UTF-8, quotes and angle brackets.
	pathSafe = byteSet(alnum + "-._" + "!$&()*+,;=:@/")
	// hostSafe is for host names: what DNS names hold. Anything else in a
	// host (a '/', '@' or ':' that would move the URL's path, userinfo or
	// port) is escaped.
	hostSafe = byteSet(alnum + "-._")
	// ipv6Safe is for the address part of a bracketed host, which
	// netip.ParseAddr has already checked: escaping is only a guard.
	ipv6Safe = byteSet("0123456789ABCDEFabcdef:.")
	// methodSafe is RFC 9110's tchar without '%', so that an escaped
	// method cannot be mistaken for a sent one.
	methodSafe = byteSet(alnum + "!#$&'*+-.^_`|~")
)

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func byteSet(chars string) (set [256]bool) {
	for i := 0; i < len(chars); i++ {
		set[chars[i]] = true
	}
	return set
}

const upperHex = "0123456789ABCDEF"

// appendEscaped appends s with every byte outside safe as %XX, and stops
// before the first byte or escape that would take len(b) past limit, so
// that a huge value is neither escaped whole nor cut inside an escape.
func appendEscaped(b []byte, s string, safe *[256]bool, limit int) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if safe[c] {
			if len(b) >= limit {
				break
			}
			b = append(b, c)
		} else {
			if len(b)+3 > limit {
				break
			}
			b = append(b, '%', upperHex[c>>4], upperHex[c&15])
		}
	}
	return b
}

// appendSquidClient appends the client field (%>a): the address in its
// usual text form, but with a zone (which may be any string) as in a URL,
// "%25" then the zone escaped, so that the field decodes back to the
// address; "-" if the client is unknown.
func appendSquidClient(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, '-')
	}
	return appendAddr(b, a, len(b)+maxSquidField)
}

// appendSquidPeer appends the peer field (%<a), which for feedgate is the
// host as the client named it: an IP address as appendSquidClient writes
// it, anything else as an escaped name.
func appendSquidPeer(b []byte, host string) []byte {
	if host == "" {
		return append(b, '-')
	}
	limit := len(b) + maxSquidField
	if a, ok := parseIP(host); ok {
		return appendAddr(b, a, limit)
	}
	return appendEscaped(b, host, &hostSafe, limit)
}

func appendAddr(b []byte, a netip.Addr, limit int) []byte {
	b = a.WithZone("").AppendTo(b)
	if z := a.Zone(); z != "" {
		b = append(b, "%25"...)
		b = appendEscaped(b, z, &hostSafe, limit)
	}
	return b
}

// appendSquidURL appends the request URL (%ru): http://host[:port]/path,
// https:// for an intercepted request, and host:port for a CONNECT.
func appendSquidURL(b []byte, s *Record) []byte {
	if s.Host == "" {
		// Nothing identifies the target; a bare path or port is not a URL.
		return append(b, '-')
	}
	limit := len(b) + maxSquidField
	// A huge host is cut short of the limit so that the port is kept
	// whole: parsers split host:port at the last ':'.
	hostLimit := limit - len("]:-9223372036854775808")
	if s.Kind == KindConnect || s.Kind == KindTransparent {
		b = appendURLHost(b, s.Host, hostLimit)
		b = append(b, ':')
		return strconv.AppendInt(b, int64(s.Port), 10)
	}
	scheme, defPort := "http://", 80
	if s.Kind == KindMITM {
		scheme, defPort = "https://", 443
	}
	b = append(b, scheme...)
	b = appendURLHost(b, s.Host, hostLimit)
	if s.Port != defPort {
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(s.Port), 10)
	}
	if s.Path != "" && s.Path[0] != '/' {
		// Without it the path would run into the host: host "a" and
		// path ".evil.example/x" would read as http://a.evil.example/x.
		b = append(b, '/')
	}
	return appendEscaped(b, s.Path, &pathSafe, limit)
}

// appendURLHost appends a URL's host: an IPv6 address in brackets, with
// a zone as RFC 6874 writes it, "%25" then the zone escaped, so that a
// zone such as "eth0 x" stays in the token. Any other host is escaped as
// a name, a ':' included, so that only the port follows a raw ':'.
func appendURLHost(b []byte, host string, limit int) []byte {
	if a, ok := parseIP(host); !ok || !a.Is6() {
		return appendEscaped(b, host, &hostSafe, limit)
	}
	addr, zone, hasZone := strings.Cut(host, "%")
	b = append(b, '[')
	b = appendEscaped(b, addr, &ipv6Safe, limit)
	if hasZone {
		b = append(b, "%25"...)
		b = appendEscaped(b, zone, &hostSafe, limit)
	}
	return append(b, ']')
}

// parseIP is netip.ParseAddr without its error, which costs an allocation
// per host name: names are ruled out first, as an IPv6 address has a ':'
// and an IPv4 one only digits and dots.
func parseIP(s string) (netip.Addr, bool) {
	if !strings.Contains(s, ":") && strings.Trim(s, "0123456789.") != "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil
}
