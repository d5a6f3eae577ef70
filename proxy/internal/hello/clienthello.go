// Package hello reads the server name a TLS client asks for from the first
// bytes it sends, without terminating TLS: a tunnel's bytes are only looked
// at, never changed, so the parser works on the caller's buffer and returns
// slices of it. It also reads the server's answer, far enough to tell a
// HelloRetryRequest, after which the client sends a second ClientHello.
//
// The parser must be at least as lenient as the servers behind the proxy:
// any ClientHello that a real server takes, and whose name it uses, must
// give the proxy that name too, or a client could hide its destination in a
// framing the proxy refuses and the server accepts. What it accepts is the
// union of what Go's crypto/tls (1.26) and OpenSSL (3.0) servers accept, as
// measured by the differential test in clienthello_diff_test.go; the
// comments below say which server each leniency is for.
package hello

import (
	"bytes"
	"unicode"
	"unicode/utf8"

	"github.com/feedgate/feedgate/rules"
)

// Status says how far a Scanner got with a buffer.
type Status uint8

const (
	// Complete: the whole ClientHello was parsed.
	Complete Status = iota
	// Incomplete: the bytes so far are a valid start of a ClientHello
	// of at most MaxClientHello bytes; the caller should read more.
	Incomplete
	// NotTLS: the bytes are not TLS records carrying a ClientHello,
	// the ClientHello is malformed, or it would need more than
	// MaxClientHello bytes.
	NotTLS
)

func (s Status) String() string {
	switch s {
	case Complete:
		return "complete"
	case Incomplete:
		return "incomplete"
	case NotTLS:
		return "not TLS"
	}
	return "Status(?)"
}

// TLS framing (RFC 8446 sections 4, 5.1 and 6, RFC 6066 section 3).
const (
	tlsRecordHeaderLen     = 5
	tlsMaxRecordLen        = 1 << 14 // TLSPlaintext.length
	tlsRecordTypeCCS       = 20
	tlsRecordTypeAlert     = 21
	tlsRecordTypeHandshake = 22
	tlsHandshakeHeaderLen  = 4
	tlsTypeClientHello     = 1
	tlsTypeServerHello     = 2
	tlsExtServerName       = 0
	tlsSNIHostName         = 0
	tlsAlertLevelWarning   = 1
	tlsAlertCloseNotify    = 0
	tlsAlertUserCanceled   = 90
	maxSNIHostName         = 255
)

// maxClientHelloLen is the longest ClientHello body accepted: Go's
// crypto/tls refuses any handshake message longer than its maxHandshake,
// 64 KiB. OpenSSL 3.0 takes ClientHellos up to about 128 KiB; one between
// the two is answered NotTLS, which the caller treats as a tunnel
// without a usable name. No real client comes near either limit.
const maxClientHelloLen = 1 << 16

// MaxClientHello is the most bytes of a client's stream that the caller
// needs to buffer: Scanner.ClientHelloServerName never answers Incomplete
// for a buffer this long, and answers NotTLS, as soon as the lengths it has
// seen show it, for a ClientHello that would end beyond it.
//
// It is the largest ClientHello Go accepts with its handshake header, plus
// one record's worth (16 KiB) for framing: both servers take a hello cut
// into any number of records, each with a 5-byte header, and OpenSSL also
// takes up to 32 empty records among them. 16 KiB of framing is enough for
// a hello of up to 13 KiB (every real one) cut into one-byte records, and
// for the largest hello in records of 21 bytes or more. A client that cuts
// a large hello finer than that gets NotTLS; a larger limit would only
// let every connection make the proxy buffer more before deciding.
const MaxClientHello = tlsHandshakeHeaderLen + maxClientHelloLen + tlsMaxRecordLen

// helloRetryRandom is the ServerHello.random that marks a HelloRetryRequest:
// SHA-256("HelloRetryRequest") (RFC 8446 section 4.1.3).
var helloRetryRandom = [32]byte{
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11,
	0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e,
	0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
}

