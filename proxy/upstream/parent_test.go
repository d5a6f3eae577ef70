package upstream

// Tests of CONNECT through a parent proxy, against a small parent written
// here that listens on 127.0.0.1 and tunnels only to loopback targets.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http/httpproxy"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// parentTestWait bounds every wait in these tests. It only keeps a broken
// test from hanging; nothing asserts how long anything took.
const parentTestWait = 5 * time.Second

// parentTestEstablished is the usual reply to a CONNECT that succeeded.
const parentTestEstablished = "HTTP/1.1 200 Connection established\r\n\r\n"

// parentTestSeen is what the test parent saw of one connection.
type parentTestSeen struct {
	method, uri, host string
	header            http.Header
	readErr           error // why reading the request failed, if it did
	closedByClient    bool  // the client closed while the parent waited
}

// parentTestServer is a parent proxy on 127.0.0.1. handle deals with each
// parsed CONNECT; br holds whatever the client sent after it.
type parentTestServer struct {
	ln     net.Listener
	handle func(c *net.TCPConn, br *bufio.Reader, req *http.Request) (closedByClient bool)

	mu    sync.Mutex
	seen  []parentTestSeen
	conns []net.Conn
	wg    sync.WaitGroup
}

func newParentTestServer(t *testing.T, handle func(c *net.TCPConn, br *bufio.Reader, req *http.Request) bool) *parentTestServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &parentTestServer{ln: ln, handle: handle}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *parentTestServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(parentTestWait))
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil {
				s.record(parentTestSeen{readErr: err})
				return
			}
			seen := parentTestSeen{method: req.Method, uri: req.RequestURI, host: req.Host, header: req.Header}
			seen.closedByClient = s.handle(c.(*net.TCPConn), br, req)
			s.record(seen)
		}()
	}
}

func (s *parentTestServer) record(seen parentTestSeen) {
	s.mu.Lock()
	s.seen = append(s.seen, seen)
	s.mu.Unlock()
}

func (s *parentTestServer) proxy(t *testing.T, credentials string) *parentProxy {
	t.Helper()
	p, err := newParentProxy(&url.URL{Scheme: "http", Host: s.ln.Addr().String()}, credentials)
	if err != nil {
		t.Fatalf("newParentProxy: %v", err)
	}
	return p
}

// waitSeen waits until the parent has finished with n connections and
// returns what it saw.
func (s *parentTestServer) waitSeen(t *testing.T, n int) []parentTestSeen {
	t.Helper()
	deadline := time.Now().Add(parentTestWait)
	for {
		s.mu.Lock()
		seen := append([]parentTestSeen(nil), s.seen...)
		s.mu.Unlock()
		if len(seen) >= n {
			return seen
		}
		if time.Now().After(deadline) {
			t.Fatalf("the parent finished %d connections; want %d", len(seen), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// parentTestAwaitClose reads until the client closes the connection and
// reports whether it did (rather than the wait or the test ending). A
// close with our reply unread arrives as a reset.
func parentTestAwaitClose(br *bufio.Reader) bool {
	_, err := io.Copy(io.Discard, br)
	return err == nil || errors.Is(err, syscall.ECONNRESET)
}

// parentTestTunnel answers CONNECT with reply (after checking the
// Proxy-Authorization value, when wantAuth is set) and relays to the
// target, which must be on loopback, passing half-closes on.
func parentTestTunnel(wantAuth, reply string) func(c *net.TCPConn, br *bufio.Reader, req *http.Request) bool {
	return func(c *net.TCPConn, br *bufio.Reader, req *http.Request) bool {
		if wantAuth != "" && req.Header.Get("Proxy-Authorization") != wantAuth {
			_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 11\r\n\r\nSECRET-BODY")
			return parentTestAwaitClose(br)
		}
		host, _, err := net.SplitHostPort(req.RequestURI)
		if req.Method != http.MethodConnect || err != nil || host != "127.0.0.1" {
			_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
			return parentTestAwaitClose(br)
		}
		up, err := net.Dial("tcp", req.RequestURI)
		if err != nil {
			_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
			return parentTestAwaitClose(br)
		}
		defer up.Close()
		_ = up.SetDeadline(time.Now().Add(parentTestWait))
		if _, err := io.WriteString(c, reply); err != nil {
			return false
		}
		// Half-closes are passed on; a failed direction closes the
		// other's source too, or it would wait out its deadline.
		done := make(chan struct{})
		go func() {
			defer close(done)
			if _, err := io.Copy(up, br); err == nil {
				_ = up.(*net.TCPConn).CloseWrite()
			} else {
				_ = up.Close()
			}
		}()
		if _, err := io.Copy(c, up); err == nil {
			_ = c.CloseWrite()
		} else {
			_ = c.Close()
		}
		<-done
		return false
	}
}

// parentTestRaw sends reply, which may be anything, and waits for the
// client to close.
func parentTestRaw(reply string) func(c *net.TCPConn, br *bufio.Reader, req *http.Request) bool {
	return func(c *net.TCPConn, br *bufio.Reader, req *http.Request) bool {
		// A client that stops reading early may make this write fail;
		// whether it closed is still the question.
		_, _ = io.WriteString(c, reply)
		return parentTestAwaitClose(br)
	}
}

// parentTestEcho is a target that echoes everything and half-closes when
// the client does.
func parentTestEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, ln, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(parentTestWait))
		if _, err := io.Copy(c, c); err == nil {
			_ = c.(*net.TCPConn).CloseWrite()
		}
	})
	return ln.Addr().String()
}

