package hello

// Tests of the ClientHello SNI parser against hellos that crypto/tls really
// sends, re-framed ones, hand-made malformed ones and streams that are not
// TLS at all.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/feedgate/feedgate/rules"
)

// clientHelloServerName, secondClientHelloServerName and serverHelloStatus
// are the Scanner's methods on a new Scanner: one parse of the whole
// buffer, the answer a resumed parse must give.
func clientHelloServerName(data []byte) (name []byte, st Status) {
	var s Scanner
	return s.ClientHelloServerName(data)
}

func secondClientHelloServerName(data []byte) (name []byte, st Status) {
	var s Scanner
	return s.SecondClientHelloServerName(data)
}

func serverHelloStatus(data []byte) (isHRR bool, st Status) {
	var s Scanner
	return s.ServerHelloStatus(data)
}

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
		// records exceeds MaxClientHello.
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
func chTestCheck(t *testing.T, data []byte, wantSt Status, wantName string) []byte {
	t.Helper()
	name, st := clientHelloServerName(data)
	if st != wantSt || string(name) != wantName {
		t.Fatalf("clientHelloServerName(%d bytes) = %q, %v; want %q, %v", len(data), name, st, wantName, wantSt)
	}
	if st == Complete && wantName == "" && name != nil {
		t.Fatalf("name = %q (non-nil, empty); want nil", name)
	}
	return name
}

// chTestEveryPrefix checks that every proper prefix of a complete hello is
// Incomplete, that the whole is Complete with want, and that
// bytes after it change nothing.
func chTestEveryPrefix(t *testing.T, hello []byte, want string) {
	t.Helper()
	for k := range len(hello) {
		if name, st := clientHelloServerName(hello[:k:k]); st != Incomplete {
			t.Fatalf("prefix of %d/%d bytes: %q, %v; want incomplete", k, len(hello), name, st)
		}
	}
	chTestCheck(t, hello, Complete, want)
	for _, tail := range [][]byte{{0}, []byte("GET / HTTP/1.1\r\n\r\n"), hello, bytes.Repeat([]byte{0xff}, MaxClientHello)} {
		chTestCheck(t, append(bytes.Clone(hello), tail...), Complete, want)
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
			name := chTestCheck(t, hello, Complete, tc.want)
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
		chTestCheck(t, data[:len(data)-3], Complete, chTestKaspersky)
		chTestCheck(t, data, Complete, chTestKaspersky)
	})
}