// Scanner reads the first handshake message of one stream, a ClientHello or
// a ServerHello, as the stream arrives, carrying the parse from call to
// call. Parsing the whole buffer afresh walks every record of it on each
// call, and a caller that calls again with each longer prefix of a stream
// makes that quadratic: a hello cut into one-byte records and sent a byte at
// a time costs some 5*10^8 record steps, seconds of CPU, before
// MaxClientHello is reached. A Scanner remembers the records it has walked,
// so that all the calls together cost time linear in the stream's length.
//
// Its methods answer exactly as they would on a new Scanner, provided each
// call on a scanner passes a prefix of the same stream, at least as long as
// the last one, and always to the same method. (A shorter prefix starts the
// scanner over.) It keeps offsets, not slices, so the caller may move the
// stream to a larger buffer between calls. The zero value is ready to use.
type Scanner struct {
	pos    int  // the first record not walked yet
	have   int  // how many bytes of the message the records before pos hold
	need   int  // the message's length with its header, once known; else 0
	start  int  // where the message's first byte is
	split  bool // the message spans records
	hs     [tlsHandshakeHeaderLen]byte
	walked int // records walked, counted for the tests
}

// ClientHelloServerName parses the start of a client's byte stream. It
// returns Incomplete when more bytes are needed to see the whole
// ClientHello (the caller reads more and calls again with the longer
// buffer), NotTLS when the bytes are not TLS records carrying a
// ClientHello or are malformed, and Complete when the whole ClientHello
// was parsed; name is then the host_name from the server_name extension
// (RFC 6066), as sent, or nil if there is none.
//
// The name is raw: it may be upper-case, end in one dot or carry a ":port"
// (servers hand such names on as they are). CanonicalSNI gives the host it
// names; decisions must use that, and logs may show the raw name.
//
// A host_name that names no host (see usableSNI) is reported as no name at
// all, Complete with name nil: the caller must never see bytes that
// could smuggle anything into a log line or a host:port string. Structural
// faults that every server refuses (lengths that do not add up, two
// server_name extensions, two host_names) make the hello NotTLS: a name
// picked from an ambiguous hello might not be the name a server would see.
//
// The record layer is read as leniently as the servers read it: any record
// version from 0x0000 to 0x0fff (Go; OpenSSL takes 0x03xx), a ClientHello
// cut into records anywhere, empty handshake records before and among them
// (OpenSSL), an empty ChangeCipherSpec record before them (OpenSSL), and
// warning alerts before and among them (Go).
//
// When the ClientHello lies in one record the name is a slice of data, and
// nothing is allocated: that case, every real client's, stays cheap. A
// ClientHello cut into several records is copied into one new buffer of its
// size once, on the call that finds it complete, and name is a slice of that
// copy; incomplete prefixes never allocate. The result for a buffer that
// holds a complete ClientHello does not depend on any bytes after it.
func (s *Scanner) ClientHelloServerName(data []byte) (name []byte, st Status) {
	body, _, st := s.message(data, tlsTypeClientHello, false)
	if st != Complete {
		return nil, st
	}
	return parseClientHello(body)
}

// SecondClientHelloServerName parses a client's bytes after its first
// ClientHello (from ClientHelloEnd on) once the server has answered it with
// a HelloRetryRequest: the client then sends a second ClientHello, which may
// name another server, after a ChangeCipherSpec record in TLS 1.3's
// middlebox compatibility mode (RFC 8446 appendix D.4). ChangeCipherSpec
// records are skipped, wherever they are (OpenSSL treats them as empty
// handshake records), and so are user_canceled alerts (both servers ignore
// them in TLS 1.3); otherwise the answer is ClientHelloServerName's.
func (s *Scanner) SecondClientHelloServerName(data []byte) (name []byte, st Status) {
	body, _, st := s.message(data, tlsTypeClientHello, true)
	if st != Complete {
		return nil, st
	}
	return parseClientHello(body)
}

