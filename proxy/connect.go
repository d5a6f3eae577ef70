package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/upstream"
	"github.com/feedgate/feedgate/rules"
)

const (
	established10 = "HTTP/1.0 200 Connection established\r\n\r\n"
	established11 = "HTTP/1.1 200 Connection established\r\n\r\n"
)

// serveConnect answers a CONNECT: admission, the decision on the target,
// then a tunnel (or an intercepted tunnel) on the hijacked connection.
func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	rec := s.begin(accesslog.KindConnect, clientAddr(r), r.Method, "", 0)
	// handed is set once an established tunnel has its own goroutine,
	// which then finishes the record and releases what the tunnel holds.
	handed := false
	defer func() {
		if !handed {
			s.finish(rec)
		}
	}()
	// The target must be in authority form, host:port, and nothing else:
	// no path, no userinfo, not an origin-form path with a Host header.
	target := r.RequestURI
	host, portStr, err := net.SplitHostPort(target)
	port, perr := strconv.Atoi(portStr)
	if err != nil || host == "" || perr != nil || port <= 0 || port > 65535 || strings.ContainsAny(target, "/@?#") {
		rec.Host = target
		s.refuseMalformed(w, rec, http.StatusBadRequest, "feedgate: CONNECT needs a target of the form host:port", true)
		return
	}
	rec.Host, rec.Port = host, port
	st := rec.st
	if rf := admit(&st.cfg.Access, rec.Client, port, portsConnect); rf != nil {
		s.refuseHTTP(w, r, rec, rf)
		return
	}
	in := rules.Tunnel{Target: rules.Request{Host: host, Port: port, Client: rec.Client}}
	rec.Decision = decideTunnel(st.policy, in, s.clock.Now())
	if rec.Decision.Invalid {
		// Never tunnelled: a parent proxy or a resolver may read a name
		// that the policy cannot.
		s.refuseHTTP(w, r, rec, invalid(http.StatusBadRequest, "invalid host name in CONNECT target"))
		return
	}
	rec.Decided = true

	if rec.Decision.Action == rules.Block {
		s.count(rec)
		rec.Status = http.StatusForbidden
		b := st.blocks[rec.Decision.Rule+1][rec.Decision.Class]
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			// Not hijackable (HTTP/2): an ordinary response does.
			w.Header().Set("X-Feedgate-Rule", b.rule)
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write(b.body)
			return
		}
		// One write, so that clients that read the status line and close
		// see the whole reply.
		_, _ = conn.Write(b.connect)
		s.finish(rec) // before the linger, which may take seconds
		lingerClose(conn)
		return
	}

	// A tunnel slot is held from here until the tunnel closes.
	if rf := s.takeTunnelSlot(&st.cfg.Limits, rec.Client); rf != nil {
		s.refuseHTTP(w, r, rec, rf)
		return
	}
	defer func() {
		if !handed {
			s.releaseTunnelSlot(rec.Client)
		}
	}()
	if s.certs != nil && st.policy.Intercepts(host) {
		s.serveIntercept(w, r, rec)
		return
	}
	s.m.ActiveConnect.Inc()
	defer func() {
		if !handed {
			s.m.ActiveConnect.Dec()
		}
	}()
	// net/http cancels the request's context when it reads the client's
	// EOF, which a client that sends CONNECT and half-closes at once (nc -N)
	// causes; the tunnel must still be made and the half-close passed on.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.opts.DialTimeout)
	up, err := s.up.DialTarget(ctx, net.JoinHostPort(host, portStr))
	cancel()
	if err != nil {
		var destErr *upstream.DestinationError
		if errors.As(err, &destErr) {
			s.refuseHTTP(w, r, rec, &refusal{metrics.RejectDestination, http.StatusForbidden, destErr.Error()})
			return
		}
		reason := upstreamReason(err)
		s.m.UpstreamError(reason)
		s.errLog.Debug("upstream error", "host", r.Host, "reason", reason, "error", err)
		rec.Status, rec.Error = upstreamStatus(reason), reason
		w.Header().Set("Connection", "close")
		w.Header().Set("X-Feedgate-Error", reason)
		http.Error(w, "feedgate: "+upstreamDetail(err, reason)+" ("+r.Host+")", rec.Status)
		return
	}
	conn, early, err := takeOver(w)
	if err != nil {
		_ = up.Close()
		rec.Status = http.StatusHTTPVersionNotSupported
		http.Error(w, "feedgate: CONNECT is not supported on this connection", http.StatusHTTPVersionNotSupported)
		return
	}
	reply := established11
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		reply = established10
	}
	// The tunnel gets a goroutine of its own and the handler returns: an
	// idle tunnel then holds neither net/http's connection goroutine, with
	// the deep stack of the request it served, nor its buffered reader and
	// writers (about 14 KiB), only the two copy loops.
	handed = true
	var once sync.Once
	end := func() {
		once.Do(func() {
			s.m.ActiveConnect.Dec()
			s.releaseTunnelSlot(rec.Client)
			s.finish(rec)
		})
	}
	go func() {
		// As net/http does for a handler: a panic costs this connection,
		// not the process.
		defer func() {
			if p := recover(); p != nil {
				s.errLog.Error("panic serving a tunnel", "client", rec.Client, "host", rec.Host, "panic", p, "stack", string(debug.Stack()))
				_ = conn.Close()
				_ = up.Close()
				end()
			}
		}()
		s.serveTunnel(rec, in, conn, early, up, reply, end)
	}()
}