// chTestPadded returns a ClientHello handshake message (header included)
// whose body is exactly bodyLen bytes, filled up with a padding extension
// (RFC 7685) after a server_name for chTestKaspersky.
func chTestPadded(tb testing.TB, bodyLen int) []byte {
	tb.Helper()
	sni := chTestSNI(chTestKaspersky)
	const padExt = 21
	fixed := len(chTestBody(nil, []byte{0x13, 0x01}, []byte{0}, append(bytes.Clone(sni), chTestExt(padExt, nil)...)))
	if bodyLen < fixed {
		tb.Fatalf("chTestPadded: a body of %d bytes is too short", bodyLen)
	}
	body := chTestBody(nil, []byte{0x13, 0x01}, []byte{0}, append(sni, chTestExt(padExt, make([]byte, bodyLen-fixed))...))
	return append([]byte{tlsTypeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

// chTestRecords frames a handshake message in records of size bytes (the
// last takes what is left).
func chTestRecords(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, chTestRecord(tlsRecordTypeHandshake, []byte{3, 1}, msg[:n])...)
		msg = msg[n:]
	}
	return out
}

// chTestPrefixes returns the prefix lengths of an n-byte stream worth
// checking: all the short ones, a sample of the rest, those around at, and
// n itself. Checking every prefix of an 80 KiB stream cut into thousands of
// records would take minutes.
func chTestPrefixes(n, at int) []int {
	var ks []int
	for k := 0; k <= n; k++ {
		if k < 64 || k%997 == 0 || k >= at-8 && k <= at+8 || k == n {
			ks = append(ks, k)
		}
	}
	return ks
}

// TestClientHelloTooBig checks the MaxClientHello contract: the largest
// ClientHello Go accepts fits, even in small records; a hello that needs
// more bytes is refused as soon as its lengths show it; and no buffer of
// MaxClientHello bytes is ever "incomplete".
func TestClientHelloTooBig(t *testing.T) {
	largest := chTestPadded(t, maxClientHelloLen)
	t.Run("largest-fits", func(t *testing.T) {
		// Full records, and the smallest records in which it still
		// fits (see MaxClientHello).
		for _, size := range []int{tlsMaxRecordLen, 1000, 21} {
			data := chTestRecords(largest, size)
			if len(data) > MaxClientHello {
				t.Fatalf("%d-byte records: %d bytes, more than MaxClientHello", size, len(data))
			}
			for _, k := range chTestPrefixes(len(data), len(data)) {
				name, st := clientHelloServerName(data[:k:k])
				want := Incomplete
				if k == len(data) {
					want = Complete
				}
				if st != want || want == Complete && string(name) != chTestKaspersky {
					t.Fatalf("%d-byte records, %d of %d bytes: %q, %v; want %v", size, k, len(data), name, st, want)
				}
			}
		}
	})
	tests := []struct {
		name string
		data []byte
		// decidedAt is the length from which the parser must say
		// NotTLS; 0 means anywhere up to MaxClientHello.
		decidedAt int
	}{
		// The handshake header declares the length.
		{"one-byte-too-long", chTestRecords(chTestPadded(t, maxClientHelloLen+1), tlsMaxRecordLen), tlsRecordHeaderLen + tlsHandshakeHeaderLen},
		{"header-cut-by-records", chTestRecords(chTestPadded(t, maxClientHelloLen+1), 1), 3*(tlsRecordHeaderLen+1) + tlsRecordHeaderLen + 1},
		// The largest hello in 20-byte records, and 14 KB in 1-byte
		// records: the parser gives up once the records so far leave
		// too little room.
		{"largest-small-records", chTestRecords(largest, 20), 0},
		{"one-byte-records", chTestRecords(chTestPadded(t, 14000), 1), 0},
		// Skipped records count too.
		{"empty-records", bytes.Repeat(chTestRecord(tlsRecordTypeHandshake, []byte{3, 3}, nil), MaxClientHello/tlsRecordHeaderLen+1), 0},
		{"warning-alerts", bytes.Repeat(chTestRecord(tlsRecordTypeAlert, []byte{3, 3}, []byte{1, 112}), MaxClientHello/7+1), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.decidedAt == 0 && len(tt.data) <= MaxClientHello {
				t.Fatalf("test stream is only %d bytes", len(tt.data))
			}
			// A refusal never changes, so the first refused prefix can
			// be found by bisection; the samples check the rest.
			first := sort.Search(len(tt.data)+1, func(k int) bool {
				_, st := clientHelloServerName(tt.data[:k:k])
				return st == NotTLS
			})
			for _, k := range chTestPrefixes(len(tt.data), first) {
				_, st := clientHelloServerName(tt.data[:k:k])
				if want := k >= first; st == Complete || (st == NotTLS) != want {
					t.Fatalf("%d bytes: %v (not TLS from %d bytes)", k, st, first)
				}
			}
			t.Logf("%d-byte stream refused after %d bytes", len(tt.data), first)
			if first > MaxClientHello || (tt.decidedAt > 0 && first != tt.decidedAt) {
				t.Fatalf("refused after %d bytes; want %d (0: any up to %d)", first, tt.decidedAt, MaxClientHello)
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
	// before puts records in front of good, between puts them after its
	// first 10 handshake bytes.
	before := func(recs ...[]byte) []byte { return append(bytes.Join(recs, nil), good...) }
	between := func(recs ...[]byte) []byte {
		split := chTestReframe(t, good, 10)
		return append(append(bytes.Clone(split[:15]), bytes.Join(recs, nil)...), split[15:]...)
	}
	emptyHS := chTestRecord(tlsRecordTypeHandshake, []byte{3, 3}, nil)
	emptyCCS := chTestRecord(tlsRecordTypeCCS, []byte{3, 3}, nil)
	ccs := chTestRecord(tlsRecordTypeCCS, []byte{3, 3}, []byte{1})
	alert := func(level, desc byte) []byte {
		return chTestRecord(tlsRecordTypeAlert, []byte{3, 3}, []byte{level, desc})
	}
	tests := []struct {
		name string
		data []byte
		st   Status
		want string
	}{
		{"sni-last", good, Complete, "a.example"},
		{"sni-only", chTestHelloWith(chTestSNI("x")), Complete, "x"},
		{"no-extensions-block", chTestFrame(chTestBody(nil, suite, null, nil)), Complete, ""},
		{"empty-extensions-block", chTestFrame(chTestBody(nil, suite, null, []byte{})), Complete, ""},
		{"no-sni", chTestHelloWith(alpn), Complete, ""},
		{"session-id-32", chTestFrame(chTestBody(make([]byte, 32), suite, null, chTestSNI("a.example"))), Complete, "a.example"},
		// Go's server takes session IDs longer than RFC 8446's 32 bytes.
		{"session-id-33", chTestFrame(chTestBody(make([]byte, 33), suite, null, chTestSNI("a.example"))), Complete, "a.example"},
		{"session-id-255", chTestFrame(chTestBody(make([]byte, 255), suite, null, chTestSNI("a.example"))), Complete, "a.example"},
		{"other-name-type-skipped", chTestHelloWith(chTestExt(0, chTestVec16(append(append([]byte{7}, chTestVec16([]byte("zz"))...),
			append([]byte{0}, chTestVec16([]byte("a.example"))...)...)))), Complete, "a.example"},
		{"underscore-and-digits", chTestHelloWith(chTestSNI("_srv.host-1.example")), Complete, "_srv.host-1.example"},

		// Record versions: Go takes anything below 0x1000 until it has
		// chosen a version, OpenSSL any 3.x.
		{"record-ssl30", withVersion(good, 3, 0), Complete, "a.example"},
		{"record-tls13", withVersion(good, 3, 4), Complete, "a.example"},
		{"record-tls14", withVersion(good, 3, 5), Complete, "a.example"},
		{"record-3ff", withVersion(good, 3, 0xff), Complete, "a.example"},
		{"record-0000", withVersion(good, 0, 0), Complete, "a.example"},
		{"record-major-2", withVersion(good, 2, 0), Complete, "a.example"},
		{"record-fff", withVersion(good, 0x0f, 0xff), Complete, "a.example"},

		// Records that a server skips (see clientHelloServerName).
		{"empty-handshake-before", before(emptyHS), Complete, "a.example"},
		{"empty-handshakes-before", before(emptyHS, emptyHS, emptyHS), Complete, "a.example"},
		{"empty-handshake-between", between(emptyHS), Complete, "a.example"},
		{"empty-ccs-before", before(emptyCCS), Complete, "a.example"},
		{"warning-alert-before", before(alert(1, 112)), Complete, "a.example"},
		{"warning-alerts-between", between(alert(1, 112), alert(1, 100)), Complete, "a.example"},
		{"user-canceled-before", before(alert(2, 90)), Complete, "a.example"},
		{"everything-before", before(emptyCCS, alert(1, 10), emptyHS), Complete, "a.example"},

		// Names: raw, as servers pass them on; CanonicalSNI says which
		// host they name (TestCanonicalSNI).
		{"name-upper-case", chTestHelloWith(chTestSNI("A.Example")), Complete, "A.Example"},
		{"name-trailing-dot", chTestHelloWith(chTestSNI("a.example.")), Complete, "a.example."},
		{"name-colon-port", chTestHelloWith(chTestSNI("a.example:443")), Complete, "a.example:443"},
		{"name-dot-colon-port", chTestHelloWith(chTestSNI("a.example.:443")), Complete, "a.example.:443"},
		{"name-utf8", chTestHelloWith(chTestSNI("bücher.example")), Complete, "bücher.example"},
		{"name-punycode", chTestHelloWith(chTestSNI("xn--bcher-kva.example")), Complete, "xn--bcher-kva.example"},
		{"name-253", chTestHelloWith(chTestSNI(longSNIName)), Complete, longSNIName},
		{"name-253-dot-port", chTestHelloWith(chTestSNI(longSNIName + ".:65535")), Complete, longSNIName + ".:65535"},
		{"name-255-one-label", chTestHelloWith(chTestSNI(strings.Repeat("a", 255))), Complete, ""},

		// Unusable names are no name.
		{"name-empty", chTestHelloWith(chTestSNI("")), Complete, ""},
		{"name-nul", chTestHelloWith(chTestSNI("a.example\x00.evil")), Complete, ""},
		{"name-slash", chTestHelloWith(chTestSNI("a.example/x")), Complete, ""},
		{"name-space", chTestHelloWith(chTestSNI("a example")), Complete, ""},
		{"name-crlf", chTestHelloWith(chTestSNI("a.example\r\nX: y")), Complete, ""},
		{"name-bidi-override", chTestHelloWith(chTestSNI("a\u202eb.example")), Complete, ""},
		{"name-invalid-utf8", chTestHelloWith(chTestSNI("a\xffb.example")), Complete, ""},
		{"name-ipv6", chTestHelloWith(chTestSNI("[::1]")), Complete, ""},
		{"name-leading-dot", chTestHelloWith(chTestSNI(".example")), Complete, ""},
		{"name-double-dot", chTestHelloWith(chTestSNI("a..example")), Complete, ""},
		{"name-two-trailing-dots", chTestHelloWith(chTestSNI("a.example..")), Complete, ""},
		{"name-port-only", chTestHelloWith(chTestSNI(":443")), Complete, ""},
		{"name-port-not-digits", chTestHelloWith(chTestSNI("a.example:https")), Complete, ""},
		{"name-port-too-long", chTestHelloWith(chTestSNI("a.example:000443")), Complete, ""},
		{"name-256", chTestHelloWith(chTestSNI(strings.Repeat("a", 256))), Complete, ""},

		// Not TLS.
		{"http", []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), NotTLS, ""},
		{"http-first-byte", []byte("G"), NotTLS, ""},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.6\r\n"), NotTLS, ""},
		{"alert", alert(2, 40), NotTLS, ""},
		{"close-notify", alert(1, 0), NotTLS, ""},
		{"alert-unknown-level", alert(3, 112), NotTLS, ""},
		{"alert-3-bytes", chTestRecord(tlsRecordTypeAlert, []byte{3, 3}, []byte{1, 112, 0}), NotTLS, ""},
		{"alert-empty", chTestRecord(tlsRecordTypeAlert, []byte{3, 3}, nil), NotTLS, ""},
		// Before the first ClientHello both servers refuse it; after a
		// HelloRetryRequest it is skipped (TestSecondClientHello).
		{"change-cipher-spec", ccs, NotTLS, ""},
		{"change-cipher-spec-before", before(ccs), NotTLS, ""},
		{"application-data", chTestRecord(23, []byte{3, 3}, []byte("hello")), NotTLS, ""},
		{"application-data-empty", chTestRecord(23, []byte{3, 3}, nil), NotTLS, ""},
		{"sslv2-hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15}, NotTLS, ""},
		{"server-hello", chTestRecord(22, []byte{3, 3}, []byte{2, 0, 0, 1, 0}), NotTLS, ""},
		{"record-major-16", withVersion(good, 0x10, 0), NotTLS, ""},
		{"record-1603", withVersion(good, 0x16, 3), NotTLS, ""},
		{"alert-after-first-record", between(alert(2, 40)), NotTLS, ""},

		// Bogus lengths.
		{"record-len-2^14+1", []byte{22, 3, 1, 0x40, 0x01}, NotTLS, ""},
		{"record-len-max", []byte{22, 3, 1, 0xff, 0xff}, NotTLS, ""},
		{"handshake-len-too-big", []byte{22, 3, 1, 0x40, 0x00, 1, 0x01, 0x00, 0x01}, NotTLS, ""},
		{"handshake-len-2^24-1", []byte{22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff}, NotTLS, ""},
		{"handshake-len-0", chTestFrame(nil), NotTLS, ""},
		{"body-too-short", chTestFrame(make([]byte, 33)), NotTLS, ""},
		{"session-id-len-past-end", chTestFrame(append(make([]byte, 34), 40, 1, 2)), NotTLS, ""},
		{"suites-odd", chTestFrame(chTestBody(nil, []byte{0x13, 0x01, 0x13}, null, nil)), NotTLS, ""},
		{"suites-empty", chTestFrame(chTestBody(nil, nil, null, nil)), NotTLS, ""},
		{"compression-empty", chTestFrame(chTestBody(nil, suite, nil, nil)), NotTLS, ""},
		{"extensions-len-1-byte", chTestFrame(append(chTestBody(nil, suite, null, nil), 0)), NotTLS, ""},
		{"extensions-len-short", chTestFrame(append(chTestBody(nil, suite, null, chTestSNI("a.example")), 0)), NotTLS, ""},
		{"extensions-len-long", chTestFrame(chTestBody(nil, suite, null, chTestSNI("a.example"))[:len(chTestBody(nil, suite, null, chTestSNI("a.example")))-1]), NotTLS, ""},
		{"extension-header-cut", chTestHelloWith(chTestSNI("a.example"), []byte{0, 16, 0}), NotTLS, ""},
		{"extension-len-past-end", chTestHelloWith(chTestSNI("a.example"), []byte{0, 16, 0, 9, 1}), NotTLS, ""},
		{"sni-twice", chTestHelloWith(chTestSNI("a.example"), alpn, chTestSNI("b.example")), NotTLS, ""},
		{"host-name-twice", chTestHelloWith(chTestSNI("a.example", "b.example")), NotTLS, ""},
		{"sni-empty-extension", chTestHelloWith(chTestExt(0, nil)), NotTLS, ""},
		{"sni-empty-list", chTestHelloWith(chTestExt(0, chTestVec16(nil))), NotTLS, ""},
		{"sni-list-len-short", chTestHelloWith(chTestExt(0, []byte{0, 2, 0, 0, 1, 'a'})), NotTLS, ""},
		{"sni-list-len-long", chTestHelloWith(chTestExt(0, []byte{0, 9, 0, 0, 1, 'a'})), NotTLS, ""},
		{"sni-name-len-past-list", chTestHelloWith(chTestExt(0, chTestVec16([]byte{0, 0, 9, 'a'}))), NotTLS, ""},
		{"sni-name-type-only", chTestHelloWith(chTestExt(0, chTestVec16([]byte{0}))), NotTLS, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chTestCheck(t, tt.data, tt.st, tt.want)
			if tt.st == Complete {
				chTestEveryPrefix(t, tt.data, tt.want)
				if tt.data[0] == tlsRecordTypeHandshake && int(binary.BigEndian.Uint16(tt.data[3:]))+tlsRecordHeaderLen == len(tt.data) {
					chTestCheck(t, chTestReframe(t, tt.data, 7, 20), tt.st, tt.want)
				}
			}
		})
	}
	// A prefix that is only records a server skips is a valid start.
	for _, data := range [][]byte{emptyHS, emptyCCS, alert(1, 112), append(bytes.Clone(emptyHS), alert(2, 90)...)} {
		chTestCheck(t, data, Incomplete, "")
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
			chTestCheck(t, b, Complete, "")
		})
	}
}

// chTestName is a host_name from testdata/names.txt.
type chTestName struct {
	raw       string
	canonical string // "" if it names no host
	// goAccepts and opensslAccepts say whether Go's and OpenSSL's servers
	// accept a ClientHello carrying the name.
	goAccepts, opensslAccepts bool
	line                      int
}

// chTestNames reads testdata/names.txt.
func chTestNames(tb testing.TB) []chTestName {
	tb.Helper()
	const file = "testdata/names.txt"
	text, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	var out []chTestName
	for i, line := range strings.Split(string(text), "\n") {
		if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
			continue
		}
		q, err := strconv.QuotedPrefix(line)
		if err != nil {
			tb.Fatalf("%s:%d: %v", file, i+1, err)
		}
		raw, _ := strconv.Unquote(q)
		f := strings.Fields(line[len(q):])
		if len(f) != 3 || !slices.Contains([]string{"accept", "refuse"}, f[1]) || !slices.Contains([]string{"accept", "refuse"}, f[2]) {
			tb.Fatalf("%s:%d: want a quoted name, a canonical host or \"-\", and \"accept\" or \"refuse\" for go and openssl", file, i+1)
		}
		n := chTestName{raw: raw, canonical: f[0], goAccepts: f[1] == "accept", opensslAccepts: f[2] == "accept", line: i + 1}
		if n.canonical == "-" {
			n.canonical = ""
		}
		out = append(out, n)
	}
	if len(out) < 10 {
		tb.Fatalf("%s: only %d names", file, len(out))
	}
	return out
}

