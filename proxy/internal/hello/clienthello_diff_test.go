package hello

// A differential test of the SNI parser against real TLS servers: Go's
// crypto/tls, in process, and OpenSSL's s_server, as a subprocess, both on
// loopback. The parser must be at least as lenient as either of them, so
// the rule every case is held to is:
//
//	whenever a server accepts a ClientHello and was given server name N,
//	clientHelloServerName returns, for the same bytes, a name whose
//	CanonicalSNI is CanonicalSNI(N); and if N names no host (or there is
//	none), it returns no name.
//
// That is stronger than "when both servers accept": a proxy in front of
// either kind of server must see the name that server sees. The one
// exception is a hello larger than Go accepts, which OpenSSL takes and the
// parser refuses (see maxClientHelloLen).
//
// "Accepts" means: the server's SNI callback was given N (Go's
// GetConfigForClient; s_server's servername callback, which -msg makes
// print "Hostname in TLS extension: ...") and the server answered with a
// ServerHello, not an alert. Where a real client can produce the bytes, the
// handshake must also complete, with an echo round trip through s_server
// -rev or its Go equivalent, and the test asserts that it did:
//
//   - Record-layer mutations (record versions, splits, empty records,
//     alerts among the records) are applied by a relay between a real client
//     (Go's crypto/tls or openssl s_client) and the server. Record framing
//     is not part of the handshake transcript, so a server that accepts the
//     framing completes the handshake.
//   - Body mutations (extension order, GREASE, padding, session IDs, odd
//     names) change the transcript, and no client here produces them (utls
//     is not available), so those hellos are built by a small encoder from
//     a real client's hello and sent raw: acceptance is then a ServerHello
//     in answer, and the handshake cannot complete.
//
// Cases that name a server's behaviour hold an explicit expectation of it,
// so that a Go or OpenSSL upgrade that changes what it accepts fails here
// and docs/security.md ("Input") gets updated. The generated cases hold only the
// rule above. Sanity cases that both servers refuse check that the test
// sees a refusal, and that the parser refuses them too.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// dtWait bounds every wait in these tests. It only keeps a broken test from
// hanging: nothing asserts how long anything took.
const dtWait = 20 * time.Second

// dtName is the server name the real clients ask for.
const dtName = "ksn.kaspersky.com"

// dtServerGo and dtServerOpenSSL name the two servers in messages.
const (
	dtServerGo      = "go"
	dtServerOpenSSL = "openssl"
)

// dtOpenSSLPath finds the openssl command, which the tests need: they must
// never skip.
func dtOpenSSLPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("the differential SNI tests need the openssl command (s_server, s_client): %v; .ci/run must install the openssl package", err)
	}
	return path
}

// dtCert makes a self-signed certificate and writes it and its key as PEM
// files for s_server.
func dtCert(t *testing.T) (cert tls.Certificate, certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := chTestCertPEM(t)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certFile, keyFile
}

// dtEcho answers each line read from rw with the line reversed, as
// s_server -rev does, until the connection ends.
func dtEcho(rw io.ReadWriter) {
	br := bufio.NewReader(rw)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		r := []byte(strings.TrimSuffix(line, "\n"))
		slices.Reverse(r)
		if _, err := rw.Write(append(r, '\n')); err != nil {
			return
		}
	}
}

// dtSeen is what a server did with one connection.
type dtSeen struct {
	names []string // the server names its SNI callback was given
	err   error    // the handshake's outcome (Go only)
}

// dtGoServer is a crypto/tls server on loopback that records, per client
// address, the names its GetConfigForClient callback is given.
type dtGoServer struct {
	addr string
	mu   sync.Mutex
	seen map[string]chan dtSeen
}

func dtStartGo(t *testing.T, cert tls.Certificate, curves []tls.CurveID) *dtGoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &dtGoServer{addr: ln.Addr().String(), seen: map[string]chan dtSeen{}}
	testutil.Serve(t, ln, func(c net.Conn) { g.serve(c, cert, curves) })
	return g
}

// slot is the channel for the result of the connection from addr.
func (g *dtGoServer) slot(addr string) chan dtSeen {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch, ok := g.seen[addr]
	if !ok {
		ch = make(chan dtSeen, 1)
		g.seen[addr] = ch
	}
	return ch
}

func (g *dtGoServer) serve(c net.Conn, cert tls.Certificate, curves []tls.CurveID) {
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(dtWait))
	var names []string
	tc := tls.Server(c, &tls.Config{
		Certificates:     []tls.Certificate{cert},
		MinVersion:       tls.VersionTLS10,
		CurvePreferences: curves,
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			names = append(names, h.ServerName)
			return nil, nil
		},
	})
	err := tc.Handshake()
	g.slot(c.RemoteAddr().String()) <- dtSeen{names: names, err: err}
	if err == nil {
		dtEcho(tc)
	}
}

// result waits for what the server did with the connection from addr.
func (g *dtGoServer) result(t *testing.T, addr string) dtSeen {
	t.Helper()
	select {
	case s := <-g.slot(addr):
		return s
	case <-time.After(dtWait):
		t.Fatalf("the Go server never finished the connection from %s", addr)
		return dtSeen{}
	}
}

// dtOpenSSLServer is an openssl s_server subprocess on loopback. It serves
// one connection at a time, and which names it was given for a connection
// is read from its output: after each connection the test sends a marker
// ClientHello with a name of its own, and the names printed before the
// marker's are the connection's.
type dtOpenSSLServer struct {
	addr   string
	marker *dtHello
	n      int

	mu     sync.Mutex
	lines  []string // the lines that matter, in order
	read   int      // how many of them have been consumed
	closed bool
	more   chan struct{}
}

// dtHostnamePrefix starts the line s_server's servername callback prints
// for each ClientHello that has a server_name; the name follows in quotes,
// with non-printable and non-ASCII bytes as \xNN.
const dtHostnamePrefix = "Hostname in TLS extension: "

func dtStartOpenSSL(t *testing.T, certFile, keyFile string, marker *dtHello, extra ...string) *dtOpenSSLServer {
	t.Helper()
	args := []string{"s_server", "-accept", "127.0.0.1:0", "-cert", certFile, "-key", keyFile,
		// A second context for a name installs the servername callback;
		// -msg makes it print every name it is given.
		"-servername", "sni.invalid", "-cert2", certFile, "-key2", keyFile, "-msg",
		// Echo lines reversed, so that a client can check that the
		// handshake completed.
		"-rev"}
	cmd := exec.Command(dtOpenSSLPath(t), append(args, extra...)...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting openssl s_server: %v", err)
	}
	_ = pw.Close()
	o := &dtOpenSSLServer{marker: marker, more: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// -msg dumps every message in hex: keep only the lines that
		// matter, and never block s_server's writes on the test.
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, dtHostnamePrefix) || strings.HasPrefix(line, "ACCEPT ") {
				o.mu.Lock()
				o.lines = append(o.lines, line)
				o.mu.Unlock()
				select {
				case o.more <- struct{}{}:
				default:
				}
			}
		}
		o.mu.Lock()
		o.closed = true
		o.mu.Unlock()
		close(o.more)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		<-done
		_ = pr.Close()
	})
	addr, ok := strings.CutPrefix(o.next(t), "ACCEPT ")
	if !ok {
		t.Fatal("openssl s_server did not say where it listens")
	}
	o.addr = addr
	return o
}

// next returns s_server's next line that matters.
func (o *dtOpenSSLServer) next(t *testing.T) string {
	t.Helper()
	timeout := time.After(dtWait)
	for {
		o.mu.Lock()
		if o.read < len(o.lines) {
			line := o.lines[o.read]
			o.read++
			o.mu.Unlock()
			return line
		}
		closed := o.closed
		o.mu.Unlock()
		if closed {
			t.Fatal("openssl s_server exited")
		}
		select {
		case <-o.more:
		case <-timeout:
			t.Fatal("openssl s_server printed nothing more")
		}
	}
}

// names returns the server names s_server was given since the last call.
// The connections they came on must be closed.
func (o *dtOpenSSLServer) names(t *testing.T) []string {
	t.Helper()
	o.n++
	mark := fmt.Sprintf("mark-%d.invalid", o.n)
	h := o.marker.clone()
	h.setSNI(mark)
	dtSend(t, o.addr, dtFrame{}.apply(h.encode()))
	var names []string
	for {
		line := o.next(t)
		name, ok := dtUnescapeHostname(line)
		if !ok {
			t.Fatalf("s_server printed %q", line)
		}
		if name == mark {
			return names
		}
		names = append(names, name)
	}
}

