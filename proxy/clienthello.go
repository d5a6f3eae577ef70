package proxy

// Reading the server name a TLS client asks for from the first bytes it
// sends, without terminating TLS: a tunnel's bytes are only looked at, never
// changed, so the parser works on the caller's buffer and returns slices of
// it.

// helloStatus says how far clientHelloServerName got with a buffer.
type helloStatus uint8

const (
	// helloComplete: the whole ClientHello was parsed.
	helloComplete helloStatus = iota
	// helloIncomplete: the bytes so far are a valid start of a ClientHello
	// of at most maxClientHello bytes; the caller should read more.
	helloIncomplete
	// helloNotTLS: the bytes are not a TLS handshake record carrying a
	// ClientHello, the ClientHello is malformed, or it would need more than
	// maxClientHello bytes.
	helloNotTLS
)

func (s helloStatus) String() string {
	switch s {
	case helloComplete:
		return "complete"
	case helloIncomplete:
		return "incomplete"
	case helloNotTLS:
		return "not TLS"
	}
	return "helloStatus(?)"
}

// TLS framing (RFC 8446 sections 4 and 5.1, RFC 6066 section 3).
const (
	tlsRecordHeaderLen     = 5
	tlsMaxRecordLen        = 1 << 14 // TLSPlaintext.length
	tlsRecordTypeHandshake = 22
	tlsHandshakeHeaderLen  = 4
	tlsTypeClientHello     = 1
	tlsExtServerName       = 0
	tlsSNIHostName         = 0
	tlsMaxSessionID        = 32
	maxSNIHostName         = 255
)

// maxClientHello is the most bytes of a client's stream that the caller
// needs to buffer: clientHelloServerName never answers helloIncomplete for
// a buffer this long, and answers helloNotTLS, as soon as the lengths it has
// seen show it, for a ClientHello that would end beyond it.
//
// It is one full record: a ClientHello may be up to 2^24 bytes, but real
// ones are far smaller. Go 1.26's, with an X25519MLKEM768 key share, is
// about 1.5 KiB; browsers' with post-quantum shares and padding are under
// 2 KiB; only enormous PSK identities or ALPN lists come near 16 KiB. One
// record's worth still leaves room for a small hello that a client (or a
// censorship-evasion tool) cut into many tiny records, each with its own
// 5-byte header. A larger limit would only let every connection make the
// proxy buffer more before deciding.
const maxClientHello = tlsRecordHeaderLen + tlsMaxRecordLen

// maxClientHelloLen is the longest handshake message body accepted: with
// its handshake header and one record header it fills maxClientHello.
const maxClientHelloLen = tlsMaxRecordLen - tlsHandshakeHeaderLen

// clientHelloServerName parses the start of a client's byte stream. It
// returns helloIncomplete when more bytes are needed to see the whole
// ClientHello (the caller reads more and calls again with the longer
// buffer), helloNotTLS when the bytes are not a TLS handshake record
// carrying a ClientHello or are malformed, and helloComplete when the whole
// ClientHello was parsed; name is then the host_name from the server_name
// extension (RFC 6066), or nil if there is none.
//
// A host_name that is not a plausible DNS name (see validSNIHostName) is
// reported as no name at all, helloComplete with name nil: the server will
// not be able to use it either, and the caller must never see bytes that
// could smuggle anything into a log line or a host:port string. Structural
// faults, by contrast (lengths that do not add up, two server_name
// extensions, two host_names), make the hello helloNotTLS: servers reject
// such a hello, and a name picked from an ambiguous one might not be the
// name the server would see.
//
// The name is returned as sent (not lower-cased) and, when the ClientHello
// lies in one record, as a slice of data: that case, every real client's,
// allocates nothing. A ClientHello cut into several records is copied into
// one new buffer of its size (at most 16 KiB) once, on the call that finds
// it complete, and name is a slice of that copy; incomplete prefixes never
// allocate. The result for a buffer that holds a complete ClientHello does
// not depend on any bytes after it.
func clientHelloServerName(data []byte) (name []byte, st helloStatus) {
	body, st := clientHelloBody(data)
	if st != helloComplete {
		return nil, st
	}
	return parseClientHello(body)
}

