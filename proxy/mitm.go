package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/rules"
)

// mitmHandshakeTimeout bounds the client's TLS handshake with feedgate.
const mitmHandshakeTimeout = 10 * time.Second

// closedHandshake is the record's "closed" value for an intercepted tunnel
// whose client did not complete the TLS handshake with feedgate's leaf
// certificate (a client without feedgate's CA, typically).
const closedHandshake = "tls_handshake"

// serveIntercept answers a CONNECT to a host named in [tls.intercept]: it
// terminates the client's TLS with a leaf certificate from feedgate's CA,
// then serves the HTTP requests inside. Each of them is decided with its
// path, like a plain-HTTP request, and forwarded to the CONNECT target over
// TLS that is verified against the system roots and upstream_ca.
//
// The inner HTTP server gives the intercepted connection what goproxy's own
// MITM loop lacks: header size and read timeouts and an idle timeout.
func (s *Server) serveIntercept(w http.ResponseWriter, r *http.Request, rec *record) {
	st, host, port := rec.st, rec.Host, rec.Port
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		rec.Status = http.StatusHTTPVersionNotSupported
		http.Error(w, "feedgate: CONNECT is not supported on this connection", http.StatusHTTPVersionNotSupported)
		return
	}
	s.count(rec)
	rec.Status = http.StatusOK
	reply := established11
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		reply = established10
	}
	var raw net.Conn = conn
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		raw = &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn)}
	}
	s.m.ActiveConnect.Inc()
	defer s.m.ActiveConnect.Dec()
	// The intercepted tunnel itself is live: cut when its host becomes
	// blocked, closed at max_tunnel_lifetime and at shutdown. Its idle
	// time is the inner server's, between requests.
	outer := newExchange(rules.Request{Host: host, Port: port, Client: rec.Client}, conn, nil, 0)
	outer.upgrade(nil, st.cfg.Limits.MaxTunnelLifetime)
	s.live.add(outer)
	rec.live = outer // the record is written before the tunnel leaves the set
	defer outer.stop()
	if _, err := io.WriteString(conn, reply); err != nil {
		_ = conn.Close()
		return
	}
	canon, _ := rules.CanonicalHost(host)
	leaf := s.certs.GetCertificate(canon)
	tc := tls.Server(raw, &tls.Config{
		// A leaf only for the CONNECT host: a ClientHello naming another
		// host would get a certificate for a host the policy never saw.
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "" {
				if sni, err := rules.CanonicalHost(hello.ServerName); err != nil || sni != canon {
					return nil, fmt.Errorf("SNI %q does not name the intercepted host %s", hello.ServerName, canon)
				}
			}
			return leaf(hello)
		},
		NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS12,
	})
	_ = tc.SetDeadline(time.Now().Add(mitmHandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		s.errLog.Debug("interception handshake failed", "host", host, "client", clientString(rec.Client), "error", err)
		rec.Closed = closedHandshake
		_ = conn.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	rec.SNIResult = "intercepted"
	rec.SNI = tc.ConnectionState().ServerName

	// The requests inside are served by the proxy port's front end, with
	// its limits, its error log and its client watch; the idle timeout
	// between them is the tunnels'.
	fr := s.newFront(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveInner(w, r, canon, port)
	}))
	fr.IdleTimeout = st.cfg.Limits.TunnelIdleTimeout
	// Cutting an inner exchange closes the client's TCP connection under
	// the TLS layer.
	fr.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, conn)
	}
	// It returns once the connection closed, or once a handler that
	// hijacked it (a websocket) is done with it.
	fr.ServeConn(tc)
	_ = conn.Close()
	outer.stop()
	if reason, d := outer.closedBy(); reason != "" {
		rec.Closed = reason
		if d != nil {
			rec.CutRule = d.RuleName
		}
		if reason != metrics.TunnelShutdown {
			s.m.TunnelClosed(reason)
		}
	}
}

// serveInner handles one request read inside an intercepted tunnel. Its
// target is the tunnel's host, whatever the request says: a Host header
// naming another host gets 421, so that a tunnel to one host cannot carry
// requests for another past the policy.
func (s *Server) serveInner(w http.ResponseWriter, r *http.Request, host string, port int) {
	reqHost := r.Host
	if h, _, err := net.SplitHostPort(reqHost); err == nil {
		reqHost = h
	}
	if c, err := rules.CanonicalHost(reqHost); err != nil || c != host {
		// A request that tries to leave the tunnel's host is recorded
		// like any target the policy will not read.
		rec := s.begin(accesslog.KindMITM, clientAddr(r), r.Method, reqHost, port)
		rec.Path = r.URL.Path
		defer s.finish(rec)
		s.refuseMalformed(w, rec, http.StatusMisdirectedRequest, "feedgate: this intercepted connection is for "+host+", not "+reqHost, true)
		return
	}
	if r.Method == http.MethodConnect {
		// A tunnel inside the tunnel would carry bytes that no decision
		// and no SNI check ever sees, under the outer host's decision.
		rec := s.begin(accesslog.KindMITM, clientAddr(r), r.Method, host, port)
		defer s.finish(rec)
		s.refuseMalformed(w, rec, http.StatusBadRequest, "feedgate: CONNECT inside an intercepted connection to "+host, true)
		return
	}
	r.URL.Scheme = "https"
	r.URL.Host = host
	if port != 443 {
		r.URL.Host = net.JoinHostPort(host, strconv.Itoa(port))
	}
	s.serveHTTPKind(w, r, accesslog.KindMITM)
}

// prefixConn replays bytes read before the TLS handshake (pipelined behind
// the CONNECT) ahead of the connection's own.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }
