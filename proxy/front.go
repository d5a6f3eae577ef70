package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/textproto"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Front serves HTTP/1.x on feedgate's listening sockets: the proxy port
// and the transparent listener's plain-HTTP connections. It replaces
// net/http's server there because a forward proxy pays for what that server
// does per request and per connection:
//
//   - it reads every keep-alive connection in a second goroutine while the
//     handler runs (to notice a client that went away), which costs a
//     goroutine hand-off, a failed read and two deadline changes per request;
//     Front watches the client only once an exchange has waited watchDelay
//     for its upstream;
//   - it keeps a hijacked connection's 4 KiB buffered reader and writers
//     out of its pools, so that every CONNECT leaves about 14 KiB of
//     garbage; Front takes the buffered bytes out and pools its buffers
//     again.
//
// The request is parsed by net/http's own parser (http.ReadRequest), with
// the checks net/http's server adds around it, so that feedgate reads
// requests exactly as that server did; hostile_test.go holds both to it.
type Front struct {
	// Handler serves each request.
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a request's headers, from its first
	// byte; IdleTimeout bounds the wait for a keep-alive connection's next
	// request.
	ReadHeaderTimeout, IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and headers.
	MaxHeaderBytes int
	// ErrorLog receives handler panics; nil means the log package's
	// standard logger, as for net/http's server.
	ErrorLog *log.Logger
	// ConnState, if set, is told when a connection opens (StateNew),
	// waits for a request (StateIdle), serves one (StateActive), is
	// hijacked (StateHijacked) or closes (StateClosed).
	ConnState func(net.Conn, http.ConnState)
	// ConnContext, if set, derives the context of a connection's requests.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// ClientWatchDelay is how long an exchange waits for its upstream
	// before Front starts reading the client's connection, to cancel the
	// request's context if the client goes away; 0 means watchDelay.
	ClientWatchDelay time.Duration

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*frontConn]struct{}
	closing   atomic.Bool
	// bufs are the connections' buffers: shared (the transparent
	// listener serves each connection with a Front of its own), or own.
	bufs    *frontBufs
	ownBufs frontBufs
}

// frontBufs pools the buffered readers and writers of connections.
type frontBufs struct {
	readers, writers sync.Pool
	// pends hold a response's first bytes until its length is known.
	pends sync.Pool
}

func (f *Front) pools() *frontBufs {
	if f.bufs != nil {
		return f.bufs
	}
	return &f.ownBufs
}

// watchDelay is how long an exchange waits for its upstream before Front
// starts reading the client's connection to notice that the client went
// away (and cancel the request's context), as net/http's server does for
// every request at once.
const watchDelay = 250 * time.Millisecond

// maxDrainBytes is how much of a request body the handler left unread is
// read and discarded to keep the connection (net/http's
// maxPostHandlerReadBytes).
const maxDrainBytes = 256 << 10

// pendMax is how much of a response body is held back before the headers
// are sent, so that a short body gets a Content-Length (net/http's
// bufferBeforeChunkingSize).
const pendMax = 2048

// Serve accepts connections on ln and serves each in a goroutine of its
// own. It returns http.ErrServerClosed after Shutdown or Close.
func (f *Front) Serve(ln net.Listener) error {
	if !f.track(&ln, true) {
		return http.ErrServerClosed
	}
	defer f.track(&ln, false)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if f.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: wait, as
				// net/http does, rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		// The connection is counted before the next is accepted, as
		// net/http's server does: max_connections holds for a burst.
		fc := f.newConn(c)
		go f.serveConn(fc)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (f *Front) track(ln *net.Listener, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		if f.closing.Load() {
			return false
		}
		if f.listeners == nil {
			f.listeners = make(map[*net.Listener]struct{})
		}
		f.listeners[ln] = struct{}{}
		return true
	}
	delete(f.listeners, ln)
	return true
}

// Shutdown stops accepting, closes connections as they go idle and waits
// for the rest until ctx is done. Hijacked connections are not its own:
// Server.Shutdown closes those.
func (f *Front) Shutdown(ctx context.Context) error {
	f.closing.Store(true)
	f.closeListeners()
	wait := time.Millisecond
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		if f.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			wait = min(2*wait, 500*time.Millisecond)
			t.Reset(wait)
		}
	}
}