// dtUnescapeHostname parses a "Hostname in TLS extension" line.
func dtUnescapeHostname(line string) (string, bool) {
	q, ok := strings.CutPrefix(line, dtHostnamePrefix)
	if !ok || len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return "", false
	}
	q = q[1 : len(q)-1]
	var b []byte
	for i := 0; i < len(q); i++ {
		if q[i] == '\\' && i+3 < len(q) && q[i+1] == 'x' {
			if v, err := hex.DecodeString(q[i+2 : i+4]); err == nil {
				b = append(b, v[0])
				i += 3
				continue
			}
		}
		b = append(b, q[i])
	}
	return string(b), true
}

// dtSend sends data to the server at addr as a client's first bytes,
// half-closes, and returns what the server sent until it closed, and the
// client's address.
func dtSend(t *testing.T, addr string, data []byte) (answer []byte, local string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, dtWait)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(dtWait))
	// A server that refuses the first bytes may close before reading
	// the rest: write errors are its answer.
	_, _ = c.Write(data)
	_ = c.(*net.TCPConn).CloseWrite()
	answer, err = io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server at %s neither answered nor closed", addr)
	}
	return answer, c.LocalAddr().String()
}

// dtAnswer reads a server's first bytes the way a client does: it skips
// warning alerts (OpenSSL sends unrecognized_name before a TLS 1.2
// ServerHello when the name is not its own) and ChangeCipherSpec records
// and reports whether the first handshake message is a ServerHello. It is
// written apart from serverHelloStatus, which it must not trust.
func dtAnswer(b []byte) (serverHello bool, what string) {
	for len(b) >= tlsRecordHeaderLen {
		typ := b[0]
		n := int(binary.BigEndian.Uint16(b[3:]))
		if len(b) < tlsRecordHeaderLen+n {
			return false, "a cut record"
		}
		p := b[tlsRecordHeaderLen : tlsRecordHeaderLen+n]
		b = b[tlsRecordHeaderLen+n:]
		switch {
		case typ == tlsRecordTypeAlert && len(p) == 2 && p[0] == tlsAlertLevelWarning, typ == tlsRecordTypeCCS:
		case typ == tlsRecordTypeAlert && len(p) == 2:
			return false, fmt.Sprintf("alert %d", p[1])
		case typ == tlsRecordTypeHandshake && len(p) > 0:
			return p[0] == tlsTypeServerHello, fmt.Sprintf("handshake message %d", p[0])
		default:
			return false, fmt.Sprintf("a record of type %d", typ)
		}
	}
	if len(b) == 0 {
		return false, "nothing"
	}
	return false, "not TLS"
}

// dtRecord frames payload as one record.
func dtRecord(typ byte, version uint16, payload []byte) []byte {
	out := []byte{typ, byte(version >> 8), byte(version), byte(len(payload) >> 8), byte(len(payload))}
	return append(out, payload...)
}

// Records that a client may send among its ClientHello's records.
var (
	dtEmptyHandshake = dtRecord(tlsRecordTypeHandshake, 0x0303, nil)
	dtEmptyCCS       = dtRecord(tlsRecordTypeCCS, 0x0303, nil)
	dtCCS            = dtRecord(tlsRecordTypeCCS, 0x0303, []byte{1})
	dtWarning        = dtRecord(tlsRecordTypeAlert, 0x0303, []byte{tlsAlertLevelWarning, 112}) // unrecognized_name
	dtUserCanceled   = dtRecord(tlsRecordTypeAlert, 0x0303, []byte{tlsAlertLevelWarning, tlsAlertUserCanceled})
	dtFatal          = dtRecord(tlsRecordTypeAlert, 0x0303, []byte{2, 40}) // handshake_failure
)

// dtFrame says how to cut a ClientHello handshake message into records.
type dtFrame struct {
	vers    []uint16 // the records' versions, the last for the rest; 0x0301 if none
	sizes   []int    // the sizes of the first fragments
	every   int      // the size of the fragments after those; 0 for 16 KiB
	before  [][]byte // records sent before the first fragment
	between [][]byte // records sent after the first fragment
}

func (f dtFrame) apply(msg []byte) []byte {
	out := bytes.Join(f.before, nil)
	for i := 0; len(msg) > 0; i++ {
		n := tlsMaxRecordLen
		switch {
		case i < len(f.sizes):
			n = f.sizes[i]
		case f.every > 0:
			n = f.every
		}
		n = min(max(n, 1), len(msg), tlsMaxRecordLen)
		v := uint16(0x0301)
		if len(f.vers) > 0 {
			v = f.vers[min(i, len(f.vers)-1)]
		}
		out = append(out, dtRecord(tlsRecordTypeHandshake, v, msg[:n])...)
		msg = msg[n:]
		if i == 0 {
			out = append(out, bytes.Join(f.between, nil)...)
		}
	}
	return out
}

// dtRepeat is n copies of rec.
func dtRepeat(rec []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = rec
	}
	return out
}

// dtExt is one ClientHello extension.
type dtExt struct {
	typ  uint16
	data []byte
}

// dtHello is a ClientHello taken apart, to be changed and put together
// again: the small encoder for the body mutations.
type dtHello struct {
	vers                                   uint16
	random, sessionID, suites, compression []byte
	exts                                   []dtExt
}

// dtParseHello takes a ClientHello handshake message apart. It is written
// apart from the parser under test.
func dtParseHello(t *testing.T, msg []byte) *dtHello {
	t.Helper()
	fail := func() { t.Fatalf("dtParseHello: malformed ClientHello % x", msg[:min(len(msg), 64)]) }
	if len(msg) < tlsHandshakeHeaderLen+2+32+1 || msg[0] != tlsTypeClientHello {
		fail()
	}
	b := msg[tlsHandshakeHeaderLen:]
	h := &dtHello{vers: binary.BigEndian.Uint16(b), random: bytes.Clone(b[2:34])}
	b = b[34:]
	vec := func(lenBytes int) []byte {
		if len(b) < lenBytes {
			fail()
		}
		n := int(b[0])
		if lenBytes == 2 {
			n = int(binary.BigEndian.Uint16(b))
		}
		if len(b) < lenBytes+n {
			fail()
		}
		v := bytes.Clone(b[lenBytes : lenBytes+n])
		b = b[lenBytes+n:]
		return v
	}
	h.sessionID, h.suites, h.compression = vec(1), vec(2), vec(1)
	exts := vec(2)
	if len(b) != 0 {
		fail()
	}
	for b = exts; len(b) > 0; {
		if len(b) < 2 {
			fail()
		}
		typ := binary.BigEndian.Uint16(b)
		b = b[2:]
		h.exts = append(h.exts, dtExt{typ, vec(2)})
	}
	return h
}

func (h *dtHello) clone() *dtHello {
	c := &dtHello{vers: h.vers, random: bytes.Clone(h.random), sessionID: bytes.Clone(h.sessionID),
		suites: bytes.Clone(h.suites), compression: bytes.Clone(h.compression)}
	for _, e := range h.exts {
		c.exts = append(c.exts, dtExt{e.typ, bytes.Clone(e.data)})
	}
	return c
}

// setExt replaces the extension of type typ, or adds it at the end.
func (h *dtHello) setExt(typ uint16, data []byte) {
	for i := range h.exts {
		if h.exts[i].typ == typ {
			h.exts[i].data = data
			return
		}
	}
	h.exts = append(h.exts, dtExt{typ, data})
}

// setSNI makes the server_name extension name exactly one host_name.
func (h *dtHello) setSNI(name string) {
	h.setExt(tlsExtServerName, chTestVec16(append([]byte{tlsSNIHostName}, chTestVec16([]byte(name))...)))
}

// insertExt puts an extension at position i.
func (h *dtHello) insertExt(i int, e dtExt) {
	h.exts = slices.Insert(h.exts, min(i, len(h.exts)), e)
}