// longSNIName is the longest DNS name: 253 bytes in labels of 63.
var longSNIName = strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)

// TestCanonicalSNI checks CanonicalSNI against names.txt, and that the
// parser passes on exactly the raw names it accepts.
func TestCanonicalSNI(t *testing.T) {
	names := chTestNames(t)
	names = append(names,
		// Servers pass on a 255-byte label; no DNS name has one
		// (rules.CanonicalHost refuses it), so it is no usable name.
		chTestName{raw: strings.Repeat("a", 255)},
		chTestName{raw: strings.Repeat("A", 255) + ".:443"},
		chTestName{raw: strings.Repeat("a", 63) + ".b", canonical: strings.Repeat("a", 63) + ".b"},
		chTestName{raw: strings.Repeat("a", 64) + ".b"},
		chTestName{raw: "example.123"},
		chTestName{raw: "192.0.2.1:443", canonical: "192.0.2.1"},
		chTestName{raw: strings.Repeat("a", 256)},
		chTestName{raw: strings.Repeat("ü", 128)},
	)
	for _, n := range names {
		c, ok := CanonicalSNI([]byte(n.raw))
		if c != n.canonical || ok != (n.canonical != "") {
			t.Errorf("line %d: CanonicalSNI(%q) = %q, %v; want %q", n.line, n.raw, c, ok, n.canonical)
		}
		if usableSNI([]byte(n.raw)) != ok {
			t.Errorf("line %d: usableSNI(%q) = %v; CanonicalSNI says %v", n.line, n.raw, !ok, ok)
		}
		want := ""
		if ok {
			want = n.raw
		}
		if name, st := clientHelloServerName(chTestHelloWith(chTestSNI(n.raw))); st != Complete || string(name) != want {
			t.Errorf("line %d: a hello naming %q: %q, %v; want %q", n.line, n.raw, name, st, want)
		}
	}
}