// ServerHelloStatus parses the start of a server's byte stream, its answer
// to a ClientHello, and reports whether the ServerHello there is a
// HelloRetryRequest, after which the client sends a second ClientHello. The
// status has ClientHelloServerName's contract for a ServerHello, with the
// same bounds: Complete once the whole ServerHello is there (isHRR is
// meaningful only then), NotTLS for anything else, such as a fatal
// alert refusing the client.
//
// It is as lenient as a client: records are framed as in a ClientHello, and
// warning alerts (OpenSSL sends unrecognized_name before its ServerHello in
// TLS 1.2) and ChangeCipherSpec records are skipped.
func (s *Scanner) ServerHelloStatus(data []byte) (isHRR bool, st Status) {
	body, _, st := s.message(data, tlsTypeServerHello, true)
	if st != Complete {
		return false, st
	}
	const version = 2
	if len(body) < version+len(helloRetryRandom) {
		return false, NotTLS
	}
	return bytes.Equal(body[version:version+len(helloRetryRandom)], helloRetryRandom[:]), Complete
}

// ClientHelloEnd returns the length of the records that carry the
// ClientHello at the start of data: the offset at which the client's next
// record starts, where SecondClientHelloServerName begins after a
// HelloRetryRequest. Its status is ClientHelloServerName's, except that it
// is Incomplete until the record that ends the ClientHello has arrived
// whole.
func ClientHelloEnd(data []byte) (end int, st Status) {
	var s Scanner
	body, end, st := s.message(data, tlsTypeClientHello, false)
	if st != Complete {
		return 0, st
	}
	if _, st = parseClientHello(body); st != Complete {
		return 0, st
	}
	if end > len(data) {
		return 0, Incomplete
	}
	return end, Complete
}