// encode puts the ClientHello handshake message together.
func (h *dtHello) encode() []byte {
	b := binary.BigEndian.AppendUint16(nil, h.vers)
	b = append(b, h.random...)
	b = append(b, chTestVec8(h.sessionID)...)
	b = append(b, chTestVec16(h.suites)...)
	b = append(b, chTestVec8(h.compression)...)
	var exts []byte
	for _, e := range h.exts {
		exts = binary.BigEndian.AppendUint16(exts, e.typ)
		exts = append(exts, chTestVec16(e.data)...)
	}
	b = append(b, chTestVec16(exts)...)
	return append([]byte{tlsTypeClientHello, byte(len(b) >> 16), byte(len(b) >> 8), byte(len(b))}, b...)
}

// padTo adds a padding extension (RFC 7685) that makes the body bodyLen
// bytes long.
func (h *dtHello) padTo(t *testing.T, bodyLen int) {
	t.Helper()
	const padExt = 21
	h.setExt(padExt, nil)
	n := bodyLen - (len(h.encode()) - tlsHandshakeHeaderLen)
	if n < 0 || n > 0xffff {
		t.Fatalf("padTo(%d): cannot pad by %d bytes", bodyLen, n)
	}
	h.setExt(padExt, make([]byte, n))
}

// dtReadRecord reads one record.
func dtReadRecord(r io.Reader) ([]byte, error) {
	rec := make([]byte, tlsRecordHeaderLen)
	if _, err := io.ReadFull(r, rec); err != nil {
		return nil, err
	}
	rec = append(rec, make([]byte, binary.BigEndian.Uint16(rec[3:]))...)
	if _, err := io.ReadFull(r, rec[tlsRecordHeaderLen:]); err != nil {
		return nil, err
	}
	return rec, nil
}

// dtReadHello reads a client's first ClientHello, in however many records
// it used, and returns the handshake message.
func dtReadHello(r io.Reader) ([]byte, error) {
	var msg []byte
	for len(msg) < tlsHandshakeHeaderLen || len(msg) < tlsHandshakeHeaderLen+(int(msg[1])<<16|int(msg[2])<<8|int(msg[3])) {
		rec, err := dtReadRecord(r)
		if err != nil {
			return nil, fmt.Errorf("reading a ClientHello: %w", err)
		}
		if rec[0] != tlsRecordTypeHandshake || len(msg) == 0 && (len(rec) == tlsRecordHeaderLen || rec[tlsRecordHeaderLen] != tlsTypeClientHello) {
			return nil, fmt.Errorf("reading a ClientHello: unexpected record % x", rec[:min(len(rec), 8)])
		}
		msg = append(msg, rec[tlsRecordHeaderLen:]...)
	}
	return msg, nil
}

// dtPing checks that a connection carries data both ways: the handshake
// completed, on both sides.
func dtPing(rw io.ReadWriter) error {
	if _, err := io.WriteString(rw, "ping\n"); err != nil {
		return fmt.Errorf("writing through the connection: %w", err)
	}
	line, err := bufio.NewReader(rw).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading through the connection: %w", err)
	}
	if line != "gnip\n" {
		return fmt.Errorf("echo %q; want %q", line, "gnip\n")
	}
	return nil
}

// dtClient is a real TLS client to relay.
type dtClient interface {
	// dial starts the client's handshake and returns the client's end of
	// the connection and a function that waits for the handshake and an
	// echo round trip through it.
	dial(t *testing.T) (net.Conn, func() error)
	String() string
}

// dtGoClient is crypto/tls's client on an in-memory pipe.
type dtGoClient struct {
	name string
	cfg  *tls.Config
}

func (c dtGoClient) String() string { return "go-" + c.name }

func (c dtGoClient) dial(t *testing.T) (net.Conn, func() error) {
	c1, c2 := net.Pipe()
	errc := make(chan error, 1)
	go func() {
		defer func() { _ = c1.Close() }()
		_ = c1.SetDeadline(time.Now().Add(dtWait))
		tc := tls.Client(c1, c.cfg)
		if err := tc.Handshake(); err != nil {
			errc <- fmt.Errorf("handshake: %w", err)
			return
		}
		errc <- dtPing(tc)
	}()
	return c2, func() error { return <-errc }
}

// dtSClient is openssl s_client, connecting to the relay on loopback.
type dtSClient struct {
	name string
	args []string
}

func (c dtSClient) String() string { return "s_client-" + c.name }

func (c dtSClient) dial(t *testing.T) (net.Conn, func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	args := append([]string{"s_client", "-connect", ln.Addr().String(), "-brief", "-no_ign_eof"}, c.args...)
	cmd := exec.Command(dtOpenSSLPath(t), args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting openssl s_client: %v", err)
	}
	// Nothing must outlive dtWait, whatever the client does.
	timer := time.AfterFunc(dtWait, func() { _ = cmd.Process.Kill() })
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(dtWait))
	conn, err := ln.Accept()
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("openssl s_client never connected: %v; it said %q", err, stderr.String())
	}
	return conn, func() error {
		defer timer.Stop()
		// s_client sends what it reads on stdin once the handshake is
		// done, and prints what the server sends; -no_ign_eof makes it
		// quit when stdin closes, which must wait for the echo.
		// It may print other lines first, such as "read R BLOCK" when a
		// read finds only a TLS 1.3 session ticket.
		_, _ = io.WriteString(stdin, "ping\n")
		var printed []string
		var rerr error
		for br := bufio.NewReader(stdout); ; {
			var line string
			if line, rerr = br.ReadString('\n'); rerr != nil || line == "gnip\n" {
				break
			}
			printed = append(printed, line)
		}
		_ = stdin.Close()
		_, _ = io.Copy(io.Discard, stdout)
		werr := cmd.Wait()
		if rerr != nil {
			return fmt.Errorf("s_client printed no echo (%w, exit: %v), but %q; it said %q", rerr, werr, printed, stderr.String())
		}
		return nil
	}
}

// dtRelayed is what went through a relay.
type dtRelayed struct {
	first    []byte // the client's first bytes as the server got them
	toServer []byte // everything the server got, first included
	toClient []byte // everything the server sent
	local    string // the relay's address towards the server
	err      error  // the client's handshake and echo round trip
}

