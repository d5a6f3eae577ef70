package proxy

// Tests of the ClientHello SNI parser against hellos that crypto/tls really
// sends, re-framed ones, hand-made malformed ones and streams that are not
// TLS at all.

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// chTestWait bounds the capture of a ClientHello; it only keeps a broken
// test from hanging.
const chTestWait = 10 * time.Second

// chTestKaspersky is the name of a typical feedgate destination.
const chTestKaspersky = "dnl-01.geo.kaspersky.com"

// chTestCapture returns the first flight a crypto/tls client with cfg sends:
// its ClientHello, in however many records the client used. The server end
// of the pipe reads whole records until the handshake message they carry is
// complete, using only the record and handshake headers (not the parser
// under test), then hangs up, which ends the client's handshake.
func chTestCapture(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer client.Close()
		_ = client.SetDeadline(time.Now().Add(chTestWait))
		_ = tls.Client(client, cfg).Handshake()
	}()
	// Hanging up ends the client's wait for a ServerHello.
	defer func() { _ = server.Close(); <-done }()
	_ = server.SetReadDeadline(time.Now().Add(chTestWait))
	var out []byte
	payload := 0 // handshake bytes seen so far
	need := -1   // the handshake message's length, once known
	for need < 0 || payload < need {
		hdr := make([]byte, tlsRecordHeaderLen)
		if _, err := io.ReadFull(server, hdr); err != nil {
			tb.Fatalf("capturing a ClientHello: record header: %v", err)
		}
		rec := make([]byte, int(binary.BigEndian.Uint16(hdr[3:])))
		if _, err := io.ReadFull(server, rec); err != nil {
			tb.Fatalf("capturing a ClientHello: record body: %v", err)
		}
		if need < 0 {
			if hdr[0] != tlsRecordTypeHandshake || len(rec) < tlsHandshakeHeaderLen || rec[0] != tlsTypeClientHello {
				tb.Fatalf("capturing a ClientHello: first record % x does not start one", append(hdr, rec[:min(len(rec), 4)]...))
			}
			need = tlsHandshakeHeaderLen + (int(rec[1])<<16 | int(rec[2])<<8 | int(rec[3]))
		}
		out = append(append(out, hdr...), rec...)
		payload += len(rec)
	}
	return out
}

// chTestHello is a captured ClientHello and the name it must yield.
type chTestHello struct {
	name string
	cfg  *tls.Config
	want string // "" for no name
}

// chTestALPN returns n protocol names of size bytes each.
func chTestALPN(n, size int) []string {
	out := make([]string, n)
	for i := range out {
		p := fmt.Sprintf("proto-%03d-", i)
		out[i] = p + strings.Repeat("x", size-len(p))
	}
	return out
}

// chTestLongName is a 253-byte host name, the longest DNS allows.
var chTestLongName = strings.Repeat(strings.Repeat("a", 62)+".", 4) + "b"

// chTestRealConfigs are client configurations whose hellos the parser must
// read; each fits one record.
func chTestRealConfigs() []chTestHello {
	var suites []uint16
	for _, s := range tls.CipherSuites() {
		suites = append(suites, s.ID)
	}
	for _, s := range tls.InsecureCipherSuites() {
		suites = append(suites, s.ID)
	}
	return []chTestHello{
		// The default: TLS 1.3 with an X25519MLKEM768 key share.
		{"go-default", &tls.Config{ServerName: chTestKaspersky}, chTestKaspersky},
		{"no-server-name", &tls.Config{InsecureSkipVerify: true}, ""},
		// Go omits SNI for IP literals, as RFC 6066 asks.
		{"ipv4-server-name", &tls.Config{ServerName: "192.0.2.7"}, ""},
		{"ipv6-server-name", &tls.Config{ServerName: "2001:db8::7"}, ""},
		{"tls12-max", &tls.Config{ServerName: chTestKaspersky, MaxVersion: tls.VersionTLS12}, chTestKaspersky},
		{"tls10-only", &tls.Config{ServerName: chTestKaspersky, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}, chTestKaspersky},
		{"many-suites-alpn", &tls.Config{
			ServerName:   "update.example.test",
			MaxVersion:   tls.VersionTLS12,
			CipherSuites: suites,
			NextProtos:   []string{"h2", "http/1.1", "acme-tls/1", "spdy/3.1"},
		}, "update.example.test"},
		// A 4.6 KiB hello: large enough that cutting it into one-byte
		// records exceeds maxClientHello.
		{"big-alpn", &tls.Config{ServerName: chTestKaspersky, NextProtos: chTestALPN(16, 200)}, chTestKaspersky},
		{"longest-name", &tls.Config{ServerName: chTestLongName}, chTestLongName},
		// Go strips the trailing dot before sending.
		{"trailing-dot", &tls.Config{ServerName: "Upd.Example.Test."}, "Upd.Example.Test"},
	}
}

