package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fuzzWait bounds every wait of one fuzz iteration.
const fuzzWait = 2 * time.Second

// fuzzCheckEvery is how often, in iterations, the fuzz target checks that
// the proxy still serves normal requests.
const fuzzCheckEvery = 32

// FuzzProxyRequest writes each input as raw bytes to a new connection to a
// live proxy. Properties: the proxy never panics, never hangs (once the
// client has sent everything and half-closed, the proxy answers or closes
// within fuzzWait), always answers with a parseable HTTP response or
// closes, never puts raw Go error text in its own error replies, and
// keeps serving plain HTTP and tunnels.
func FuzzProxyRequest(f *testing.F) {
	for _, tc := range hostileCases(f) {
		if len(tc.raw) <= 4<<10 {
			f.Add([]byte(tc.raw))
		}
	}
	for _, s := range []string{
		rawGet("plain"),
		"HEAD " + exampleTarget + "head HTTP/1.1\r\n" + hostHdr + "\r\n",
		"GET " + exampleTarget + "http10 HTTP/1.0\r\n\r\n",
		"POST http://www.example.test/echo HTTP/1.1\r\n" + hostHdr + "Content-Length: 5\r\n\r\nhello",
		"POST http://www.example.test/echo HTTP/1.1\r\n" + hostHdr + "Transfer-Encoding: chunked\r\n\r\n" + chunkOf("hello") + "0\r\n\r\n",
		"POST http://www.example.test/echo HTTP/1.1\r\n" + hostHdr + "Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
		rawGet("pipelined") + rawGet("pipelined-2"),
		rawGet("hop", "Connection: X-Hop, close\r\nX-Hop: 1\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n"),
		rawGet("ws", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
		"GET " + blockedTarget + "blocked HTTP/1.1\r\nHost: dnl-01.geo.kaspersky.com\r\n\r\n",
		"GET https://www.example.test/h/tls HTTP/1.1\r\n" + hostHdr + "\r\n",
		"GET http://nx.example.test/h/nx HTTP/1.1\r\nHost: nx.example.test\r\n\r\n",
		connectRequest("www.example.test:443") + "GET /hello HTTP/1.1\r\n" + hostHdr + "\r\n",
		connectRequest("dnl-01.geo.kaspersky.com:443") + "\x16\x03\x01\x00\x05hello",
		connectRequest("nx.example.test:443"),
		"CONNECT www.example.test:443 HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}

	o := &origin{}
	inner := originHandler(o)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// 4 MiB per request would make a few pipelined requests outlast
		// fuzzWait.
		if r.URL.Path == "/big" {
			http.NotFound(w, r)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	// The fuzzer reaches /status/NNN with codes net/http panics on; that
	// is the origin's business, not the proxy's.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	o.Server = srv
	f.Cleanup(srv.Close)
	e := newEnv(f, envConfig{resolve: originResolves(f, srv.URL), logTo: io.Discard})
	panics := watchPanics(f, e, true)

	var n atomic.Int64
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := exchange(e.addr, raw)
		panics.check(t, quoteInput(raw))
		if err != nil {
			t.Fatalf("input %s: %v; got %s", quoteInput(raw), err, quoteInput(got))
		}
		if len(got) > 0 {
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
			if err != nil {
				t.Fatalf("input %s: the proxy's reply %s is not HTTP: %v", quoteInput(raw), quoteInput(got), err)
			}
			if resp.StatusCode < 100 || resp.StatusCode > 599 {
				t.Fatalf("input %s: status %d", quoteInput(raw), resp.StatusCode)
			}
			if resp.Header.Get("X-Feedgate-Error") != "" {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
				for _, frag := range []string{"dial tcp", "lookup ", "connect: connection refused", "i/o timeout",
					"context deadline exceeded", "timeout awaiting", "invalid byte", "malformed chunked"} {
					if bytes.Contains(body, []byte(frag)) {
						t.Fatalf("input %s: error reply %q contains raw error text %q", quoteInput(raw), body, frag)
					}
				}
			}
		}
		if n.Add(1)%fuzzCheckEvery == 1 {
			checkServes(t, e, fuzzWait)
		}
	})
}

// exchange writes raw to a new connection to addr and returns everything
// the proxy sent back. It half-closes once the proxy has answered or after
// a short grace, so that the proxy is never left waiting for the rest of
// an incomplete request; from then on the proxy must close within
// fuzzWait. An error means it did not.
func exchange(addr string, raw []byte) ([]byte, error) {
	var conn net.Conn
	var err error
	for range 5 {
		// Under heavy fuzzing the loopback port range can run short.
		if conn, err = net.Dial("tcp", addr); err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(fuzzWait))
	// The proxy may answer and close before it has read everything.
	_, _ = conn.Write(raw)

	// A short wait for the first bytes of an answer before half-closing:
	// net/http cancels a request whose client has half-closed, and a
	// well-formed request deserves to be forwarded and answered. Input
	// without an end of headers cannot be answered; it needs no wait.
	var got bytes.Buffer
	if bytes.Contains(raw, []byte("\n\n")) || bytes.Contains(raw, []byte("\n\r\n")) {
		buf := make([]byte, 32<<10)
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		n, err := conn.Read(buf)
		got.Write(buf[:n])
		var ne net.Error
		switch {
		case err == nil, errors.As(err, &ne) && ne.Timeout():
		case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
			return got.Bytes(), nil
		default:
			return got.Bytes(), err
		}
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	_ = conn.SetReadDeadline(time.Now().Add(fuzzWait))
	_, err = io.Copy(&got, conn)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		return got.Bytes(), err
	}
	return got.Bytes(), nil
}

// quoteInput quotes at most the first 512 bytes of b for a message.
func quoteInput(b []byte) string {
	if len(b) > 512 {
		return strconv.Quote(string(b[:512])) + "…"
	}
	return strconv.Quote(string(b))
}