// TestClientHelloEnd checks where the records of a ClientHello end, which
// is where a second ClientHello starts after a HelloRetryRequest.
func TestClientHelloEnd(t *testing.T) {
	hello := chTestHelloWith(chTestSNI("a.example"))
	split := chTestReframe(t, hello, 10)
	empty := chTestRecord(tlsRecordTypeHandshake, []byte{3, 3}, nil)
	ccs := chTestRecord(tlsRecordTypeCCS, []byte{3, 3}, []byte{1})
	// The last record carries 3 bytes more than the hello.
	extra := append(bytes.Clone(split), 1, 2, 3)
	binary.BigEndian.PutUint16(extra[15+3:], uint16(len(split)-15-tlsRecordHeaderLen+3))
	tests := []struct {
		name string
		data []byte
		end  int
		st   Status
	}{
		{"one-record", hello, len(hello), Complete},
		{"one-record-then-ccs", append(bytes.Clone(hello), ccs...), len(hello), Complete},
		{"two-records", split, len(split), Complete},
		{"empty-record-before", append(bytes.Clone(empty), hello...), len(empty) + len(hello), Complete},
		// An empty record after the hello belongs to what follows.
		{"empty-record-after", append(bytes.Clone(hello), empty...), len(hello), Complete},
		{"record-longer-than-hello", extra, len(extra), Complete},
		{"record-longer-than-hello-cut", extra[:len(extra)-1], 0, Incomplete},
		{"prefix", hello[:len(hello)-1], 0, Incomplete},
		{"http", []byte("GET / HTTP/1.1\r\n"), 0, NotTLS},
		{"malformed", chTestFrame(make([]byte, 40)), 0, NotTLS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if end, st := ClientHelloEnd(tt.data); end != tt.end || st != tt.st {
				t.Fatalf("ClientHelloEnd = %d, %v; want %d, %v", end, st, tt.end, tt.st)
			}
		})
	}
}

