package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/internal/hello"
	"github.com/feedgate/feedgate/proxy/internal/origdst"
	"github.com/feedgate/feedgate/proxy/internal/sniff"
	"github.com/feedgate/feedgate/proxy/upstream"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
)

// TransparentOptions configure a transparent listener.
type TransparentOptions struct {
	// TProxy: the listener is a TPROXY socket (IP_TRANSPARENT), so a
	// connection's local address is its original destination. Otherwise
	// netfilter redirected it (REDIRECT, DNAT) and the kernel keeps the
	// original destination.
	TProxy bool
}

// ServeTransparent serves connections that the firewall redirected to ln,
// which need no client configuration, until ln is closed; it then returns
// the error Accept returned.
//
// Each connection is admitted like one on the proxy port, then its first
// bytes say what it is: a TLS ClientHello is decided by its server name
// and relayed as a tunnel (cut at transitions like a CONNECT); an HTTP/1.x
// request is decided per request by its Host and path; anything else by
// its original destination alone, with tunnel_without_sni. Whatever name
// the client sent, feedgate connects to the original destination.
func (s *Server) ServeTransparent(ln net.Listener, o TransparentOptions) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors: wait, as net/http's server
				// does, rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		go s.serveTransparentConn(c, o)
	}
}

// originalDst is where a redirected connection was going. An IPv4
// destination is returned as such whatever form it came in (v4-mapped, as
// a dual-stack socket sees it), so that it is recorded, decided and
// checked against feedgate's own listeners as the IPv4 address it is.
func (s *Server) originalDst(c net.Conn, o TransparentOptions) (netip.AddrPort, error) {
	local := addrPortOf(c.LocalAddr())
	var ap netip.AddrPort
	var err error
	switch sc, ok := c.(syscall.Conn); {
	case o.TProxy:
		ap = local
	case s.opts.OriginalDst != nil:
		ap, err = s.opts.OriginalDst(c)
	case !ok:
		err = origdst.ErrNotRedirected
	default:
		ap, err = origdst.Lookup(sc, local)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), err
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// serveTransparentConn serves one redirected connection.
func (s *Server) serveTransparentConn(c net.Conn, o TransparentOptions) {
	client := remoteAddr(c)
	// As for a request or tunnel on the proxy port: a panic costs this
	// connection, not the process. Registered first, this runs last, once
	// the deferred calls below have closed the connection, written its
	// record and given its slots back.
	defer func() {
		if p := recover(); p != nil {
			s.errLog.Error("panic serving a transparent connection", "client", client, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	// The connection holds a connection slot until it becomes a tunnel
	// or a websocket, which holds a tunnel slot instead, as a hijacked
	// CONNECT does.
	var once sync.Once
	release := func() { once.Do(func() { s.closeConn(client) }) }
	defer release()
	if rf := s.openConn(client); rf != nil {
		s.m.Rejected(rf.reason)
		_ = c.Close()
		return
	}
	if !s.transparent.add(c) {
		_ = c.Close() // shutting down
		return
	}
	// handed is set once the connection is a tunnel running on its own
	// goroutines, which close it and take it out of the set.
	handed := false
	defer func() {
		if !handed {
			_ = c.Close()
			s.transparent.remove(c)
		}
	}()

	orig, err := s.originalDst(c, o)
	if err != nil || !orig.IsValid() {
		// Someone connected to the transparent port itself: there is
		// nowhere to send the connection.
		rec := s.transparentRecord(client, netip.AddrPort{})
		s.reject(rec, invalid(0, "no original destination"))
		s.finish(rec)
		return
	}
	if s.up.IsOwnListener(orig) {
		rec := s.transparentRecord(client, orig)
		s.reject(rec, &refusal{metrics.RejectDestination, 0, "a connection to feedgate's own listener"})
		s.finish(rec)
		return
	}
	st := s.state.Load()
	// One bound for the first bytes and the whole ClientHello, as for the
	// SNI check of a CONNECT.
	deadline := time.Now().Add(st.cfg.TLS.SNITimeout)
	early, proto, err := sniff.Read(c, st.cfg.TLS.SNITimeout, hello.MaxClientHello)
	if err != nil {
		return // the client connection failed
	}
	if proto == sniff.HTTP {
		s.serveTransparentHTTP(c, early, orig, release)
		return
	}
	handed = s.serveTransparentTunnel(c, early, proto, orig, deadline, release, func() {
		_ = c.Close()
		s.transparent.remove(c)
	})
}

// transparentRecord begins the record of a transparent tunnel.
func (s *Server) transparentRecord(client netip.Addr, orig netip.AddrPort) *record {
	host := ""
	if orig.IsValid() {
		host = orig.Addr().String()
	}
	rec := s.begin(accesslog.KindTransparent, client, "", host, int(orig.Port()))
	rec.Mode, rec.OriginalDst = accesslog.ModeTransparent, orig
	return rec
}

// portsTransparent checks a redirected tunnel against connect_ports: it is
// TLS, or something feedgate cannot read, as behind a CONNECT.
var portsTransparent = targetPorts{tls: true, what: "a transparent connection"}

// serveTransparentTunnel serves a redirected connection that is not HTTP:
// its ClientHello (if it has one) is read and decided before feedgate
// connects anywhere, so that a blocked host's server never sees the
// connection; then it is relayed like a CONNECT tunnel. release gives the
// connection's slot back once it holds a tunnel slot. It returns true when
// the connection became a tunnel, which then runs on goroutines of its
// own and calls after when it is over; false when it ended here.
func (s *Server) serveTransparentTunnel(c net.Conn, early []byte, proto sniff.Protocol, orig netip.AddrPort, deadline time.Time, release, after func()) (handed bool) {
	rec := s.transparentRecord(remoteAddr(c), orig)
	defer func() {
		if !handed {
			s.finish(rec)
		}
	}()
	st := rec.st
	s.m.ActiveTransparent.Inc()
	defer func() {
		if !handed {
			s.m.ActiveTransparent.Dec()
		}
	}()
	if rf := admit(&st.cfg.Access, rec.Client, int(orig.Port()), portsTransparent); rf != nil {
		s.reject(rec, rf)
		return
	}
	in := rules.Tunnel{Target: rules.Request{Host: orig.Addr().String(), Port: int(orig.Port()), Client: rec.Client}}
	buf, name, hs := early, []byte(nil), hello.Incomplete
	if proto == sniff.TLS {
		var sc hello.Scanner
		buf, hs, _ = readHello(c, bytes.Clone(early), max(time.Until(deadline), 0), func(b []byte) hello.Status {
			var st hello.Status
			name, st = sc.ClientHelloServerName(b)
			return st
		})
		if hs != hello.Complete {
			name = nil
		}
	}
	// A connection that ends here (blocked, refused, not dialed) is
	// recorded and counted with what its first bytes said of a server
	// name, as checkHello would judge them; checkHello judges a relayed
	// one itself.
	relayed := false
	defer func() {
		if !relayed {
			result := earlySNIResult(proto, buf, hs, name)
			s.m.SNICheck(result)
			rec.SNIResult = result
		}
	}()
	tls := name != nil
	if tls {
		rec.SNI = string(name)
		rec.Host = rec.SNI
		canon, _ := hello.CanonicalSNI(name)
		in.SNI = canon
		if rf := s.verifyHost(rec, canon, newRedirected(orig)); rf != nil {
			s.reject(rec, rf)
			denyTLS(c)
			return
		}
	} else {
		in.NoSNI = true
	}
	rec.Decision = decideTunnel(st.policy, in, s.clock.Now())
	rec.Decided = true
	if rec.Decision.Action == rules.Block {
		s.count(rec)
		rec.Status = http.StatusForbidden
		rec.Closed = accesslog.ClosedBlocked
		if proto == sniff.TLS {
			denyTLS(c)
		}
		return
	}
	if rf := s.takeTunnelSlot(&st.cfg.Limits, rec.Client); rf != nil {
		s.reject(rec, rf)
		return
	}
	defer func() {
		if !handed {
			s.releaseTunnelSlot(rec.Client)
		}
	}()
	release()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.DialTimeout)
	up, err := s.up.DialTarget(ctx, orig.String())
	cancel()
	if err != nil {
		var destErr *upstream.DestinationError
		if errors.As(err, &destErr) {
			s.reject(rec, &refusal{metrics.RejectDestination, http.StatusForbidden, destErr.Error()})
			return
		}
		reason := upstreamReason(err)
		s.m.UpstreamError(reason)
		rec.Status, rec.Error = upstreamStatus(reason), reason
		return
	}
	defer func() {
		if !handed {
			_ = up.Close() // serveTunnel panicked
		}
	}()
	// The tunnel decides again on what was read (the same hello, under
	// the policy current now), and relays it first.
	relayed = true
	s.serveTunnel(rec, rules.Tunnel{Target: in.Target}, c, buf, up, "", func() {
		s.releaseTunnelSlot(rec.Client)
		s.m.ActiveTransparent.Dec()
		s.finish(rec)
		after()
	})
	return true
}

// earlySNIResult is the sni_result of a transparent tunnel that ends before
// it is relayed: what checkHello makes of the same bytes once the wait for
// them is over.
func earlySNIResult(proto sniff.Protocol, buf []byte, hs hello.Status, name []byte) string {
	switch {
	case hs == hello.Complete && name != nil:
		return metrics.SNIMatch
	case hs == hello.Complete:
		return metrics.SNINone
	case hs == hello.NotTLS, proto == sniff.Other && len(buf) > 0:
		return metrics.SNINotTLS
	}
	return metrics.SNITimeout
}

// denyTLS answers a ClientHello with a fatal access_denied alert.
func denyTLS(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(tlsAccessDenied[:])
}

// verifyHost checks the name a transparent connection sent against its
// original destination (transparent_verify), records and counts the
// result, and returns the refusal in strict mode for a name that does not
// resolve there.
func (s *Server) verifyHost(rec *record, name string, rd *redirected) *refusal {
	if name == "" {
		return nil
	}
	result := rd.verified
	if name != rd.name || result == "" {
		// The lookup bounds itself (the Dialer's timeout) when it asks
		// a resolver; -resolve and address literals answer at once.
		resolved, matches := s.up.Verify(context.Background(), name, rd.orig)
		result = metrics.VerifyMatch
		switch {
		case !resolved:
			result = metrics.VerifyUnverified
		case !matches:
			result = metrics.VerifyMismatch
		}
		rd.name, rd.verified = name, result
	}
	s.m.HostVerify(result)
	rec.HostVerify = result
	if result != metrics.VerifyMatch && rec.st.cfg.TransparentVerify == config.VerifyStrict {
		return &refusal{metrics.RejectHostVerify, http.StatusConflict,
			"the name " + name + " does not resolve to " + rd.orig.Addr().String() + ", where this connection was going"}
	}
	return nil
}

// serveTransparentHTTP serves the HTTP/1.x requests of a redirected
// connection, each decided and recorded like a request on the proxy port,
// and each sent to the connection's original destination. release gives
// the connection's slot back when a websocket takes it over (the
// websocket holds a tunnel slot), as on the proxy port.
func (s *Server) serveTransparentHTTP(c net.Conn, early []byte, orig netip.AddrPort, release func()) {
	conn := &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(early), c)}
	// Requests on one HTTP/1.x connection are served one after another,
	// so they share rd without a lock.
	rd := newRedirected(orig)
	fr := s.newFront(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveTransparentRequest(w, r, rd)
	}))
	// A policy change cuts an exchange by closing its connection.
	fr.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	fr.ConnState = func(_ net.Conn, cs http.ConnState) {
		if cs == http.StateHijacked {
			release()
		}
	}
	// It returns once the connection closed, or once a handler that
	// hijacked it (a websocket) is done with it.
	fr.ServeConn(conn)
}