// dtRelay connects client to the server at addr through a relay that
// re-frames the client's first ClientHello with frame and passes
// everything else on as it is, the client's bytes record by record through
// hook if there is one.
func dtRelay(t *testing.T, addr string, client dtClient, frame dtFrame, hook func([]byte) []byte) dtRelayed {
	t.Helper()
	cc, wait := client.dial(t)
	up, err := net.DialTimeout("tcp", addr, dtWait)
	if err != nil {
		_ = cc.Close()
		_ = wait()
		t.Fatal(err)
	}
	_ = cc.SetDeadline(time.Now().Add(dtWait))
	_ = up.SetDeadline(time.Now().Add(dtWait))
	r := dtRelayed{local: up.LocalAddr().String()}
	msg, err := dtReadHello(cc)
	if err != nil {
		_ = cc.Close()
		_ = up.Close()
		t.Fatalf("%v: %v (client: %v)", client, err, wait())
	}
	r.first = frame.apply(msg)
	_, _ = up.Write(r.first)
	var mu sync.Mutex
	toServer, toClient := bytes.Clone(r.first), []byte(nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer func() { _ = up.(*net.TCPConn).CloseWrite() }()
		for {
			rec, err := dtReadRecord(cc)
			if err != nil {
				return
			}
			if hook != nil {
				rec = hook(rec)
			}
			mu.Lock()
			toServer = append(toServer, rec...)
			mu.Unlock()
			if _, err := up.Write(rec); err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		defer func() { _ = cc.Close() }()
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			mu.Lock()
			toClient = append(toClient, buf[:n]...)
			mu.Unlock()
			if n > 0 {
				if _, werr := cc.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	r.err = wait()
	_ = cc.Close()
	wg.Wait()
	_ = up.Close()
	r.toServer, r.toClient = toServer, toClient
	return r
}

// dtOutcome is what one server did with a client's first bytes.
type dtOutcome struct {
	server    string
	accepted  bool     // it answered with a ServerHello
	answer    string   // what it answered, for messages
	names     []string // the server names its SNI callback was given
	completed bool     // the relayed client's handshake and echo succeeded
	err       error    // why not, for messages
}

// dtCheck holds parse's answer for a client's first bytes to the rule in
// the comment at the top of this file, against what one server did with
// them.
func dtCheck(first []byte, o dtOutcome, parse func([]byte) ([]byte, Status)) error {
	if !o.accepted {
		return nil
	}
	if len(o.names) > 1 {
		return fmt.Errorf("%s was given %d names, %q, for one ClientHello", o.server, len(o.names), o.names)
	}
	sent, want, wantOK := "(none)", "", false
	if len(o.names) == 1 {
		sent = fmt.Sprintf("%q", o.names[0])
		want, wantOK = CanonicalSNI([]byte(o.names[0]))
	}
	name, st := parse(first)
	if st != Complete {
		return fmt.Errorf("%s accepted the hello, with server name %s, but the parser says %v", o.server, sent, st)
	}
	if !wantOK {
		if name != nil {
			return fmt.Errorf("%s was given server name %s, which names no host, but the parser found %q", o.server, sent, name)
		}
		return nil
	}
	got, ok := CanonicalSNI(name)
	if name == nil || !ok || got != want {
		return fmt.Errorf("%s was given server name %s, host %q, but the parser found %q (host %q)", o.server, sent, want, name, got)
	}
	return nil
}

// dtHarness is the two servers and the real hellos the cases start from.
type dtHarness struct {
	goSrv   *dtGoServer
	openssl *dtOpenSSLServer
	bases   map[string]*dtHello // real ClientHellos by client
}

// dtNewHarness starts both servers; with hrr, they accept only P-256 key
// shares, so that a client that offers X25519 first gets a
// HelloRetryRequest.
func dtNewHarness(t *testing.T, hrr bool) *dtHarness {
	t.Helper()
	dtOpenSSLPath(t)
	cert, certFile, keyFile := dtCert(t)
	h := &dtHarness{bases: map[string]*dtHello{}}
	h.bases["go-tls13"] = dtParseHello(t, chTestMessage(t, chTestCapture(t, &tls.Config{ServerName: dtName})))
	h.bases["go-tls12"] = dtParseHello(t, chTestMessage(t, chTestCapture(t, &tls.Config{ServerName: dtName, MaxVersion: tls.VersionTLS12})))
	h.bases["openssl"] = dtParseHello(t, dtCaptureSClient(t, "-servername", dtName))
	var curves []tls.CurveID
	var extra []string
	if hrr {
		curves, extra = []tls.CurveID{tls.CurveP256}, []string{"-groups", "P-256"}
	}
	h.goSrv = dtStartGo(t, cert, curves)
	h.openssl = dtStartOpenSSL(t, certFile, keyFile, h.bases["go-tls13"], extra...)
	return h
}

// dtCaptureSClient returns the ClientHello openssl s_client sends with
// args.
func dtCaptureSClient(t *testing.T, args ...string) []byte {
	t.Helper()
	conn, wait := dtSClient{"capture", args}.dial(t)
	_ = conn.SetDeadline(time.Now().Add(dtWait))
	msg, err := dtReadHello(conn)
	_ = conn.Close()
	_ = wait() // it fails: the "server" hung up
	if err != nil {
		t.Fatalf("capturing openssl s_client's ClientHello: %v", err)
	}
	return msg
}

// raw sends a client's first bytes to both servers and reports what each
// did with them.
func (h *dtHarness) raw(t *testing.T, data []byte) []dtOutcome {
	t.Helper()
	answer, local := dtSend(t, h.goSrv.addr, data)
	seen := h.goSrv.result(t, local)
	g := dtOutcome{server: dtServerGo, names: seen.names, err: seen.err}
	g.accepted, g.answer = dtAnswer(answer)
	answer, _ = dtSend(t, h.openssl.addr, data)
	o := dtOutcome{server: dtServerOpenSSL, names: h.openssl.names(t)}
	o.accepted, o.answer = dtAnswer(answer)
	return []dtOutcome{g, o}
}

// relay runs client through a relay to one server and reports what it did.
func (h *dtHarness) relay(t *testing.T, server string, client dtClient, frame dtFrame, hook func([]byte) []byte) (dtRelayed, dtOutcome) {
	t.Helper()
	o := dtOutcome{server: server}
	var r dtRelayed
	switch server {
	case dtServerGo:
		r = dtRelay(t, h.goSrv.addr, client, frame, hook)
		seen := h.goSrv.result(t, r.local)
		o.names = seen.names
	case dtServerOpenSSL:
		r = dtRelay(t, h.openssl.addr, client, frame, hook)
		o.names = h.openssl.names(t)
	default:
		t.Fatalf("no server %q", server)
	}
	o.accepted, o.answer = dtAnswer(r.toClient)
	o.completed, o.err = r.err == nil, r.err
	return r, o
}

// dtExpect is what a case expects of each server: that it accepts the
// hello (and, for a relayed real client, completes the handshake), or that
// it refuses it.
type dtExpect struct{ goAccepts, opensslAccepts bool }

func (e dtExpect) of(server string) bool {
	if server == dtServerGo {
		return e.goAccepts
	}
	return e.opensslAccepts
}

var (
	dtBoth        = dtExpect{true, true}
	dtGoOnly      = dtExpect{true, false}
	dtOpenSSLOnly = dtExpect{false, true}
	dtNeither     = dtExpect{false, false}
)

// dtTally counts, per class of mutation and server, how many hellos were
// accepted, for the log: the numbers behind docs/security.md ("Input").
type dtTally map[string]*[2][2]int

func (d dtTally) add(class string, o dtOutcome) {
	if d[class] == nil {
		d[class] = new([2][2]int)
	}
	i := 0
	if o.server == dtServerOpenSSL {
		i = 1
	}
	d[class][i][1]++
	if o.accepted {
		d[class][i][0]++
	}
}

func (d dtTally) log(t *testing.T) {
	for _, class := range slices.Sorted(func(yield func(string) bool) {
		for k := range d {
			if !yield(k) {
				return
			}
		}
	}) {
		c := d[class]
		t.Logf("%-24s go accepted %3d/%3d, openssl %3d/%3d", class, c[0][0], c[0][1], c[1][0], c[1][1])
	}
}

// dtHold checks one server's outcome against the rule and, if there is
// one, the case's expectation; relayed says the client was real, so that
// acceptance means a completed handshake.
func dtHold(t *testing.T, first []byte, o dtOutcome, want *dtExpect, relayed bool) {
	t.Helper()
	if err := dtCheck(first, o, clientHelloServerName); err != nil {
		t.Error(err)
	}
	if want == nil {
		return
	}
	got := o.accepted
	if relayed {
		got = o.completed
		if o.completed && !o.accepted {
			t.Errorf("%s: the handshake completed, yet the relay saw no ServerHello (%s)", o.server, o.answer)
		}
	}
	if got != want.of(o.server) {
		t.Errorf("%s accepted: %v (answer: %s, names %q, err: %v); want %v", o.server, got, o.answer, o.names, o.err, want.of(o.server))
	}
}

// dtRefused checks a sanity case that both servers refuse: the parser must
// refuse it too.
func dtRefused(t *testing.T, first []byte) {
	t.Helper()
	if name, st := clientHelloServerName(first); st != NotTLS {
		t.Errorf("both servers refuse it, the parser says %q, %v; want %v", name, st, NotTLS)
	}
}

// dtRecordCase is a re-framing of a real client's ClientHello.
type dtRecordCase struct {
	name  string
	frame dtFrame
	want  dtExpect
	// refused: both servers refuse, and so must the parser.
	refused bool
}

// dtRecordCases are the record-layer mutations. at is the offset of the
// server name in the hello's handshake message.
func dtRecordCases(at int) []dtRecordCase {
	cases := []dtRecordCase{
		{name: "as-sent", want: dtBoth},
		{name: "one-byte-records", frame: dtFrame{every: 1}, want: dtBoth},
		{name: "split-in-header", frame: dtFrame{sizes: []int{2}}, want: dtBoth},
		{name: "split-after-header", frame: dtFrame{sizes: []int{4}}, want: dtBoth},
		{name: "split-at-name", frame: dtFrame{sizes: []int{at}}, want: dtBoth},
		{name: "split-in-name", frame: dtFrame{sizes: []int{at + 4}}, want: dtBoth},
		{name: "name-in-own-record", frame: dtFrame{sizes: []int{at, len(dtName)}}, want: dtBoth},
		{name: "every-7", frame: dtFrame{every: 7}, want: dtBoth},
		{name: "every-100", frame: dtFrame{every: 100}, want: dtBoth},
		{name: "mixed-versions", frame: dtFrame{vers: []uint16{0x0300, 0x03ff, 0x0301}, sizes: []int{at, 20}}, want: dtBoth},
		{name: "versions-0000-0200", frame: dtFrame{vers: []uint16{0x0000, 0x0200}, sizes: []int{at}}, want: dtGoOnly},
		// OpenSSL skips up to 32 empty records; Go refuses any.
		{name: "empty-before", frame: dtFrame{before: [][]byte{dtEmptyHandshake}}, want: dtOpenSSLOnly},
		{name: "empty-between", frame: dtFrame{sizes: []int{at}, between: [][]byte{dtEmptyHandshake}}, want: dtOpenSSLOnly},
		{name: "32-empty-before", frame: dtFrame{before: dtRepeat(dtEmptyHandshake, 32)}, want: dtOpenSSLOnly},
		{name: "33-empty-before", frame: dtFrame{before: dtRepeat(dtEmptyHandshake, 33)}, want: dtNeither},
		{name: "empty-ccs-before", frame: dtFrame{before: [][]byte{dtEmptyCCS}}, want: dtOpenSSLOnly},
		{name: "empty-ccs-between", frame: dtFrame{sizes: []int{at}, between: [][]byte{dtEmptyCCS}}, want: dtNeither},
		// Go drops up to 16 warning alerts; OpenSSL refuses them.
		{name: "warning-before", frame: dtFrame{before: [][]byte{dtWarning}}, want: dtGoOnly},
		{name: "warning-between", frame: dtFrame{sizes: []int{at}, between: [][]byte{dtWarning}}, want: dtGoOnly},
		{name: "user-canceled-before", frame: dtFrame{before: [][]byte{dtUserCanceled}}, want: dtGoOnly},
		{name: "16-warnings-before", frame: dtFrame{before: dtRepeat(dtWarning, 16)}, want: dtGoOnly},
		{name: "17-warnings-before", frame: dtFrame{before: dtRepeat(dtWarning, 17)}, want: dtNeither},
		{name: "empty-and-split-ssl30", frame: dtFrame{vers: []uint16{0x0300}, before: [][]byte{dtEmptyCCS, dtEmptyHandshake}, sizes: []int{at + 3}, every: 50, between: [][]byte{dtEmptyHandshake}}, want: dtOpenSSLOnly},
		{name: "warnings-and-split-0200", frame: dtFrame{vers: []uint16{0x0200}, before: [][]byte{dtWarning}, sizes: []int{at + 3}, every: 50, between: [][]byte{dtWarning}}, want: dtGoOnly},

		// Sanity: both servers refuse these, and so does the parser.
		{name: "version-1000", frame: dtFrame{vers: []uint16{0x1000}}, want: dtNeither, refused: true},
		{name: "version-1603", frame: dtFrame{vers: []uint16{0x1603}}, want: dtNeither, refused: true},
		{name: "version-ffff", frame: dtFrame{vers: []uint16{0xffff}}, want: dtNeither, refused: true},
		{name: "fatal-alert-before", frame: dtFrame{before: [][]byte{dtFatal}}, want: dtNeither, refused: true},
		{name: "ccs-before", frame: dtFrame{before: [][]byte{dtCCS}}, want: dtNeither, refused: true},
		{name: "application-data-before", frame: dtFrame{before: [][]byte{dtRecord(23, 0x0303, []byte{1})}}, want: dtNeither, refused: true},
	}
	// Go takes any version below 0x1000 until it has chosen one; OpenSSL
	// any 3.x.
	for _, v := range []uint16{0x0300, 0x0301, 0x0302, 0x0303, 0x0304, 0x0305, 0x0380, 0x03ff} {
		cases = append(cases, dtRecordCase{name: fmt.Sprintf("version-%04x", v), frame: dtFrame{vers: []uint16{v}}, want: dtBoth})
	}
	for _, v := range []uint16{0x0000, 0x0200, 0x0a0a, 0x0fff} {
		cases = append(cases, dtRecordCase{name: fmt.Sprintf("version-%04x", v), frame: dtFrame{vers: []uint16{v}}, want: dtGoOnly})
	}
	return cases
}

// TestClientHelloDifferential: see the comment at the top of this file.
func TestClientHelloDifferential(t *testing.T) {
	h := dtNewHarness(t, false)
	tally := dtTally{}
	defer tally.log(t)

	t.Run("record-layer", func(t *testing.T) {
		at := bytes.Index(h.bases["go-tls13"].encode(), []byte(dtName))
		clients := []dtClient{
			dtGoClient{"tls13", &tls.Config{ServerName: dtName, InsecureSkipVerify: true}},
			dtGoClient{"tls12", &tls.Config{ServerName: dtName, InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}},
			dtSClient{"tls13", []string{"-servername", dtName}},
		}
		for i, tc := range dtRecordCases(at) {
			t.Run(tc.name, func(t *testing.T) {
				// Every case with Go's TLS 1.3 client; the others take
				// turns, to keep the run short.
				for _, client := range []dtClient{clients[0], clients[1+i%2]} {
					for _, server := range []string{dtServerGo, dtServerOpenSSL} {
						r, o := h.relay(t, server, client, tc.frame, nil)
						tally.add("record-layer", o)
						t.Logf("%v to %s: accepted %v, completed %v (%s), names %q", client, server, o.accepted, o.completed, o.answer, o.names)
						dtHold(t, r.first, o, &tc.want, true)
						if tc.refused {
							dtRefused(t, r.first)
						}
					}
				}
			})
		}
	})

	t.Run("names", func(t *testing.T) {
		for _, n := range chTestNames(t) {
			t.Run(fmt.Sprintf("line-%d", n.line), func(t *testing.T) {
				hello := h.bases["go-tls13"].clone()
				hello.setSNI(n.raw)
				data := dtFrame{}.apply(hello.encode())
				want := dtExpect{n.goAccepts, n.opensslAccepts}
				for _, o := range h.raw(t, data) {
					tally.add("names", o)
					dtHold(t, data, o, &want, false)
				}
			})
		}
	})

	t.Run("names-s_client", func(t *testing.T) {
		// Real handshakes with names Go's client would not send as they
		// are (it strips a trailing dot).
		for i, n := range []struct {
			name string
			want dtExpect
		}{
			{"ksn.kaspersky.com.", dtOpenSSLOnly},
			{"KSN.Kaspersky.COM:443", dtBoth},
			{"bücher.kaspersky.com", dtBoth},
		} {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				client := dtSClient{fmt.Sprint(i), []string{"-servername", n.name}}
				for _, server := range []string{dtServerGo, dtServerOpenSSL} {
					r, o := h.relay(t, server, client, dtFrame{sizes: []int{50}}, nil)
					tally.add("names-s_client", o)
					dtHold(t, r.first, o, &n.want, true)
					if o.accepted && !slices.Equal(o.names, []string{n.name}) {
						t.Errorf("%s was given %q; s_client sent %q", server, o.names, n.name)
					}
				}
			})
		}
	})

	t.Run("body", func(t *testing.T) {
		for _, tc := range dtBodyCases(t, h) {
			t.Run(tc.name, func(t *testing.T) {
				for _, o := range h.raw(t, tc.data) {
					tally.add("body", o)
					if tc.beyondGo && o.server == dtServerOpenSSL {
						// Larger than Go accepts: the parser refuses it
						// (see maxClientHelloLen), the one exception to
						// the rule.
						if o.accepted != tc.want.of(o.server) {
							t.Errorf("%s accepted: %v; want %v", o.server, o.accepted, tc.want.of(o.server))
						}
						if _, st := clientHelloServerName(tc.data); st != NotTLS {
							t.Errorf("a hello beyond Go's limit: %v; want %v", st, NotTLS)
						}
						continue
					}
					dtHold(t, tc.data, o, tc.want, false)
				}
			})
		}
	})

	t.Run("generated", func(t *testing.T) {
		for _, tc := range dtGenerated(t, h, 150) {
			t.Run(tc.name, func(t *testing.T) {
				for _, o := range h.raw(t, tc.data) {
					tally.add("generated", o)
					dtHold(t, tc.data, o, nil, false)
				}
			})
		}
	})

	t.Run("the-check-can-fail", func(t *testing.T) {
		// A parser that refuses what a server accepted, or finds another
		// name, fails the check; one that agrees passes.
		hello := h.bases["go-tls13"].clone()
		hello.setSNI("KSN.Kaspersky.COM:443")
		data := dtFrame{}.apply(hello.encode())
		outcomes := h.raw(t, data)
		for _, o := range outcomes {
			if !o.accepted {
				t.Fatalf("%s refused a plain hello: %s", o.server, o.answer)
			}
			for _, bad := range []func([]byte) ([]byte, Status){
				func([]byte) ([]byte, Status) { return nil, NotTLS },
				func([]byte) ([]byte, Status) { return nil, Incomplete },
				func([]byte) ([]byte, Status) { return nil, Complete },
				func([]byte) ([]byte, Status) { return []byte("www.example.test"), Complete },
			} {
				if dtCheck(data, o, bad) == nil {
					t.Errorf("%s: a wrong parser passes the check", o.server)
				}
			}
			good := func([]byte) ([]byte, Status) { return []byte("ksn.kaspersky.com."), Complete }
			if err := dtCheck(data, o, good); err != nil {
				t.Errorf("%s: a parser that finds the same host fails the check: %v", o.server, err)
			}
		}
	})
}

// dtBody is a ClientHello built by the encoder, with what the servers are
// expected to do with it, if anything.
type dtBody struct {
	name string
	data []byte
	want *dtExpect
	// beyondGo: larger than Go accepts, which the parser may refuse.
	beyondGo bool
}

// dtBodyCases are the body mutations with known outcomes.
func dtBodyCases(t *testing.T, h *dtHarness) []dtBody {
	t.Helper()
	var cases []dtBody
	add := func(name string, want dtExpect, base string, change func(*dtHello)) {
		hello := h.bases[base].clone()
		change(hello)
		cases = append(cases, dtBody{name: base + "/" + name, data: dtFrame{}.apply(hello.encode()), want: &want})
	}
	sni := func(entries ...[]byte) func(*dtHello) {
		return func(hello *dtHello) { hello.setExt(tlsExtServerName, chTestVec16(bytes.Join(entries, nil))) }
	}
	entry := func(typ byte, name string) []byte { return append([]byte{typ}, chTestVec16([]byte(name))...) }
	for _, base := range []string{"go-tls13", "go-tls12", "openssl"} {
		add("as-sent", dtBoth, base, func(*dtHello) {})
		add("reversed-extensions", dtBoth, base, func(hello *dtHello) { slices.Reverse(hello.exts) })
		add("sni-first", dtBoth, base, func(hello *dtHello) {
			i := slices.IndexFunc(hello.exts, func(e dtExt) bool { return e.typ == tlsExtServerName })
			e := hello.exts[i]
			hello.exts = slices.Insert(slices.Delete(hello.exts, i, i+1), 0, e)
		})
		add("grease", dtBoth, base, func(hello *dtHello) {
			hello.insertExt(0, dtExt{0x0a0a, nil})
			hello.insertExt(3, dtExt{0x5a5a, []byte{0}})
			hello.insertExt(99, dtExt{0xfafa, []byte{1, 2, 3}})
		})
		// Go refuses any repeated extension; OpenSSL only those it knows.
		add("grease-twice", dtOpenSSLOnly, base, func(hello *dtHello) {
			hello.insertExt(0, dtExt{0x1a1a, nil})
			hello.insertExt(2, dtExt{0x1a1a, nil})
		})
		for _, n := range []int{0, 32} {
			add(fmt.Sprintf("session-id-%d", n), dtBoth, base, func(hello *dtHello) { hello.sessionID = bytes.Repeat([]byte{7}, n) })
		}
		// RFC 8446 allows 32 bytes; OpenSSL checks it, Go does not.
		for _, n := range []int{33, 255} {
			add(fmt.Sprintf("session-id-%d", n), dtGoOnly, base, func(hello *dtHello) { hello.sessionID = bytes.Repeat([]byte{7}, n) })
		}
		// Go skips entries of other name types; OpenSSL refuses them.
		add("sni-other-type-first", dtGoOnly, base, sni(entry(1, "other"), entry(0, dtName)))
		add("sni-other-type-after", dtGoOnly, base, sni(entry(0, dtName), entry(1, "other")))
		add("sni-grease-type", dtGoOnly, base, sni(entry(0x0a, "x"), entry(0, dtName)))
		add("sni-two-host-names", dtNeither, base, sni(entry(0, dtName), entry(0, "www.example.test")))
		add("sni-other-type-empty", dtNeither, base, sni(entry(0, dtName), entry(1, "")))
		add("sni-empty-list", dtNeither, base, sni())
		add("sni-trailing-byte", dtNeither, base, func(hello *dtHello) {
			hello.setSNI(dtName)
			hello.setExt(tlsExtServerName, append(hello.exts[slices.IndexFunc(hello.exts, func(e dtExt) bool { return e.typ == tlsExtServerName })].data, 0))
		})
		add("sni-twice", dtNeither, base, func(hello *dtHello) {
			hello.setSNI(dtName)
			hello.insertExt(0, dtExt{tlsExtServerName, chTestVec16(entry(0, "www.example.test"))})
		})
		// RFC 6066 allows 2^16-1 bytes; OpenSSL takes 255.
		add("name-255-bytes", dtBoth, base, func(hello *dtHello) { hello.setSNI(strings.Repeat("a", 255)) })
		add("name-256-bytes", dtGoOnly, base, func(hello *dtHello) { hello.setSNI(strings.Repeat("a", 256)) })
		// TLS 1.3 forbids offering compression: the servers see the
		// name but refuse the hello, so the parser is free. TLS 1.2
		// servers pick null.
		compression := dtNeither
		if base == "go-tls12" {
			compression = dtBoth
		}
		add("compression-deflate-too", compression, base, func(hello *dtHello) { hello.compression = []byte{1, 0} })
		for _, n := range []int{1, 512, 4000} {
			add(fmt.Sprintf("padding-%d", n), dtBoth, base, func(hello *dtHello) {
				hello.padTo(t, len(hello.encode())-tlsHandshakeHeaderLen+4+n)
			})
		}
	}
	// Hellos that need several records, up to the largest Go accepts.
	for _, n := range []int{16000, 16380, 30000, maxClientHelloLen} {
		add(fmt.Sprintf("body-%d", n), dtBoth, "go-tls13", func(hello *dtHello) { hello.padTo(t, n) })
	}
	// Beyond Go's limit: a long cipher suite list makes room for the
	// extensions block to stay within its 16-bit length.
	big := h.bases["go-tls13"].clone()
	big.suites = append(big.suites, bytes.Repeat([]byte{0xff, 0x01}, 2000)...)
	big.padTo(t, maxClientHelloLen+1)
	cases = append(cases, dtBody{name: "body-beyond-go", data: dtFrame{}.apply(big.encode()), want: &dtOpenSSLOnly, beyondGo: true})
	return cases
}

// dtGenerated returns n hellos with random combinations of the mutations,
// from a fixed seed so that a failure can be run again.
func dtGenerated(t *testing.T, h *dtHarness, n int) []dtBody {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(20240720, 20240929))
	names := chTestNames(t)
	bases := []string{"go-tls13", "go-tls12", "openssl"}
	grease := func() uint16 { g := uint16(rng.IntN(16)); return g<<12 | 0x0a00 | g<<4 | 0x0a }
	var cases []dtBody
	for i := range n {
		base := bases[rng.IntN(len(bases))]
		hello := h.bases[base].clone()
		// Mostly names that name a host: those are the ones that matter.
		name := dtName
		if rng.IntN(3) > 0 {
			name = names[rng.IntN(len(names))].raw
		}
		hello.setSNI(name)
		if rng.IntN(2) == 0 {
			rng.Shuffle(len(hello.exts), func(i, j int) { hello.exts[i], hello.exts[j] = hello.exts[j], hello.exts[i] })
		}
		for range rng.IntN(4) {
			var data []byte
			if rng.IntN(2) == 0 {
				data = make([]byte, rng.IntN(8))
			}
			hello.insertExt(rng.IntN(len(hello.exts)+1), dtExt{grease(), data})
		}
		if rng.IntN(3) == 0 {
			hello.padTo(t, len(hello.encode())-tlsHandshakeHeaderLen+4+rng.IntN(20000))
		}
		if rng.IntN(5) == 0 {
			hello.sessionID = make([]byte, rng.IntN(64))
		}
		var f dtFrame
		if rng.IntN(2) == 0 {
			versions := []uint16{0x0300, 0x0301, 0x0303, 0x0304, 0x03ff, 0x0000, 0x0200}
			f.vers = []uint16{versions[rng.IntN(len(versions))], versions[rng.IntN(len(versions))]}
		}
		if rng.IntN(2) == 0 {
			f.sizes = []int{1 + rng.IntN(300)}
			f.every = []int{0, 1, 3, 64, 1000}[rng.IntN(5)]
		}
		skip := [][]byte{dtEmptyHandshake, dtEmptyCCS, dtWarning, dtUserCanceled}
		for range rng.IntN(3) {
			f.before = append(f.before, skip[rng.IntN(len(skip))])
		}
		for range rng.IntN(3) {
			f.between = append(f.between, skip[rng.IntN(len(skip))])
		}
		cases = append(cases, dtBody{name: fmt.Sprintf("%03d-%s", i, base), data: f.apply(hello.encode())})
	}
	return cases
}

