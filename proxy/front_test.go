package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// frontHandlers are the handlers of testdata/front-requests.txt, by name.
// Each sets Content-Type itself: net/http's server sniffs one when it is
// missing, which Front does not do (a proxy passes the upstream's headers
// on as they are).
var frontHandlers = map[string]http.HandlerFunc{
	"short": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello "+r.URL.Path)
	},
	"long": func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for range 3 {
			_, _ = w.Write(bytes.Repeat([]byte("0123456789"), 200))
		}
	},
	"declared": func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "5")
		_, _ = io.WriteString(w, "hello")
	},
	"flush": func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "a")
		_ = http.NewResponseController(w).Flush()
		_, _ = io.WriteString(w, "b")
	},
	"empty": func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
	},
	"forbidden": func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, "no")
	},
	"nocontent": func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) },
	"notmod":    func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotModified) },
	"early": func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Link", "</s.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
	},
	"close": func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Connection", "close")
		_, _ = io.WriteString(w, "bye")
	},
	"readbody": func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = fmt.Fprintf(w, "read %q err=%v", b, err)
	},
}

type frontCase struct {
	name, handler string
	raw           []byte
}

func loadFrontCases(t *testing.T) []frontCase {
	t.Helper()
	var cases []frontCase
	for _, r := range testutil.ReadTable(t, "testdata/front-requests.txt", "handler") {
		c := frontCase{name: r.Name, handler: r.Field, raw: []byte(r.Raw)}
		if frontHandlers[c.handler] == nil {
			t.Fatalf("front-requests.txt:%d: no handler %q", r.Line, c.handler)
		}
		cases = append(cases, c)
	}
	return cases
}

// frontExchange sends raw, a pipelined GET /next and a half-close, and returns
// what came back, response by response, until the server closed.
func frontExchange(t *testing.T, addr string, raw []byte, head bool) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testutil.WaitLimit))
	msg := append(append([]byte{}, raw...), "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	all, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading: %v", err)
	}
	var got []string
	br := bufio.NewReader(bytes.NewReader(all))
	for first := true; ; first = false {
		if _, err := br.Peek(1); err != nil {
			return got
		}
		method := http.MethodGet
		if first && head {
			method = http.MethodHead
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			rest, _ := io.ReadAll(br)
			return append(got, fmt.Sprintf("unparsed: %v", err), string(rest))
		}
		body, err := io.ReadAll(resp.Body)
		got = append(got, fmt.Sprintf("%s | Content-Length %q | Transfer-Encoding %q | Connection %q | body %q (%v)",
			resp.Status, resp.Header.Get("Content-Length"), resp.TransferEncoding, resp.Header.Get("Connection"), body, err))
	}
}

// TestFrontAgreesWithNetHTTP holds feedgate's HTTP/1.x front end to
// net/http's server, which it replaced on the proxy port: the same raw
// requests, the same handlers, the same answers, framing and keep-alive.
func TestFrontAgreesWithNetHTTP(t *testing.T) {
	const maxHeader = 4 << 10
	big := func(n int) []byte {
		return []byte("GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", n) + "\r\n\r\n")
	}
	cases := append(loadFrontCases(t),
		frontCase{name: "header-fits", handler: "short", raw: big(maxHeader)},
		frontCase{name: "header-too-large", handler: "short", raw: big(maxHeader + 8<<10)},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := frontHandlers[tc.handler]
			std := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxHeader}
			fr := &proxy.Front{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: maxHeader}
			stdAddr := serveOn(t, std.Serve, std.Close)
			frAddr := serveOn(t, fr.Serve, fr.Close)
			head := bytes.HasPrefix(tc.raw, []byte("HEAD "))
			want := frontExchange(t, stdAddr, tc.raw, head)
			got := frontExchange(t, frAddr, tc.raw, head)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("front end answered\n\t%s\nnet/http answered\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
			}
			if len(want) == 0 && !strings.Contains(tc.name, "http09") {
				t.Errorf("net/http answered nothing: the case tests nothing")
			}
		})
	}
}

func serveOn(t *testing.T, serve func(net.Listener) error, closeFn func() error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = serve(ln) }()
	t.Cleanup(func() { _ = closeFn(); <-done })
	return ln.Addr().String()
}