// chTestReframe cuts the handshake message carried by the records of hello
// into new records whose fragments have the given sizes; the last record
// takes what is left. Each record gets the first record's version.
func chTestReframe(tb testing.TB, hello []byte, sizes ...int) []byte {
	tb.Helper()
	msg := chTestMessage(tb, hello)
	var out []byte
	for i := 0; len(msg) > 0; i++ {
		n := len(msg)
		if i < len(sizes) && sizes[i] < n {
			n = sizes[i]
		}
		out = append(out, chTestRecord(tlsRecordTypeHandshake, hello[1:3], msg[:n])...)
		msg = msg[n:]
	}
	return out
}

// chTestMessage returns the concatenated fragments of hello's records.
func chTestMessage(tb testing.TB, hello []byte) []byte {
	tb.Helper()
	var msg []byte
	for rest := hello; len(rest) > 0; {
		if len(rest) < tlsRecordHeaderLen {
			tb.Fatalf("chTestMessage: %d stray bytes", len(rest))
		}
		n := int(binary.BigEndian.Uint16(rest[3:]))
		msg = append(msg, rest[tlsRecordHeaderLen:tlsRecordHeaderLen+n]...)
		rest = rest[tlsRecordHeaderLen+n:]
	}
	return msg
}

// chTestRecord frames payload as one record.
func chTestRecord(typ byte, version []byte, payload []byte) []byte {
	out := []byte{typ, version[0], version[1], byte(len(payload) >> 8), byte(len(payload))}
	return append(out, payload...)
}

// chTestOneByteRecords cuts hello into records of one byte each.
func chTestOneByteRecords(tb testing.TB, hello []byte) []byte {
	tb.Helper()
	msg := chTestMessage(tb, hello)
	sizes := make([]int, len(msg))
	for i := range sizes {
		sizes[i] = 1
	}
	return chTestReframe(tb, hello, sizes...)
}

// chTestNameAt returns the offset of name in the handshake message of a
// single-record hello.
func chTestNameAt(tb testing.TB, hello []byte, name string) int {
	tb.Helper()
	i := bytes.Index(hello, []byte(name))
	if i < 0 {
		tb.Fatalf("name %q not in the hello", name)
	}
	return i - tlsRecordHeaderLen
}

// chTestAliases reports whether sub is a slice of data's memory.
func chTestAliases(data, sub []byte) bool {
	if len(sub) == 0 {
		return false
	}
	for i := range data {
		if &data[i] == &sub[0] {
			return true
		}
	}
	return false
}

// chTestCheck runs the parser on data and compares the outcome.
func chTestCheck(t *testing.T, data []byte, wantSt helloStatus, wantName string) []byte {
	t.Helper()
	name, st := clientHelloServerName(data)
	if st != wantSt || string(name) != wantName {
		t.Fatalf("clientHelloServerName(%d bytes) = %q, %v; want %q, %v", len(data), name, st, wantName, wantSt)
	}
	if st == helloComplete && wantName == "" && name != nil {
		t.Fatalf("name = %q (non-nil, empty); want nil", name)
	}
	return name
}