// Close stops accepting and closes every connection at once.
func (f *Front) Close() error {
	f.closing.Store(true)
	err := f.closeListeners()
	f.mu.Lock()
	defer f.mu.Unlock()
	for fc := range f.conns {
		_ = fc.c.Close()
	}
	return err
}

func (f *Front) closeListeners() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for ln := range f.listeners {
		if err := (*ln).Close(); err != nil {
			errs = append(errs, err)
		}
		delete(f.listeners, ln)
	}
	return errors.Join(errs...)
}

// closeIdle closes the connections waiting for a request and reports
// whether none is left.
func (f *Front) closeIdle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for fc := range f.conns {
		if fc.idle.Load() {
			_ = fc.c.Close()
		}
	}
	return len(f.conns) == 0
}

func (f *Front) addConn(fc *frontConn, add bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		if f.conns == nil {
			f.conns = make(map[*frontConn]struct{})
		}
		f.conns[fc] = struct{}{}
		return
	}
	delete(f.conns, fc)
}

func (f *Front) state(c net.Conn, cs http.ConnState) {
	if f.ConnState != nil {
		f.ConnState(c, cs)
	}
}

func (f *Front) logf(format string, args ...any) {
	if f.ErrorLog != nil {
		f.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// frontConn is one client connection.
type frontConn struct {
	f  *Front
	c  net.Conn
	lr limitReader
	br *bufio.Reader
	bw *bufio.Writer
	// idle is set while the connection waits for a request: Shutdown may
	// close it then.
	idle     atomic.Bool
	hijacked bool
	remote   string
	// lastMethod allows the stray CRLF that old clients send after a
	// POST body (RFC 9112 section 2.2).
	lastMethod string
	// watch is the client watch of the current exchange (see watchDelay).
	watch clientWatch
	// cur is the response being served.
	cur *frontResponse
}

// limitReader bounds what a request's headers may read; the bound is
// lifted once they are read.
type limitReader struct {
	c      net.Conn
	remain int64
	// ahead holds a byte the client watch read while the exchange ran
	// (the start of a pipelined request).
	ahead []byte
	// head keeps what was read while a request's head was parsed:
	// http.ReadRequest drops the Host header, whose presence and form
	// net/http's server checks.
	head      []byte
	capturing bool
}

func (r *limitReader) Read(p []byte) (int, error) {
	if r.remain <= 0 {
		return 0, io.EOF
	}
	if len(p) > 0 && len(r.ahead) > 0 {
		n := copy(p, r.ahead)
		r.ahead = r.ahead[n:]
		r.remain -= int64(n)
		if r.capturing {
			r.head = append(r.head, p[:n]...)
		}
		return n, nil
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.c.Read(p)
	r.remain -= int64(n)
	if r.capturing {
		r.head = append(r.head, p[:n]...)
	}
	return n, err
}

const noLimit = 1 << 62

// ServeConn serves the requests of one connection until it closes or is
// hijacked.
func (f *Front) ServeConn(c net.Conn) {
	f.serveConn(f.newConn(c))
}

// newConn tracks c and reports it new (ConnState), which may refuse it.
func (f *Front) newConn(c net.Conn) *frontConn {
	fc := &frontConn{f: f, c: c, remote: c.RemoteAddr().String()}
	fc.lr = limitReader{c: c, remain: noLimit}
	f.addConn(fc, true)
	f.state(c, http.StateNew)
	return fc
}

func (f *Front) serveConn(fc *frontConn) {
	c := fc.c
	defer func() {
		if p := recover(); p != nil {
			// The handler did not return: its client watch may still
			// be armed, and must not fire on released buffers.
			fc.watch.disarm(fc)
			if p != http.ErrAbortHandler {
				f.logf("http: panic serving %v: %v\n%s", fc.remote, p, debug.Stack())
			}
		}
		f.addConn(fc, false)
		if fc.hijacked {
			return
		}
		fc.release()
		_ = c.Close()
		f.state(c, http.StateClosed)
	}()
	fc.br = f.getReader(&fc.lr)
	fc.bw = f.getWriter(c)
	// The connection's context cancels nothing itself: each request's
	// context is cancelled when its exchange ends. A cancelable parent
	// would allocate a set of children per connection.
	ctx := context.Background()
	if f.ConnContext != nil {
		ctx = f.ConnContext(ctx, c)
	}
	fc.serve(ctx)
}

// stackReserve is about the stack that serving a plain-HTTP request
// takes: a frame this large makes the runtime grow a new goroutine's 2 KiB
// stack to 8 KiB at once.
const stackReserve = 5 << 10

// reserveStack grows the calling goroutine's stack while it is shallow.
// The runtime grows a stack by copying it and adjusting every frame on
// it; a connection's goroutine otherwise grew twice, deep in the
// request's path (in the parser, and again in the round trip), where the
// walk over a dozen frames cost about 5 % of feedgate's CPU per new
// connection. Called once the first request has begun to arrive, it has
// three frames to walk. A tunnel's connection goroutine ends at the
// hand-off, so idle tunnels keep none of this.
//
//go:noinline
func reserveStack(i int) byte {
	var pad [stackReserve]byte
	// An index the compiler cannot know keeps the frame from being
	// optimised away.
	pad[i%len(pad)] = byte(i)
	return pad[(i+1)%len(pad)]
}

func (f *Front) getReader(r io.Reader) *bufio.Reader {
	if br, ok := f.pools().readers.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, 4<<10)
}

func (f *Front) getWriter(w io.Writer) *bufio.Writer {
	if bw, ok := f.pools().writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, 4<<10)
}

// release gives the connection's buffers back.
func (fc *frontConn) release() {
	if fc.br != nil {
		fc.br.Reset(nil)
		fc.f.pools().readers.Put(fc.br)
		fc.br = nil
	}
	if fc.bw != nil {
		fc.bw.Reset(nil)
		fc.f.pools().writers.Put(fc.bw)
		fc.bw = nil
	}
}

func (fc *frontConn) serve(ctx context.Context) {
	f := fc.f
	for first := true; ; first = false {
		fc.idle.Store(true)
		if f.closing.Load() {
			return
		}
		if !first {
			f.state(fc.c, http.StateIdle)
		}
		wait := f.IdleTimeout
		if first {
			wait = f.ReadHeaderTimeout
		}
		if wait > 0 {
			_ = fc.c.SetReadDeadline(time.Now().Add(wait))
		}
		if _, err := fc.br.Peek(1); err != nil {
			return
		}
		if first {
			// Not before: a connection that has sent nothing keeps its
			// small stack.
			reserveStack(len(fc.remote))
		}
		fc.idle.Store(false)
		if f.closing.Load() {
			return
		}
		f.state(fc.c, http.StateActive)
		w, err := fc.readRequest(ctx, first)
		if err != nil {
			fc.replyError(err)
			return
		}
		if !fc.serveOne(w) {
			return
		}
	}
}

// hostHeader counts the Host header lines of a request head (the lines
// up to the first empty one) and returns the first one's value as
// textproto reads it: trimmed, a folded continuation joined with a space.
func hostHeader(head []byte) (n int, value string) {
	cont := false // the previous line was the first Host line
	for i, first := 0, true; i < len(head); first = false {
		j := bytes.IndexByte(head[i:], '\n')
		if j < 0 {
			break // an unfinished line: not part of a parsed head
		}
		line := bytes.TrimSuffix(head[i:i+j], []byte("\r"))
		i += j + 1
		if first {
			continue
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cont {
				value = strings.TrimSpace(value + " " + strings.TrimSpace(string(line)))
			}
			continue
		}
		cont = false
		if len(line) >= 5 && bytes.EqualFold(line[:5], []byte("host:")) {
			n++
			if n == 1 {
				value, cont = textproto.TrimString(string(line[5:])), true
			}
		}
	}
	return n, value
}

// headerComplete reports whether the buffered bytes hold a whole request
// head, so that reading it cannot block.
func headerComplete(b []byte) bool {
	return bytes.Contains(b, []byte("\r\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

func (fc *frontConn) readRequest(ctx context.Context, first bool) (*frontResponse, error) {
	f := fc.f
	if fc.lastMethod == http.MethodPost {
		peek, _ := fc.br.Peek(4)
		n := 0
		for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
			n++
		}
		_, _ = fc.br.Discard(n)
	}
	// The header timeout runs from the request's first byte; a request
	// whose head is already here cannot be slow.
	buffered, _ := fc.br.Peek(fc.br.Buffered())
	complete := headerComplete(buffered)
	if !first && !complete && f.ReadHeaderTimeout > 0 {
		_ = fc.c.SetReadDeadline(time.Now().Add(f.ReadHeaderTimeout))
	}
	limit := int64(f.MaxHeaderBytes)
	if limit <= 0 {
		limit = http.DefaultMaxHeaderBytes
	}
	// As net/http: the limit plus 4 KiB of slack for the request line.
	fc.lr.remain = limit + 4096 - int64(fc.br.Buffered())
	fc.lr.head = append(fc.lr.head[:0], buffered...)
	fc.lr.capturing = true
	req, err := http.ReadRequest(fc.br)
	fc.lr.capturing = false
	hitLimit := fc.lr.remain <= 0
	fc.lr.remain = noLimit
	nHost, host := hostHeader(fc.lr.head)
	if cap(fc.lr.head) > 8<<10 {
		fc.lr.head = nil
	}
	if err != nil {
		if hitLimit {
			return nil, errHeadersTooLarge
		}
		return nil, err
	}
	fc.lastMethod = req.Method
	// HTTP/2's preface reaches the handler, as with net/http's server.
	if req.ProtoMajor != 1 && !(req.ProtoMajor == 2 && req.ProtoMinor == 0 && req.Method == "PRI" && req.RequestURI == "*") {
		return nil, frontStatusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	h2Preface := req.ProtoMajor == 2 && req.Method == "PRI" && req.RequestURI == "*"
	if req.ProtoAtLeast(1, 1) && nHost == 0 && req.Method != http.MethodConnect && !h2Preface {
		return nil, frontBadRequest("missing required Host header")
	}
	if nHost == 1 && !httpguts.ValidHostHeader(host) {
		return nil, frontBadRequest("malformed Host header")
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, frontBadRequest("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, frontBadRequest("invalid header value")
			}
		}
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	if hasBody || !complete {
		// The body is read without a deadline (uploads may be slow), as
		// net/http's server does without ReadTimeout.
		_ = fc.c.SetReadDeadline(time.Time{})
	}
	req.RemoteAddr = fc.remote
	w := &frontResponse{fc: fc, req: req, contentLength: -1}
	w.wantsClose = req.Close
	w.wants10KeepAlive = req.ProtoMajor == 1 && req.ProtoMinor == 0 && hasToken(req.Header["Connection"], "keep-alive")
	if expect := req.Header.Get("Expect"); expect != "" {
		if strings.EqualFold(expect, "100-continue") {
			if req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
				req.Body = &continueReader{rc: req.Body, w: w}
				w.canContinue = true
			}
		} else {
			return nil, frontStatusError{http.StatusExpectationFailed, ""}
		}
	}
	if hasBody {
		w.body = &frontBody{rc: req.Body, w: w}
		req.Body = w.body
	}
	w.ctx, w.cancel = context.WithCancel(ctx)
	return w, nil
}

var errHeadersTooLarge = errors.New("request headers too large")

type frontStatusError struct {
	code int
	text string
}

func (e frontStatusError) Error() string { return http.StatusText(e.code) + ": " + e.text }

type frontBadRequest string

func (e frontBadRequest) Error() string { return "bad request: " + string(e) }

// replyError answers a request that could not be read, as net/http's
// server answers it, and closes.
func (fc *frontConn) replyError(err error) {
	const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var se frontStatusError
	var br frontBadRequest
	_ = fc.c.SetWriteDeadline(time.Now().Add(time.Second))
	switch {
	case errors.Is(err, errHeadersTooLarge):
		const publicErr = "431 Request Header Fields Too Large"
		_, _ = io.WriteString(fc.c, "HTTP/1.1 "+publicErr+errorHeaders+publicErr)
		fc.closeWriteAndWait()
	case strings.HasPrefix(err.Error(), "unsupported transfer encoding") || strings.HasPrefix(err.Error(), "too many transfer encodings"):
		// net/http's unsupportedTEError, by its messages (the type is
		// not exported).
		_, _ = io.WriteString(fc.c, "HTTP/1.1 501 Not Implemented"+errorHeaders+"Unsupported transfer encoding")
	case isCommonNetReadError(err):
		// The client went away or was too slow: nothing to answer.
	case errors.As(err, &se):
		if se.code == http.StatusExpectationFailed {
			_, _ = io.WriteString(fc.c, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		text := strconv.Itoa(se.code) + " " + http.StatusText(se.code) + ": " + se.text
		_, _ = io.WriteString(fc.c, "HTTP/1.1 "+text+errorHeaders+text)
	case errors.As(err, &br):
		text := "400 Bad Request: " + string(br)
		_, _ = io.WriteString(fc.c, "HTTP/1.1 "+text+errorHeaders+text)
	default:
		_, _ = io.WriteString(fc.c, "HTTP/1.1 400 Bad Request"+errorHeaders+"400 Bad Request")
	}
}

// isCommonNetReadError is net/http's: the client went away or was too
// slow, and gets no answer.
func isCommonNetReadError(err error) bool {
	if err == io.EOF {
		return true
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return true
	}
	if oe, ok := err.(*net.OpError); ok && oe.Op == "read" {
		return true
	}
	return false
}

// closeWriteAndWait sends FIN and waits a little before the close, so that
// the client reads the reply before a reset for its unread bytes (as
// net/http's server does).
func (fc *frontConn) closeWriteAndWait() {
	if cw, ok := fc.c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	time.Sleep(500 * time.Millisecond)
}

// serveOne runs the handler for one request and finishes its response; it
// reports whether the connection serves another.
func (fc *frontConn) serveOne(w *frontResponse) bool {
	req := w.req.WithContext(w.ctx)
	w.req = req
	fc.cur = w
	defer func() { fc.cur = nil }()
	// A CONNECT is answered at once, or its tunnel takes the connection
	// over: it needs no watch.
	if (req.Body == nil || req.Body == http.NoBody) && req.Method != http.MethodConnect {
		fc.watch.arm(fc, w)
	}
	fc.f.Handler.ServeHTTP(w, req)
	fc.watch.disarm(fc)
	w.cancel()
	if fc.hijacked {
		return false
	}
	if w.body != nil {
		w.body.end()
	}
	if err := w.finish(); err != nil {
		return false
	}
	if w.closeAfter {
		if w.unreadBody {
			fc.closeWriteAndWait()
		}
		return false
	}
	return true
}

// takeOver hands the connection over with the bytes the client sent
// behind the request (a copy), and gives the buffers back.
func (fc *frontConn) takeOver() (net.Conn, []byte, error) {
	if fc.hijacked {
		return nil, nil, http.ErrHijacked
	}
	fc.watch.disarm(fc)
	fc.hijacked = true
	if w := fc.cur; w != nil {
		w.cmu.Lock()
		w.sealed = true
		w.cmu.Unlock()
	}
	// A hijacked connection is the handler's: Shutdown does not wait for it.
	fc.f.addConn(fc, false)
	_ = fc.c.SetDeadline(time.Time{})
	// The bytes the client sent behind the request are handed over; the
	// buffers go back to the pools.
	var rest []byte
	if len(fc.lr.ahead) > 0 {
		rest = append(rest, fc.lr.ahead...)
	}
	if n := fc.br.Buffered(); n > 0 {
		b, _ := fc.br.Peek(n)
		rest = append(rest, b...)
	}
	fc.release()
	fc.f.state(fc.c, http.StateHijacked)
	return fc.c, rest, nil
}

func (fc *frontConn) hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rest, err := fc.takeOver()
	if err != nil {
		return nil, nil, err
	}
	// The bytes come first in a reader of their own, buffered already
	// (callers take them from Buffered), then the connection.
	var br *bufio.Reader
	if len(rest) > 0 {
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(rest), c), len(rest))
		if _, err := br.Peek(len(rest)); err != nil {
			return nil, nil, fmt.Errorf("proxy: hijack: %w", err)
		}
	} else {
		br = bufio.NewReaderSize(c, 16)
	}
	return c, bufio.NewReadWriter(br, bufio.NewWriterSize(c, 16)), nil
}

// clientWatch notices a client that closes its connection while its
// exchange waits for the upstream: the exchange's context is cancelled,
// as net/http's server does.
type clientWatch struct {
	mu      sync.Mutex
	timer   *time.Timer
	w       *frontResponse
	running bool
	done    chan struct{}
	buf     [1]byte
}

func (cw *clientWatch) arm(fc *frontConn, w *frontResponse) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	cw.w = w
	d := cmp.Or(fc.f.ClientWatchDelay, watchDelay)
	if cw.timer == nil {
		cw.timer = time.AfterFunc(d, func() { cw.start(fc) })
		return
	}
	cw.timer.Reset(d)
}

// start reads the client's connection in the background; it runs once the
// exchange has lasted watchDelay.
func (cw *clientWatch) start(fc *frontConn) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if cw.w == nil || cw.running {
		return
	}
	if fc.br.Buffered() > 0 || len(fc.lr.ahead) > 0 {
		// Pipelined bytes are already here: the client is not gone.
		return
	}
	w := cw.w
	cw.running = true
	cw.done = make(chan struct{})
	go func() {
		defer close(cw.done)
		n, err := fc.c.Read(cw.buf[:])
		if n == 1 {
			fc.lr.ahead = append(fc.lr.ahead[:0], cw.buf[0])
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			w.clientGone.Store(true)
			w.cancel()
		}
	}()
}