// TestFrontClientWatch: a client that goes away while its exchange waits
// for the upstream cancels the request's context; a client that sends its
// next request meanwhile does not, and that request is served.
func TestFrontClientWatch(t *testing.T) {
	gone := make(chan error, 4)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			select {
			case <-r.Context().Done():
				gone <- r.Context().Err()
				return
			case <-release:
				gone <- nil
			}
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	})
	fr := &proxy.Front{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, ClientWatchDelay: time.Millisecond}
	addr := serveOn(t, fr.Serve, fr.Close)

	t.Run("client-goes-away", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c.Close()
		select {
		case err := <-gone:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("handler's context: %v; want canceled", err)
			}
		case <-time.After(testutil.WaitLimit):
			t.Fatal("the handler's context was not cancelled after the client closed")
		}
	})

	t.Run("pipelined-request-while-waiting", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(testutil.WaitLimit))
		_, _ = io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
		// The watch (started after 1 ms) reads the first byte of this
		// one; it must reach the next request's parser.
		time.Sleep(20 * time.Millisecond)
		_, _ = io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(20 * time.Millisecond)
		close(release)
		br := bufio.NewReader(c)
		for _, want := range []string{"done /wait", "done /next"} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("reading the answer to %s: %v", want, err)
			}
			body, _ := io.ReadAll(resp.Body)
			if string(body) != want {
				t.Errorf("body = %q; want %q", body, want)
			}
		}
		if err := <-gone; err != nil {
			t.Errorf("the handler's context was cancelled (%v) though the client only sent its next request", err)
		}
	})
}

// TestFrontHijackHandsOverBufferedBytes: bytes the client sent behind a
// request are the hijacker's, buffered, whatever the front end had read.
func TestFrontHijackHandsOverBufferedBytes(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		n := brw.Reader.Buffered()
		b, _ := brw.Reader.Peek(n)
		_, _ = fmt.Fprintf(c, "buffered %q", b)
	})
	fr := &proxy.Front{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	addr := serveOn(t, fr.Serve, fr.Close)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testutil.WaitLimit))
	_, _ = io.WriteString(c, "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n\x16\x03\x01early")
	_ = c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	if want := `buffered "\x16\x03\x01early"`; string(got) != want {
		t.Errorf("hijacker saw %q; want %q", got, want)
	}
}

// TestStackReservedOnlyForRequests: a connection's goroutine grows its
// stack to what serving a request takes (reserveStack) once the first
// byte of a request has arrived, not at accept: a connection that sends
// nothing keeps a small stack. The same connections, once their requests
// have begun, show the reserve, so that the check cannot pass for want of
// seeing anything.
func TestStackReservedOnlyForRequests(t *testing.T) {
	e := newEnv(t, envConfig{})
	const n = 1000
	// waitReading waits until every connection's goroutine waits for
	// bytes, inside the request parser or not, and returns the stack
	// memory per connection.
	waitReading := func(inParser bool, before int64) int64 {
		t.Helper()
		count := func() int {
			k := 0
			for _, g := range goroutineDump() {
				if strings.Contains(g.stack, "proxy.(*frontConn).serve(") &&
					strings.Contains(g.stack, "internal/poll.runtime_pollWait") &&
					strings.Contains(g.stack, "proxy.(*frontConn).readRequest(") == inParser {
					k++
				}
			}
			return k
		}
		deadline := time.Now().Add(testutil.WaitLimit)
		for count() != n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if k := count(); k != n {
			t.Fatalf("%d connection goroutines waiting to read (in the parser: %v); want %d", k, inParser, n)
		}
		return (stackBytes() - before) / n
	}
	// A collection frees the stacks cached from earlier tests, so that
	// the connections' stacks are new memory; none may run after it,
	// since a collection shrinks stacks that are mostly unused.
	runtime.GC()
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := stackBytes()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = e.dial(t)
	}
	silent := waitReading(false, before)
	for _, c := range conns {
		if _, err := c.Write([]byte("G")); err != nil {
			t.Fatal(err)
		}
	}
	begun := waitReading(true, before)
	// The stacks grow from 2 KiB to 8 KiB (from 4 KiB with the race
	// detector, whose stack guard is larger). Other goroutines' stacks,
	// freed meanwhile, blur each figure by a few hundred bytes.
	if begun-silent < 3<<10 {
		t.Errorf("stack per connection: %d bytes while it has sent nothing, %d once its request has begun; want the 8 KiB reserve only in the second", silent, begun)
	}
}

// stackBytes is the memory the runtime holds for goroutine stacks.
func stackBytes() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}
