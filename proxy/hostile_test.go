package proxy_test

// Hostile and broken input on the raw wire: malformed request lines, bad
// hosts and ports, smuggling, oversized and injected headers, and bytes
// that are not HTTP at all. A malformed case must end in a clean 4xx (the
// exact code where net/http or feedgate defines one) or a closed
// connection, never in a forward and never in a hang. A few inputs that
// HTTP allows a server to accept (bare LF line endings, obs-fold,
// userinfo) are cases too: they must be forwarded, and the origin must
// get a clean request. After every case the proxy must not have panicked
// and must go on serving both plain HTTP and tunnels.
//
// Every origin is reached through -resolve overrides (www.example.test and
// dnl-01.geo.kaspersky.com on ports 80 and 443); no case names an origin by
// IP address.

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// answerWait bounds the wait for the proxy's first answer: past it, the
// proxy has hung. moreWait is how long a connection is watched after an
// answer for a second, unwanted one.
const (
	answerWait = 5 * time.Second
	moreWait   = time.Second
)

// smuggledPath is the path of every request hidden inside another; no
// origin may ever see it.
const smuggledPath = "/smuggled"

// seenRequest is one request as an origin received it.
type seenRequest struct {
	method, host, uri string
	header            http.Header
	body              *bodyWatch
}

// bodyWatch remembers how reading a request body ended.
type bodyWatch struct {
	rc   io.ReadCloser
	mu   sync.Mutex
	done bool
	err  error // nil when the body was read to its end
}

func (b *bodyWatch) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		b.mu.Lock()
		if !b.done {
			b.done = true
			if err != io.EOF {
				b.err = err
			}
		}
		b.mu.Unlock()
	}
	return n, err
}

func (b *bodyWatch) Close() error { return b.rc.Close() }

// aborted reports whether the body ended in an error (the proxy gave up
// on the request half-way), waiting up to moreWait for the origin to find
// out. A body the origin never read counts as not aborted.
func (b *bodyWatch) aborted() bool {
	for deadline := time.Now().Add(moreWait); ; time.Sleep(5 * time.Millisecond) {
		b.mu.Lock()
		done, err := b.done, b.err
		b.mu.Unlock()
		if done || time.Now().After(deadline) {
			return err != nil
		}
	}
}

// complete returns the requests the origin received in full: a request
// whose body broke off half-way is not one.
func completeRequests(seen []seenRequest) []seenRequest {
	var out []seenRequest
	for _, r := range seen {
		if !r.body.aborted() {
			out = append(out, r)
		}
	}
	return out
}

// recordingOrigin is an origin (see originHandler) that also keeps every
// request it received, so that tests can check paths and Host headers.
type recordingOrigin struct {
	*origin
	seenMu sync.Mutex
	seen   []seenRequest
}

func newRecordingOrigin(tb testing.TB) *recordingOrigin {
	tb.Helper()
	o, s := unstartedRecordingOrigin(tb)
	s.Start()
	return o
}

// newRecordingOriginTLS is newRecordingOrigin over TLS, with the test
// certificate (tlsNames), and the roots that verify it.
func newRecordingOriginTLS(tb testing.TB) (*recordingOrigin, *x509.CertPool) {
	tb.Helper()
	cert, err := testCert()
	if err != nil {
		tb.Fatalf("test certificate: %v", err)
	}
	o, s := unstartedRecordingOrigin(tb)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.StartTLS()
	roots := x509.NewCertPool()
	roots.AddCert(s.Certificate())
	return o, roots
}

func unstartedRecordingOrigin(tb testing.TB) (*recordingOrigin, *httptest.Server) {
	o := &recordingOrigin{origin: &origin{}}
	inner := originHandler(o.origin)
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := &bodyWatch{rc: r.Body}
		r.Body = body
		o.seenMu.Lock()
		o.seen = append(o.seen, seenRequest{method: r.Method, host: r.Host, uri: r.RequestURI, header: r.Header.Clone(), body: body})
		o.seenMu.Unlock()
		inner.ServeHTTP(w, r)
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	o.Server = s
	tb.Cleanup(s.Close)
	return o, s
}

// mark returns a position in the request log for since.
func (o *recordingOrigin) mark() int {
	o.seenMu.Lock()
	defer o.seenMu.Unlock()
	return len(o.seen)
}

// since returns the requests received after mark.
func (o *recordingOrigin) since(mark int) []seenRequest {
	o.seenMu.Lock()
	defer o.seenMu.Unlock()
	return append([]seenRequest(nil), o.seen[mark:]...)
}

// originResolves points the test names at an origin on ports 80 and 443
// (a tunnel to 443 reaches the plain-HTTP origin, which is all a tunnel
// test needs).
func originResolves(tb testing.TB, originURL string) []string {
	tb.Helper()
	u, err := netip.ParseAddrPort(strings.TrimPrefix(originURL, "http://"))
	if err != nil {
		tb.Fatalf("origin URL %q: %v", originURL, err)
	}
	var out []string
	for _, host := range []string{"www.example.test", "dnl-01.geo.kaspersky.com"} {
		for _, port := range []int{80, 443} {
			out = append(out, resolveTo(host, port, u.String()))
		}
	}
	return out
}

// panicLog is an http.Server error log that keeps the reports of handler
// panics. net/http recovers a panicking handler, logs it and closes the
// connection, so without this log a panic would pass for a refusal.
type panicLog struct {
	mu    sync.Mutex
	lines []string
}

func (p *panicLog) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("panic serving")) {
		p.mu.Lock()
		p.lines = append(p.lines, string(b[:min(len(b), 4<<10)]))
		p.mu.Unlock()
	}
	return len(b), nil
}

// check fails tb if the proxy panicked; what names the input.
func (p *panicLog) check(tb testing.TB, what string) {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.lines) > 0 {
		tb.Fatalf("the proxy panicked on %s:\n%s", what, strings.Join(p.lines, "\n"))
	}
}

// watchPanics serves e's proxy on a second listener whose http.Server
// keeps its error log, and points e at that listener. The proxy is the
// same Server, with the same policy, dialer and timeouts; newEnv's own
// listener stays unused. With guard set, requests whose target host is an
// IP literal are refused before the proxy sees them (see noIPTargets).
func watchPanics(tb testing.TB, e *env, guard bool) *panicLog {
	tb.Helper()
	pl := &panicLog{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	hs := e.srv.HTTPServer()
	hs.ErrorLog = log.New(pl, "", 0)
	if guard {
		hs.Handler = noIPTargets(hs.Handler)
	}
	go func() { _ = hs.Serve(ln) }()
	tb.Cleanup(func() { _ = hs.Close() })
	e.addr = ln.Addr().String()
	e.proxyURL.Host = e.addr
	return pl
}

// noIPTargets answers 403 itself for any request whose target host is an
// IP literal. The fuzzer can turn a name into an address; the overrides
// and the fake resolver only ever lead to loopback, and this keeps the
// proxy from dialing any other address the fuzzer makes up. The host is
// taken as the proxy takes it: CONNECT dials r.Host, plain HTTP the URL's.
func noIPTargets(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.URL.Hostname()
		if r.Method == http.MethodConnect {
			h, _, err := net.SplitHostPort(r.Host)
			if err != nil {
				h = r.Host
			}
			host = h
		}
		if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			http.Error(w, "test guard: IP literal targets are not dialed", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// answer is one response the proxy wrote.
type answer struct {
	status int
	header http.Header
	body   string
}

// transcript is what the proxy wrote on one connection.
type transcript struct {
	answers []answer
	// end is what stopped the reading: io.EOF or a reset when the proxy
	// closed, a timeout when it kept the connection open, anything else
	// when its bytes were not HTTP. nil when reading stopped because
	// enough answers had come.
	end error
}

func (tr transcript) closed() bool {
	return errors.Is(tr.end, io.EOF) || errors.Is(tr.end, syscall.ECONNRESET)
}

func (tr transcript) timedOut() bool {
	var ne net.Error
	return errors.As(tr.end, &ne) && ne.Timeout()
}

func (tr transcript) String() string {
	var b strings.Builder
	for i, a := range tr.answers {
		fmt.Fprintf(&b, "answer %d: %d %q; ", i+1, a.status, a.body[:min(len(a.body), 120)])
	}
	switch {
	case tr.closed():
		b.WriteString("then the proxy closed the connection")
	case tr.timedOut():
		b.WriteString("then nothing more before the deadline")
	case tr.end != nil:
		fmt.Fprintf(&b, "then: %v", tr.end)
	}
	return b.String()
}

// converse reads up to most answers from conn: the first within answerWait,
// each further one within moreWait of the previous. method is the method
// of the request being answered (a 2xx to a CONNECT has no body to read:
// the tunnel follows, so reading stops there).
func converse(conn net.Conn, br *bufio.Reader, method string, most int) transcript {
	var tr transcript
	_ = conn.SetReadDeadline(time.Now().Add(answerWait))
	for len(tr.answers) < most {
		// http.ReadResponse reports a connection closed before the
		// status line as io.ErrUnexpectedEOF; a peek tells a clean close
		// (io.EOF) from a truncated answer.
		if _, err := br.Peek(1); err != nil {
			tr.end = err
			return tr
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			tr.end = err
			return tr
		}
		a := answer{status: resp.StatusCode, header: resp.Header}
		if method == http.MethodConnect && resp.StatusCode/100 == 2 {
			tr.answers = append(tr.answers, a)
			return tr
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		a.body = string(b)
		tr.answers = append(tr.answers, a)
		if err != nil {
			tr.end = err
			return tr
		}
		_ = conn.SetReadDeadline(time.Now().Add(moreWait))
	}
	return tr
}

// checkServes asserts that the proxy still answers a plain-HTTP request
// and still opens a tunnel, each on a new connection, with the origin's
// body intact. Every wait is bounded by limit.
func checkServes(tb testing.TB, e *env, limit time.Duration) {
	tb.Helper()
	const hello = "hello from origin\n"
	plain := e.dial(tb)
	_ = plain.SetDeadline(time.Now().Add(limit))
	defer plain.Close()
	normalRequest(tb, plain, "GET http://www.example.test/hello HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n", hello)

	tunnel := e.dial(tb)
	_ = tunnel.SetDeadline(time.Now().Add(limit))
	defer tunnel.Close()
	// The inner request is pipelined behind the CONNECT: the proxy relays
	// it once the tunnel is up.
	if _, err := io.WriteString(tunnel, connectRequest("www.example.test:443")+
		"GET /hello HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n"); err != nil {
		tb.Fatalf("normal CONNECT: writing: %v", err)
	}
	br := bufio.NewReader(tunnel)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		tb.Fatalf("normal CONNECT: reading the reply: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("normal CONNECT: status %d; want 200", resp.StatusCode)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		tb.Fatalf("request through the tunnel: reading the response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != hello {
		tb.Fatalf("request through the tunnel: got %d %q (%v); want 200 %q", resp.StatusCode, body, err, hello)
	}
}

// outcome is what a hostile case must end in.
type outcome int

const (
	// wantRejected: a 4xx, exactly status when it is set, or (only when
	// it is not) a connection closed without an answer. The origin sees no
	// complete request, no name is resolved and no upstream error is
	// counted.
	wantRejected outcome = iota
	// wantBlocked: exactly status (the policy's 403, or a 400 where the
	// input is malformed as well); the origin sees nothing. These try to
	// slip a blocked host past the policy.
	wantBlocked
	// wantForwarded: tolerated input, forwarded once with a 200 from the
	// origin; check inspects what the origin received.
	wantForwarded
	// wantDecided: any answer (a refusal, a block, an upstream error, a
	// tunnel) or a close; only a panic or a hang is wrong.
	wantDecided
	// wantNoSmuggling: a request with ambiguous framing that carries a
	// second, hidden request. The answer is a refusal, or an answer to the
	// outer request after which the connection is closed (RFC 9112
	// section 6.1); the origin sees at most the outer request, never the
	// hidden one.
	wantNoSmuggling
)

// hostileCase is one raw input.
type hostileCase struct {
	name    string
	raw     string
	method  string // of the request being answered; "" means GET
	want    outcome
	status  int // exact status for wantRejected and wantBlocked; 0: any 4xx or a close
	check   func(t *testing.T, got seenRequest)
	comment string // what happens, for the test log
	rule    string // wantBlocked with 403: the X-Feedgate-Rule; "" means updates-cutoff
	// port is the original destination's port of a case sent to the
	// transparent listener; 0 means 80.
	port int
}

// Request-building shorthands. Paths of hostile requests start with /h/;
// the normal requests that follow each case use /hello.
const (
	hostHdr       = "Host: www.example.test\r\n"
	exampleTarget = "http://www.example.test/h/"
	blockedTarget = "http://dnl-01.geo.kaspersky.com/h/"
)

// hiddenRequest is the request smuggling cases try to hide in a body.
const hiddenRequest = "GET http://www.example.test" + smuggledPath + " HTTP/1.1\r\n" + hostHdr + "\r\n"

func rawGet(path string, extra ...string) string {
	return "GET " + exampleTarget + path + " HTTP/1.1\r\n" + hostHdr + strings.Join(extra, "") + "\r\n"
}

// chunkOf frames s as one chunk of a chunked body.
func chunkOf(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// tlsClientHello returns the first TLS record a Go client sends: a
// ClientHello, as a client that mistakes the proxy for a TLS server sends.
func tlsClientHello(tb testing.TB) string {
	tb.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		defer client.Close()
		_ = tls.Client(client, &tls.Config{ServerName: "www.example.test"}).Handshake()
	}()
	_ = server.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(server, hdr); err != nil {
		tb.Fatalf("reading a ClientHello: %v", err)
	}
	rec := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(server, rec); err != nil {
		tb.Fatalf("reading a ClientHello: %v", err)
	}
	return string(hdr) + string(rec)
}

// randomBytes returns n bytes from a fixed seed.
func randomBytes(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

// originGot returns a check that the origin received the request for uri
// with Host www.example.test, and no header named in absent.
func originGot(uri string, absent ...string) func(t *testing.T, got seenRequest) {
	return originGotHost("www.example.test", uri, absent...)
}

// originGotHost is originGot for a request to host (in any case, with or
// without the port).
func originGotHost(host, uri string, absent ...string) func(t *testing.T, got seenRequest) {
	return func(t *testing.T, got seenRequest) {
		t.Helper()
		if got.uri != uri {
			t.Errorf("origin got request-target %q; want %q", got.uri, uri)
		}
		if h, _, err := net.SplitHostPort(got.host); err == nil && h != "" {
			got.host = h
		}
		if !strings.EqualFold(strings.TrimSuffix(got.host, "."), host) {
			t.Errorf("origin got Host %q; want %q", got.host, host)
		}
		for _, h := range absent {
			if v, ok := got.header[http.CanonicalHeaderKey(h)]; ok {
				t.Errorf("origin got %s: %q; want no such header", h, v)
			}
		}
		for k, vs := range got.header {
			for _, v := range vs {
				if strings.ContainsAny(k+v, "\r\n\x00") {
					t.Errorf("origin got header %q: %q with CR, LF or NUL in it", k, v)
				}
			}
		}
	}
}

func hostileCases(tb testing.TB) []hostileCase {
	tb.Helper()
	const post = "POST " + exampleTarget
	clte := "0\r\n\r\n" + hiddenRequest
	tecl := chunkOf(hiddenRequest) + "0\r\n\r\n"
	cases := []hostileCase{
		// Malformed request lines. net/http answers 400 and closes.
		{name: "missing-version", raw: "GET " + exampleTarget + "missing-version\r\n" + hostHdr + "\r\n", status: 400},
		{name: "http09-request", raw: "GET /h/http09\r\n\r\n", status: 400},
		{name: "garbage-method", raw: "G{}T " + exampleTarget + "garbage-method HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "non-ascii-method", raw: "G\xc3\x89T " + exampleTarget + "non-ascii-method HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "leading-space", raw: " GET " + exampleTarget + "leading-space HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "two-spaces-after-method", raw: "GET  " + exampleTarget + "two-spaces HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "two-spaces-before-version", raw: "GET " + exampleTarget + "two-spaces  HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "space-after-version", raw: "GET " + exampleTarget + "space-after HTTP/1.1 \r\n" + hostHdr + "\r\n", status: 400},
		{name: "tabs-for-spaces", raw: "GET\t" + exampleTarget + "tabs\tHTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "lower-case-version", raw: "GET " + exampleTarget + "lower-version http/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "version-garbage", raw: "GET " + exampleTarget + "version-garbage HTTP/1.x\r\n" + hostHdr + "\r\n", status: 400},
		{name: "version-2.0", raw: "GET " + exampleTarget + "version-2 HTTP/2.0\r\n" + hostHdr + "\r\n", status: 505,
			comment: "net/http answers 505 HTTP Version Not Supported"},
		{name: "http2-preface", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", status: 400,
			comment: "feedgate's own 400: \"*\" is not an absolute URI"},
		{name: "lf-only-line-endings", raw: "GET " + exampleTarget + "lf-only HTTP/1.1\n" + "Host: www.example.test\n\n",
			want: wantForwarded, check: originGot("/h/lf-only"),
			comment: "net/http accepts bare LF line endings (RFC 9112 section 2.2 allows it); the origin gets a normal CRLF request"},

		// Absolute URIs with bad hosts and ports.
		{name: "empty-host", raw: "GET http:///h/empty-host HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "empty-host-with-port", raw: "GET http://:80/h/empty-host-port HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "space-in-host", raw: "GET http://www.exa mple.test/h/space HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "encoded-space-in-host", raw: "GET http://www.exa%20mple.test/h/space HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "unclosed-ipv6-bracket", raw: "GET http://[::1/h/bracket HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "bad-percent-in-host", raw: "GET http://www.example.test%zz/h/pct HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "truncated-percent-in-host", raw: "GET http://www.example.test%2/h/pct HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "encoded-crlf-in-host", raw: "GET http://www.example.test%0d%0aX-Injected:%20yes/h/crlf HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		// Ports 0 and 99999 are refused by feedgate; the code is not
		// pinned because port refusals are another test's business.
		{name: "port-zero", raw: "GET http://www.example.test:0/h/port HTTP/1.1\r\n" + hostHdr + "\r\n"},
		{name: "port-99999", raw: "GET http://www.example.test:99999/h/port HTTP/1.1\r\n" + hostHdr + "\r\n"},
		{name: "port-not-numeric", raw: "GET http://www.example.test:http/h/port HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "port-negative", raw: "GET http://www.example.test:-80/h/port HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "malformed-host-header", raw: "GET " + exampleTarget + "host-header HTTP/1.1\r\nHost: www.exa mple.test\r\n\r\n", status: 400},
		{name: "two-host-headers", raw: "GET " + exampleTarget + "two-hosts HTTP/1.1\r\n" + hostHdr + hostHdr + "\r\n", status: 400},
		{name: "no-host-header", raw: "GET " + exampleTarget + "no-host HTTP/1.1\r\n\r\n", status: 400},

		// CONNECT targets. A tunnel's target is authority-form only
		// (RFC 9112 section 3.2.3): host:port, nothing else.
		{name: "connect-without-port", method: "CONNECT", raw: "CONNECT www.example.test HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "connect-with-path", method: "CONNECT", raw: "CONNECT www.example.test:443/x HTTP/1.1\r\nHost: www.example.test:443\r\n\r\n", status: 400},
		{name: "connect-origin-form", method: "CONNECT", raw: "CONNECT /h/x HTTP/1.1\r\nHost: www.example.test:443\r\n\r\n", status: 400},
		{name: "connect-with-userinfo", method: "CONNECT", raw: "CONNECT user:pass@www.example.test:443 HTTP/1.1\r\nHost: www.example.test:443\r\n\r\n", status: 400},
		{name: "connect-port-garbage", method: "CONNECT", raw: connectRequest("www.example.test:443x"), status: 400},
		{name: "connect-ipv6-bracketed", method: "CONNECT", raw: connectRequest("[::1]:443"), want: wantDecided,
			comment: "a valid target: decided by the policy, then refused or dialed as the destination rules say"},
		{name: "connect-ipv6-unbracketed", method: "CONNECT", raw: connectRequest("::1:443"), want: wantDecided,
			comment: "not host:port; net/http or feedgate refuse it"},
		{name: "connect-name-in-brackets", method: "CONNECT", raw: connectRequest("[www.example.test]:443"), want: wantDecided,
			comment: "brackets hold IPv6 literals only; net/http's URL parser refuses a name in them"},
		{name: "connect-80KiB-authority", method: "CONNECT", raw: connectRequest(strings.Repeat("a", 80<<10) + ".test:443"), status: 431},

		// Attempts to get a blocked host (an update server, blocked
		// after the cut-off) past the policy. If one got through, the
		// origin would see it: the name resolves to it.
		{name: "blocked-upper-case", raw: "GET http://DNL-01.GEO.KASPERSKY.COM/h/bp HTTP/1.1\r\nHost: DNL-01.GEO.KASPERSKY.COM\r\n\r\n", want: wantBlocked, status: 403},
		{name: "blocked-trailing-dot", raw: "GET http://dnl-01.geo.kaspersky.com./h/bp HTTP/1.1\r\nHost: dnl-01.geo.kaspersky.com.\r\n\r\n", want: wantBlocked, status: 403},
		{name: "blocked-behind-userinfo", raw: "GET http://www.example.test@dnl-01.geo.kaspersky.com/h/bp HTTP/1.1\r\n" + hostHdr + "\r\n", want: wantBlocked, status: 400},
		{name: "blocked-host-header-decoy", raw: "GET " + blockedTarget + "bp HTTP/1.1\r\n" + hostHdr + "\r\n", want: wantBlocked, status: 403},
		// Refused by the policy or by the port rules: either way not
		// forwarded.
		{name: "blocked-absolute-https", raw: "GET https://dnl-01.geo.kaspersky.com/h/bp HTTP/1.1\r\nHost: dnl-01.geo.kaspersky.com\r\n\r\n"},
		{name: "blocked-connect-upper-case", method: "CONNECT", raw: connectRequest("DNL-01.Geo.Kaspersky.Com:443"), want: wantBlocked, status: 403},
		{name: "blocked-connect-trailing-dot", method: "CONNECT", raw: connectRequest("dnl-01.geo.kaspersky.com.:443"), want: wantBlocked, status: 403},
		{name: "blocked-connect-in-brackets", method: "CONNECT", raw: connectRequest("[dnl-01.geo.kaspersky.com]:443"), want: wantBlocked, status: 400},
		// U+3002 IDEOGRAPHIC FULL STOP is a dot to IDNA. net/http refuses
		// it in a Host header; in the target alone it reaches the policy,
		// which must see the blocked name.
		{name: "blocked-ideographic-dot-in-host-header", method: "CONNECT", raw: connectRequest("dnl-01.geo.kaspersky\u3002com:443"), want: wantBlocked, status: 400},
		{name: "blocked-connect-ideographic-dot", method: "CONNECT", raw: "CONNECT dnl-01.geo.kaspersky\u3002com:443 HTTP/1.1\r\nHost: www.example.test:443\r\n\r\n", want: wantBlocked, status: 403},
		{name: "blocked-ideographic-dot", raw: "GET http://dnl-01.geo.kaspersky\u3002com/h/bp HTTP/1.1\r\n" + hostHdr + "\r\n", want: wantBlocked, status: 403},

		// Userinfo and Host: the origin gets the URL's host, never the
		// credentials, never the client's Host header.
		{name: "userinfo-in-url", raw: "GET http://user:pass@www.example.test/h/userinfo HTTP/1.1\r\n" + hostHdr + "\r\n",
			want: wantRejected, status: 400,
			comment: "userinfo in a request target is refused (RFC 9110 section 4.2.4)"},
		{name: "userinfo-empty", raw: "GET http://@www.example.test/h/userinfo HTTP/1.1\r\n" + hostHdr + "\r\n", want: wantRejected, status: 400},
		// Spellings that a resolver or a parent proxy could still read
		// but the policy cannot: refused, never forwarded.
		// Store paths spelled as origin servers read them: each is the
		// store page /buy (sales-cutoff-store), never the host's web
		// entry (updates-cutoff).
		{name: "store-path-dot-segment", raw: "GET http://www.kaspersky.com/./buy HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", want: wantBlocked, status: 403, rule: "sales-cutoff-store"},
		{name: "store-path-double-slash", raw: "GET http://www.kaspersky.com//buy HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", want: wantBlocked, status: 403, rule: "sales-cutoff-store"},
		{name: "store-path-dot-dot", raw: "GET http://www.kaspersky.com/x/../buy HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", want: wantBlocked, status: 403, rule: "sales-cutoff-store"},
		{name: "store-path-percent-encoded", raw: "GET http://www.kaspersky.com/%62uy HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", want: wantBlocked, status: 403, rule: "sales-cutoff-store"},
		{name: "store-path-encoded-dots", raw: "GET http://www.kaspersky.com/x/%2e%2e/buy/now HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", want: wantBlocked, status: 403, rule: "sales-cutoff-store"},
		{name: "store-path-upper-case", raw: "GET http://www.kaspersky.com/BUY HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", want: wantBlocked, status: 403, rule: "sales-cutoff-store"},
		{name: "not-store-path-prefix-only", raw: "GET http://www.kaspersky.com/buyer-guide HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", want: wantBlocked, status: 403, rule: "updates-cutoff"},
		{name: "blocked-two-trailing-dots", raw: "GET http://ksn.kaspersky.com../h/bp HTTP/1.1\r\n" + hostHdr + "\r\n", want: wantBlocked, status: 400},
		{name: "blocked-connect-two-trailing-dots", method: "CONNECT", raw: connectRequest("ksn.kaspersky.com..:443"), want: wantBlocked, status: 400},
		{name: "blocked-connect-percent-encoded-dot", method: "CONNECT", raw: "CONNECT ksn%E3%80%82kaspersky.com:443 HTTP/1.1\r\nHost: www.example.test:443\r\n\r\n", want: wantBlocked, status: 400},
		{name: "blocked-percent-encoded-host", raw: "GET http://ksn%2ekaspersky.com/h/bp HTTP/1.1\r\n" + hostHdr + "\r\n", want: wantBlocked, status: 400},
		{name: "blocked-connect-empty-label", method: "CONNECT", raw: connectRequest("ksn..kaspersky.com:443"), want: wantBlocked, status: 400},
		{name: "host-header-differs-from-url", raw: "GET " + exampleTarget + "host-mismatch HTTP/1.1\r\nHost: other.example.test\r\n\r\n",
			want: wantForwarded, check: originGot("/h/host-mismatch"),
			comment: "the absolute URI wins over the Host header (RFC 9112 section 3.2.2)"},

		// Smuggling: both framings, one of them hiding a request
		// (framingCases has the cases both ports share).
		{name: "te-upper-case-cl", want: wantNoSmuggling, raw: post + "te-upper HTTP/1.1\r\n" + hostHdr +
			fmt.Sprintf("Content-Length: %d\r\n", len(clte)) + "Transfer-Encoding: CHUNKED\r\n\r\n" + clte},
		{name: "te-list", status: 501, raw: post + "te-list HTTP/1.1\r\n" + hostHdr + "Transfer-Encoding: gzip, chunked\r\n\r\n" + clte},
		{name: "te-xchunked", status: 501, raw: post + "te-x HTTP/1.1\r\n" + hostHdr +
			fmt.Sprintf("Content-Length: %d\r\n", len(clte)) + "Transfer-Encoding: xchunked\r\n\r\n" + clte},
		{name: "te-space-before-colon", status: 400, raw: post + "te-space HTTP/1.1\r\n" + hostHdr +
			fmt.Sprintf("Content-Length: %d\r\n", len(clte)) + "Transfer-Encoding : chunked\r\n\r\n" + clte},
		{name: "te-vertical-tab", status: 400, raw: post + "te-vt HTTP/1.1\r\n" + hostHdr +
			fmt.Sprintf("Content-Length: %d\r\n", len(clte)) + "Transfer-Encoding: \x0bchunked\r\n\r\n" + clte},
		{name: "cl-list", status: 400, raw: post + "cl-list HTTP/1.1\r\n" + hostHdr +
			fmt.Sprintf("Content-Length: 5, %d\r\n\r\n", len(clte)) + clte},
		{name: "cl-plus-sign", status: 400, raw: post + "cl-plus HTTP/1.1\r\n" + hostHdr + "Content-Length: +5\r\n\r\nhello"},
		{name: "cl-negative", status: 400, raw: post + "cl-neg HTTP/1.1\r\n" + hostHdr + "Content-Length: -1\r\n\r\nhello"},
		{name: "cl-hex", status: 400, raw: post + "cl-hex HTTP/1.1\r\n" + hostHdr + "Content-Length: 0x5\r\n\r\nhello"},
		{name: "cl-duplicate-equal", raw: "POST http://www.example.test/echo HTTP/1.1\r\n" + hostHdr + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
			want: wantForwarded, check: originGot("/echo"),
			comment: "equal Content-Length values are one value (RFC 9110 section 8.6)"},

		// Invalid chunked bodies: the client's fault, so a 4xx, not an
		// upstream error.
		{name: "chunk-size-not-hex", raw: "POST http://www.example.test/echo HTTP/1.1\r\n" + hostHdr + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"},
		{name: "chunk-size-overflow", raw: "POST http://www.example.test/echo HTTP/1.1\r\n" + hostHdr + "Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n"},
		{name: "chunk-size-negative", raw: "POST http://www.example.test/echo HTTP/1.1\r\n" + hostHdr + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"},
		{name: "chunk-size-0x", raw: "POST http://www.example.test/echo HTTP/1.1\r\n" + hostHdr + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"},
		{name: "chunk-data-longer-than-size", raw: "POST http://www.example.test/echo HTTP/1.1\r\n" + hostHdr + "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"},

		// Oversized headers: the limit is 64 KiB (net/http allows 4 KiB
		// of slack), and net/http answers 431.
		{name: "one-80KiB-header", raw: rawGet("big-header", "X-Big: "+strings.Repeat("a", 80<<10)+"\r\n"), status: 431},
		{name: "many-headers-80KiB", raw: rawGet("many-headers", strings.Repeat("X-Many: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 2<<10)), status: 431},
		{name: "80KiB-request-target", raw: rawGet("long-" + strings.Repeat("a", 80<<10)), status: 431},
		{name: "60KiB-header-fits", raw: rawGet("fits", "X-Big: "+strings.Repeat("a", 60<<10)+"\r\n"),
			want: wantForwarded, check: originGot("/h/fits"), comment: "just under the limit is forwarded"},

		// CR/LF injection.
		{name: "obs-fold-value", raw: rawGet("obs-fold", "X-Folded: a\r\n Host: evil.example.test\r\n"),
			want: wantForwarded, check: func(t *testing.T, got seenRequest) {
				t.Helper()
				originGot("/h/obs-fold")(t, got)
				if v := got.header.Get("X-Folded"); v != "a Host: evil.example.test" {
					t.Errorf("origin got X-Folded %q; want the folded line joined with a space", v)
				}
			},
			comment: "net/http replaces obs-fold with a space (RFC 9112 section 5.2 allows it), so no header is injected"},
		{name: "obs-fold-first-header", raw: "GET " + exampleTarget + "fold-first HTTP/1.1\r\n Host: www.example.test\r\n\r\n", status: 400},
		{name: "bare-cr-in-value", raw: rawGet("bare-cr", "X-A: a\rX-Injected: yes\r\n"), status: 400},
		{name: "bare-cr-in-request-line", raw: "GET " + exampleTarget + "bare-cr HTTP/1.1\rX-Injected: yes\r\n" + hostHdr + "\r\n", status: 400},
		{name: "nul-in-value", raw: rawGet("nul", "X-A: a\x00b\r\n"), status: 400},
		{name: "control-char-in-exampleTarget", raw: "GET " + exampleTarget + "ctl\x01x HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "space-in-header-name", raw: rawGet("name-space", "X Bad: 1\r\n"), status: 400},
		{name: "header-without-colon", raw: rawGet("no-colon", "X-No-Colon\r\n"), status: 400},
		{name: "encoded-crlf-in-path", raw: rawGet("a%0d%0aX-Injected:%20yes"),
			want: wantForwarded, check: originGot("/h/a%0d%0aX-Injected:%20yes", "X-Injected"),
			comment: "the path is forwarded still encoded: no header is injected"},

		// Bytes that are not HTTP.
		{name: "tls-client-hello", raw: tlsClientHello(tb)},
		{name: "random-binary", raw: randomBytes(8 << 10)},
		{name: "nul-bytes", raw: strings.Repeat("\x00", 1<<10) + "\r\n\r\n"},
		{name: "ssh-banner", raw: "SSH-2.0-OpenSSH_9.6\r\n\r\n", status: 400},
	}
	return append(cases, framingCases(post, hostHdr, clte, tecl)...)
}

// TestHostileInput sends each hostile case on its own connection and
// checks the answer, what the origin received, that the proxy did not
// panic, and that it still serves normal requests and tunnels afterwards.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	o := newRecordingOrigin(t)
	e := newEnv(t, envConfig{resolve: originResolves(t, o.URL)})
	panics := watchPanics(t, e, false)
	runHostileCases(t, hostileCases(t), e, o, panics,
		func(tb testing.TB, _ hostileCase) net.Conn { return e.dial(tb) },
		func(tb testing.TB) { checkServes(tb, e, testutil.WaitLimit) })
}

// runHostileCases sends each case on its own connection from dial and
// checks the answer, what the origin received and that the proxy did not
// panic; serves then checks that the proxy still serves normal requests
// the same way in.
func runHostileCases(t *testing.T, cases []hostileCase, e *env, o *recordingOrigin, panics *panicLog,
	dial func(testing.TB, hostileCase) net.Conn, serves func(testing.TB)) {
	t.Helper()
	var allUpstreamErrs []series
	for _, r := range metrics.UpstreamReasons() {
		allUpstreamErrs = append(allUpstreamErrs, upstreamErrSeries(r))
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mark, lookups := o.mark(), len(e.resolver.Lookups())
			upstreamErrs := e.snapshot(t, allUpstreamErrs...)
			conn := dial(t, tc)
			// The proxy may answer and close before it has read
			// everything (431): a failed write is not the test's
			// concern, the answer is.
			_, werr := io.WriteString(conn, tc.raw)
			most := 1
			if tc.want == wantNoSmuggling {
				most = 3
			}
			tr := converse(conn, bufio.NewReader(conn), cmp.Or(tc.method, http.MethodGet), most)
			_ = conn.Close()
			seen := o.since(mark)
			t.Logf("%s (write error: %v)", tr, werr)
			if tc.comment != "" {
				t.Logf("note: %s", tc.comment)
			}

			panics.check(t, tc.name)
			if len(tr.answers) == 0 && !tr.closed() {
				if tr.timedOut() {
					t.Errorf("no answer and no close within %v: the proxy hangs", answerWait)
				} else {
					t.Errorf("the proxy's reply is not HTTP: %v", tr.end)
				}
			}
			for _, r := range seen {
				if strings.Contains(r.uri, smuggledPath) {
					t.Errorf("origin got the hidden request %s %s", r.method, r.uri)
				}
			}
			var first answer
			if len(tr.answers) > 0 {
				first = tr.answers[0]
			}
			switch tc.want {
			case wantRejected:
				switch {
				case tc.status != 0 && first.status != tc.status:
					t.Errorf("status = %d; want %d", first.status, tc.status)
				case tc.status == 0 && len(tr.answers) > 0 && (first.status < 400 || first.status > 499):
					t.Errorf("status = %d; want a 4xx or a closed connection", first.status)
				}
				// A streaming proxy may have passed on the start of a
				// request whose body turns out to be broken; the origin
				// must then see it break off, never complete.
				if c := completeRequests(seen); len(c) != 0 {
					t.Errorf("origin got %d complete requests (first %s %s); want none", len(c), c[0].method, c[0].uri)
				}
				if got := e.resolver.Lookups()[lookups:]; len(got) != 0 {
					t.Errorf("the proxy resolved %q for a rejected request; want no lookups", got)
				}
				// The client sent garbage: nothing failed upstream.
				var none []delta
				for _, s := range allUpstreamErrs {
					none = append(none, delta{s, 0})
				}
				e.checkDeltas(t, upstreamErrs, none...)
			case wantBlocked:
				if first.status != tc.status {
					t.Errorf("status = %d; want %d", first.status, tc.status)
				}
				if want := cmp.Or(tc.rule, "updates-cutoff"); tc.status == http.StatusForbidden && first.header.Get("X-Feedgate-Rule") != want {
					t.Errorf("X-Feedgate-Rule = %q; want %q", first.header.Get("X-Feedgate-Rule"), want)
				}
				if len(seen) != 0 {
					t.Errorf("origin got %d requests (first %s %s); want none", len(seen), seen[0].method, seen[0].uri)
				}
			case wantForwarded:
				if first.status != http.StatusOK {
					t.Errorf("status = %d; want 200 from the origin", first.status)
				}
				if len(seen) != 1 {
					t.Fatalf("origin got %d requests; want 1", len(seen))
				}
				tc.check(t, seen[0])
			case wantDecided:
				if len(tr.answers) > 0 && (first.status < 100 || first.status > 599) {
					t.Errorf("status = %d; want a valid status", first.status)
				}
			case wantNoSmuggling:
				switch {
				case len(tr.answers) == 0:
				case first.status/100 == 4 || first.status == http.StatusNotImplemented:
				case first.status/100 == 2:
					if len(tr.answers) > 1 || !tr.closed() {
						t.Errorf("after answering %d to a request with both Content-Length and Transfer-Encoding, "+
							"the proxy kept the connection open (%s); want it closed (RFC 9112 section 6.1)", first.status, tr)
					}
				default:
					t.Errorf("status = %d; want a 4xx, or a 2xx and a closed connection", first.status)
				}
				if len(seen) > 1 {
					t.Errorf("origin got %d requests; want at most the outer one", len(seen))
				}
			}
			serves(t)
			panics.check(t, tc.name+" and the normal requests after it")
		})
	}
}

// The transparent listener's hostile input: requests in origin form,
// decided by their Host, and first bytes that are no request at all. The
// listener's connections were all going to 192.0.2.10, port 80 (or 443),
// which the test network connects to the recording origin (or a TLS
// origin); the names resolve there through -resolve overrides.

// hiddenOriginForm is the request smuggling cases try to hide in a body,
// as a client of the transparent listener would write it.
const hiddenOriginForm = "GET " + smuggledPath + " HTTP/1.1\r\n" + hostHdr + "\r\n"

func transparentHostileCases(tb testing.TB) []hostileCase {
	tb.Helper()
	const post = "POST /h/"
	clte := "0\r\n\r\n" + hiddenOriginForm
	tecl := chunkOf(hiddenOriginForm) + "0\r\n\r\n"
	get := func(path string, extra ...string) string {
		return "GET /h/" + path + " HTTP/1.1\r\n" + hostHdr + strings.Join(extra, "") + "\r\n"
	}
	withHost := func(path, host string) string { return "GET /h/" + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n" }
	cases := []hostileCase{
		// Malformed request lines. Those that start like a request get
		// net/http's 400; first bytes that are no HTTP method make the
		// connection a tunnel, which port 80 may not carry
		// (connect_ports), so it is closed.
		{name: "missing-version", raw: "GET /h/missing-version\r\n" + hostHdr + "\r\n", status: 400},
		{name: "http09-request", raw: "GET /h/http09\r\n\r\n", status: 400},
		{name: "garbage-method", raw: "G{}T /h/garbage-method HTTP/1.1\r\n" + hostHdr + "\r\n", comment: "not HTTP: a tunnel to port 80, refused"},
		{name: "non-ascii-method", raw: "G\xc3\x89T /h/non-ascii-method HTTP/1.1\r\n" + hostHdr + "\r\n"},
		{name: "lower-case-method", raw: "get /h/lower-method HTTP/1.1\r\n" + hostHdr + "\r\n"},
		{name: "leading-space", raw: " GET /h/leading-space HTTP/1.1\r\n" + hostHdr + "\r\n"},
		{name: "tabs-for-spaces", raw: "GET\t/h/tabs\tHTTP/1.1\r\n" + hostHdr + "\r\n"},
		{name: "two-spaces-after-method", raw: "GET  /h/two-spaces HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "lower-case-version", raw: "GET /h/lower-version http/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "version-2.0", raw: "GET /h/version-2 HTTP/2.0\r\n" + hostHdr + "\r\n", status: 505},
		{name: "http2-preface", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{name: "asterisk-form", raw: "OPTIONS * HTTP/1.1\r\n" + hostHdr + "\r\n", want: wantDecided},
		{name: "authority-form", raw: "GET www.example.test:80 HTTP/1.1\r\n" + hostHdr + "\r\n", status: 400},
		{name: "connect", method: "CONNECT", raw: connectRequest("www.example.test:443"), status: 400,
			comment: "a CONNECT sent to what the client takes for the origin: no tunnel"},
		{name: "lf-only-line-endings", raw: "GET /h/lf-only HTTP/1.1\nHost: www.example.test\n\n",
			want: wantForwarded, check: originGot("/h/lf-only")},

		// Hosts. The request goes to the original destination whatever
		// it names; the name is what is decided.
		{name: "no-host-header", raw: "GET /h/no-host HTTP/1.1\r\n\r\n", status: 400},
		{name: "two-host-headers", raw: get("two-hosts", hostHdr), status: 400},
		{name: "malformed-host-header", raw: withHost("host-header", "www.exa mple.test"), status: 400},
		{name: "host-with-userinfo", raw: withHost("userinfo", "user@www.example.test"), status: 400},
		{name: "empty-host-header", raw: withHost("empty-host", ""), want: wantForwarded,
			check: func(t *testing.T, got seenRequest) {
				t.Helper()
				if got.uri != "/h/empty-host" {
					t.Errorf("origin got request-target %q; want /h/empty-host", got.uri)
				}
			},
			comment: "no name: decided by the original destination, and sent there"},
		{name: "ip-literal-host-elsewhere", raw: withHost("ip-literal", "198.51.100.7"), want: wantForwarded,
			check: func(t *testing.T, got seenRequest) {
				t.Helper()
				if got.uri != "/h/ip-literal" || got.host != "198.51.100.7" {
					t.Errorf("origin got %s Host %q; want /h/ip-literal with the client's Host 198.51.100.7", got.uri, got.host)
				}
			},
			comment: "a name elsewhere is a forgery signal (host_verify mismatch), logged by default; the request still goes to the original destination"},
		{name: "host-header-differs-from-absolute-uri", raw: "GET http://www.example.test/h/host-mismatch HTTP/1.1\r\nHost: other.example.test\r\n\r\n",
			want: wantForwarded, check: originGot("/h/host-mismatch"), comment: "the absolute URI wins over the Host header (RFC 9112 section 3.2.2)"},

		// Attempts to get a blocked host (an update server, blocked after
		// the cut-off) past the policy.
		{name: "blocked-host", raw: withHost("bp", "dnl-01.geo.kaspersky.com"), want: wantBlocked, status: 403},
		{name: "blocked-upper-case", raw: withHost("bp", "DNL-01.GEO.KASPERSKY.COM"), want: wantBlocked, status: 403},
		{name: "blocked-trailing-dot", raw: withHost("bp", "dnl-01.geo.kaspersky.com."), want: wantBlocked, status: 403},
		{name: "blocked-with-port", raw: withHost("bp", "dnl-01.geo.kaspersky.com:80"), want: wantBlocked, status: 403},
		{name: "blocked-with-other-port", raw: withHost("bp", "dnl-01.geo.kaspersky.com:8080"), want: wantBlocked, status: 403},
		{name: "blocked-in-brackets", raw: withHost("bp", "[dnl-01.geo.kaspersky.com]"), want: wantBlocked, status: 403},
		{name: "blocked-ideographic-dot", raw: withHost("bp", "dnl-01.geo.kaspersky\u3002com"), want: wantBlocked, status: 400},
		{name: "blocked-percent-encoded-dot", raw: withHost("bp", "ksn%2ekaspersky.com"), want: wantBlocked, status: 400},
		{name: "blocked-two-trailing-dots", raw: withHost("bp", "ksn.kaspersky.com.."), want: wantBlocked, status: 400},
		{name: "blocked-empty-label", raw: withHost("bp", "ksn..kaspersky.com"), want: wantBlocked, status: 400},
		{name: "blocked-absolute-uri-decoy", raw: "GET " + blockedTarget + "bp HTTP/1.1\r\n" + hostHdr + "\r\n", want: wantBlocked, status: 403},
		{name: "blocked-behind-userinfo", raw: "GET http://www.example.test@dnl-01.geo.kaspersky.com/h/bp HTTP/1.1\r\n" + hostHdr + "\r\n",
			want: wantBlocked, status: 400},
		{name: "store-path-dot-segment", raw: "GET /./buy HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", want: wantBlocked, status: 403, rule: "sales-cutoff-store"},
		{name: "store-path-percent-encoded", raw: "GET /%62uy HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", want: wantBlocked, status: 403, rule: "sales-cutoff-store"},
		{name: "store-path-dot-dot", raw: "GET /x/../buy HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", want: wantBlocked, status: 403, rule: "sales-cutoff-store"},

		// Smuggling: both framings, one of them hiding a request
		// (framingCases has the cases both ports share).
		{name: "chunk-size-not-hex", raw: "POST /echo HTTP/1.1\r\n" + hostHdr + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"},

		// Oversized headers and injected lines.
		{name: "one-80KiB-header", raw: get("big-header", "X-Big: "+strings.Repeat("a", 80<<10)+"\r\n"), status: 431},
		{name: "80KiB-request-target", raw: get("long-" + strings.Repeat("a", 80<<10)), status: 431},
		{name: "bare-cr-in-value", raw: get("bare-cr", "X-A: a\rX-Injected: yes\r\n"), status: 400},
		{name: "nul-in-value", raw: get("nul", "X-A: a\x00b\r\n"), status: 400},
		{name: "encoded-crlf-in-path", raw: get("a%0d%0aX-Injected:%20yes"),
			want: wantForwarded, check: originGot("/h/a%0d%0aX-Injected:%20yes", "X-Injected")},

		// Bytes that are not HTTP, to port 80: a tunnel that port may not
		// carry, closed unanswered.
		{name: "tls-client-hello", raw: tlsClientHello(tb)},
		{name: "random-binary", raw: randomBytes(8 << 10)},
		{name: "nul-bytes", raw: strings.Repeat("\x00", 1<<10) + "\r\n\r\n"},
		{name: "ssh-banner", raw: "SSH-2.0-OpenSSH_9.6\r\n\r\n"},
		// And HTTP to port 443, which http_ports does not list.
		{name: "http-to-443", port: 443, raw: get("to-443"), status: 403},
	}
	return append(cases, framingCases(post, hostHdr, clte, tecl)...)
}

// TestHostileInputTransparent sends each of transparentHostileCases to
// the transparent listener and checks it as TestHostileInput checks the
// proxy port's, then that the listener still serves plain HTTP and TLS.
func TestHostileInputTransparent(t *testing.T) {
	t.Parallel()
	o := newRecordingOrigin(t)
	to := newTLSOrigin(t)
	n := newDocNet()
	n.route("192.0.2.10:80", hostPort(t, o.URL))
	n.route("192.0.2.10:443", hostPort(t, to.URL))
	// The transparent listener's HTTP servers log their panics to the
	// proxy's operational log.
	panics := &panicLog{}
	var resolve []string
	for _, host := range []string{"www.example.test", "dnl-01.geo.kaspersky.com", "www.kaspersky.com"} {
		resolve = append(resolve, host+":80:192.0.2.10", host+":443:192.0.2.10")
	}
	e := newEnv(t, envConfig{dial: n.dial, resolve: resolve, errorLog: panics})
	addrs := map[int]string{80: e.redirect(t, "192.0.2.10:80"), 443: e.redirect(t, "192.0.2.10:443")}
	runHostileCases(t, transparentHostileCases(t), e, o, panics,
		func(tb testing.TB, tc hostileCase) net.Conn { return dialTransparent(tb, addrs[cmp.Or(tc.port, 80)]) },
		func(tb testing.TB) { checkServesTransparent(tb, addrs[80], addrs[443], to.roots) })
}

// checkServesTransparent asserts that the transparent listeners still
// answer a plain-HTTP request and relay a TLS connection, each on a new
// connection, with the origin's body intact.
func checkServesTransparent(tb testing.TB, httpAddr, tlsAddr string, roots *x509.CertPool) {
	tb.Helper()
	const hello = "hello from origin\n"
	plain := dialTransparent(tb, httpAddr)
	defer plain.Close()
	normalRequest(tb, plain, "GET /hello HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n", hello)

	tc := tls.Client(dialTransparent(tb, tlsAddr), &tls.Config{ServerName: "www.example.test", RootCAs: roots})
	defer tc.Close()
	normalRequest(tb, tc, "GET /hello HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n", hello)
}

// normalRequest sends req on c and wants the origin's 200 with body.
func normalRequest(tb testing.TB, c net.Conn, req, body string) {
	tb.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		tb.Fatalf("normal request: writing: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		tb.Fatalf("normal request: reading the response: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(got) != body {
		tb.Fatalf("normal request: got %d %q (%v); want 200 %q", resp.StatusCode, got, err, body)
	}
}

// framingCases are the request-smuggling cases of both the proxy port and
// the transparent listener: requests framed by both Content-Length and
// Transfer-Encoding, one framing hiding a second request, and repeated or
// conflicting framings. post starts the request line (an absolute URI or
// an origin-form path, up to the path's last segment).
func framingCases(post, hostHdr, clte, tecl string) []hostileCase {
	return []hostileCase{
		{name: "cl-te", want: wantNoSmuggling, raw: post + "cl-te HTTP/1.1\r\n" + hostHdr +
			fmt.Sprintf("Content-Length: %d\r\n", len(clte)) + "Transfer-Encoding: chunked\r\n\r\n" + clte},
		{name: "te-cl", want: wantNoSmuggling, raw: post + "te-cl HTTP/1.1\r\n" + hostHdr +
			"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + tecl},
		{name: "te-obs-fold-cl", want: wantNoSmuggling, raw: post + "te-fold HTTP/1.1\r\n" + hostHdr +
			fmt.Sprintf("Content-Length: %d\r\n", len(clte)) + "Transfer-Encoding:\r\n chunked\r\n\r\n" + clte},
		{name: "te-on-http10-keep-alive", want: wantNoSmuggling, raw: post + "te-http10 HTTP/1.0\r\n" + hostHdr +
			"Connection: keep-alive\r\n" + fmt.Sprintf("Content-Length: %d\r\n", len(clte)) + "Transfer-Encoding: chunked\r\n\r\n" + clte},
		{name: "te-twice", status: 501, raw: post + "te-twice HTTP/1.1\r\n" + hostHdr +
			"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + clte,
			comment: "net/http answers 501 to any Transfer-Encoding but one chunked"},
		{name: "cl-conflicting", status: 400, raw: post + "cl-conflict HTTP/1.1\r\n" + hostHdr +
			"Content-Length: 5\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(clte)) + clte},
	}
}

// The hostile input of an intercepted connection: requests inside TLS that
// feedgate terminates, for the tunnel's host (www.kaspersky.com, whose
// store paths are blocked between the cut-offs and whose other paths are
// logged and forwarded), and requests that try to leave that host.

// interceptHostileCases are those requests; hidden requests, paths and
// checks are the other ways in's, with the intercepted host.
func interceptHostileCases(tb testing.TB) []hostileCase {
	tb.Helper()
	const host = "www.kaspersky.com"
	const hdr = "Host: " + host + "\r\n"
	hidden := "GET " + smuggledPath + " HTTP/1.1\r\n" + hdr + "\r\n"
	clte := "0\r\n\r\n" + hidden
	tecl := chunkOf(hidden) + "0\r\n\r\n"
	get := func(path string, extra ...string) string {
		return "GET /h/" + path + " HTTP/1.1\r\n" + hdr + strings.Join(extra, "") + "\r\n"
	}
	withHost := func(path, h string) string { return "GET /h/" + path + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n" }
	forwarded := func(name, raw, uri string, absent ...string) hostileCase {
		return hostileCase{name: name, raw: raw, want: wantForwarded, check: originGotHost(host, uri, absent...)}
	}
	store := func(name, target string) hostileCase {
		return hostileCase{name: name, raw: "GET " + target + " HTTP/1.1\r\n" + hdr + "\r\n", want: wantBlocked, status: 403, rule: "sales-cutoff-store"}
	}
	cases := []hostileCase{
		// Malformed request lines get the front end's 400 (or 505).
		{name: "missing-version", raw: "GET /h/missing-version\r\n" + hdr + "\r\n", status: 400},
		{name: "http09-request", raw: "GET /h/http09\r\n\r\n", status: 400},
		{name: "garbage-method", raw: "G{}T /h/garbage-method HTTP/1.1\r\n" + hdr + "\r\n"},
		{name: "two-spaces-after-method", raw: "GET  /h/two-spaces HTTP/1.1\r\n" + hdr + "\r\n", status: 400},
		{name: "lower-case-version", raw: "GET /h/lower-version http/1.1\r\n" + hdr + "\r\n", status: 400},
		{name: "version-2.0", raw: "GET /h/version-2 HTTP/2.0\r\n" + hdr + "\r\n", status: 505},
		{name: "http2-preface", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{name: "asterisk-form", raw: "OPTIONS * HTTP/1.1\r\n" + hdr + "\r\n", want: wantDecided},
		{name: "authority-form", raw: "GET " + host + ":443 HTTP/1.1\r\n" + hdr + "\r\n", status: 400},
		{name: "connect-inside", method: "CONNECT", raw: connectRequest(host + ":443"), status: 400,
			comment: "a tunnel inside the tunnel would carry bytes no decision sees"},
		{name: "connect-inside-to-other-host", method: "CONNECT", raw: connectRequest("www.example.test:443"), status: 421},
		forwarded("lf-only-line-endings", "GET /h/lf-only HTTP/1.1\nHost: "+host+"\n\n", "/h/lf-only"),

		// Hosts: the tunnel's host, however it is spelled, is served;
		// any other gets 421, so that a tunnel decided for one host
		// carries no request for another.
		{name: "no-host-header", raw: "GET /h/no-host HTTP/1.1\r\n\r\n", status: 400},
		{name: "two-host-headers", raw: get("two-hosts", hdr), status: 400},
		{name: "malformed-host-header", raw: withHost("bad-host", "www.kasper sky.com"), status: 400},
		{name: "other-host", raw: withHost("other-host", "www.example.test"), status: 421},
		{name: "other-host-blocked", raw: withHost("other-blocked", "dnl-01.geo.kaspersky.com"), status: 421},
		{name: "other-host-absolute-uri", raw: "GET https://www.example.test/h/other-abs HTTP/1.1\r\n" + hdr + "\r\n", status: 421,
			comment: "the absolute URI wins over the Host header (RFC 9112 section 3.2.2)"},
		{name: "empty-host-header", raw: withHost("empty-host", ""), status: 421},
		{name: "host-with-userinfo", raw: withHost("userinfo", "user@"+host), status: 400},
		{name: "absolute-uri-with-userinfo", raw: "GET https://user@" + host + "/h/abs-userinfo HTTP/1.1\r\n" + hdr + "\r\n", status: 400},
		forwarded("host-upper-case", withHost("upper", "WWW.KASPERSKY.COM"), "/h/upper"),
		forwarded("host-with-port", withHost("port", host+":443"), "/h/port"),
		forwarded("host-trailing-dot", withHost("dot", host+"."), "/h/dot"),
		forwarded("absolute-uri-same-host", "GET https://"+host+"/h/abs HTTP/1.1\r\n"+hdr+"\r\n", "/h/abs"),

		// Store paths spelled as origins read them.
		store("store-path", "/renewal-center/home"),
		store("store-path-dot-segment", "/./renewal-center/home"),
		store("store-path-dot-dot", "/x/../renewal-center/home"),
		store("store-path-percent-encoded", "/%72enewal-center/home"),
		store("store-path-double-slash", "//renewal-center//home"),
		store("store-path-with-query", "/renewal-center/home?from=hostile"),
		store("store-path-absolute-uri", "https://"+host+"/renewal-center/home"),

		// Headers.
		{name: "one-80KiB-header", raw: get("big-header", "X-Big: "+strings.Repeat("a", 80<<10)+"\r\n"), status: 431},
		{name: "bare-cr-in-value", raw: get("bare-cr", "X-A: a\rX-Injected: yes\r\n"), status: 400},
		{name: "nul-in-value", raw: get("nul", "X-A: a\x00b\r\n"), status: 400},
		{name: "space-in-header-name", raw: get("name-space", "X Bad: 1\r\n"), status: 400},
		forwarded("encoded-crlf-in-path", get("a%0d%0aX-Injected:%20yes"), "/h/a%0d%0aX-Injected:%20yes", "X-Injected"),
		{name: "chunk-size-not-hex", raw: "POST /echo HTTP/1.1\r\n" + hdr + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"},

		// Bytes that are not HTTP.
		{name: "random-binary", raw: randomBytes(8 << 10)},
		{name: "nul-bytes", raw: strings.Repeat("\x00", 1<<10) + "\r\n\r\n"},
	}
	return append(cases, framingCases("POST /h/", hdr, clte, tecl)...)
}

// TestHostileInputIntercepted sends each of interceptHostileCases inside a
// connection that feedgate intercepts (a CONNECT, then TLS with feedgate's
// leaf) and checks it as TestHostileInput checks the proxy port's, then
// that interception still serves and blocks.
func TestHostileInputIntercepted(t *testing.T) {
	t.Parallel()
	o, originRoots := newRecordingOriginTLS(t)
	ca, policy := interceptPolicy(t, "www.kaspersky.com")
	// Panics are reported by the front ends to the operational log.
	panics := &panicLog{}
	e := newEnv(t, envConfig{policy: policy, ca: ca, roots: originRoots, now: betweenCutoffs, errorLog: panics,
		resolve: []string{"www.kaspersky.com:443:" + hostPort(t, o.URL)}})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	intercepted := func(tb testing.TB) net.Conn {
		tb.Helper()
		conn := e.dial(tb)
		if _, err := io.WriteString(conn, connectRequest("www.kaspersky.com:443")); err != nil {
			tb.Fatalf("CONNECT: %v", err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != http.StatusOK {
			tb.Fatalf("CONNECT to the intercepted host: %v, %v; want 200", resp, err)
		}
		tc := tls.Client(conn, &tls.Config{ServerName: "www.kaspersky.com", RootCAs: pool, NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			tb.Fatalf("TLS handshake with feedgate's leaf: %v", err)
		}
		return tc
	}
	runHostileCases(t, interceptHostileCases(t), e, o, panics,
		func(tb testing.TB, _ hostileCase) net.Conn { return intercepted(tb) },
		func(tb testing.TB) {
			tb.Helper()
			c := intercepted(tb)
			defer c.Close()
			normalRequest(tb, c, "GET /hello HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n", "hello from origin\n")
			if _, err := io.WriteString(c, "GET /renewal-center/home HTTP/1.1\r\nHost: www.kaspersky.com\r\nConnection: close\r\n\r\n"); err != nil {
				tb.Fatalf("blocked request: writing: %v", err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusForbidden {
				tb.Fatalf("blocked request after the case: %v, %v; want 403", resp, err)
			}
		})
}