// chTestEveryPrefix checks that every proper prefix of a complete hello is
// helloIncomplete, that the whole is helloComplete with want, and that
// bytes after it change nothing.
func chTestEveryPrefix(t *testing.T, hello []byte, want string) {
	t.Helper()
	for k := range len(hello) {
		if name, st := clientHelloServerName(hello[:k:k]); st != helloIncomplete {
			t.Fatalf("prefix of %d/%d bytes: %q, %v; want incomplete", k, len(hello), name, st)
		}
	}
	chTestCheck(t, hello, helloComplete, want)
	for _, tail := range [][]byte{{0}, []byte("GET / HTTP/1.1\r\n\r\n"), hello, bytes.Repeat([]byte{0xff}, maxClientHello)} {
		chTestCheck(t, append(bytes.Clone(hello), tail...), helloComplete, want)
	}
}

func TestClientHelloRealHellos(t *testing.T) {
	for _, tc := range chTestRealConfigs() {
		t.Run(tc.name, func(t *testing.T) {
			hello := chTestCapture(t, tc.cfg)
			if n := int(binary.BigEndian.Uint16(hello[3:])); tlsRecordHeaderLen+n != len(hello) {
				t.Fatalf("crypto/tls used several records for a %d-byte hello", len(hello))
			}
			t.Logf("%d-byte ClientHello", len(hello))
			name := chTestCheck(t, hello, helloComplete, tc.want)
			if name != nil && !chTestAliases(hello, name) {
				t.Errorf("the name of a single-record hello is a copy, not a slice of the input")
			}
			chTestEveryPrefix(t, hello, tc.want)
		})
	}
}

func TestClientHelloMultiRecord(t *testing.T) {
	hello := chTestCapture(t, &tls.Config{ServerName: chTestKaspersky})
	at := chTestNameAt(t, hello, chTestKaspersky)
	tests := []struct {
		name  string
		sizes []int
	}{
		{"two-header-cut", []int{1}},
		{"two-after-header", []int{4}},
		{"two-mid-body", []int{100}},
		{"two-name-cut", []int{at + 5}},
		{"two-last-byte-alone", []int{len(hello) - tlsRecordHeaderLen - 1}},
		{"three-header-cut-twice", []int{1, 2}},
		{"three", []int{100, 200}},
		{"three-name-cut", []int{at + 3, 10}},
		{"three-name-own-record", []int{at, len(chTestKaspersky)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := chTestReframe(t, hello, tt.sizes...)
			chTestEveryPrefix(t, data, chTestKaspersky)
		})
	}
	t.Run("one-byte-records", func(t *testing.T) {
		chTestEveryPrefix(t, chTestOneByteRecords(t, hello), chTestKaspersky)
	})
	t.Run("record-with-bytes-after-hello", func(t *testing.T) {
		// The last record carries more than the ClientHello; the extra
		// bytes are not needed and need not arrive.
		msg := chTestMessage(t, hello)
		data := append(chTestRecord(tlsRecordTypeHandshake, hello[1:3], msg[:50]),
			chTestRecord(tlsRecordTypeHandshake, hello[1:3], append(bytes.Clone(msg[50:]), 1, 2, 3))...)
		chTestCheck(t, data[:len(data)-3], helloComplete, chTestKaspersky)
		chTestCheck(t, data, helloComplete, chTestKaspersky)
	})
}