// takeOver hijacks the client connection of a CONNECT and returns the
// bytes the client pipelined behind it (often the TLS ClientHello) as a
// copy of their own, so that nothing of the server's connection stays
// referenced: directly from the proxy port's Front, through a buffered
// reader from any other http.ResponseWriter.
func takeOver(w http.ResponseWriter) (net.Conn, []byte, error) {
	if t, ok := w.(interface {
		TakeOver() (net.Conn, []byte, error)
	}); ok {
		return t.TakeOver()
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, err
	}
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		peeked, _ := brw.Reader.Peek(n)
		early = bytes.Clone(peeked)
	}
	return conn, early, nil
}

// serveTunnel relays a decided (allow or log) tunnel between a client
// connection and its upstream: it writes reply to the client (the CONNECT's
// 200; nothing for a connection that asked for no answer), decides the
// tunnel again on the client's first bytes (its ClientHello) and on a
// second ClientHello after a HelloRetryRequest, then copies both ways
// until both sides are done, feedgate closes it (idle, lifetime, a policy
// change) or shutdown does. early holds client bytes already read. It does
// not depend on how the connection arrived: any net.Conn with a target
// will do.
//
// It returns once the tunnel is decided and its copy loops run, each on a
// goroutine of its own with a shallow stack; done runs once, when the
// tunnel is over and its record is filled in (on whichever goroutine ends
// it). An idle tunnel so holds two small goroutines and no more: not the
// one that accepted it, read its ClientHello and decided it.
func (s *Server) serveTunnel(rec *record, in rules.Tunnel, conn net.Conn, early []byte, up net.Conn, reply string, done func()) {
	st := rec.st
	rec.Status = http.StatusOK
	t := &tunnel{client: conn, upstream: up, idle: st.cfg.Limits.TunnelIdleTimeout, in: in, recycle: s.putHelloBuf, bufs: &s.relayBufs}
	if rec.Mode == accesslog.ModeTransparent {
		t.transparent, t.prefetched = true, true
	}
	t.class.Store(int32(rec.Decision.Class))
	s.live.add(t)
	rec.live = t // the record is written before the tunnel leaves the set
	var lifetime *time.Timer
	if life := st.cfg.Limits.MaxTunnelLifetime; life > 0 {
		lifetime = time.AfterFunc(life, func() { t.lifetimeClosed.Store(true); t.close() })
	}
	if reply != "" {
		if _, err := io.WriteString(conn, reply); err != nil {
			t.close()
		}
	}
	t.run(st.counters, func() ([]byte, bool) { return s.checkHello(st, t, rec, early) },
		func(sent, received func(int64)) bool { return s.checkRetry(st, t, rec, sent, received) },
		func() {
			if lifetime != nil {
				lifetime.Stop()
			}
			s.count(rec)
			switch {
			case t.idleClosed.Load():
				s.m.TunnelClosed(metrics.TunnelIdle)
				rec.Closed = metrics.TunnelIdle
			case t.lifetimeClosed.Load():
				s.m.TunnelClosed(metrics.TunnelLifetime)
				rec.Closed = metrics.TunnelLifetime
			case t.cutBy() != nil:
				s.m.TunnelClosed(metrics.TunnelPolicyChange)
				rec.Closed, rec.CutRule = metrics.TunnelPolicyChange, t.cutBy().RuleName
			}
			rec.Sent, rec.Received = t.sent.Load(), t.received.Load()
			done()
		})
}