// parentTestDial is the caller's dialer: plain TCP.
func parentTestDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// parentTestCtx is a context bounded by parentTestWait.
func parentTestCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), parentTestWait)
	t.Cleanup(cancel)
	return ctx
}

// parentTestRoundTrip sends payload through conn, half-closes, and checks
// that want comes back followed by EOF: the echo target only half-closes
// after it has seen ours.
func parentTestRoundTrip(t *testing.T, conn net.Conn, payload []byte, want []byte) {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(parentTestWait))
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T cannot half-close", conn)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, bytes.NewReader(payload))
		if err == nil {
			err = cw.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading the tunnel: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing the tunnel: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the tunnel returned %d bytes; want %d (first bytes %q)", len(got), len(want), got[:min(len(got), 16)])
	}
}

// parentTestPayload is a pattern that shows loss or reordering.
func parentTestPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestParentConnectTunnel(t *testing.T) {
	target := parentTestEcho(t)
	basic := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name        string
		credentials string
		reply       string
		wantAuth    string // what the parent requires and must see
	}{
		{"no-credentials", "", parentTestEstablished, ""},
		{"credentials", "feedgate:s3cr:et", parentTestEstablished, basic("feedgate:s3cr:et")},
		{"http10-reply-with-headers", "", "HTTP/1.0 200 OK\r\nProxy-Agent: test\r\nContent-Length: 5\r\n\r\n", ""},
		{"interim-100-first", "", "HTTP/1.1 100 Continue\r\n\r\n" + parentTestEstablished, ""},
		{"bare-lf", "", "HTTP/1.1 200 OK\nVia: test\n\n", ""},
		{"other-2xx", "", "HTTP/1.1 204 No Content\r\n\r\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newParentTestServer(t, parentTestTunnel(tt.wantAuth, tt.reply))
			p := s.proxy(t, tt.credentials)
			if got := p.proxyAuthorization(); got != tt.wantAuth {
				t.Errorf("proxyAuthorization() = %q; want %q", got, tt.wantAuth)
			}
			conn, err := p.dialConnect(parentTestCtx(t), parentTestDial, target)
			if err != nil {
				t.Fatalf("dialConnect: %v", err)
			}
			defer conn.Close()
			// Nothing followed the headers: the raw socket, which the tunnel's
			// copy loop can wait on without a buffer.
			if _, ok := conn.(*net.TCPConn); !ok {
				t.Errorf("dialConnect returned %T; want *net.TCPConn", conn)
			}
			payload := parentTestPayload(256 << 10)
			parentTestRoundTrip(t, conn, payload, payload)
			_ = conn.Close()

			seen := s.waitSeen(t, 1)[0]
			if seen.method != http.MethodConnect || seen.uri != target || seen.host != target {
				t.Errorf("the parent saw %s %s with Host %q; want CONNECT %s with the same Host", seen.method, seen.uri, seen.host, target)
			}
			wantHeader := http.Header{}
			if tt.wantAuth != "" {
				wantHeader.Set("Proxy-Authorization", tt.wantAuth)
			}
			if len(seen.header) != len(wantHeader) || seen.header.Get("Proxy-Authorization") != tt.wantAuth {
				t.Errorf("the parent saw headers %v; want %v", seen.header, wantHeader)
			}
		})
	}
}