// TestClientHelloTooBig checks the maxClientHello contract: a hello that
// needs more bytes is refused as soon as its lengths show it, and no buffer
// of maxClientHello bytes is ever "incomplete".
func TestClientHelloTooBig(t *testing.T) {
	big := chTestCapture(t, &tls.Config{ServerName: chTestKaspersky, NextProtos: chTestALPN(16, 200)})
	huge := chTestCapture(t, &tls.Config{ServerName: chTestKaspersky, NextProtos: chTestALPN(100, 200)})
	tests := []struct {
		name string
		data []byte
		// decidedAt is the length from which the parser must say
		// helloNotTLS; 0 means anywhere up to maxClientHello.
		decidedAt int
	}{
		// crypto/tls sends a 20 KiB hello in two records; its handshake
		// header declares the length.
		{"crypto-tls-two-records", huge, tlsRecordHeaderLen + tlsHandshakeHeaderLen},
		// 4.6 KiB cut into 1-byte records is 28 KiB of stream; the
		// parser gives up once the records so far leave too little room.
		{"one-byte-records", chTestOneByteRecords(t, big), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.data) <= maxClientHello {
				t.Fatalf("test hello is only %d bytes", len(tt.data))
			}
			first := -1 // the first length that is helloNotTLS
			for k := 0; k <= len(tt.data); k++ {
				_, st := clientHelloServerName(tt.data[:k])
				switch {
				case st == helloNotTLS && first < 0:
					first = k
				case st == helloComplete, first >= 0 && st != helloNotTLS:
					t.Fatalf("%d bytes: %v (not TLS from %d bytes)", k, st, first)
				}
			}
			t.Logf("%d-byte stream refused after %d bytes", len(tt.data), first)
			if first < 0 || first > maxClientHello || (tt.decidedAt > 0 && first != tt.decidedAt) {
				t.Fatalf("refused after %d bytes; want %d (0: any up to %d)", first, tt.decidedAt, maxClientHello)
			}
		})
	}
}

// chTestVec8 and chTestVec16 frame b with a 1- or 2-byte length.
func chTestVec8(b []byte) []byte { return append([]byte{byte(len(b))}, b...) }
func chTestVec16(b []byte) []byte {
	return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)
}

// chTestExt frames one extension.
func chTestExt(typ uint16, data []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ)}, chTestVec16(data)...)
}

// chTestSNI is a server_name extension listing host_names.
func chTestSNI(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, tlsSNIHostName)
		list = append(list, chTestVec16([]byte(n))...)
	}
	return chTestExt(tlsExtServerName, chTestVec16(list))
}

// chTestBody builds a ClientHello body from its fields; exts nil means no
// extensions block at all.
func chTestBody(sessionID, suites, compression, exts []byte) []byte {
	b := append([]byte{3, 3}, bytes.Repeat([]byte{0x5a}, 32)...)
	b = append(b, chTestVec8(sessionID)...)
	b = append(b, chTestVec16(suites)...)
	b = append(b, chTestVec8(compression)...)
	if exts != nil {
		b = append(b, chTestVec16(exts)...)
	}
	return b
}