// clientHelloBody walks the handshake records at the start of data and
// returns the ClientHello's body (the handshake message without its 4-byte
// header) once all of it is there: a slice of data when it lies in the first
// record, a copy otherwise.
//
// Every check uses only bytes before the point it looks at, and the bytes
// are looked at in stream order, so a prefix that is helloNotTLS stays so
// whatever follows, and a helloComplete answer never changes.
func clientHelloBody(data []byte) ([]byte, helloStatus) {
	// The handshake header may itself be cut by a record boundary, so it
	// is gathered byte by byte; need is the handshake message's length
	// once the header is known.
	var hs [tlsHandshakeHeaderLen]byte
	have, need := 0, tlsHandshakeHeaderLen
	pos := 0 // start of the current record in data
	for {
		// The hello ends at least need-have bytes after this record's
		// header; one that cannot end within maxClientHello is refused
		// here, whether or not its bytes have arrived.
		if pos+tlsRecordHeaderLen+need-have > maxClientHello {
			return nil, helloNotTLS
		}
		rec := data[pos:]
		// Judge each header byte as soon as it arrives, so that a stream
		// that is plainly not TLS ("GET ...", "SSH-2.0-...") is known
		// from its first byte.
		if len(rec) > 0 && rec[0] != tlsRecordTypeHandshake {
			return nil, helloNotTLS
		}
		if len(rec) > 1 && rec[1] != 3 { // SSL 3.0 to TLS 1.3 use 3.x
			return nil, helloNotTLS
		}
		if len(rec) > 2 && rec[2] > 4 {
			return nil, helloNotTLS
		}
		if len(rec) < tlsRecordHeaderLen {
			return nil, helloIncomplete
		}
		n := int(rec[3])<<8 | int(rec[4])
		// Zero-length handshake fragments are forbidden (RFC 8446 5.1),
		// and would let a client make the proxy walk headers forever.
		if n == 0 || n > tlsMaxRecordLen {
			return nil, helloNotTLS
		}
		frag := rec[tlsRecordHeaderLen:]
		if len(frag) > n {
			frag = frag[:n]
		}
		avail, before := frag, have
		for have < tlsHandshakeHeaderLen && len(avail) > 0 {
			hs[have] = avail[0]
			avail = avail[1:]
			have++
			if have == 1 && hs[0] != tlsTypeClientHello {
				return nil, helloNotTLS
			}
			if have == tlsHandshakeHeaderLen {
				l := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
				if l > maxClientHelloLen {
					return nil, helloNotTLS
				}
				need = tlsHandshakeHeaderLen + l
			}
		}
		have += min(len(avail), need-have)
		if have == need {
			// The header may have arrived in this record, and the
			// whole hello with it.
			if pos+tlsRecordHeaderLen+have-before > maxClientHello {
				return nil, helloNotTLS
			}
			if pos == 0 {
				return data[tlsRecordHeaderLen+tlsHandshakeHeaderLen : tlsRecordHeaderLen+need], helloComplete
			}
			return helloReassemble(data, need), helloComplete
		}
		if len(frag) < n {
			// This record goes on past the end of data. The ClientHello
			// ends at least need-have bytes further on, and one record
			// header further still if this record cannot hold them.
			more := need - have
			end := len(data) + more
			if more > n-len(frag) {
				end += tlsRecordHeaderLen
			}
			return nil, helloMore(end)
		}
		pos += tlsRecordHeaderLen + n
	}
}

// helloMore is the answer for a valid prefix of a ClientHello that cannot
// end before the stream offset end.
func helloMore(end int) helloStatus {
	if end > maxClientHello {
		return helloNotTLS
	}
	return helloIncomplete
}

// helloReassemble copies the body of a ClientHello handshake message of
// need bytes (header included) out of the records at the start of data,
// which clientHelloBody has checked and found to hold all of it.
func helloReassemble(data []byte, need int) []byte {
	msg := make([]byte, 0, need)
	for pos := 0; len(msg) < need; {
		n := int(data[pos+3])<<8 | int(data[pos+4])
		frag := data[pos+tlsRecordHeaderLen:]
		frag = frag[:min(len(frag), n, need-len(msg))]
		msg = append(msg, frag...)
		pos += tlsRecordHeaderLen + n
	}
	return msg[tlsHandshakeHeaderLen:]
}

// parseClientHello parses a ClientHello body (RFC 8446 4.1.2, which also
// describes the TLS 1.2 and earlier layout) and returns the usable
// host_name, if any. The answer is helloComplete or helloNotTLS.
func parseClientHello(b []byte) ([]byte, helloStatus) {
	const versionAndRandom = 2 + 32
	if len(b) < versionAndRandom {
		return nil, helloNotTLS
	}
	sessionID, b, ok := helloVec8(b[versionAndRandom:])
	if !ok || len(sessionID) > tlsMaxSessionID {
		return nil, helloNotTLS
	}
	suites, b, ok := helloVec16(b)
	if !ok || len(suites) < 2 || len(suites)%2 != 0 {
		return nil, helloNotTLS
	}
	compression, b, ok := helloVec8(b)
	if !ok || len(compression) == 0 {
		return nil, helloNotTLS
	}
	if len(b) == 0 {
		// No extensions at all (SSL 3.0-era clients): no server name.
		return nil, helloComplete
	}
	exts, rest, ok := helloVec16(b)
	if !ok || len(rest) != 0 {
		return nil, helloNotTLS
	}
	var name []byte
	seen := false
	for len(exts) > 0 {
		if len(exts) < 4 {
			return nil, helloNotTLS
		}
		typ := int(exts[0])<<8 | int(exts[1])
		var ext []byte
		ext, exts, ok = helloVec16(exts[2:])
		if !ok {
			return nil, helloNotTLS
		}
		if typ != tlsExtServerName {
			continue
		}
		// Extensions must not repeat (RFC 8446 4.2); for server_name a
		// repeat would let the proxy and the server read different names.
		if seen {
			return nil, helloNotTLS
		}
		seen = true
		if name, ok = parseServerName(ext); !ok {
			return nil, helloNotTLS
		}
	}
	return name, helloComplete
}

// parseServerName parses a server_name extension's data, a ServerNameList.
// ok is false when it is malformed; name is nil when it holds no usable
// host_name. Entries of other name types are skipped by their 16-bit length
// as crypto/tls does (none have been defined); a second host_name is
// malformed (RFC 6066 section 3).
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
		if validSNIHostName(v) {
			name = v
		}
	}
	return name, true
}

// validSNIHostName reports whether b is a usable host_name: 1 to 255 bytes
// of letters, digits, '-' and '_' in non-empty labels separated by dots. It
// checks what is safe to pass on, not full DNS syntax; a trailing dot, which
// RFC 6066 forbids, makes the name unusable. An IPv4 literal passes (some
// clients send them, RFC 6066 notwithstanding); an IPv6 one does not.
func validSNIHostName(b []byte) bool {
	if len(b) == 0 || len(b) > maxSNIHostName {
		return false
	}
	label := 0
	for _, c := range b {
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
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