// TestClientHelloRegressions has a case for each way the security review
// found to hide a server name from the proxy: each must now give the
// proxy the name, with the servers that accept it.
func TestClientHelloRegressions(t *testing.T) {
	h := dtNewHarness(t, false)
	goClient := func(name string) dtClient {
		return dtGoClient{"regression", &tls.Config{ServerName: name, InsecureSkipVerify: true}}
	}
	at := bytes.Index(h.bases["go-tls13"].encode(), []byte(dtName))
	tests := []struct {
		name   string
		client dtClient // nil: data is sent as it is
		frame  dtFrame
		data   func() []byte
		want   dtExpect
		raw    string // the name the parser must return
	}{
		{name: "record-version-0300", client: goClient(dtName), frame: dtFrame{vers: []uint16{0x0300}}, want: dtBoth, raw: dtName},
		{name: "record-version-0304", client: goClient(dtName), frame: dtFrame{vers: []uint16{0x0304}}, want: dtBoth, raw: dtName},
		{name: "record-version-03ff", client: goClient(dtName), frame: dtFrame{vers: []uint16{0x03ff}}, want: dtBoth, raw: dtName},
		{name: "record-version-0200", client: goClient(dtName), frame: dtFrame{vers: []uint16{0x0200}}, want: dtGoOnly, raw: dtName},
		{name: "empty-handshake-record-before", client: goClient(dtName), frame: dtFrame{before: [][]byte{dtEmptyHandshake}}, want: dtOpenSSLOnly, raw: dtName},
		{name: "hello-split-across-records", client: goClient(dtName), frame: dtFrame{sizes: []int{at + 4}}, want: dtBoth, raw: dtName},
		{name: "hello-in-one-byte-records", client: goClient(dtName), frame: dtFrame{every: 1}, want: dtBoth, raw: dtName},
		{name: "warning-alert-before", client: goClient(dtName), frame: dtFrame{before: [][]byte{dtWarning}}, want: dtGoOnly, raw: dtName},
		{name: "name-trailing-dot", client: dtSClient{"trailing-dot", []string{"-servername", dtName + "."}}, want: dtOpenSSLOnly, raw: dtName + "."},
		{name: "name-port-443", client: goClient(dtName + ":443"), want: dtBoth, raw: dtName + ":443"},
		{name: "name-upper-case", client: goClient("KSN.Kaspersky.COM"), want: dtBoth, raw: "KSN.Kaspersky.COM"},
		{name: "session-id-33", data: func() []byte {
			hello := h.bases["go-tls13"].clone()
			hello.sessionID = make([]byte, 33)
			return dtFrame{}.apply(hello.encode())
		}, want: dtGoOnly, raw: dtName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var first []byte
			var outcomes []dtOutcome
			if tt.client == nil {
				first = tt.data()
				outcomes = h.raw(t, first)
			} else {
				for _, server := range []string{dtServerGo, dtServerOpenSSL} {
					r, o := h.relay(t, server, tt.client, tt.frame, nil)
					first = r.first
					outcomes = append(outcomes, o)
				}
			}
			for _, o := range outcomes {
				dtHold(t, first, o, &tt.want, tt.client != nil)
			}
			name, st := clientHelloServerName(first)
			if c, _ := CanonicalSNI(name); st != Complete || string(name) != tt.raw || c != dtName {
				t.Errorf("clientHelloServerName = %q (host %q), %v; want %q (host %q)", name, c, st, tt.raw, dtName)
			}
		})
	}
}