// message walks the records at the start of data, from the first one it
// has not walked yet, and returns the body (without its 4-byte header) of
// the first handshake message, which must be of type typ, once all of it is
// there: a slice of data when it lies in one record, a copy otherwise. end
// is the offset just past the record that holds its last byte; that record
// may not have arrived whole. With skipCCS, non-empty ChangeCipherSpec
// records are skipped too.
//
// Every check uses only bytes before the point it looks at, and the bytes
// are looked at in stream order, so a prefix that is NotTLS stays so
// whatever follows, and a Complete answer never changes. That is also
// why resuming at the first record not walked gives the same answers.
func (s *Scanner) message(data []byte, typ byte, skipCCS bool) (body []byte, end int, st Status) {
	if len(data) < s.pos {
		*s = Scanner{walked: s.walked}
	}
	// The handshake header may itself be cut by a record boundary, so it
	// is gathered byte by byte; need is the handshake message's length
	// once the header is known.
	hs, have, need := s.hs, s.have, s.need
	if need == 0 {
		need = tlsHandshakeHeaderLen
	}
	start, single := s.start, !s.split // where the message starts; whether in one record
	pos := s.pos                       // start of the current record in data
	for {
		s.walked++
		// The message ends at least need-have bytes after this record's
		// header; one that cannot end within MaxClientHello is refused
		// here, whether or not its bytes have arrived. Skipped records
		// count too, which bounds how many a client can make the proxy
		// walk.
		if pos+tlsRecordHeaderLen+need-have > MaxClientHello {
			return nil, 0, NotTLS
		}
		rec := data[pos:]
		// Judge each header byte as soon as it arrives, so that a stream
		// that is plainly not TLS ("GET ...", "SSH-2.0-...") is known
		// from its first byte.
		if len(rec) > 0 && rec[0] != tlsRecordTypeHandshake && rec[0] != tlsRecordTypeAlert && rec[0] != tlsRecordTypeCCS {
			return nil, 0, NotTLS
		}
		// Go takes any record version below 0x1000 until it has chosen
		// one (it only guards against streams that are not TLS);
		// OpenSSL any 3.x.
		if len(rec) > 1 && rec[1] >= 0x10 {
			return nil, 0, NotTLS
		}
		if len(rec) < tlsRecordHeaderLen {
			return nil, 0, helloMore(pos + tlsRecordHeaderLen + need - have)
		}
		n := int(rec[3])<<8 | int(rec[4])
		if n > tlsMaxRecordLen {
			return nil, 0, NotTLS
		}
		frag := rec[tlsRecordHeaderLen:]
		if len(frag) > n {
			frag = frag[:n]
		}
		next := pos + tlsRecordHeaderLen + n
		switch {
		case n == 0 && rec[0] != tlsRecordTypeAlert:
			// OpenSSL skips empty handshake records anywhere, and an
			// empty ChangeCipherSpec before the ClientHello (skipping
			// it elsewhere too errs on the lenient side); Go refuses
			// both. Both refuse empty alerts.
			pos = next
			s.save(pos, have, need, start, single, hs)
			continue
		case rec[0] == tlsRecordTypeAlert:
			// An alert is two bytes, level and description.
			if n != 2 {
				return nil, 0, NotTLS
			}
			if len(frag) < n {
				return nil, 0, helloMore(next + tlsRecordHeaderLen + need - have)
			}
			if !helloSkippableAlert(frag[0], frag[1]) {
				return nil, 0, NotTLS
			}
			pos = next
			s.save(pos, have, need, start, single, hs)
			continue
		case rec[0] == tlsRecordTypeCCS:
			// A ChangeCipherSpec is the one byte 1.
			if !skipCCS || n != 1 {
				return nil, 0, NotTLS
			}
			if len(frag) < n {
				return nil, 0, helloMore(next + tlsRecordHeaderLen + need - have)
			}
			if frag[0] != 1 {
				return nil, 0, NotTLS
			}
			pos = next
			s.save(pos, have, need, start, single, hs)
			continue
		}
		if have == 0 {
			start = pos + tlsRecordHeaderLen
		} else {
			single = false
		}
		avail, before := frag, have
		for have < tlsHandshakeHeaderLen && len(avail) > 0 {
			hs[have] = avail[0]
			avail = avail[1:]
			have++
			if have == 1 && hs[0] != typ {
				return nil, 0, NotTLS
			}
			if have == tlsHandshakeHeaderLen {
				l := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
				if l > maxClientHelloLen {
					return nil, 0, NotTLS
				}
				need = tlsHandshakeHeaderLen + l
			}
		}
		have += min(len(avail), need-have)
		if have == need {
			// The header may have arrived in this record, and the
			// whole message with it.
			if pos+tlsRecordHeaderLen+have-before > MaxClientHello {
				return nil, 0, NotTLS
			}
			if single {
				return data[start+tlsHandshakeHeaderLen : start+need], next, Complete
			}
			return helloReassemble(data[start-tlsRecordHeaderLen:], need), next, Complete
		}
		if len(frag) < n {
			// This record goes on past the end of data. The message ends
			// at least need-have bytes further on, and one record header
			// further still if this record cannot hold them.
			more := need - have
			last := len(data) + more
			if more > n-len(frag) {
				last += tlsRecordHeaderLen
			}
			return nil, 0, helloMore(last)
		}
		pos = next
		s.save(pos, have, need, start, single, hs)
	}
}

// save records the walk's state at the start of the record at pos, all
// records before it walked.
func (s *Scanner) save(pos, have, need, start int, single bool, hs [tlsHandshakeHeaderLen]byte) {
	s.pos, s.have, s.need, s.start, s.split, s.hs = pos, have, need, start, !single, hs
}

// helloSkippableAlert reports whether a server ignores an alert of level
// and desc received instead of (part of) a ClientHello. Go drops warning
// alerts other than close_notify before it has chosen a version (up to 16
// ignored records), and user_canceled at any level in TLS 1.3; OpenSSL
// refuses alerts before the first ClientHello and ignores user_canceled in
// TLS 1.3. Skipping both kinds everywhere errs on the lenient side.
func helloSkippableAlert(level, desc byte) bool {
	return level == tlsAlertLevelWarning && desc != tlsAlertCloseNotify || desc == tlsAlertUserCanceled
}

// helloMore is the answer for a valid prefix of a handshake message that
// cannot end before the stream offset end.
func helloMore(end int) Status {
	if end > MaxClientHello {
		return NotTLS
	}
	return Incomplete
}