// TestParentConnectEarlyBytes: bytes the parent sends right behind its
// reply headers (a server that speaks first) come out of the tunnel first.
func TestParentConnectEarlyBytes(t *testing.T) {
	target := parentTestEcho(t)
	const early = "220 smtp.example.test ESMTP ready\r\n"
	s := newParentTestServer(t, parentTestTunnel("", parentTestEstablished+early))
	conn, err := s.proxy(t, "").dialConnect(parentTestCtx(t), parentTestDial, target)
	if err != nil {
		t.Fatalf("dialConnect: %v", err)
	}
	defer conn.Close()
	if _, ok := conn.(*replayConn); !ok {
		t.Fatalf("dialConnect returned %T; want the replaying wrapper", conn)
	}
	// The tunnel's idle check (the proxy core's bytesReceived) must
	// still reach the socket.
	if err := reachesSocket(conn); err != nil {
		t.Errorf("the socket cannot be reached through %T: %v", conn, err)
	}
	payload := parentTestPayload(64 << 10)
	parentTestRoundTrip(t, conn, payload, append([]byte(early), payload...))
}

// reachesSocket runs a no-op on c's file descriptor, as the proxy core's
// bytesReceived does to ask the kernel about it.
func reachesSocket(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return errors.New("not a syscall.Conn")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return raw.Control(func(uintptr) {})
}

// TestParentConnectClearsDeadline: the context's deadline bounds only the
// CONNECT exchange, not the tunnel.
func TestParentConnectClearsDeadline(t *testing.T) {
	target := parentTestEcho(t)
	s := newParentTestServer(t, parentTestTunnel("", parentTestEstablished))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	conn, err := s.proxy(t, "").dialConnect(ctx, parentTestDial, target)
	if err != nil {
		t.Fatalf("dialConnect: %v", err)
	}
	defer conn.Close()
	<-ctx.Done()
	time.Sleep(50 * time.Millisecond)
	// Only a read that has to wait would see a deadline left behind.
	rerr := make(chan error, 1)
	buf := make([]byte, 1)
	go func() { _, err := io.ReadFull(conn, buf); rerr <- err }()
	time.Sleep(50 * time.Millisecond)
	if _, err := conn.Write([]byte{'x'}); err != nil {
		t.Fatalf("writing after the context's deadline: %v", err)
	}
	select {
	case err := <-rerr:
		if err != nil || buf[0] != 'x' {
			t.Fatalf("reading after the context's deadline: %q, %v", buf, err)
		}
	case <-time.After(parentTestWait):
		t.Fatal("no echo")
	}
}