// chTestServerHello is a ServerHello handshake message (header included)
// with the given random.
func chTestServerHello(random []byte) []byte {
	body := append([]byte{3, 3}, random...)
	body = append(body, chTestVec8(make([]byte, 32))...)
	body = append(body, 0x13, 0x01, 0)
	body = append(body, chTestVec16(chTestExt(43, []byte{3, 4}))...)
	return append([]byte{tlsTypeServerHello, 0, byte(len(body) >> 8), byte(len(body))}, body...)
}

// TestServerHelloStatus checks serverHelloStatus on hand-made server
// answers; TestHelloRetryRequest checks it on real ones.
func TestServerHelloStatus(t *testing.T) {
	hrr := chTestServerHello(helloRetryRandom[:])
	sh := chTestServerHello(bytes.Repeat([]byte{0x5a}, 32))
	nearly := bytes.Clone(helloRetryRandom[:])
	nearly[31] ^= 1
	rec := func(typ byte, payload ...byte) []byte { return chTestRecord(typ, []byte{3, 3}, payload) }
	hs := func(msg []byte) []byte { return rec(tlsRecordTypeHandshake, msg...) }
	tests := []struct {
		name  string
		data  []byte
		isHRR bool
		st    Status
	}{
		{"hrr", hs(hrr), true, Complete},
		{"server-hello", hs(sh), false, Complete},
		{"random-off-by-one-bit", hs(chTestServerHello(nearly)), false, Complete},
		{"hrr-then-ccs", append(hs(hrr), rec(tlsRecordTypeCCS, 1)...), true, Complete},
		{"hrr-in-three-records", chTestRecords(hrr, 20), true, Complete},
		{"hrr-in-one-byte-records", chTestRecords(hrr, 1), true, Complete},
		{"warning-before", append(rec(tlsRecordTypeAlert, 1, 112), hs(sh)...), false, Complete},
		{"ccs-before", append(rec(tlsRecordTypeCCS, 1), hs(hrr)...), true, Complete},
		{"empty-before", append(rec(tlsRecordTypeHandshake), hs(hrr)...), true, Complete},
		// A TLS 1.2 server's first flight: more messages follow in the
		// same record.
		{"server-hello-and-more", hs(append(bytes.Clone(sh), 11, 0, 0, 3, 0, 0, 0)), false, Complete},
		{"fatal-alert", rec(tlsRecordTypeAlert, 2, 40), false, NotTLS},
		{"close-notify", rec(tlsRecordTypeAlert, 1, 0), false, NotTLS},
		{"client-hello", chTestHelloWith(chTestSNI("a.example")), false, NotTLS},
		{"http", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), false, NotTLS},
		{"body-too-short", hs([]byte{tlsTypeServerHello, 0, 0, 33}), false, Incomplete},
		{"body-33-bytes", hs(append([]byte{tlsTypeServerHello, 0, 0, 33}, make([]byte, 33)...)), false, NotTLS},
		{"too-long", hs([]byte{tlsTypeServerHello, 1, 0, 1}), false, NotTLS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isHRR, st := serverHelloStatus(tt.data)
			if isHRR != tt.isHRR || st != tt.st {
				t.Fatalf("serverHelloStatus = %v, %v; want %v, %v", isHRR, st, tt.isHRR, tt.st)
			}
			chTestServerPrefixes(t, tt.data)
		})
	}
}

// chTestServerPrefixes checks that every prefix of data gives
// serverHelloStatus's answer for data, or Incomplete.
func chTestServerPrefixes(t *testing.T, data []byte) {
	t.Helper()
	isHRR, st := serverHelloStatus(data)
	for k := range len(data) {
		h, s := serverHelloStatus(data[:k:k])
		if s != Incomplete && (s != st || h != isHRR) || s == Incomplete && h {
			t.Fatalf("prefix of %d/%d bytes: %v, %v; whole: %v, %v", k, len(data), h, s, isHRR, st)
		}
	}
}

// TestSecondClientHello checks secondClientHelloServerName on hand-made
// client bytes after a HelloRetryRequest; TestHelloRetryRequest checks it
// on real ones.
func TestSecondClientHello(t *testing.T) {
	hello := chTestHelloWith(chTestSNI("b.example"))
	split := chTestReframe(t, hello, 10)
	ccs := chTestRecord(tlsRecordTypeCCS, []byte{3, 3}, []byte{1})
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name string
		data []byte
		st   Status
		want string
	}{
		{"no-ccs", hello, Complete, "b.example"},
		{"ccs", cat(ccs, hello), Complete, "b.example"},
		{"ccs-twice", cat(ccs, ccs, hello), Complete, "b.example"},
		{"ccs-between-records", cat(split[:15], ccs, split[15:]), Complete, "b.example"},
		{"ccs-record-version-0301", cat(chTestRecord(tlsRecordTypeCCS, []byte{3, 1}, []byte{1}), hello), Complete, "b.example"},
		{"user-canceled", cat(chTestRecord(tlsRecordTypeAlert, []byte{3, 3}, []byte{2, 90}), ccs, hello), Complete, "b.example"},
		{"empty-ccs", cat(chTestRecord(tlsRecordTypeCCS, []byte{3, 3}, nil), hello), Complete, "b.example"},
		{"ccs-not-1", cat(chTestRecord(tlsRecordTypeCCS, []byte{3, 3}, []byte{2}), hello), NotTLS, ""},
		{"ccs-2-bytes", cat(chTestRecord(tlsRecordTypeCCS, []byte{3, 3}, []byte{1, 1}), hello), NotTLS, ""},
		{"application-data", cat(ccs, chTestRecord(23, []byte{3, 3}, []byte{1, 2, 3}), hello), NotTLS, ""},
		{"fatal-alert", cat(ccs, chTestRecord(tlsRecordTypeAlert, []byte{3, 3}, []byte{2, 40})), NotTLS, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, st := secondClientHelloServerName(tt.data)
			if st != tt.st || string(name) != tt.want {
				t.Fatalf("secondClientHelloServerName = %q, %v; want %q, %v", name, st, tt.want, tt.st)
			}
			for k := range len(tt.data) {
				if n, s := secondClientHelloServerName(tt.data[:k:k]); s != Incomplete && (s != st || !bytes.Equal(n, name)) {
					t.Fatalf("prefix of %d/%d bytes: %q, %v", k, len(tt.data), n, s)
				}
			}
		})
	}
	t.Run("first-hello-refuses-ccs", func(t *testing.T) {
		chTestCheck(t, cat(ccs, hello), NotTLS, "")
	})
}