// dtServerHellos returns the randoms of the plaintext ServerHellos among a
// server's records: a HelloRetryRequest and, if the server accepted the
// second ClientHello, the real one. It is written apart from
// serverHelloStatus.
func dtServerHellos(b []byte) [][]byte {
	var randoms [][]byte
	for len(b) >= tlsRecordHeaderLen {
		n := int(binary.BigEndian.Uint16(b[3:]))
		if len(b) < tlsRecordHeaderLen+n {
			break
		}
		p := b[tlsRecordHeaderLen : tlsRecordHeaderLen+n]
		if b[0] == tlsRecordTypeHandshake && len(p) >= tlsHandshakeHeaderLen+2+32 && p[0] == tlsTypeServerHello {
			randoms = append(randoms, p[tlsHandshakeHeaderLen+2:tlsHandshakeHeaderLen+2+32])
		}
		b = b[tlsRecordHeaderLen+n:]
	}
	return randoms
}

// dtRecordTypes lists the types of the records in b, for the log, with
// the first byte of a handshake record (the message type, if a message
// starts there); a run of alike records is counted.
func dtRecordTypes(b []byte) []string {
	var types []string
	run := 0
	for len(b) >= tlsRecordHeaderLen {
		n := int(binary.BigEndian.Uint16(b[3:]))
		t := fmt.Sprint(b[0])
		switch b[0] {
		case tlsRecordTypeCCS:
			t = "change_cipher_spec"
		case tlsRecordTypeAlert:
			t = "alert"
		case tlsRecordTypeHandshake:
			t = "handshake"
			if len(b) > tlsRecordHeaderLen && n > 0 {
				t = fmt.Sprintf("handshake(%d)", b[tlsRecordHeaderLen])
			}
		case 23:
			t = "application_data"
		}
		if run > 0 && strings.HasPrefix(types[len(types)-1], t[:min(len(t), 9)]) {
			run++
			types[len(types)-1] = strings.Split(types[len(types)-1], " ×")[0] + fmt.Sprintf(" ×%d", run)
		} else {
			types, run = append(types, t), 1
		}
		b = b[min(len(b), tlsRecordHeaderLen+n):]
	}
	return types
}