func TestParentConnectRefused(t *testing.T) {
	target := parentTestEcho(t)
	tests := []struct {
		name        string
		handle      func(c *net.TCPConn, br *bufio.Reader, req *http.Request) bool
		credentials string
		wantStatus  int
	}{
		{"407-no-credentials", parentTestTunnel("Basic Zm9vOmJhcg==", parentTestEstablished), "", http.StatusProxyAuthRequired},
		{"407-wrong-credentials", parentTestTunnel("Basic Zm9vOmJhcg==", parentTestEstablished), "foo:baz", http.StatusProxyAuthRequired},
		{"403", parentTestRaw("HTTP/1.1 403 Custom Reason\r\nContent-Type: text/html\r\nContent-Length: 11\r\n\r\nSECRET-BODY"), "", http.StatusForbidden},
		{"502-chunked", parentTestRaw("HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nSECRET-BODY\r\n0\r\n\r\n"), "", http.StatusBadGateway},
		{"101", parentTestRaw("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"), "", http.StatusSwitchingProtocols},
		{"302", parentTestRaw("HTTP/1.0 302 Found\r\nLocation: http://login.example.test/\r\n\r\n"), "", http.StatusFound},
		{"599", parentTestRaw("HTTP/1.1 599 Whatever\r\n\r\n"), "", 599},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newParentTestServer(t, tt.handle)
			conn, err := s.proxy(t, tt.credentials).dialConnect(parentTestCtx(t), parentTestDial, target)
			if err == nil {
				conn.Close()
				t.Fatal("dialConnect succeeded")
			}
			var perr *ParentError
			if !errors.As(err, &perr) {
				t.Fatalf("error %v (%T) is not a *ParentError", err, err)
			}
			if perr.Status != tt.wantStatus || perr.Target != target {
				t.Errorf("ParentError{%d, %q}; want {%d, %q}", perr.Status, perr.Target, tt.wantStatus, target)
			}
			for _, leak := range []string{"SECRET", "Custom Reason", "login.example"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q quotes the reply (%q)", err, leak)
				}
			}
			if seen := s.waitSeen(t, 1)[0]; !seen.closedByClient {
				t.Errorf("the connection to the parent was not closed")
			}
		})
	}
}

func TestParentConnectBadReply(t *testing.T) {
	target := parentTestEcho(t)
	bigHeaders := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Padding: "+strings.Repeat("p", 100)+"\r\n", 200) + "\r\n"
	tests := []struct {
		name, reply string
		wantErr     string
		wantIs      error
	}{
		{"headers-over-16KiB", bigHeaders, "longer than 16384 bytes", nil},
		{"endless-interim", strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 1000), "longer than 16384 bytes", nil},
		{"line-over-4KiB", "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("l", 5000) + "\r\n\r\n", "line is longer", nil},
		{"ssh-banner", "SSH-2.0-OpenSSH_9.6\r\n", "not HTTP/1.x", nil},
		{"http2", "HTTP/2 200\r\n\r\n", "not HTTP/1.x", nil},
		{"http11-no-space", "HTTP/1.1 200OK\r\n\r\n", "not HTTP/1.x", nil},
		{"status-4-digits", "HTTP/1.1 2000 OK\r\n\r\n", "not HTTP/1.x", nil},
		{"status-letters", "HTTP/1.1 2x0 OK\r\n\r\n", "malformed status", nil},
		{"status-099", "HTTP/1.1 099 Odd\r\n\r\n", "out of range", nil},
		{"empty-then-close", "", "", io.ErrUnexpectedEOF},
		{"status-line-then-close", "HTTP/1.1 200 Connection established\r\n", "", io.ErrUnexpectedEOF},
		{"tls-alert", "\x15\x03\x03\x00\x02\x02\x28", "", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			handle := parentTestRaw(tt.reply)
			if tt.wantIs == io.ErrUnexpectedEOF {
				// The parent hangs up after its reply.
				handle = func(c *net.TCPConn, br *bufio.Reader, req *http.Request) bool {
					_, _ = io.WriteString(c, tt.reply)
					return false
				}
			}
			s := newParentTestServer(t, handle)
			conn, err := s.proxy(t, "").dialConnect(parentTestCtx(t), parentTestDial, target)
			if err == nil {
				conn.Close()
				t.Fatal("dialConnect succeeded")
			}
			var perr *ParentError
			if errors.As(err, &perr) {
				t.Errorf("error %v is a *ParentError", err)
			}
			if tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not say %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), s.ln.Addr().String()) {
				t.Errorf("error %q does not name the parent", err)
			}
			if tt.wantIs == nil {
				if seen := s.waitSeen(t, 1)[0]; !seen.closedByClient {
					t.Errorf("the connection to the parent was not closed")
				}
			}
		})
	}
}