// TestHelloScanner feeds streams to a Scanner in ever longer prefixes,
// as the tunnel code reads them: every answer must be the stateless
// function's, and all the calls together must walk a number of records
// linear in the stream's length.
func TestHelloScanner(t *testing.T) {
	hello := chTestCapture(t, &tls.Config{ServerName: chTestKaspersky})
	oneByte := chTestOneByteRecords(t, hello)
	skipped := append(bytes.Repeat(chTestRecord(tlsRecordTypeAlert, []byte{3, 3}, []byte{1, 112}), 500), oneByte...)
	sent, received := chTestHRRCapture(t)
	end, _ := ClientHelloEnd(sent)
	type answer struct {
		name  string
		isHRR bool
		st    Status
	}
	methods := map[string]struct {
		stateless func([]byte) answer
		resumed   func(*Scanner, []byte) answer
	}{
		"client": {
			func(b []byte) answer { n, st := clientHelloServerName(b); return answer{string(n), false, st} },
			func(s *Scanner, b []byte) answer {
				n, st := s.ClientHelloServerName(b)
				return answer{string(n), false, st}
			},
		},
		"second": {
			func(b []byte) answer { n, st := secondClientHelloServerName(b); return answer{string(n), false, st} },
			func(s *Scanner, b []byte) answer {
				n, st := s.SecondClientHelloServerName(b)
				return answer{string(n), false, st}
			},
		},
		"server": {
			func(b []byte) answer { h, st := serverHelloStatus(b); return answer{"", h, st} },
			func(s *Scanner, b []byte) answer { h, st := s.ServerHelloStatus(b); return answer{"", h, st} },
		},
	}
	tests := []struct {
		name, method string
		data         []byte
	}{
		{"one-record", "client", hello},
		{"one-byte-records", "client", oneByte},
		{"skipped-records", "client", skipped},
		{"too-many-records", "client", chTestRecords(chTestPadded(t, 14000), 1)},
		{"not-tls-midway", "client", append(bytes.Clone(oneByte[:600]), "GET / HTTP/1.1\r\n\r\n"...)},
		{"second-hello", "second", sent[end:]},
		{"second-hello-one-byte-records", "second", append(chTestRecord(tlsRecordTypeCCS, []byte{3, 3}, []byte{1}), oneByte...)},
		{"server-hello", "server", received},
		{"server-hello-one-byte-records", "server", chTestRecords(chTestServerHello(helloRetryRandom[:]), 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := methods[tt.method]
			records := 0
			for rest := tt.data; len(rest) >= tlsRecordHeaderLen; records++ {
				rest = rest[min(len(rest), tlsRecordHeaderLen+int(binary.BigEndian.Uint16(rest[3:]))):]
			}
			for _, step := range []int{1, 7, 1000} {
				var s Scanner
				calls := 0
				for k := 0; ; k = min(k+step, len(tt.data)) {
					calls++
					got := m.resumed(&s, tt.data[:k:k])
					// The stateless answer costs a walk of every record:
					// compare a sample, and every decided answer.
					if calls%101 == 0 || got.st != Incomplete || k == len(tt.data) {
						if want := m.stateless(tt.data[:k:k]); got != want {
							t.Fatalf("step %d, %d bytes: resumed %+v; stateless %+v", step, k, got, want)
						}
					}
					if k == len(tt.data) || got.st != Incomplete {
						break
					}
				}
				if limit := 2 * (records + calls); s.walked > limit {
					t.Errorf("step %d: %d calls walked %d records; want at most %d", step, calls, s.walked, limit)
				}
			}
		})
	}
	t.Run("shorter-prefix-starts-over", func(t *testing.T) {
		var s Scanner
		s.ClientHelloServerName(oneByte[:len(oneByte)-1])
		if name, st := s.ClientHelloServerName(oneByte[:100]); st != Incomplete || name != nil {
			t.Fatalf("after a shorter prefix: %q, %v", name, st)
		}
		chTestCheck(t, oneByte, Complete, chTestKaspersky)
		if name, st := s.ClientHelloServerName(oneByte); st != Complete || string(name) != chTestKaspersky {
			t.Fatalf("%q, %v", name, st)
		}
	})
}

// chTestCanonicalHost is the fuzz oracle for a canonical host, written apart
// from canonicalSNIHost.
var chTestCanonicalHost = regexp.MustCompile(`^[a-z0-9_-]+(\.[a-z0-9_-]+)*$`)

// chTestLogSafe reports whether b is printable UTF-8 without spaces: safe
// in a log line whatever its format.
func chTestLogSafe(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r == ' ' || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// chTestCertPEM makes a self-signed ECDSA certificate for chTestKaspersky
// and returns it and its key in PEM.
func chTestCertPEM(tb testing.TB) (certPEM, keyPEM []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: chTestKaspersky},
		DNSNames:     []string{chTestKaspersky},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// chTestRecorder is a client's connection that keeps what goes through it.
type chTestRecorder struct {
	net.Conn
	mu             sync.Mutex
	sent, received []byte
}

func (r *chTestRecorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.sent = append(r.sent, b...)
	r.mu.Unlock()
	return r.Conn.Write(b)
}

func (r *chTestRecorder) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.mu.Lock()
	r.received = append(r.received, b[:n]...)
	r.mu.Unlock()
	return n, err
}