// dtKeyShareGroups returns the groups of a ClientHello's key shares.
func dtKeyShareGroups(t *testing.T, hello *dtHello) []uint16 {
	t.Helper()
	const keyShareExt = 51
	var groups []uint16
	for _, e := range hello.exts {
		if e.typ != keyShareExt {
			continue
		}
		if len(e.data) < 2 {
			t.Fatalf("key_share extension % x", e.data)
		}
		for b := e.data[2:]; len(b) > 0; {
			if len(b) < 4 || len(b) < 4+int(binary.BigEndian.Uint16(b[2:])) {
				t.Fatalf("key_share extension % x", e.data)
			}
			groups = append(groups, binary.BigEndian.Uint16(b))
			b = b[4+int(binary.BigEndian.Uint16(b[2:])):]
		}
	}
	return groups
}

// dtHRRRandom is SHA-256("HelloRetryRequest") (RFC 8446 4.1.3), spelled
// out apart from helloRetryRandom.
var dtHRRRandom, _ = hex.DecodeString("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

// TestHelloRetryRequest checks serverHelloStatus, ClientHelloEnd and
// secondClientHelloServerName on real HelloRetryRequest exchanges: servers
// that take only P-256 key shares, and clients that offer X25519 first
// and so send only an X25519 share at first.
func TestHelloRetryRequest(t *testing.T) {
	h := dtNewHarness(t, true)
	x25519First := []dtClient{
		dtGoClient{"x25519-first", &tls.Config{ServerName: dtName, InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}},
		dtSClient{"x25519-first", []string{"-servername", dtName, "-groups", "X25519:P-256"}},
	}
	for _, client := range x25519First {
		for _, server := range []string{dtServerGo, dtServerOpenSSL} {
			t.Run(fmt.Sprintf("%v-to-%s", client, server), func(t *testing.T) {
				r, o := h.relay(t, server, client, dtFrame{}, nil)
				if !o.completed {
					t.Fatalf("the handshake failed: %v", o.err)
				}
				// The client offers X25519 and P-256 but sends a key share
				// for X25519 only, which the server cannot use.
				msg, err := dtReadHello(bytes.NewReader(r.first))
				if err != nil {
					t.Fatal(err)
				}
				if groups := dtKeyShareGroups(t, dtParseHello(t, msg)); !slices.Equal(groups, []uint16{uint16(tls.X25519)}) {
					t.Errorf("the first ClientHello has key shares for %#04x; want X25519 only", groups)
				}
				randoms := dtServerHellos(r.toClient)
				if len(randoms) == 0 || !bytes.Equal(randoms[0], dtHRRRandom) {
					t.Fatalf("the server sent no HelloRetryRequest: %v", dtRecordTypes(r.toClient))
				}
				chTestCheckServerHello(t, r.toClient, true)
				end, st := ClientHelloEnd(r.toServer)
				if st != Complete || end != len(r.first) {
					t.Fatalf("ClientHelloEnd = %d, %v; want %d, complete", end, st, len(r.first))
				}
				rest := r.toServer[end:]
				t.Logf("after the HelloRetryRequest the client sent %v; the server was given %q", dtRecordTypes(rest), o.names)
				chTestCheckSecondHello(t, rest, dtName)
				for _, n := range o.names {
					if n != dtName {
						t.Errorf("%s was given %q", server, n)
					}
				}
			})
		}
	}
	t.Run("no-hello-retry", func(t *testing.T) {
		for _, client := range []dtClient{
			dtGoClient{"p256", &tls.Config{ServerName: dtName, InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.CurveP256}}},
			// OpenSSL answers a TLS 1.2 hello for a name that is not its
			// own with a warning alert before its ServerHello.
			dtGoClient{"tls12", &tls.Config{ServerName: dtName, InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}},
		} {
			for _, server := range []string{dtServerGo, dtServerOpenSSL} {
				r, o := h.relay(t, server, client, dtFrame{}, nil)
				if !o.completed {
					t.Fatalf("%v to %s: the handshake failed: %v", client, server, o.err)
				}
				if randoms := dtServerHellos(r.toClient); len(randoms) != 1 || bytes.Equal(randoms[0], dtHRRRandom) {
					t.Fatalf("%v to %s: want one ServerHello, not a HelloRetryRequest: %v", client, server, dtRecordTypes(r.toClient))
				}
				chTestCheckServerHello(t, r.toClient, false)
			}
		}
	})
	t.Run("second-hello-other-name", func(t *testing.T) {
		// The relay changes the name in the second ClientHello only:
		// what do the servers make of it, and does the parser see it?
		const other = "ksn.kaspersky.net"
		for _, server := range []string{dtServerGo, dtServerOpenSSL} {
			hook := func(rec []byte) []byte { return bytes.ReplaceAll(rec, []byte(dtName), []byte(other)) }
			r, o := h.relay(t, server, x25519First[0], dtFrame{}, hook)
			end, st := ClientHelloEnd(r.toServer)
			if st != Complete {
				t.Fatalf("%s: ClientHelloEnd: %v", server, st)
			}
			chTestCheckSecondHello(t, r.toServer[end:], other)
			// Go refuses a second ClientHello that changes the name
			// (illegal_parameter); OpenSSL takes it and uses the new
			// name. (Here the client then fails: its transcript has the
			// old name. A client that sent the new name itself would
			// complete the handshake.)
			accepted := len(dtServerHellos(r.toClient)) > 1
			t.Logf("%s: accepted the second ClientHello: %v; was given %q; the client: %v", server, accepted, o.names, o.err)
			want := []string{dtName}
			if server == dtServerOpenSSL {
				want = append(want, other)
			}
			if accepted != (server == dtServerOpenSSL) || !slices.Equal(o.names, want) {
				t.Errorf("%s: accepted the second ClientHello: %v, was given %q; want %v, %q", server, accepted, o.names, !accepted, want)
			}
		}
	})
	t.Run("second-hello-framing", func(t *testing.T) {
		// The relay re-frames the second ClientHello; framing is not in
		// the transcript, so a server that takes it completes the
		// handshake.
		ccs := dtRecord(tlsRecordTypeCCS, 0x0303, []byte{1})
		tls13 := []uint16{0x0303}
		for _, tc := range []struct {
			name  string
			frame dtFrame
			want  dtExpect
		}{
			{"as-sent", dtFrame{vers: tls13}, dtBoth},
			{"split", dtFrame{vers: tls13, sizes: []int{50}}, dtBoth},
			{"one-byte-records", dtFrame{vers: tls13, every: 1}, dtBoth},
			{"more-ccs-before", dtFrame{vers: tls13, before: [][]byte{ccs, ccs}}, dtBoth},
			{"user-canceled-before", dtFrame{vers: tls13, before: [][]byte{dtUserCanceled}}, dtBoth},
			// Go wants TLS 1.3's record version and no record of
			// another type inside a handshake message; OpenSSL treats a
			// ChangeCipherSpec as an empty handshake record.
			{"ccs-between", dtFrame{vers: tls13, sizes: []int{50}, between: [][]byte{ccs}}, dtOpenSSLOnly},
			{"version-0301", dtFrame{vers: []uint16{0x0301}}, dtOpenSSLOnly},
			// Unlike before the first ClientHello, both refuse these
			// once TLS 1.3 is chosen; the parser skips them anyway.
			{"empty-before", dtFrame{vers: tls13, before: [][]byte{dtEmptyHandshake}}, dtNeither},
			{"warning-before", dtFrame{vers: tls13, before: [][]byte{dtWarning}}, dtNeither},
		} {
			t.Run(tc.name, func(t *testing.T) {
				hook := func(rec []byte) []byte {
					if rec[0] == tlsRecordTypeHandshake && len(rec) > tlsRecordHeaderLen && rec[tlsRecordHeaderLen] == tlsTypeClientHello {
						return tc.frame.apply(rec[tlsRecordHeaderLen:])
					}
					return rec
				}
				for _, server := range []string{dtServerGo, dtServerOpenSSL} {
					r, o := h.relay(t, server, x25519First[0], dtFrame{}, hook)
					t.Logf("%s: completed %v (%v); the client sent %v", server, o.completed, o.err, dtRecordTypes(r.toServer))
					if o.completed != tc.want.of(server) {
						t.Errorf("%s: completed %v; want %v", server, o.completed, tc.want.of(server))
					}
					end, _ := ClientHelloEnd(r.toServer)
					if o.completed {
						chTestCheckSecondHello(t, r.toServer[end:], dtName)
					}
				}
			})
		}
	})
}

// chTestCheckServerHello checks serverHelloStatus on a server's bytes, and
// on every prefix of them.
func chTestCheckServerHello(t *testing.T, data []byte, wantHRR bool) {
	t.Helper()
	if isHRR, st := serverHelloStatus(data); isHRR != wantHRR || st != Complete {
		t.Errorf("serverHelloStatus = %v, %v; want %v, complete", isHRR, st, wantHRR)
	}
	chTestServerPrefixes(t, data)
}

// chTestCheckSecondHello checks secondClientHelloServerName on a client's
// bytes after its first ClientHello, and on every prefix of them.
func chTestCheckSecondHello(t *testing.T, rest []byte, want string) {
	t.Helper()
	name, st := secondClientHelloServerName(rest)
	if st != Complete || string(name) != want {
		t.Fatalf("secondClientHelloServerName = %q, %v; want %q, complete", name, st, want)
	}
	for k := range len(rest) {
		if n, s := secondClientHelloServerName(rest[:k:k]); s != Incomplete && (s != st || !bytes.Equal(n, name)) {
			t.Fatalf("prefix of %d/%d bytes: %q, %v", k, len(rest), n, s)
		}
	}
}