// TestParentConnectStalled: a parent that accepts and then says nothing,
// or stops mid-reply, is given up on when the context ends.
func TestParentConnectStalled(t *testing.T) {
	target := parentTestEcho(t)
	silent := func(c *net.TCPConn, br *bufio.Reader, req *http.Request) bool {
		return parentTestAwaitClose(br)
	}
	deadline := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 200*time.Millisecond)
	}
	cancelled := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		return ctx, cancel
	}
	tests := []struct {
		name   string
		handle func(c *net.TCPConn, br *bufio.Reader, req *http.Request) bool
		ctx    func() (context.Context, context.CancelFunc)
		want   error
	}{
		{"silent-deadline", silent, deadline, context.DeadlineExceeded},
		{"silent-cancel", silent, cancelled, context.Canceled},
		{"mid-headers-deadline", parentTestRaw("HTTP/1.1 200 Connection established\r\nVia: 1.1 slow\r\n"), deadline, context.DeadlineExceeded},
		{"mid-headers-cancel", parentTestRaw("HTTP/1.1 200 Connection established\r\n"), cancelled, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newParentTestServer(t, tt.handle)
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			conn, err := s.proxy(t, "").dialConnect(ctx, parentTestDial, target)
			if err == nil {
				conn.Close()
				t.Fatal("dialConnect succeeded")
			}
			if elapsed := time.Since(start); elapsed > parentTestWait {
				t.Fatalf("gave up after %v", elapsed)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %v is not %v", err, tt.want)
			}
			if tt.want == context.DeadlineExceeded {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("error %v is not a timeout net.Error", err)
				}
			}
			if seen := s.waitSeen(t, 1)[0]; !seen.closedByClient {
				t.Errorf("the connection to the parent was not closed")
			}
		})
	}
}

func TestParentConnectDialAndTarget(t *testing.T) {
	t.Run("parent-down", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		p, err := newParentProxy(&url.URL{Scheme: "http", Host: addr}, "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.dialConnect(parentTestCtx(t), parentTestDial, "127.0.0.1:9")
		if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), addr) {
			t.Errorf("error %v: want a refused dial naming %s", err, addr)
		}
	})
	p, err := newParentProxy(&url.URL{Scheme: "http", Host: "127.0.0.1:3128"}, "")
	if err != nil {
		t.Fatal(err)
	}
	noDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		t.Errorf("dialed %s for a bad target", addr)
		return nil, errors.New("no")
	}
	for _, target := range []string{"", "example.test", "example.test:", ":443", "example.test:0", "example.test:65536",
		"example.test:https", "a b.example:443", "example.test:443\r\nX-Evil: 1", "example.test\x00:443", "exa\tmple:443"} {
		t.Run(target, func(t *testing.T) {
			if _, err := p.dialConnect(parentTestCtx(t), noDial, target); err == nil {
				t.Errorf("dialConnect accepted target %q", target)
			}
		})
	}
}