// chTestHRRCapture runs a crypto/tls handshake with a HelloRetryRequest on
// loopback (the server takes only P-256 key shares, the client offers
// X25519 first) and returns what the client sent and received. (Not on a
// net.Pipe: both ends write at once after the HelloRetryRequest, which an
// unbuffered pipe deadlocks.)
func chTestHRRCapture(tb testing.TB) (sent, received []byte) {
	tb.Helper()
	certPEM, keyPEM := chTestCertPEM(tb)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	errc := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer func() { _ = s.Close() }()
		_ = s.SetDeadline(time.Now().Add(chTestWait))
		errc <- tls.Server(s, &tls.Config{Certificates: []tls.Certificate{cert}, CurvePreferences: []tls.CurveID{tls.CurveP256}}).Handshake()
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), chTestWait)
	if err != nil {
		tb.Fatal(err)
	}
	rec := &chTestRecorder{Conn: c}
	_ = c.SetDeadline(time.Now().Add(chTestWait))
	err = tls.Client(rec, &tls.Config{ServerName: chTestKaspersky, InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}).Handshake()
	_ = c.Close()
	if serr := <-errc; err != nil || serr != nil {
		tb.Fatalf("a handshake with a HelloRetryRequest: client: %v; server: %v", err, serr)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.sent, rec.received
}

// TestHelloRetryRequestGo checks the HelloRetryRequest helpers on a
// recorded crypto/tls exchange; TestHelloRetryRequest covers OpenSSL too.
func TestHelloRetryRequestGo(t *testing.T) {
	sent, received := chTestHRRCapture(t)
	if isHRR, st := serverHelloStatus(received); !isHRR || st != Complete {
		t.Fatalf("serverHelloStatus = %v, %v; want true, complete", isHRR, st)
	}
	chTestServerPrefixes(t, received)
	end, st := ClientHelloEnd(sent)
	if st != Complete {
		t.Fatalf("ClientHelloEnd: %v", st)
	}
	chTestCheck(t, sent, Complete, chTestKaspersky)
	if rest := sent[end:]; rest[0] != tlsRecordTypeCCS {
		t.Errorf("Go's client sent % x after its first ClientHello; want a ChangeCipherSpec first", rest[:min(len(rest), 8)])
	}
	name, st := secondClientHelloServerName(sent[end:])
	if st != Complete || string(name) != chTestKaspersky {
		t.Fatalf("secondClientHelloServerName = %q, %v", name, st)
	}
	// The server's answer to the second ClientHello, after its own
	// ChangeCipherSpec, is a plain ServerHello.
	_, hrrEnd, _ := new(Scanner).message(received, tlsTypeServerHello, true)
	if isHRR, st := serverHelloStatus(received[hrrEnd:]); isHRR || st != Complete {
		t.Errorf("serverHelloStatus after the HelloRetryRequest = %v, %v; want false, complete", isHRR, st)
	}
}

// chTestFuzzSeeds are inputs in every form the parsers accept.
func chTestFuzzSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var seeds [][]byte
	for _, tc := range chTestRealConfigs()[:5] {
		hello := chTestCapture(tb, tc.cfg)
		seeds = append(seeds, hello, chTestReframe(tb, hello, 3, 100))
	}
	good := chTestHelloWith(chTestSNI("a.example"))
	for _, name := range []string{"a.example", "A.Example.", "a.example:443", "bücher.example", "a.example..", "a\x00b"} {
		seeds = append(seeds, chTestHelloWith(chTestSNI(name)))
	}
	rec := func(typ byte, payload ...byte) []byte { return chTestRecord(typ, []byte{3, 3}, payload) }
	// A real exchange with a HelloRetryRequest: the client's bytes from
	// its second ClientHello on, and the server's answers.
	sent, received := chTestHRRCapture(tb)
	if end, st := ClientHelloEnd(sent); st == Complete {
		seeds = append(seeds, sent[end:])
	}
	seeds = append(seeds, received)
	seeds = append(seeds,
		append(rec(tlsRecordTypeHandshake), good...),
		append(rec(tlsRecordTypeCCS), good...),
		append(rec(tlsRecordTypeCCS, 1), good...),
		append(rec(tlsRecordTypeAlert, 1, 112), good...),
		append(rec(tlsRecordTypeAlert, 2, 90), good...),
		append([]byte{22, 0, 0}, good[3:]...),
		chTestRecords(chTestPadded(tb, 20000), 5000),
		rec(tlsRecordTypeHandshake, chTestServerHello(helloRetryRandom[:])...),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		[]byte("SSH-2.0-OpenSSH_9.6\r\n"),
	)
	return seeds
}