// tunnel relays bytes between a hijacked client connection and an upstream.
type tunnel struct {
	client, upstream net.Conn
	sent, received   atomic.Int64
	closeOnce        sync.Once
	// class is the catalog class bytes are counted under; the ClientHello
	// can change it.
	class atomic.Int32
	// mu guards what the tunnel was decided on, and the decision that cut
	// it at a policy change.
	mu      sync.Mutex
	in      rules.Tunnel
	settled bool
	cutDec  *rules.Decision
	// lifetimeClosed: max_tunnel_lifetime closed it.
	lifetimeClosed atomic.Bool
	// transparent: the tunnel came from the transparent listener, whose
	// target is an original destination address; prefetched: the bytes
	// it was given hold everything the client sent before the decision.
	transparent, prefetched bool
	// hello is set by checkHello for a tunnel that opened with a whole
	// ClientHello: the copy loop then follows the handshake through the
	// server's answer (checkRetry).
	hello *helloState
	// recycle takes back the buffer of the first bytes once they went
	// upstream (Server.putHelloBuf).
	recycle func([]byte)
	// bufs lends the copy loops their buffers (Server.relayBufs).
	bufs *relayBufs
	// idle closes the tunnel after no bytes in either direction for this
	// long; lastActive (UnixNano) is when either direction last moved.
	idle       time.Duration
	lastActive atomic.Int64
	idleClosed atomic.Bool
	// kernelMu guards the byte counts the kernel reported at the last
	// idle check, for both sockets.
	kernelMu   sync.Mutex
	kernelRcvd [2]uint64
}

// kernelSawBytes reports whether either socket received bytes since the
// last check. The other direction may be busy inside a chunk, whose
// bytes the copy loop learns of only when the chunk ends; the kernel's
// counters see them at once. When the kernel cannot tell, it answers true:
// an unknown state never closes a tunnel.
func (t *tunnel) kernelSawBytes() bool {
	c, ok1 := bytesReceived(t.client)
	u, ok2 := bytesReceived(t.upstream)
	if !ok1 || !ok2 {
		return true
	}
	t.kernelMu.Lock()
	defer t.kernelMu.Unlock()
	moved := c != t.kernelRcvd[0] || u != t.kernelRcvd[1]
	t.kernelRcvd = [2]uint64{c, u}
	return moved
}

// Close closes both sides; it implements io.Closer for the tunnel set.
func (t *tunnel) Close() error { t.close(); return nil }

func (t *tunnel) tunnelLike() bool { return true }

func (t *tunnel) redecide(p *rules.Policy, at time.Time) (rules.Decision, bool) {
	t.mu.Lock()
	in, settled := t.in, t.settled
	t.mu.Unlock()
	if !settled {
		return rules.Decision{}, false
	}
	return decideTunnel(p, in, at), true
}

// markCut notes that the policy now blocks the tunnel with d; Close then
// closes it.
func (t *tunnel) markCut(d rules.Decision) {
	t.mu.Lock()
	if t.cutDec == nil {
		t.cutDec = &d
	}
	t.mu.Unlock()
}

// cutBy returns the decision that cut the tunnel, nil if none did.
func (t *tunnel) cutBy() *rules.Decision {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cutDec
}

func (t *tunnel) close() {
	t.closeOnce.Do(func() {
		_ = t.client.Close()
		_ = t.upstream.Close()
	})
}