func TestNewParentProxy(t *testing.T) {
	tests := []struct {
		raw, credentials string
		wantAddr         string // "" if an error is expected
		wantAuth         string
	}{
		{"http://127.0.0.1:3128", "", "127.0.0.1:3128", ""},
		{"http://parent.example.test:8080/", "", "parent.example.test:8080", ""},
		{"HTTP://Parent.Example.Test:8080", "", "Parent.Example.Test:8080", ""},
		{"http://[::1]:3128", "", "[::1]:3128", ""},
		{"http://proxy.bücher.example:3128", "", "proxy.xn--bcher-kva.example:3128", ""},
		{"http://proxy_01.bücher.example:3128", "", "", ""},
		{"http://127.0.0.1:3128", "user:pass", "127.0.0.1:3128", "Basic dXNlcjpwYXNz"},
		{"http://127.0.0.1:3128", "user:", "127.0.0.1:3128", "Basic dXNlcjo="},
		{"https://127.0.0.1:3128", "", "", ""},
		{"socks5://127.0.0.1:1080", "", "", ""},
		{"socks5h://127.0.0.1:1080", "", "", ""},
		{"parent.example.test:3128", "", "", ""},
		{"http://parent.example.test", "", "", ""},
		{"http://parent.example.test:", "", "", ""},
		{"http://:3128", "", "", ""},
		{"http://parent.example.test:0", "", "", ""},
		{"http://parent.example.test:65536", "", "", ""},
		{"http://parent.example.test:3128/proxy", "", "", ""},
		{"http://parent.example.test:3128?x=1", "", "", ""},
		{"http://parent.example.test:3128#f", "", "", ""},
		{"http://user:hunter2@parent.example.test:3128", "", "", ""},
		{"http://127.0.0.1:3128", "nocolonhunter2", "", ""},
		{"http://127.0.0.1:3128", ":hunter2", "", ""},
		{"http://127.0.0.1:3128", "user:hunter2\n", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.raw+"|"+tt.credentials, func(t *testing.T) {
			u, err := url.Parse(tt.raw)
			if err != nil {
				t.Fatalf("url.Parse: %v", err)
			}
			p, err := newParentProxy(u, tt.credentials)
			if tt.wantAddr == "" {
				if err == nil {
					t.Fatalf("accepted: %+v", p)
				}
				for _, secret := range []string{"hunter2", "nocolon"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q quotes a secret", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("newParentProxy: %v", err)
			}
			if p.addr != tt.wantAddr || p.auth != tt.wantAuth || p.proxyAuthorization() != tt.wantAuth {
				t.Errorf("got addr %q auth %q; want %q, %q", p.addr, p.auth, tt.wantAddr, tt.wantAuth)
			}
		})
	}
	if _, err := newParentProxy(nil, ""); err == nil {
		t.Error("newParentProxy(nil) succeeded")
	}
}

func TestParentErrorMessage(t *testing.T) {
	tests := []struct {
		err  ParentError
		want string
	}{
		{ParentError{407, "a.example:443"}, "parent proxy refused CONNECT a.example:443: 407 Proxy Authentication Required"},
		{ParentError{599, "a.example:443"}, "parent proxy refused CONNECT a.example:443: 599"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q; want %q", got, tt.want)
		}
	}
}

// parentTestFile writes content to a new file in dir with mode perm.
func parentTestFile(t *testing.T, dir, name, content string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode is subject to the umask.
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content string
		want          string // "" if an error is expected
	}{
		{"newline", "feedgate:secret\n", "feedgate:secret"},
		{"no-newline", "feedgate:secret", "feedgate:secret"},
		{"crlf-and-spaces", "feedgate:secret \t\r\n", "feedgate:secret"},
		{"colon-in-password", "feedgate:se:cr:et\n", "feedgate:se:cr:et"},
		{"empty-password", "feedgate:\n", "feedgate:"},
		{"only-first-line", "feedgate:secret\n# second line\nother:pw\n", "feedgate:secret"},
		{"bom", "\uFEFFfeedgate:secret\n", "feedgate:secret"},
		{"leading-space-kept", " feedgate:secret\n", " feedgate:secret"},
		{"empty", "", ""},
		{"empty-line", "\nfeedgate:secret\n", ""},
		{"whitespace-only", "  \t\r\n", ""},
		{"no-colon", "feedgatesecret\n", ""},
		{"empty-user", ":secret\n", ""},
		{"control-char", "feedgate:sec\x00ret\n", ""},
		{"first-line-too-long", "feedgate:" + strings.Repeat("s", maxCredentialsFile) + "\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := parentTestFile(t, dir, tt.name, tt.content, 0o600)
			got, err := readCredentialsFile(path)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("accepted, got %q", got)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error %q quotes the file", err)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("readCredentialsFile = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		if _, err := readCredentialsFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v is not fs.ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := readCredentialsFile(dir); err == nil {
			t.Error("a directory was accepted")
		}
	})
}