func FuzzClientHelloServerName(f *testing.F) {
	for i, seed := range chTestFuzzSeeds(f) {
		f.Add(seed, uint16(len(seed)/2+i))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		name, st := clientHelloServerName(data)
		switch st {
		case Complete:
			if name == nil {
				break
			}
			c, ok := CanonicalSNI(name)
			if !ok || !chTestCanonicalHost.MatchString(c) || len(c) > maxSNIHostName {
				t.Fatalf("complete with name %q, whose canonical form is %q, %v", name, c, ok)
			}
			if again, err := rules.CanonicalHost(c); err != nil || again != c {
				t.Fatalf("CanonicalSNI(%q) = %q, which rules.CanonicalHost makes %q, %v", name, c, again, err)
			}
			if !chTestLogSafe(name) {
				t.Fatalf("complete with name %q, not safe to log", name)
			}
		case Incomplete:
			if name != nil {
				t.Fatalf("incomplete with a name %q", name)
			}
			if len(data) >= MaxClientHello {
				t.Fatalf("incomplete after %d bytes (MaxClientHello %d)", len(data), MaxClientHello)
			}
		case NotTLS:
			if name != nil {
				t.Fatalf("not TLS with a name %q", name)
			}
		default:
			t.Fatalf("status %d", st)
		}
		if st != Incomplete {
			// Bytes after a decided stream change nothing.
			for _, tail := range [][]byte{{0}, data, []byte("\x16\x03\x01\x00\x01\x01")} {
				name2, st2 := clientHelloServerName(append(data[:len(data):len(data)], tail...))
				if st2 != st || !bytes.Equal(name2, name) {
					t.Fatalf("appending %q: %q, %v; was %q, %v", tail, name2, st2, name, st)
				}
			}
		}
		// Fed in pieces, as the caller reads it, the stream is undecided
		// until it is decided the same way as whole, and a Scanner
		// answers each piece as the function does. (At most 8 pieces:
		// each costs a parse, and executions per second matter more.)
		if len(data) > 0 {
			step := max(int(cut)%len(data)+1, len(data)/8)
			var s Scanner
			for k := 0; k <= len(data); k += step {
				name3, st3 := clientHelloServerName(data[:k:k])
				if k < len(data) && st3 != Incomplete && (st3 != st || !bytes.Equal(name3, name)) {
					t.Fatalf("prefix of %d bytes: %q, %v; whole: %q, %v", k, name3, st3, name, st)
				}
				if name4, st4 := s.ClientHelloServerName(data[:k:k]); st4 != st3 || !bytes.Equal(name4, name3) {
					t.Fatalf("prefix of %d bytes: Scanner %q, %v; clientHelloServerName %q, %v", k, name4, st4, name3, st3)
				}
			}
		}
		// After a HelloRetryRequest the parser skips more, and holds to
		// the same contract.
		name2, st2 := secondClientHelloServerName(data)
		if name2 != nil && (st2 != Complete || !usableSNI(name2) || !chTestLogSafe(name2)) {
			t.Fatalf("secondClientHelloServerName: %q, %v", name2, st2)
		}
		if st2 == Incomplete && len(data) >= MaxClientHello {
			t.Fatalf("secondClientHelloServerName: incomplete after %d bytes", len(data))
		}
		if k := int(cut) % (len(data) + 1); k < len(data) {
			if n, s := secondClientHelloServerName(data[:k:k]); s != Incomplete && (s != st2 || !bytes.Equal(n, name2)) {
				t.Fatalf("secondClientHelloServerName: prefix of %d bytes: %q, %v; whole: %q, %v", k, n, s, name2, st2)
			}
		}
		// The same bytes give the same name to both parsers when the
		// first one completes.
		if st == Complete {
			if name4, st4 := secondClientHelloServerName(data); st4 != st || !bytes.Equal(name4, name) {
				t.Fatalf("secondClientHelloServerName: %q, %v; clientHelloServerName: %q, %v", name4, st4, name, st)
			}
			end, st5 := ClientHelloEnd(data)
			if st5 == Complete {
				if name5, st6 := clientHelloServerName(data[:end:end]); end > len(data) || st6 != st || !bytes.Equal(name5, name) {
					t.Fatalf("ClientHelloEnd = %d; the first %d bytes give %q, %v", end, end, name5, st6)
				}
			}
		}
	})
}

func FuzzServerHelloStatus(f *testing.F) {
	for _, seed := range chTestFuzzSeeds(f) {
		f.Add(seed)
	}
	f.Add(chTestRecords(chTestServerHello(helloRetryRandom[:]), 7))
	f.Add(append(chTestRecord(tlsRecordTypeAlert, []byte{3, 3}, []byte{1, 112}), chTestRecords(chTestServerHello(make([]byte, 32)), 50)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		isHRR, st := serverHelloStatus(data)
		if st != Complete && isHRR || st > NotTLS {
			t.Fatalf("%v, %v", isHRR, st)
		}
		if st == Incomplete && len(data) >= MaxClientHello {
			t.Fatalf("incomplete after %d bytes", len(data))
		}
		for _, k := range []int{len(data) / 3, len(data) / 2, len(data) - 1} {
			if k < 0 {
				continue
			}
			if h, s := serverHelloStatus(data[:k:k]); s != Incomplete && (s != st || h != isHRR) {
				t.Fatalf("prefix of %d bytes: %v, %v; whole: %v, %v", k, h, s, isHRR, st)
			}
		}
	})
}

func TestClientHelloAllocs(t *testing.T) {
	for _, tc := range chTestRealConfigs() {
		t.Run(tc.name, func(t *testing.T) {
			hello := chTestCapture(t, tc.cfg)
			var name []byte
			var st Status
			if n := testing.AllocsPerRun(100, func() { name, st = clientHelloServerName(hello) }); n != 0 {
				t.Errorf("%v allocations per single-record hello; want 0", n)
			}
			if st != Complete || string(name) != tc.want {
				t.Errorf("got %q, %v", name, st)
			}
			half := hello[:len(hello)/2]
			if n := testing.AllocsPerRun(100, func() { clientHelloServerName(half) }); n != 0 {
				t.Errorf("%v allocations per incomplete hello; want 0", n)
			}
		})
	}
	t.Run("odd-ascii-names", func(t *testing.T) {
		for _, name := range []string{"A.Example.", "a.example:443", "a.example.:443"} {
			hello := chTestHelloWith(chTestSNI(name))
			if n := testing.AllocsPerRun(100, func() { clientHelloServerName(hello) }); n != 0 {
				t.Errorf("%q: %v allocations; want 0", name, n)
			}
		}
	})
	t.Run("skipped-records-before", func(t *testing.T) {
		hello := chTestCapture(t, &tls.Config{ServerName: chTestKaspersky})
		data := append(chTestRecord(tlsRecordTypeHandshake, []byte{3, 3}, nil), chTestRecord(tlsRecordTypeAlert, []byte{3, 3}, []byte{1, 112})...)
		data = append(data, hello...)
		if n := testing.AllocsPerRun(100, func() { clientHelloServerName(data) }); n != 0 {
			t.Errorf("%v allocations per single-record hello after skipped records; want 0", n)
		}
	})
	t.Run("scanner", func(t *testing.T) {
		hello := chTestCapture(t, &tls.Config{ServerName: chTestKaspersky})
		if n := testing.AllocsPerRun(100, func() {
			var s Scanner
			s.ClientHelloServerName(hello[:100])
			s.ClientHelloServerName(hello)
		}); n != 0 {
			t.Errorf("%v allocations per single-record hello read in two parts; want 0", n)
		}
	})
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
	// A hello in one-byte records that arrives a byte at a time, read as
	// the tunnel code should read it.
	dripped := chTestOneByteRecords(b, goDefault)
	b.Run("one-byte-records-dripped-scanner", func(b *testing.B) {
		b.SetBytes(int64(len(dripped)))
		b.ReportAllocs()
		for b.Loop() {
			var s Scanner
			for k := range len(dripped) + 1 {
				s.ClientHelloServerName(dripped[:k])
			}
		}
	})
}