// helloReassemble copies the body of a handshake message of need bytes
// (header included) out of the records at the start of data, which
// message has checked and found to hold all of it. Only non-empty
// handshake records carry it: the others were skipped.
func helloReassemble(data []byte, need int) []byte {
	msg := make([]byte, 0, need)
	for pos := 0; len(msg) < need; {
		n := int(data[pos+3])<<8 | int(data[pos+4])
		if data[pos] == tlsRecordTypeHandshake {
			frag := data[pos+tlsRecordHeaderLen:]
			frag = frag[:min(len(frag), n, need-len(msg))]
			msg = append(msg, frag...)
		}
		pos += tlsRecordHeaderLen + n
	}
	return msg[tlsHandshakeHeaderLen:]
}

// parseClientHello parses a ClientHello body (RFC 8446 4.1.2, which also
// describes the TLS 1.2 and earlier layout) and returns the usable
// host_name, if any. The answer is Complete or NotTLS.
func parseClientHello(b []byte) ([]byte, Status) {
	const versionAndRandom = 2 + 32
	if len(b) < versionAndRandom {
		return nil, NotTLS
	}
	// The session ID may be up to 255 bytes: RFC 8446 allows 32, OpenSSL
	// checks that, Go does not.
	_, b, ok := helloVec8(b[versionAndRandom:])
	if !ok {
		return nil, NotTLS
	}
	suites, b, ok := helloVec16(b)
	if !ok || len(suites) < 2 || len(suites)%2 != 0 {
		return nil, NotTLS
	}
	compression, b, ok := helloVec8(b)
	if !ok || len(compression) == 0 {
		return nil, NotTLS
	}
	if len(b) == 0 {
		// No extensions at all (SSL 3.0-era clients): no server name.
		return nil, Complete
	}
	exts, rest, ok := helloVec16(b)
	if !ok || len(rest) != 0 {
		return nil, NotTLS
	}
	var name []byte
	seen := false
	for len(exts) > 0 {
		if len(exts) < 4 {
			return nil, NotTLS
		}
		typ := int(exts[0])<<8 | int(exts[1])
		var ext []byte
		ext, exts, ok = helloVec16(exts[2:])
		if !ok {
			return nil, NotTLS
		}
		if typ != tlsExtServerName {
			continue
		}
		// Extensions must not repeat (RFC 8446 4.2); for server_name a
		// repeat would let the proxy and the server read different names.
		if seen {
			return nil, NotTLS
		}
		seen = true
		if name, ok = parseServerName(ext); !ok {
			return nil, NotTLS
		}
	}
	return name, Complete
}

// parseServerName parses a server_name extension's data, a ServerNameList.
// ok is false when it is malformed; name is nil when it holds no usable
// host_name. Entries of other name types are skipped by their 16-bit length
// as crypto/tls does (none have been defined; OpenSSL refuses them); a
// second host_name is malformed (RFC 6066 section 3).
func parseServerName(ext []byte) (name []byte, ok bool) {
	list, rest, ok := helloVec16(ext)
	if !ok || len(rest) != 0 || len(list) == 0 {
		return nil, false
	}
	seen := false
	for len(list) > 0 {
		typ := list[0]
		var v []byte
		if v, list, ok = helloVec16(list[1:]); !ok {
			return nil, false
		}
		if typ != tlsSNIHostName {
			continue
		}
		if seen {
			return nil, false
		}
		seen = true
		if usableSNI(v) {
			name = v
		}
	}
	return name, true
}

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

// helloVec8 splits a vector with a 1-byte length prefix off b.
func helloVec8(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 1 {
		return nil, nil, false
	}
	n := int(b[0])
	if len(b)-1 < n {
		return nil, nil, false
	}
	return b[1 : 1+n], b[1+n:], true
}

// helloVec16 splits a vector with a 2-byte length prefix off b.
func helloVec16(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(b[0])<<8 | int(b[1])
	if len(b)-2 < n {
		return nil, nil, false
	}
	return b[2 : 2+n], b[2+n:], true
}