func TestCredentialsFileTooOpen(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		perm os.FileMode
		want bool
	}{
		{0o600, false},
		{0o400, false},
		{0o700, false},
		{0o640, true},
		{0o604, true},
		{0o620, true},
		{0o601, true},
		{0o644, true},
		{0o666, true},
	}
	for _, tt := range tests {
		t.Run(tt.perm.String(), func(t *testing.T) {
			path := parentTestFile(t, dir, tt.perm.String(), "u:p\n", tt.perm)
			got, err := credentialsFileTooOpen(path)
			if err != nil || got != tt.want {
				t.Errorf("credentialsFileTooOpen = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	if _, err := credentialsFileTooOpen(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: error %v is not fs.ErrNotExist", err)
	}
}

func TestProxyRequestStart(t *testing.T) {
	for _, tt := range []struct {
		p    string
		want bool
	}{
		{"GET http://www.example.test/ HTTP/1.1\r\n", true},
		{"POST http://www.example.test:8080/x?y HTTP/1.1\r\n", true},
		{"CONNECT www.example.test:443 HTTP/1.1\r\n", true},
		{"GET / HTTP/1.1\r\nHost: www.example.test\r\n", false},
		{"OPTIONS * HTTP/1.1\r\n", false},
		// net/http sends https through a proxy as CONNECT, never so.
		{"GET https://www.example.test/ HTTP/1.1\r\n", false},
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 http://", false},
		{"G\x00T http://www.example.test/ HTTP/1.1\r\n", false},
		{"GET", false},
		{" http://www.example.test/", false},
		{"", false},
	} {
		if got := proxyRequestStart([]byte(tt.p)); got != tt.want {
			t.Errorf("proxyRequestStart(%q) = %v; want %v", tt.p, got, tt.want)
		}
	}
}

// TestEnvParents: the parents of the proxy variables are built once, from
// the values as httpproxy reads them, and only their addresses are
// trusted.
func TestEnvParents(t *testing.T) {
	ps := envParents(&httpproxy.Config{
		HTTPProxy:  "127.0.0.1:3128", // no scheme: http:// is implied
		HTTPSProxy: "http://gw:s3cret@proxy.example.test:8080",
		NoProxy:    "direct.example.test",
	})
	wantAddrs := map[string]bool{"127.0.0.1:3128": true, "proxy.example.test:8080": true}
	if !maps.Equal(ps.addrs, wantAddrs) {
		t.Errorf("trusted addresses %v; want %v", ps.addrs, wantAddrs)
	}
	choose := func(rawURL string) *parent {
		t.Helper()
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ps.choose(u)
		if err != nil {
			t.Fatalf("choose(%s): %v", rawURL, err)
		}
		return p
	}
	h1, h2 := choose("http://www.example.test/"), choose("http://other.example.test/")
	if h1 == nil || h1 != h2 || h1.tunnel.addr != "127.0.0.1:3128" {
		t.Errorf("plain HTTP parents %p, %p; want the one built for 127.0.0.1:3128", h1, h2)
	}
	s := choose("https://www.example.test/")
	if s == nil || s.tunnel.addr != "proxy.example.test:8080" || s.tunnel.proxyAuthorization() == "" {
		t.Errorf("https parent %+v; want proxy.example.test:8080 with credentials", s)
	}
	for _, direct := range []string{"http://direct.example.test/", "http://127.0.0.1:3128/", "http://localhost:3128/"} {
		if p := choose(direct); p != nil {
			t.Errorf("%s goes through %s; want direct", direct, p.tunnel.addr)
		}
	}

	// A variable that is no usable parent is not trusted, and fails the
	// requests that would use it.
	ps = envParents(&httpproxy.Config{HTTPSProxy: "https://secure.example.test:443"})
	if len(ps.addrs) != 0 {
		t.Errorf("trusted addresses %v; want none", ps.addrs)
	}
	if p, err := ps.choose(&url.URL{Scheme: "https", Host: "www.example.test"}); p != nil || err == nil {
		t.Errorf("choose with an https:// parent = %v, %v; want an error", p, err)
	}
}

// pipeDialer connects every dial to one end of a pipe and keeps the other.
type pipeDialer struct {
	mu     sync.Mutex
	dialed []string
	peers  []net.Conn
}

func (d *pipeDialer) dial(_ context.Context, _, addr string) (net.Conn, error) {
	ours, theirs := net.Pipe()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dialed = append(d.dialed, addr)
	d.peers = append(d.peers, theirs)
	return ours, nil
}

func (d *pipeDialer) state() ([]string, []net.Conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dialed...), append([]net.Conn(nil), d.peers...)
}

// TestParentTrustIsConfiguredOnly: only a configured parent's address is
// dialed without the destination policy, whatever the parent choice
// returns, and a transport connection to it carries proxy requests only.
func TestParentTrustIsConfiguredOnly(t *testing.T) {
	pd := &pipeDialer{}
	r, err := New(Options{Dialer: &Dialer{Dial: pd.dial}})
	if err != nil {
		t.Fatal(err)
	}
	configured, err := newParent(&url.URL{Scheme: "http", Host: "127.0.0.1:3128"})
	if err != nil {
		t.Fatal(err)
	}
	// A choice that returns a parent the configuration never built, as a
	// broken Proxy function could.
	stray, err := newParent(&url.URL{Scheme: "http", Host: "127.0.0.9:3128"})
	if err != nil {
		t.Fatal(err)
	}
	r.parent = &parents{choose: func(*url.URL) (*parent, error) { return stray, nil }, addrs: map[string]bool{configured.tunnel.addr: true}}
	ctx := parentTestCtx(t)

	if c, err := r.dialParent(ctx, "tcp", "127.0.0.9:3128"); err == nil || !strings.Contains(err.Error(), "not a configured parent") {
		t.Errorf("dialParent of an unconfigured address = %v, %v; want refused", c, err)
	}
	if c, err := r.DialTarget(ctx, "www.example.test:443"); err == nil || !strings.Contains(err.Error(), "not a configured parent") {
		t.Errorf("CONNECT through an unconfigured parent = %v, %v; want refused", c, err)
	}
	var destErr *DestinationError
	if c, err := r.DialHTTP(ctx, "tcp", "127.0.0.9:3128"); !errors.As(err, &destErr) || destErr.Reason != reasonLoopback {
		t.Errorf("DialHTTP of an unconfigured loopback address = %v, %v; want refused as loopback", c, err)
	}
	if dialed, _ := pd.state(); len(dialed) != 0 {
		t.Fatalf("dialed %v; want nothing", dialed)
	}

	// The configured parent is dialed, and a direct request written to it
	// is refused before a byte of it leaves.
	c, err := r.DialHTTP(ctx, "tcp", "127.0.0.1:3128")
	if err != nil {
		t.Fatalf("DialHTTP of the configured parent: %v", err)
	}
	for i := range 2 {
		if _, err := c.Write([]byte("GET /secret HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\r\n")); !errors.As(err, &destErr) || destErr.Reason != reasonParent {
			t.Errorf("write %d of an origin-form request = %v; want refused as parent proxy", i, err)
		}
	}
	_ = c.Close()
	// A proxy request goes through.
	c2, err := r.DialHTTP(ctx, "tcp", "127.0.0.1:3128")
	if err != nil {
		t.Fatalf("DialHTTP of the configured parent: %v", err)
	}
	const proxyReq = "GET http://www.example.test/ HTTP/1.1\r\nHost: www.example.test\r\n\r\n"
	dialed, peers := pd.state()
	if want := []string{"127.0.0.1:3128", "127.0.0.1:3128"}; !slices.Equal(dialed, want) {
		t.Fatalf("dialed %v; want %v", dialed, want)
	}
	got := make(chan []byte, 2)
	for _, p := range peers {
		go func() { b, _ := io.ReadAll(p); got <- b }()
	}
	if _, err := c2.Write([]byte(proxyReq)); err != nil {
		t.Errorf("writing a proxy request: %v", err)
	}
	_ = c2.Close()
	var all []string
	for range peers {
		all = append(all, string(<-got))
	}
	slices.Sort(all)
	if want := []string{"", proxyReq}; !slices.Equal(all, want) {
		t.Errorf("the parent's ends read %q; want %q", all, want)
	}
}
