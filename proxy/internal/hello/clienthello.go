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
// comments at each leniency say which server it is for.
package hello

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