// disarm stops the watch before the connection is read or handed over
// again.
func (cw *clientWatch) disarm(fc *frontConn) {
	cw.mu.Lock()
	if cw.timer != nil {
		cw.timer.Stop()
	}
	cw.w = nil
	running, done := cw.running, cw.done
	cw.running = false
	cw.mu.Unlock()
	if running {
		_ = fc.c.SetReadDeadline(time.Unix(1, 0))
		<-done
		_ = fc.c.SetReadDeadline(time.Time{})
	}
}

// frontResponse is the http.ResponseWriter of one request.
type frontResponse struct {
	fc     *frontConn
	req    *http.Request
	ctx    context.Context
	cancel context.CancelFunc
	header http.Header
	// status is the final status once WriteHeader was called; committed
	// once the head is in the connection's writer.
	status      int
	committed   bool
	chunked     bool
	noBody      bool
	closeAfter  bool
	unreadBody  bool
	canContinue bool
	// wroteCont is set once "100 Continue" went out; sealed once the
	// head did or the connection was hijacked, after which no interim
	// answer may be written. cmu orders the body's reader, which may run
	// in another goroutine (the upstream transport's), with the handler.
	cmu       sync.Mutex
	wroteCont atomic.Bool
	sealed    bool
	body      *frontBody
	// contentLength is what the handler declared (-1: none); written
	// counts body bytes.
	contentLength, written int64
	pend                   []byte
	pendBuf                *[pendMax]byte
	wantsClose             bool
	wants10KeepAlive       bool
	bodyDone               atomic.Bool
	clientGone             atomic.Bool
}