// chTestFrame wraps a ClientHello body in a handshake header and a record.
func chTestFrame(body []byte) []byte {
	msg := append([]byte{tlsTypeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return chTestRecord(tlsRecordTypeHandshake, []byte{3, 1}, msg)
}

// chTestHelloWith is a well-formed hand-made hello with the given
// extensions.
func chTestHelloWith(exts ...[]byte) []byte {
	return chTestFrame(chTestBody(nil, []byte{0x13, 0x01}, []byte{0}, bytes.Join(exts, nil)))
}

func TestClientHelloHandMade(t *testing.T) {
	suite := []byte{0x13, 0x01}
	null := []byte{0}
	alpn := chTestExt(16, chTestVec16(chTestVec8([]byte("h2"))))
	withVersion := func(b []byte, major, minor byte) []byte {
		b = bytes.Clone(b)
		b[1], b[2] = major, minor
		return b
	}
	good := chTestHelloWith(alpn, chTestSNI("a.example"))
	tests := []struct {
		name string
		data []byte
		st   helloStatus
		want string
	}{
		{"sni-last", good, helloComplete, "a.example"},
		{"sni-only", chTestHelloWith(chTestSNI("x")), helloComplete, "x"},
		{"no-extensions-block", chTestFrame(chTestBody(nil, suite, null, nil)), helloComplete, ""},
		{"empty-extensions-block", chTestFrame(chTestBody(nil, suite, null, []byte{})), helloComplete, ""},
		{"no-sni", chTestHelloWith(alpn), helloComplete, ""},
		{"session-id-32", chTestFrame(chTestBody(make([]byte, 32), suite, null, chTestSNI("a.example"))), helloComplete, "a.example"},
		{"record-ssl30", withVersion(good, 3, 0), helloComplete, "a.example"},
		{"record-tls13", withVersion(good, 3, 4), helloComplete, "a.example"},
		{"other-name-type-skipped", chTestHelloWith(chTestExt(0, chTestVec16(append(append([]byte{7}, chTestVec16([]byte("zz"))...),
			append([]byte{0}, chTestVec16([]byte("a.example"))...)...)))), helloComplete, "a.example"},
		{"underscore-and-digits", chTestHelloWith(chTestSNI("_srv.host-1.example")), helloComplete, "_srv.host-1.example"},

		// Unusable names are no name.
		{"name-empty", chTestHelloWith(chTestSNI("")), helloComplete, ""},
		{"name-nul", chTestHelloWith(chTestSNI("a.example\x00.evil")), helloComplete, ""},
		{"name-slash", chTestHelloWith(chTestSNI("a.example/x")), helloComplete, ""},
		{"name-colon-port", chTestHelloWith(chTestSNI("a.example:443")), helloComplete, ""},
		{"name-space", chTestHelloWith(chTestSNI("a example")), helloComplete, ""},
		{"name-crlf", chTestHelloWith(chTestSNI("a.example\r\nX: y")), helloComplete, ""},
		{"name-utf8", chTestHelloWith(chTestSNI("bücher.example")), helloComplete, ""},
		{"name-ipv6", chTestHelloWith(chTestSNI("[::1]")), helloComplete, ""},
		{"name-leading-dot", chTestHelloWith(chTestSNI(".example")), helloComplete, ""},
		{"name-double-dot", chTestHelloWith(chTestSNI("a..example")), helloComplete, ""},
		{"name-trailing-dot", chTestHelloWith(chTestSNI("a.example.")), helloComplete, ""},
		{"name-255", chTestHelloWith(chTestSNI(strings.Repeat("a", 255))), helloComplete, strings.Repeat("a", 255)},
		{"name-256", chTestHelloWith(chTestSNI(strings.Repeat("a", 256))), helloComplete, ""},

		// Not TLS.
		{"http", []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), helloNotTLS, ""},
		{"http-first-byte", []byte("G"), helloNotTLS, ""},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.6\r\n"), helloNotTLS, ""},
		{"alert", chTestRecord(21, []byte{3, 3}, []byte{2, 40}), helloNotTLS, ""},
		{"change-cipher-spec", chTestRecord(20, []byte{3, 3}, []byte{1}), helloNotTLS, ""},
		{"application-data", chTestRecord(23, []byte{3, 3}, []byte("hello")), helloNotTLS, ""},
		{"sslv2-hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15}, helloNotTLS, ""},
		{"server-hello", chTestRecord(22, []byte{3, 3}, []byte{2, 0, 0, 1, 0}), helloNotTLS, ""},
		{"record-major-2", withVersion(good, 2, 0), helloNotTLS, ""},
		{"record-tls14", withVersion(good, 3, 5), helloNotTLS, ""},
		{"alert-after-first-record", append(chTestReframe(t, good, 10)[:15], chTestRecord(21, []byte{3, 3}, []byte{2, 40})...), helloNotTLS, ""},

		// Bogus lengths.
		{"record-len-0", []byte{22, 3, 1, 0, 0}, helloNotTLS, ""},
		{"record-len-2^14+1", []byte{22, 3, 1, 0x40, 0x01}, helloNotTLS, ""},
		{"record-len-max", []byte{22, 3, 1, 0xff, 0xff}, helloNotTLS, ""},
		{"handshake-len-too-big", []byte{22, 3, 1, 0x40, 0x00, 1, 0x00, 0x3f, 0xfd}, helloNotTLS, ""},
		{"handshake-len-2^24-1", []byte{22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff}, helloNotTLS, ""},
		{"handshake-len-0", chTestFrame(nil), helloNotTLS, ""},
		{"body-too-short", chTestFrame(make([]byte, 33)), helloNotTLS, ""},
		{"session-id-33", chTestFrame(chTestBody(make([]byte, 33), suite, null, nil)), helloNotTLS, ""},
		{"suites-odd", chTestFrame(chTestBody(nil, []byte{0x13, 0x01, 0x13}, null, nil)), helloNotTLS, ""},
		{"suites-empty", chTestFrame(chTestBody(nil, nil, null, nil)), helloNotTLS, ""},
		{"compression-empty", chTestFrame(chTestBody(nil, suite, nil, nil)), helloNotTLS, ""},
		{"extensions-len-1-byte", chTestFrame(append(chTestBody(nil, suite, null, nil), 0)), helloNotTLS, ""},
		{"extensions-len-short", chTestFrame(append(chTestBody(nil, suite, null, chTestSNI("a.example")), 0)), helloNotTLS, ""},
		{"extensions-len-long", chTestFrame(chTestBody(nil, suite, null, chTestSNI("a.example"))[:len(chTestBody(nil, suite, null, chTestSNI("a.example")))-1]), helloNotTLS, ""},
		{"extension-header-cut", chTestHelloWith(chTestSNI("a.example"), []byte{0, 16, 0}), helloNotTLS, ""},
		{"extension-len-past-end", chTestHelloWith(chTestSNI("a.example"), []byte{0, 16, 0, 9, 1}), helloNotTLS, ""},
		{"sni-twice", chTestHelloWith(chTestSNI("a.example"), alpn, chTestSNI("b.example")), helloNotTLS, ""},
		{"host-name-twice", chTestHelloWith(chTestSNI("a.example", "b.example")), helloNotTLS, ""},
		{"sni-empty-extension", chTestHelloWith(chTestExt(0, nil)), helloNotTLS, ""},
		{"sni-empty-list", chTestHelloWith(chTestExt(0, chTestVec16(nil))), helloNotTLS, ""},
		{"sni-list-len-short", chTestHelloWith(chTestExt(0, []byte{0, 2, 0, 0, 1, 'a'})), helloNotTLS, ""},
		{"sni-list-len-long", chTestHelloWith(chTestExt(0, []byte{0, 9, 0, 0, 1, 'a'})), helloNotTLS, ""},
		{"sni-name-len-past-list", chTestHelloWith(chTestExt(0, chTestVec16([]byte{0, 0, 9, 'a'}))), helloNotTLS, ""},
		{"sni-name-type-only", chTestHelloWith(chTestExt(0, chTestVec16([]byte{0}))), helloNotTLS, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chTestCheck(t, tt.data, tt.st, tt.want)
			if tt.st == helloComplete {
				chTestEveryPrefix(t, tt.data, tt.want)
				chTestCheck(t, chTestReframe(t, tt.data, 7, 20), tt.st, tt.want)
			}
		})
	}
}

// TestClientHelloInvalidRealName puts bytes that must never reach a log or a
// host:port string into the name of a real hello (same length, so every
// length stays right): the hello stays complete, with no name.
func TestClientHelloInvalidRealName(t *testing.T) {
	hello := chTestCapture(t, &tls.Config{ServerName: chTestKaspersky})
	at := chTestNameAt(t, hello, chTestKaspersky) + tlsRecordHeaderLen
	for _, c := range []byte{0, '/', ':', ' ', '\n', '@', 0x80} {
		t.Run(fmt.Sprintf("%#02x", c), func(t *testing.T) {
			b := bytes.Clone(hello)
			b[at+3] = c
			chTestCheck(t, b, helloComplete, "")
		})
	}
}

// chTestValidName is the fuzz oracle for a usable name, written apart from
// validSNIHostName.
var chTestValidName = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

func FuzzClientHelloServerName(f *testing.F) {
	for _, tc := range chTestRealConfigs()[:5] {
		hello := chTestCapture(f, tc.cfg)
		f.Add(hello, uint16(len(hello)/2))
		f.Add(chTestReframe(f, hello, 3, 100), uint16(9))
	}
	f.Add(chTestHelloWith(chTestSNI("a.example")), uint16(0))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint16(3))
	f.Add([]byte("SSH-2.0-OpenSSH_9.6\r\n"), uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		name, st := clientHelloServerName(data)
		switch st {
		case helloComplete:
			if name != nil && (len(name) > maxSNIHostName || !chTestValidName.Match(name)) {
				t.Fatalf("complete with unusable name %q", name)
			}
		case helloIncomplete:
			if name != nil {
				t.Fatalf("incomplete with a name %q", name)
			}
			if len(data) >= maxClientHello {
				t.Fatalf("incomplete after %d bytes (maxClientHello %d)", len(data), maxClientHello)
			}
		case helloNotTLS:
			if name != nil {
				t.Fatalf("not TLS with a name %q", name)
			}
		default:
			t.Fatalf("status %d", st)
		}
		if st != helloIncomplete {
			// Bytes after a decided stream change nothing.
			for _, tail := range [][]byte{{0}, data, []byte("\x16\x03\x01\x00\x01\x01")} {
				name2, st2 := clientHelloServerName(append(data[:len(data):len(data)], tail...))
				if st2 != st || !bytes.Equal(name2, name) {
					t.Fatalf("appending %q: %q, %v; was %q, %v", tail, name2, st2, name, st)
				}
			}
		}
		// A prefix is undecided or decided the same way.
		if len(data) > 0 {
			k := int(cut) % len(data)
			name3, st3 := clientHelloServerName(data[:k:k])
			if st3 != helloIncomplete && (st3 != st || !bytes.Equal(name3, name)) {
				t.Fatalf("prefix of %d bytes: %q, %v; whole: %q, %v", k, name3, st3, name, st)
			}
		}
	})
}

