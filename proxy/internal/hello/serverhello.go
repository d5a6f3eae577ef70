package hello

import "bytes"

// helloRetryRandom is the ServerHello.random that marks a HelloRetryRequest:
// SHA-256("HelloRetryRequest") (RFC 8446 section 4.1.3).
var helloRetryRandom = [32]byte{
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11,
	0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e,
	0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
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
