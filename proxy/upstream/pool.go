package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Pool forwards plain-HTTP requests over pooled keep-alive connections,
// writing each request and reading its response on the calling goroutine.
// http.Transport spends two goroutines per connection and channel hand-offs
// per request; profiles under keep-alive load put that at a sixth of the
// proxy's CPU. Requests it does not handle (TLS upstreams, protocol
// upgrades, Expect: 100-continue) go to the Transport. Its fields must not
// change once it is in use.
type Pool struct {
	// Dial connects to an upstream's host:port.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ResponseHeaderTimeout bounds writing a request and reading the
	// response's headers; zero means no bound.
	ResponseHeaderTimeout time.Duration
	// IdleTimeout is how long a connection may wait in the pool.
	IdleTimeout time.Duration
	// MaxIdlePerHost bounds the idle connections kept per host:port.
	MaxIdlePerHost int
	// BodyIdle, if set, bounds the wait for each read of a response body,
	// so that an upstream that stalls mid-body cannot hold the client
	// forever.
	BodyIdle func() time.Duration

	mu     sync.Mutex
	idle   map[string][]*upConn
	reaper *time.Timer
}

type upConn struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// Handles reports whether the pool can forward req itself.
func (p *Pool) Handles(req *http.Request) bool {
	return req.URL.Scheme == "http" && req.Header.Get("Upgrade") == "" && req.Header.Get("Expect") == ""
}

func upstreamAddr(u *http.Request) string {
	host, port := u.URL.Hostname(), u.URL.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(host, port)
}

// RoundTrip sends req and returns the response. A request whose reused
// connection turns out to have been closed by the upstream while idle is
// retried once on a new connection, if it has no body.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	addr := upstreamAddr(req)
	for attempt := 0; ; attempt++ {
		uc, reused := p.get(addr)
		if uc == nil {
			c, err := p.Dial(req.Context(), "tcp", addr)
			if err != nil {
				return nil, err
			}
			uc = &upConn{conn: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 4<<10)}
		}
		resp, err := p.send(uc, req, addr)
		if err == nil {
			return resp, nil
		}
		uc.conn.Close()
		if cerr := req.Context().Err(); cerr != nil {
			return nil, cerr
		}
		if reused && attempt == 0 && (req.Body == nil || req.Body == http.NoBody) && staleConn(err) {
			continue
		}
		return nil, err
	}
}

// staleConn reports an error that an idle connection the upstream had
// already closed produces on first use.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (p *Pool) send(uc *upConn, req *http.Request, addr string) (*http.Response, error) {
	// One deadline bounds writing the request and reading the response
	// headers; the body may then take as long as it takes.
	if p.ResponseHeaderTimeout > 0 {
		uc.conn.SetDeadline(time.Now().Add(p.ResponseHeaderTimeout))
	}
	// One AfterFunc covers the whole exchange, body included: a client
	// that goes away cuts the upstream read short. pooledBody stops it.
	stop := context.AfterFunc(req.Context(), func() { uc.conn.SetDeadline(aLongTimeAgo) })
	if !writeHead(uc.bw, req) {
		if err := req.Write(uc.bw); err != nil {
			stop()
			return nil, err
		}
	}
	if err := uc.bw.Flush(); err != nil {
		stop()
		return nil, err
	}
	resp, err := readFinal(uc.br, req)
	if err != nil {
		stop()
		return nil, err
	}
	if err := req.Context().Err(); err != nil {
		// The client went away while we waited.
		stop()
		resp.Body.Close()
		return nil, err
	}
	uc.conn.SetDeadline(time.Time{})
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Handles keeps upgrades away; an unasked-for 101 is an error.
		stop()
		resp.Body.Close()
		return nil, errors.New("upstream switched protocols unasked")
	}
	reusable := !resp.Close && !req.Close
	var idle time.Duration
	if p.BodyIdle != nil {
		idle = p.BodyIdle()
	}
	resp.Body = &pooledBody{rc: resp.Body, uc: uc, pool: p, addr: addr, reusable: reusable, idle: idle, stop: stop}
	return resp, nil
}

// maxInterim bounds the interim responses read before the final one, as
// net/http's transport does.
const maxInterim = 5

// readFinal reads the response to req, skipping interim (1xx) responses,
// as net/http's transport does: 103 Early Hints, or a 100 Continue nobody
// asked for. Taken for final, one would end the exchange with an empty
// body and leave the real response in the connection, for the next
// request sent on it to read as its own.
func readFinal(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	for range maxInterim {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		resp.Body.Close() // an interim response has no body
	}
	return nil, fmt.Errorf("upstream sent more than %d interim responses", maxInterim)
}

// aLongTimeAgo is a deadline in the past, which makes a blocked read or
// write return at once.
var aLongTimeAgo = time.Unix(1, 0)

// pooledBody returns its connection to the pool when the body has been read
// to the end, and closes it if the body is abandoned early.
type pooledBody struct {
	rc       io.ReadCloser
	uc       *upConn
	pool     *Pool
	addr     string
	reusable bool
	done     bool
	stop     func() bool
	idle     time.Duration
}

func (b *pooledBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.idle > 0 {
		b.uc.conn.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.release(b.reusable)
	} else if err != nil {
		b.release(false)
	}
	return n, err
}

func (b *pooledBody) Close() error {
	if !b.done {
		b.release(false)
	}
	return nil
}

func (b *pooledBody) release(reuse bool) {
	b.done = true
	if !b.stop() {
		reuse = false // the client's context ended and poisoned the deadline
	}
	if !reuse {
		// The connection goes first: net/http's body Close reads the rest
		// of the body, to keep the connection, and an abandoned download
		// may be a gigabyte that nobody will read.
		b.uc.conn.Close()
	}
	b.rc.Close()
	if reuse {
		b.pool.put(b.addr, b.uc)
	}
}

func (p *Pool) get(addr string) (*upConn, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[addr]
	for len(list) > 0 {
		uc := list[len(list)-1]
		list = list[:len(list)-1]
		if time.Since(uc.idleSince) < p.IdleTimeout {
			p.idle[addr] = list
			return uc, true
		}
		uc.conn.Close()
	}
	delete(p.idle, addr)
	return nil, false
}

func (p *Pool) put(addr string, uc *upConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[string][]*upConn{}
	}
	if len(p.idle[addr]) >= p.MaxIdlePerHost {
		uc.conn.Close()
		return
	}
	uc.idleSince = time.Now()
	p.idle[addr] = append(p.idle[addr], uc)
	if p.reaper == nil {
		p.reaper = time.AfterFunc(p.IdleTimeout, p.reap)
	}
}

// reap closes connections idle for longer than the idle timeout; it runs
// on a timer only while the pool holds connections.
func (p *Pool) reap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, list := range p.idle {
		kept := list[:0]
		for _, uc := range list {
			if time.Since(uc.idleSince) < p.IdleTimeout {
				kept = append(kept, uc)
			} else {
				uc.conn.Close()
			}
		}
		if len(kept) == 0 {
			delete(p.idle, addr)
		} else {
			p.idle[addr] = kept
		}
	}
	if len(p.idle) > 0 {
		p.reaper.Reset(p.IdleTimeout)
	} else {
		p.reaper = nil
	}
}

// CloseIdleConnections closes every pooled connection.
func (p *Pool) CloseIdleConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, list := range p.idle {
		for _, uc := range list {
			uc.conn.Close()
		}
		delete(p.idle, addr)
	}
	if p.reaper != nil {
		p.reaper.Stop()
		p.reaper = nil
	}
}