// serveTransparentRequest serves one request of a transparent HTTP
// connection. A CONNECT is refused: its client takes feedgate for the
// origin, and the tunnel it asks for would be neither decided nor relayed
// as one.
func (s *Server) serveTransparentRequest(w http.ResponseWriter, r *http.Request, rd *redirected) {
	orig := rd.orig
	if r.Method != http.MethodConnect {
		s.serveRequest(w, r, accesslog.KindHTTP, rd)
		return
	}
	host, _ := requestName(r, orig)
	rec := s.begin(accesslog.KindHTTP, clientAddr(r), r.Method, host, int(orig.Port()))
	rec.Mode, rec.OriginalDst = accesslog.ModeTransparent, orig
	defer s.finish(rec)
	s.refuseMalformed(w, rec, http.StatusBadRequest, "feedgate: CONNECT on a connection to "+orig.String()+", which is no proxy", true)
}

// requestName is the name a transparent HTTP request is decided by: its
// Host (or an absolute URI's host), without the port; the original
// destination's address when it names none (an HTTP/1.0 request without
// Host), and then named is false: there is no name to verify.
func requestName(r *http.Request, orig netip.AddrPort) (name string, named bool) {
	if r.URL.IsAbs() && r.URL.Hostname() != "" {
		return r.URL.Hostname(), true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return orig.Addr().String(), false
	}
	return host, true
}

// redirected is where a transparent connection was going, with what its
// requests share.
type redirected struct {
	orig netip.AddrPort
	// origText is orig as the request URL's host, written once per
	// connection rather than per request.
	origText string
	// name and verified are the last host verification on the
	// connection: a keep-alive connection sends the same Host request
	// after request, and its destination does not change, so the name is
	// looked up again only when it changes. The mode (log or strict) is
	// read from the policy in force at each request.
	name, verified string
}

func newRedirected(orig netip.AddrPort) *redirected {
	return &redirected{orig: orig, origText: orig.String()}
}

// connSet holds the transparent listener's connections, so that shutdown
// can close those idle between requests (tunnels and requests in flight
// are in the live set).
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (cs *connSet) add(c net.Conn) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return false
	}
	if cs.conns == nil {
		cs.conns = map[net.Conn]struct{}{}
	}
	cs.conns[c] = struct{}{}
	return true
}

func (cs *connSet) remove(c net.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.conns, c)
}

// closeAll closes every connection and refuses new ones.
func (cs *connSet) closeAll() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.closed = true
	for c := range cs.conns {
		_ = c.Close()
	}
}
