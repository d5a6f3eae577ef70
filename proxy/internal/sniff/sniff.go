// Package sniff tells what a redirected connection speaks from its first
// bytes: a TLS ClientHello, an HTTP/1.x request, or something else. A
// transparent listener has no CONNECT line or absolute URI to go by, so it
// must look before it decides, and it must not wait forever for a client
// that says nothing or dribbles.
package sniff

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// Protocol is what the first bytes of a connection are.
type Protocol uint8

const (
	// Incomplete: the bytes so far could still be the start of either;
	// read more.
	Incomplete Protocol = iota
	// TLS: a TLS handshake record, which a ClientHello starts with.
	TLS
	// HTTP: an HTTP/1.x request line's method and the space after it.
	HTTP
	// Other: neither. The connection is decided by its original
	// destination alone.
	Other
)

func (p Protocol) String() string {
	switch p {
	case Incomplete:
		return "incomplete"
	case TLS:
		return "tls"
	case HTTP:
		return "http"
	case Other:
		return "other"
	}
	return "Protocol(?)"
}

// maxMethod bounds an HTTP method: the longest registered one
// (UPDATEREDIRECTREF) has 17 characters.
const maxMethod = 20

// recordTypeHandshake is the TLS record type of a ClientHello (RFC 8446
// section 5.1).
const recordTypeHandshake = 0x16

// Classify says what b, the first bytes of a connection, are. A TLS
// record of another type (an alert, change_cipher_spec) before the
// ClientHello is left to the ClientHello parser, which reads those as the
// servers do: anything that starts with a TLS record header of the
// handshake, alert or change_cipher_spec type and version 3.x counts as
// TLS here.
func Classify(b []byte) Protocol {
	if len(b) == 0 {
		return Incomplete
	}
	switch b[0] {
	case recordTypeHandshake, 0x15, 0x14: // handshake, alert, change_cipher_spec
		if len(b) < 2 {
			return Incomplete
		}
		if b[1] == 3 {
			return TLS
		}
		return Other
	}
	// An HTTP/1.x request line starts with a method, a token (RFC 9110
	// section 9.1), then one space. Servers take methods in upper case;
	// so does this, so that a lower-case "get " is not read as HTTP.
	for i, c := range b {
		switch {
		case c == ' ' && i > 0:
			return HTTP
		case c >= 'A' && c <= 'Z' || c == '-' || c == '_':
			if i >= maxMethod {
				return Other
			}
		default:
			return Other
		}
	}
	// A method of up to maxMethod letters so far: a space may follow.
	return Incomplete
}

// Read reads from c until Classify can tell, at most max bytes and for at
// most timeout in all, and returns the bytes read (which belong to the
// connection's stream and must be passed on) and what they are. A client
// that sends nothing, too little or too slowly, or that half-closes
// before Classify can tell, is Other: its bytes are returned with it. err
// is set only for a failed read that is neither the deadline nor EOF.
func Read(c net.Conn, timeout time.Duration, max int) ([]byte, Protocol, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, 0, min(max, 4096))
	for {
		if p := Classify(buf); p != Incomplete {
			return buf, p, nil
		}
		if len(buf) >= max {
			return buf, Other, nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(cap(buf), max-len(buf)))...)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):min(cap(buf), max)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if p := Classify(buf); p != Incomplete {
				return buf, p, nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF) {
				return buf, Other, nil
			}
			return buf, Other, err
		}
	}
}