func TestClientHelloAllocs(t *testing.T) {
	for _, tc := range chTestRealConfigs() {
		t.Run(tc.name, func(t *testing.T) {
			hello := chTestCapture(t, tc.cfg)
			var name []byte
			var st helloStatus
			if n := testing.AllocsPerRun(100, func() { name, st = clientHelloServerName(hello) }); n != 0 {
				t.Errorf("%v allocations per single-record hello; want 0", n)
			}
			if st != helloComplete || string(name) != tc.want {
				t.Errorf("got %q, %v", name, st)
			}
			half := hello[:len(hello)/2]
			if n := testing.AllocsPerRun(100, func() { clientHelloServerName(half) }); n != 0 {
				t.Errorf("%v allocations per incomplete hello; want 0", n)
			}
		})
	}
	t.Run("three-records", func(t *testing.T) {
		// The documented cost of a hello cut into records: one copy.
		split := chTestReframe(t, chTestCapture(t, &tls.Config{ServerName: chTestKaspersky}), 100, 200)
		if n := testing.AllocsPerRun(100, func() { clientHelloServerName(split) }); n != 1 {
			t.Errorf("%v allocations per multi-record hello; want 1", n)
		}
	})
}

func BenchmarkClientHelloServerName(b *testing.B) {
	goDefault := chTestCapture(b, &tls.Config{ServerName: chTestKaspersky})
	cases := []struct {
		name string
		data []byte
	}{
		{"go-default", goDefault},
		{"tls12", chTestCapture(b, &tls.Config{ServerName: chTestKaspersky, MaxVersion: tls.VersionTLS12})},
		{"three-records", chTestReframe(b, goDefault, 100, 200)},
		{"http", []byte("GET http://a.example/ HTTP/1.1\r\n")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.data)))
			b.ReportAllocs()
			for b.Loop() {
				clientHelloServerName(c.data)
			}
		})
	}
}