// run copies both directions until both are done, passing half-closes on,
// then closes the tunnel and calls end. Nothing moves until first has
// decided the tunnel on the client's first bytes (its ClientHello): not
// even a server that speaks first gets a byte to the client before a
// decision that could be block. Then the client's bytes go upstream,
// starting with what first returned.
//
// For a tunnel that opened with a TLS ClientHello, retry then follows the
// handshake through the server's first answer before the copy starts
// (a HelloRetryRequest brings a second ClientHello to decide).
//
// The checks run on the caller's goroutine; each direction then copies on
// a new goroutine, which starts with a small stack and keeps it, and run
// returns. The last of the two to finish calls end.
func (t *tunnel) run(pc *metrics.PolicyCounters, first func() ([]byte, bool), retry func(sent, received func(int64)) bool, end func()) {
	t.lastActive.Store(time.Now().UnixNano())
	probeIdleClient(t.client)
	b, ok := first()
	if !ok {
		t.close()
		end()
		return
	}
	sent := func(n int64) { t.sent.Add(n); pc.Sent(int(t.class.Load()), n) }
	received := func(n int64) { t.received.Add(n); pc.Received(int(t.class.Load()), n) }
	n, err := t.upstream.Write(b)
	sent(int64(n))
	if t.recycle != nil {
		t.recycle(b)
	}
	if err != nil || t.hello != nil && !retry(sent, received) {
		t.close()
		end()
		return
	}
	// What followed the first ClientHello went upstream: nothing of the
	// handshake stays with an idle tunnel.
	t.hello = nil
	t.lastActive.Store(time.Now().UnixNano())
	if t.idle > 0 {
		t.kernelSawBytes() // the baseline for the first idle check
	}
	var left atomic.Int32
	left.Store(2)
	over := func() {
		if left.Add(-1) == 0 {
			t.close()
			end()
		}
	}
	go func() { t.pipe(t.client, t.upstream, received); over() }()
	go func() { t.pipe(t.upstream, t.client, sent); over() }()
}

// probeIdleClient turns TCP keep-alive on for the client connection of a
// tunnel or websocket, with the probes Go's listeners would send.
// feedgate's listeners leave it off: it costs four system calls per
// connection, and plain HTTP needs none. A long-lived connection may sit
// idle for long, and a client that vanished without a FIN would hold its
// slot until the idle timeout.
func probeIdleClient(c net.Conn) {
	if ka, ok := c.(interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	}); ok {
		_ = ka.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9})
	}
}

// chunk bounds the bytes one copy moves before pipe accounts for them, so
// that byte counters move at least every MiB and the idle deadline is
// renewed no more often.
const chunk = 1 << 20

// pipe copies src to dst. At a clean end of src it half-closes dst so the
// other direction can finish; on an error it closes both.
//
// Each chunk starts with a read deadline one idle timeout away. A deadline
// that expires after some bytes moved, or while the other direction moved
// recently, only starts a new chunk: the tunnel closes when neither
// direction moved for the idle timeout.
func (t *tunnel) pipe(dst, src net.Conn, count func(int64)) {
	lr := &io.LimitedReader{R: src}
	r := newRelay(t.bufs, src)
	for {
		lr.N = chunk
		if t.idle > 0 {
			_ = src.SetReadDeadline(time.Now().Add(t.idle))
		}
		n, err := r.copyChunk(dst, lr)
		if !t.chunkDone(dst, lr, n, err, count) {
			return
		}
	}
}

// chunkDone accounts for one chunk of pipe and reports whether to copy
// another. It is a function of its own so that its locals are not on the
// stack while pipe waits.
//
//go:noinline
func (t *tunnel) chunkDone(dst net.Conn, lr *io.LimitedReader, n int64, err error, count func(int64)) bool {
	if n > 0 {
		count(n)
		t.lastActive.Store(time.Now().UnixNano())
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && t.idle > 0 {
			if n > 0 || time.Since(time.Unix(0, t.lastActive.Load())) < t.idle {
				return true
			}
			if t.kernelSawBytes() {
				t.lastActive.Store(time.Now().UnixNano())
				return true
			}
			t.idleClosed.Store(true)
			t.close()
			return false
		}
		if !errors.Is(err, net.ErrClosed) {
			t.close()
		}
		return false
	}
	if lr.N > 0 { // src reached EOF before the chunk was full
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			if cw.CloseWrite() == nil {
				return false
			}
		}
		t.close()
		return false
	}
	return true
}

// lingerClose closes a connection whose client may still be sending (a
// ClientHello pipelined behind a refused CONNECT). Closing with unread
// bytes makes the kernel send a reset, which can destroy the 403 before
// the client reads it; so half-close first and drain briefly.
func lingerClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		_ = tc.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.CopyN(io.Discard, tc, lingerMaxBytes)
	}
	_ = c.Close()
}

const (
	lingerTimeout  = 2 * time.Second
	lingerMaxBytes = 256 << 10
)