// Header makes the map on first use: a CONNECT that is answered on the
// hijacked connection never needs it.
func (w *frontResponse) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

func (w *frontResponse) WriteHeader(code int) {
	if w.fc.hijacked || w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// An informational reply goes out at once; the final one follows.
		if code == http.StatusContinue && w.wroteCont.Load() {
			return
		}
		w.writeInformational(code)
		return
	}
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64); err == nil && v >= 0 {
			w.contentLength = v
		} else {
			w.header.Del("Content-Length")
		}
	}
}

func (w *frontResponse) writeInformational(code int) {
	w.cmu.Lock()
	defer w.cmu.Unlock()
	if w.sealed {
		return
	}
	bw := w.fc.bw
	_, _ = bw.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n")
	_ = w.header.Write(bw)
	_, _ = bw.WriteString("\r\n")
	_ = bw.Flush()
	if code == http.StatusContinue {
		w.wroteCont.Store(true)
	}
}

// bodyAllowed reports whether the status may carry a body (RFC 9110
// section 6.4.1).
func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199 || status == http.StatusNoContent || status == http.StatusNotModified)
}

func (w *frontResponse) Write(p []byte) (int, error) {
	if w.fc.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.req.Method == http.MethodHead {
		// The head goes out when a GET's would: with the length only if
		// the body would have fitted in the held-back part.
		if !w.committed && w.written > pendMax {
			if err := w.commit(false); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	}
	if !w.committed {
		if w.pendBuf == nil {
			if b, ok := w.fc.f.pools().pends.Get().(*[pendMax]byte); ok {
				w.pendBuf = b
			} else {
				w.pendBuf = new([pendMax]byte)
			}
			w.pend = w.pendBuf[:0]
		}
		if len(w.pend)+len(p) <= pendMax {
			w.pend = append(w.pend, p...)
			return len(p), nil
		}
		if err := w.commit(false); err != nil {
			return 0, err
		}
	}
	return w.writeBody(p)
}

func (w *frontResponse) WriteString(s string) (int, error) {
	return w.Write([]byte(s))
}

// writeBody writes body bytes after the head, framed.
func (w *frontResponse) writeBody(p []byte) (int, error) {
	bw := w.fc.bw
	if w.chunked {
		_, _ = bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		_, _ = bw.WriteString("\r\n")
		n, err := bw.Write(p)
		if err != nil {
			return n, err
		}
		_, err = bw.WriteString("\r\n")
		return n, err
	}
	return bw.Write(p)
}

// commit writes the head into the connection's writer, and what the
// handler wrote so far; final says the handler has returned, so that the
// length of a short body is known.
func (w *frontResponse) commit(final bool) error {
	if w.committed {
		return nil
	}
	w.committed = true
	w.cmu.Lock()
	w.sealed = true
	w.cmu.Unlock()
	h := w.Header()
	req := w.req
	status := w.status
	w.noBody = !bodyAllowed(status) || req.Method == http.MethodHead
	if w.contentLength < 0 && final && bodyAllowed(status) && (req.Method != http.MethodHead || w.written > 0) {
		w.contentLength = w.written
		h.Set("Content-Length", strconv.FormatInt(w.written, 10))
	}
	if !bodyAllowed(status) {
		h.Del("Content-Length")
		h.Del("Transfer-Encoding")
	}
	if hasToken(h["Connection"], "close") || w.wantsClose {
		w.closeAfter = true
	}
	if req.ProtoMajor == 1 && req.ProtoMinor == 0 && (!w.wants10KeepAlive || w.contentLength < 0 && !w.noBody) {
		w.closeAfter = true
	}
	if w.fc.f.closing.Load() {
		w.closeAfter = true
	}
	// A request body the handler did not read, when continuing was
	// never offered to it, means closing (its bytes are still coming).
	if !w.bodyDone.Load() && req.ContentLength != 0 && w.canContinue && !w.wroteCont.Load() {
		w.closeAfter = true
	}
	h.Del("Transfer-Encoding")
	if w.contentLength < 0 && !w.noBody {
		if req.ProtoAtLeast(1, 1) {
			w.chunked = true
			h.Set("Transfer-Encoding", "chunked")
		} else {
			w.closeAfter = true
		}
	}
	switch {
	case w.closeAfter && req.ProtoAtLeast(1, 1):
		h.Set("Connection", "close")
	case w.closeAfter:
		h.Del("Connection")
	case req.ProtoMajor == 1 && req.ProtoMinor == 0:
		h.Set("Connection", "keep-alive")
	default:
		if !hasToken(h["Connection"], "upgrade") {
			h.Del("Connection")
		}
	}
	if _, ok := h["Date"]; !ok {
		var b [len(http.TimeFormat)]byte
		h["Date"] = []string{string(time.Now().UTC().AppendFormat(b[:0], http.TimeFormat))}
	}
	bw := w.fc.bw
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.WriteString(statusLine(status))
	_, _ = bw.WriteString("\r\n")
	if err := h.Write(bw); err != nil {
		return err
	}
	_, err := bw.WriteString("\r\n")
	if err != nil {
		return err
	}
	if len(w.pend) > 0 && !w.noBody {
		_, err = w.writeBody(w.pend)
	}
	w.pend = nil
	if w.pendBuf != nil {
		w.fc.f.pools().pends.Put(w.pendBuf)
		w.pendBuf = nil
	}
	return err
}

func statusLine(code int) string {
	switch code {
	case http.StatusOK:
		return "200 OK"
	case http.StatusForbidden:
		return "403 Forbidden"
	}
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	return strconv.Itoa(code) + " " + text
}

// finish completes the response after the handler returned and makes the
// connection ready for the next request.
func (w *frontResponse) finish() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.commit(true); err != nil {
		return err
	}
	bw := w.fc.bw
	if w.chunked {
		_, _ = bw.WriteString("0\r\n\r\n")
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if w.contentLength >= 0 && w.written < w.contentLength && !w.noBody {
		// The handler wrote less than it declared: the client cannot
		// tell where this response ends.
		return io.ErrShortWrite
	}
	if w.clientGone.Load() {
		return context.Canceled
	}
	// What the handler left of the request body is read (up to a bound)
	// so that the next request can be; otherwise the connection closes.
	if w.body != nil && !w.bodyDone.Load() && !w.closeAfter {
		if w.canContinue && !w.wroteCont.Load() {
			w.closeAfter, w.unreadBody = true, true
			return nil
		}
		n, err := io.CopyN(io.Discard, w.body.rc, maxDrainBytes+1)
		if n > maxDrainBytes || err != nil && err != io.EOF {
			w.closeAfter, w.unreadBody = true, true
		}
	}
	return nil
}

// Flush sends the head and what was written so far.
func (w *frontResponse) Flush() { _ = w.FlushError() }

// FlushError is Flush for http.ResponseController.
func (w *frontResponse) FlushError() error {
	if w.fc.hijacked {
		return http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.commit(false); err != nil {
		return err
	}
	return w.fc.bw.Flush()
}

// Hijack hands the connection over (CONNECT, websockets).
func (w *frontResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.fc.hijacked {
		return nil, nil, http.ErrHijacked
	}
	// A status already set (a websocket's 101) goes out first, as with
	// net/http's server.
	if w.status != 0 {
		if err := w.commit(false); err != nil {
			return nil, nil, err
		}
	}
	if w.committed {
		if err := w.fc.bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	return w.fc.hijack()
}

// TakeOver is Hijack for a caller that wants the bytes the client sent
// behind the request as a slice of its own rather than in a buffered
// reader (a CONNECT tunnel): fewer allocations per tunnel.
func (w *frontResponse) TakeOver() (net.Conn, []byte, error) {
	if w.status != 0 || w.committed {
		return nil, nil, errors.New("proxy: take over after the response began")
	}
	return w.fc.takeOver()
}

// SetReadDeadline and SetWriteDeadline serve http.ResponseController.
func (w *frontResponse) SetReadDeadline(t time.Time) error  { return w.fc.c.SetReadDeadline(t) }
func (w *frontResponse) SetWriteDeadline(t time.Time) error { return w.fc.c.SetWriteDeadline(t) }

// EnableFullDuplex serves http.ResponseController: a request body may
// be read while the response is written, always.
func (w *frontResponse) EnableFullDuplex() error { return nil }

// ReadFrom copies a response body through a pooled buffer.
func (w *frontResponse) ReadFrom(src io.Reader) (int64, error) {
	bp := streamBufs.Get().(*[]byte)
	defer streamBufs.Put(bp)
	return io.CopyBuffer(onlyWriter{w}, src, *bp)
}

type onlyWriter struct{ io.Writer }

// frontBody is the request body the handler sees. It notes when the body
// was read to its end, and end cuts off every reader once the handler has
// returned: the upstream transport may still be reading it in a goroutine
// of its own, and the connection's buffers are about to serve the next
// request or go back to the pool.
type frontBody struct {
	mu     sync.Mutex
	rc     io.ReadCloser
	w      *frontResponse
	closed bool
}

func (b *frontBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.w.bodyDone.Store(true)
	}
	return n, err
}

// Close stops the handler's reading. What is left is drained (up to a
// bound) or the connection closes when the response is done: net/http's
// body would read all of it here, in whichever goroutine closed it.
func (b *frontBody) Close() error {
	b.end()
	return nil
}

// end waits for a read in progress and refuses any later one.
func (b *frontBody) end() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// continueReader sends "100 Continue" when the handler first reads a
// body the client waits to send.
type continueReader struct {
	rc io.ReadCloser
	w  *frontResponse
}

func (r *continueReader) Read(p []byte) (int, error) {
	if w := r.w; !w.wroteCont.Load() {
		w.cmu.Lock()
		if !w.sealed && !w.wroteCont.Load() {
			w.wroteCont.Store(true)
			bw := w.fc.bw
			_, _ = bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := bw.Flush(); err != nil {
				w.cmu.Unlock()
				return 0, err
			}
		}
		w.cmu.Unlock()
	}
	return r.rc.Read(p)
}

func (r *continueReader) Close() error { return r.rc.Close() }

// hasToken reports whether a comma-separated header holds token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}
