// Package proxy is feedgate's forward proxy: everything that touches sockets.
//
// A front handler owns every request. It decides with the current policy
// before anything goes upstream; blocked requests get a pre-rendered 403.
// Plain-HTTP requests that pass are forwarded over feedgate's own pool of
// upstream connections (forward.go), or a transport it configures; goproxy
// relays websocket upgrades. CONNECT is handled here (hijack, dial,
// one-write replies and counted copy loops that hold no buffer while idle,
// relay.go), because goproxy's tunnel path drops pipelined bytes, answers
// a reject with a bare EOF and offers no byte counts without losing
// half-close.
package proxy

import (
	"bufio"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/intercept"
	"github.com/feedgate/feedgate/proxy/upstream"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
)

// Clock is the policy clock. Decisions are made for Clock.Now(), which may
// run ahead of or behind the system clock (feedgate run -at).
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once the clock has advanced
	// by d. stop cancels the call and reports whether it did.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// ContextDialer dials upstream connections for both plain HTTP and CONNECT.
type ContextDialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Options configure a Server. Zero values mean the documented defaults.
type Options struct {
	// Config is the configuration to enforce: the policy and the settings
	// around it; required. SetConfig replaces it on reload.
	Config *config.Config
	// Metrics receives counters; required.
	Metrics *metrics.Metrics
	// AccessLog receives one decision record per request, connection
	// refusal aside; nil discards them.
	AccessLog accesslog.Sink
	// ErrorLog receives operational messages; nil discards them.
	ErrorLog *slog.Logger
	// Clock is the policy clock; nil means the system clock.
	Clock Clock
	// Dialer dials upstreams; nil means an upstream.Dialer with the system
	// resolver. New never modifies it. The destination policy applies to
	// what it dials for clients: an *upstream.Dialer is used through a
	// copy whose Guard is the policy (ahead of its own Guard), which vets
	// every address before it is dialed. Any other ContextDialer has IP
	// literals vetted before the dial and every connection's RemoteAddr
	// vetted after it; a connection whose RemoteAddr is not an IP address
	// and port is closed and the dial fails. So such a dialer that
	// resolves names itself has already connected when it reached a
	// denied address (feedgate writes nothing on that connection), and one
	// that tunnels is judged by the address its connections report. Parent
	// proxies (upstream_proxy) are dialed through it without the policy.
	Dialer ContextDialer
	// RootCAs verify upstream TLS for absolute https:// requests; nil means
	// the system roots.
	RootCAs *x509.CertPool
	// DialTimeout bounds connecting to an upstream (default 10s).
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds waiting for an upstream's response
	// headers on plain HTTP (default 60s).
	ResponseHeaderTimeout time.Duration
	// Listeners are feedgate's own listening addresses; dials to them are
	// refused so the proxy cannot be made to loop into itself.
	Listeners []netip.AddrPort
	// InterceptCA signs the leaf certificates of intercepted hosts
	// ([tls.intercept]); required when the policy intercepts any.
	InterceptCA *intercept.CA
	// Inventory, if set, is told of every decided request.
	Inventory Recorder
	// OriginalDst finds where a connection on a transparent listener was
	// going; nil means the kernel's record of the redirection
	// (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST). Not used for TPROXY
	// listeners, whose local address is the original destination.
	OriginalDst func(net.Conn) (netip.AddrPort, error)
}

// Recorder keeps the client inventory: which clients use which vendor
// categories, and on which hosts a signature found them. RecordDecision is
// called once per decided request, on the request path, so it must be
// cheap.
type Recorder interface {
	RecordDecision(client netip.Addr, host string, d *rules.Decision)
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// state is everything derived from one configuration; a reload swaps it
// whole.
type state struct {
	cfg      *config.Config
	policy   *rules.Policy // cfg.Policy
	counters *metrics.PolicyCounters
	blocks   [][]*blockResponse // [rule+1][class]
}

// Server is the proxy. It is an http.Handler for the proxy listener.
type Server struct {
	opts   Options
	clock  Clock
	log    accesslog.Sink
	errLog *slog.Logger
	m      *metrics.Metrics
	certs  *intercept.LeafCache // nil without an interception CA
	// up opens every upstream connection, directly under the destination
	// policy or through the parent proxy (upstream_proxy).
	up    *upstream.Router
	gp    *goproxy.ProxyHttpServer
	tr    *http.Transport
	pool  *upstream.Pool
	state atomic.Pointer[state]
	live  liveSet
	// conns counts client connections the HTTP server holds (hijacked ones
	// leave it); tunnelSlots counts CONNECTs and websockets from admission
	// to close; perClient counts both per client address.
	conns, tunnelSlots atomic.Int64
	perClient          clientConns
	// idle sweeps open exchanges for tunnel_idle_timeout.
	idle idleSweeper
	// transparent holds the transparent listener's connections.
	transparent connSet
	// gen moves at every policy swap and transition recheck, so that a
	// tunnel settling its decision meanwhile can tell it raced one;
	// recheckAt is the instant (UnixNano) of the last transition recheck.
	gen       atomic.Uint64
	recheckAt atomic.Int64
	// recheck is the one timer armed for the policy's next transition.
	recheck struct {
		sync.Mutex
		stop   func() bool
		closed bool
	}
	// helloBufs are the buffers a tunnel's handshake is read into; they
	// go back once relayed, so that opening a tunnel leaves little garbage.
	helloBufs sync.Pool
	// relayBufs are the buffers tunnels copy through while bytes move.
	relayBufs relayBufs
	// frontBufs are the buffers of the HTTP/1.x connections Front serves.
	frontBufs frontBufs
}

// New builds a Server.
func New(opts Options) (*Server, error) {
	if opts.Config == nil || opts.Metrics == nil {
		return nil, errors.New("proxy: Options.Config and Options.Metrics are required")
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.ResponseHeaderTimeout == 0 {
		opts.ResponseHeaderTimeout = 60 * time.Second
	}
	discard := slog.New(slog.DiscardHandler)
	s := &Server{opts: opts, clock: opts.Clock, log: opts.AccessLog, errLog: opts.ErrorLog, m: opts.Metrics}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	if s.log == nil {
		s.log = accesslog.Discard{}
	}
	if s.errLog == nil {
		s.errLog = discard
	}
	if opts.InterceptCA != nil {
		s.certs = intercept.NewLeafCache(opts.InterceptCA)
	} else if len(opts.Config.Policy.InterceptHosts) > 0 {
		return nil, errors.New("proxy: the policy intercepts TLS ([tls.intercept]) but no CA was loaded")
	}
	// The parent proxy is chosen once; deny_private follows every policy
	// swap.
	up, err := upstream.New(upstream.Options{
		Dialer:      opts.Dialer,
		DialTimeout: opts.DialTimeout,
		Parent:      opts.Config.Upstream,
		Listeners:   opts.Listeners,
		DenyPrivate: func() bool { return s.state.Load().cfg.Access.DenyPrivate },
		ErrorLog:    s.errLog,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	s.up = up
	s.gp = s.newGoproxy()
	s.SetConfig(opts.Config)
	return s, nil
}

// SetConfig makes c the enforced configuration: its policy, access rules,
// limits and tunnel settings (the sections that reload; the others were
// read by New). Requests in flight finish under the policy they started
// with.
//
// Open tunnels are decided again under c's policy at once, and again
// whenever one of its rule windows opens or closes: those whose answer
// became block are closed (unless cut_tunnels is off).
func (s *Server) SetConfig(c *config.Config) {
	p := c.Policy
	st := &state{cfg: c, policy: p, counters: s.m.ForPolicy(p), blocks: renderBlocks(p)}
	s.state.Store(st)
	s.gen.Add(1)
	s.recheckTunnels(st, s.clock.Now())
	s.scheduleRecheck(st)
}

// Config returns the enforced configuration.
func (s *Server) Config() *config.Config { return s.state.Load().cfg }

// Policy returns the enforced policy.
func (s *Server) Policy() *rules.Policy { return s.state.Load().policy }

func (s *Server) newGoproxy() *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	// Nothing comes from the environment: no HTTP(S)_PROXY for CONNECT or
	// for the transport. Upstream TLS is verified.
	gp.ConnectDial = nil
	gp.ConnectDialWithReq = nil
	// Bound resolving and connecting for plain HTTP as for CONNECT,
	// whatever dialer was injected.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
		defer cancel()
		return s.up.DialHTTP(ctx, network, addr)
	}
	s.pool = &upstream.Pool{Dial: dial, ResponseHeaderTimeout: s.opts.ResponseHeaderTimeout,
		IdleTimeout: 90 * time.Second, MaxIdlePerHost: 64,
		BodyIdle: func() time.Duration { return s.state.Load().cfg.Limits.TunnelIdleTimeout }}
	tr := &http.Transport{
		// Only upstream_proxy decides on a parent; the environment counts
		// only when it says "env".
		Proxy: s.up.ParentFor,
		// net/http dials on goroutines of its own, where a panic in the
		// dialer (feedgate's resolution, destination policy and parents)
		// would end the process: it fails that one dial instead.
		DialContext:           s.containPanics(dial),
		TLSClientConfig:       tlsConfig(s.opts.RootCAs),
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: s.opts.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64,
		// The client negotiates compression with the origin end to end.
		DisableCompression: true,
	}
	gp.Tr = tr
	s.tr = tr
	// Every upstream round trip goes through upstream(), which watches the
	// response body for failures after the headers arrived.
	rt := goproxy.RoundTripperFunc(func(req *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
		return s.upstream(tr, req)
	})
	gp.OnRequest().DoFunc(func(req *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		ctx.RoundTripper = rt
		return req, nil
	})
	gp.KeepAcceptEncoding = true
	gp.Verbose = false
	gp.Logger = log.New(slogWriter{s.errLog}, "", 0)
	gp.NonproxyHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "feedgate is a forward proxy: send absolute-URI requests or CONNECT", http.StatusBadRequest)
	})
	gp.OnResponse().DoFunc(s.onResponse)
	return gp
}

// containPanics turns a panic in dial into an error for that dial, logged
// with its stack.
func (s *Server) containPanics(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		defer func() {
			if p := recover(); p != nil {
				s.errLog.Error("panic dialing upstream", "address", addr, "panic", p, "stack", string(debug.Stack()))
				c, err = nil, fmt.Errorf("dialing %s: panic: %v", addr, p)
			}
		}()
		return dial(ctx, network, addr)
	}
}

// slogWriter routes goproxy's own log lines to the operational log at debug
// level: they are per-connection noise, not decisions.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("goproxy", "message", strings.TrimSpace(string(p)))
	return len(p), nil
}

// errorWriter routes the front end's own log lines (a handler's panic,
// with its stack) to the operational log as errors: each is a bug that
// cost a client its connection.
type errorWriter struct{ l *slog.Logger }

func (w errorWriter) Write(p []byte) (int, error) {
	w.l.Error("http server", "message", strings.TrimSpace(string(p)))
	return len(p), nil
}

type recordKey struct{}

// upstream performs one round trip and wraps the response body so that a
// failure while it is read (an upstream reset mid-body) is counted and
// recorded, and so that the bytes of an upgraded (websocket) connection are
// counted.
func (s *Server) upstream(tr *http.Transport, req *http.Request) (*http.Response, error) {
	var resp *http.Response
	var err error
	if !s.up.HasParent() && s.pool.Handles(req) {
		resp, err = s.pool.RoundTrip(req)
	} else {
		resp, err = tr.RoundTrip(req)
	}
	if err != nil {
		return nil, err
	}
	rec, ok := req.Context().Value(recordKey{}).(*record)
	if !ok {
		return resp, nil
	}
	// A body of unknown length (chunked or closed-delimited) may be a
	// stream: relay each piece as it comes, as httputil.ReverseProxy
	// does, rather than when a buffer fills.
	rec.streamed = resp.ContentLength < 0
	if rwc, isRW := resp.Body.(io.ReadWriteCloser); isRW && resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &upgradedBody{ReadWriteCloser: rwc, rec: rec}
		if rec.ex != nil {
			rec.ex.upgrade(rwc, s.state.Load().cfg.Limits.MaxTunnelLifetime)
		}
	} else {
		resp.Body = &watchedBody{rc: resp.Body, rec: rec, s: s}
	}
	return resp, nil
}

// watchedBody reports a response body that fails before its end.
type watchedBody struct {
	rc  io.ReadCloser
	rec *record
	s   *Server
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 && b.rec.ex != nil {
		b.rec.ex.touch()
	}
	if err != nil && err != io.EOF && b.rec.Error == "" && !cutShort(b.rec.ex.closedReason()) {
		reason := upstreamReason(err)
		b.rec.Error = reason
		b.s.m.UpstreamError(reason)
	}
	return n, err
}

func (b *watchedBody) Close() error { return b.rc.Close() }

// cutShort reports an exchange feedgate ended for a reason other than a
// stall: the body read it failed is not an upstream error.
func cutShort(reason string) bool { return reason != "" && reason != metrics.TunnelIdle }

// upgradedBody counts the bytes of a switched-protocols connection; goproxy
// copies both directions through it.
type upgradedBody struct {
	io.ReadWriteCloser
	rec *record
}

func (b *upgradedBody) Read(p []byte) (int, error) {
	n, err := b.ReadWriteCloser.Read(p)
	b.rec.upgradedReceived.Add(int64(n))
	if n > 0 && b.rec.ex != nil {
		b.rec.ex.touch()
	}
	return n, err
}

func (b *upgradedBody) Write(p []byte) (int, error) {
	n, err := b.ReadWriteCloser.Write(p)
	b.rec.upgradedSent.Add(int64(n))
	if n > 0 && b.rec.ex != nil {
		b.rec.ex.touch()
	}
	return n, err
}

// onResponse replaces goproxy's error reply (a 500 whose body is the raw
// error) with a 502/504 that names only the failure class.
func (s *Server) onResponse(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
	if resp != nil && framedAmbiguously(ctx.Req) {
		closeAfterChunked(resp.Header)
	}
	if resp != nil || ctx.Error == nil {
		return resp
	}
	return s.failed(ctx.Req, ctx.Error)
}

// failed is the reply to a request whose round trip failed with err, and
// notes the failure in its record.
func (s *Server) failed(req *http.Request, err error) *http.Response {
	rec, _ := req.Context().Value(recordKey{}).(*record)
	if rec != nil && rec.clientErr.Load() {
		resp := goproxy.NewResponse(req, goproxy.ContentTypeText, http.StatusBadRequest,
			"feedgate: malformed request body\n")
		resp.Close = true
		return resp
	}
	var destErr *upstream.DestinationError
	if errors.As(err, &destErr) {
		s.m.Rejected(metrics.RejectDestination)
		if rec != nil {
			rec.Rejected = metrics.RejectDestination
		}
		resp := goproxy.NewResponse(req, goproxy.ContentTypeText, http.StatusForbidden,
			"feedgate: request refused: "+destErr.Error()+"\n")
		resp.Header.Set("X-Feedgate-Reason", metrics.RejectDestination)
		return resp
	}
	if req.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away before the upstream answered: not an
		// upstream failure. 499 is the usual log status for it.
		if rec != nil {
			rec.clientGone = true
		}
		return errorResponse(req, metrics.ReasonOther, "the client closed the request")
	}
	reason := upstreamReason(err)
	s.m.UpstreamError(reason)
	if rec != nil {
		rec.Error = reason
	}
	s.errLog.Debug("upstream error", "host", req.URL.Host, "reason", reason, "error", err)
	return errorResponse(req, reason, upstreamDetail(err, reason))
}

// closeAfterChunked closes the client connection after a response to a
// chunked request. A request that came with both Content-Length and
// Transfer-Encoding (net/http drops the Content-Length, as RFC 9112 6.3
// says, before we see it) may be a smuggling attempt that a device in front
// of feedgate framed differently; not reading another request from that
// connection leaves nothing to smuggle.
func closeAfterChunked(h http.Header) { h.Set("Connection", "close") }

// framedAmbiguously reports a request after which the connection is
// closed: a chunked one (see closeAfterChunked), or an HTTP/1.0 one with a
// body, for which net/http ignores any Transfer-Encoding and frames by
// Content-Length where another parser may not.
func framedAmbiguously(r *http.Request) bool {
	return len(r.TransferEncoding) > 0 || r.ProtoMajor == 1 && r.ProtoMinor == 0 && r.ContentLength != 0
}

func errorResponse(req *http.Request, reason, message string) *http.Response {
	status := upstreamStatus(reason)
	body := "feedgate: " + message + " (" + req.URL.Host + ")\n"
	resp := goproxy.NewResponse(req, goproxy.ContentTypeText, status, body)
	resp.Header.Set("X-Feedgate-Error", reason)
	return resp
}

// ServeHTTP implements http.Handler for the proxy listener.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		s.serveConnect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Hostname() == "" || r.URL.Scheme != "http" && r.URL.Scheme != "https" {
		rec := s.begin(accesslog.KindHTTP, clientAddr(r), r.Method, r.URL.Hostname(), 0)
		defer s.finish(rec)
		if !r.URL.IsAbs() || r.URL.Hostname() == "" {
			s.refuseMalformed(w, rec, http.StatusBadRequest, "feedgate is a forward proxy: send absolute-URI requests or CONNECT", false)
		} else {
			s.refuseMalformed(w, rec, http.StatusBadRequest, "feedgate: unsupported URL scheme "+strconv.Quote(r.URL.Scheme), false)
		}
		return
	}
	s.serveHTTPKind(w, r, accesslog.KindHTTP)
}

func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// serveHTTPKind decides and forwards an absolute-URI request: a plain
// one (kind http) or one read inside an intercepted tunnel (kind mitm).
func (s *Server) serveHTTPKind(w http.ResponseWriter, r *http.Request, kind string) {
	s.serveRequest(w, r, kind, nil)
}

// serveRequest decides and forwards one HTTP request. rd is the
// destination of a request on the transparent listener, nil on the proxy
// port: such a request is decided by the name in its Host, like
// any other, but it is always sent to orig, never to where that name
// resolves (routing by Host would let a client reach anything:
// CVE-2009-0801).
func (s *Server) serveRequest(w http.ResponseWriter, r *http.Request, kind string, rd *redirected) {
	host := r.URL.Hostname()
	port := 80
	ports := portsPlainHTTP
	if r.URL.Scheme == "https" {
		port, ports = 443, portsHTTPS
	}
	named := false
	if rd != nil {
		host, named = requestName(r, rd.orig)
		r.URL.Scheme, r.URL.Host = "http", rd.origText
	}
	rec := s.begin(kind, clientAddr(r), r.Method, host, port)
	rec.Path = r.URL.Path
	if rd != nil {
		rec.Mode, rec.OriginalDst = accesslog.ModeTransparent, rd.orig
	}
	defer s.finish(rec)
	if ps := r.URL.Port(); ps != "" {
		p, err := strconv.Atoi(ps)
		if err != nil || p <= 0 || p > 65535 {
			rec.Port = 0
			s.refuseMalformed(w, rec, http.StatusBadRequest, "feedgate: invalid port in request URL", false)
			return
		}
		port, rec.Port = p, p
	}
	st := rec.st
	if rf := admit(&st.cfg.Access, rec.Client, port, ports); rf != nil {
		s.refuseHTTP(w, r, rec, rf)
		return
	}
	// Never forwarded: a name or path the policy cannot read may still be
	// one that a resolver, a parent proxy or the origin would. Userinfo
	// (RFC 9110 section 4.2.4) is a classic way to make one host look like
	// another.
	if r.URL.User != nil {
		s.refuseHTTP(w, r, rec, invalid(http.StatusBadRequest, "request target with userinfo (user@host)"))
		return
	}
	// The path is decided (and logged) as origin servers read it: dot
	// segments removed, escapes decoded, slashes merged.
	path, err := rules.NormalizePath(cmp.Or(r.URL.Path, "/"))
	if err != nil {
		s.refuseHTTP(w, r, rec, invalid(http.StatusBadRequest, "invalid path in request URL"))
		return
	}
	rec.Path = path
	// The method matters to signatures that name methods; the same
	// request is decided again at a policy change (see live.go).
	req := rules.Request{Method: r.Method, Host: host, Port: port, Path: path, Client: rec.Client, Time: s.clock.Now()}
	rec.Decision = st.policy.Decide(req)
	if rec.Decision.Invalid {
		// The path was normal; the host has no canonical form.
		s.refuseHTTP(w, r, rec, invalid(http.StatusBadRequest, "invalid host name in request URL"))
		return
	}
	// The name a transparent request sent is checked against where its
	// connection was going: only a name the policy could read, which
	// the resolver may then see.
	if named {
		if rf := s.verifyHost(rec, host, rd); rf != nil {
			s.refuseHTTP(w, r, rec, rf)
			return
		}
	}
	rec.Decided = true
	s.count(rec)

	if rec.Decision.Action == rules.Block {
		b := st.blocks[rec.Decision.Rule+1][rec.Decision.Class]
		h := w.Header()
		if framedAmbiguously(r) {
			closeAfterChunked(h)
		}
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Content-Length", strconv.Itoa(len(b.body)))
		h.Set("X-Feedgate-Rule", b.rule)
		if sig := rec.Decision.Signature; sig != "" {
			// The host is not the vendor's: say what in the path made
			// the request the vendor's.
			h.Set("X-Feedgate-Signature", sig)
		}
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write(b.body)
		rec.Status = http.StatusForbidden
		return
	}

	removeHopHeaders(r.Header)
	// Only a websocket upgrade keeps its Upgrade header. It will become a
	// long-lived connection: it holds a tunnel slot, like a CONNECT.
	if r.Header.Get("Upgrade") != "" {
		if rf := s.takeTunnelSlot(&st.cfg.Limits, rec.Client); rf != nil {
			s.refuseHTTP(w, r, rec, rf)
			return
		}
		defer s.releaseTunnelSlot(rec.Client)
	}
	s.m.ActiveHTTP.Inc()
	defer s.m.ActiveHTTP.Dec()
	// Connection: close is hop-by-hop: the client's wish to close its own
	// connection must not close the pooled connection upstream.
	r.Close = false
	addVia(r.Header, r)

	// From here the exchange is live: a policy change can cut it, and it
	// closes after the idle timeout without a byte either way, whichever
	// forwarding path it takes.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ex := newExchange(req, connFrom(r.Context()), cancel, st.cfg.Limits.TunnelIdleTimeout)
	rec.ex = ex
	s.live.add(ex)
	rec.live = ex // the record is written before the exchange leaves the set
	s.idle.watch(&s.live)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{rc: r.Body, rec: rec}
	}
	cw := &countingWriter{ResponseWriter: w, ex: ex, rec: rec}
	fr := r.WithContext(context.WithValue(ctx, recordKey{}, rec))
	if fr.Header.Get("Upgrade") != "" {
		s.gp.ServeHTTP(cw, fr)
	} else {
		s.forward(cw, fr)
	}
	ex.stop()
	if cw.hijacked != nil {
		// goproxy returns from a websocket as soon as one side ends but
		// never closes the client side; do it, so the client sees EOF.
		_ = cw.hijacked.Close()
	}
	rec.Status, rec.Received = cw.status, cw.n+rec.upgradedReceived.Load()
	if rec.clientGone {
		rec.Status = accesslog.StatusClientClosed
	}
	if reason, d := ex.closedBy(); reason != "" {
		// feedgate closed it: not a client that went away.
		rec.Closed, rec.clientGone = reason, false
		if d != nil {
			rec.CutRule = d.RuleName
		}
		// Shutdown is counted by closeAll; a plain exchange that
		// stalled is an upstream timeout (counted as it failed), not a
		// tunnel.
		if reason != metrics.TunnelShutdown && (reason != metrics.TunnelIdle || ex.tunnelLike()) {
			s.m.TunnelClosed(reason)
		}
		if cw.status == 0 || rec.Status == accesslog.StatusClientClosed {
			rec.Status = closedStatus(reason)
		}
	}
	rec.Sent += rec.bodySent.Load() + rec.upgradedSent.Load()
	if rec.Status == 0 {
		rec.Status = http.StatusOK
	}
	st.counters.Sent(rec.Decision.Class, rec.Sent)
	st.counters.Received(rec.Decision.Class, rec.Received)
}

// closedStatus is the logged status of an exchange feedgate closed before
// any response reached the client.
func closedStatus(reason string) int {
	switch reason {
	case metrics.TunnelPolicyChange:
		return http.StatusForbidden
	case metrics.TunnelIdle:
		return http.StatusGatewayTimeout
	}
	return http.StatusServiceUnavailable
}

// hopHeaders are removed before forwarding (RFC 9110 section 7.6.1), with
// the proxy-specific ones clients send to us.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" && !strings.EqualFold(name, "upgrade") {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		if name == "Connection" || name == "Upgrade" {
			// Keep a websocket upgrade intact: net/http's transport
			// needs both to switch protocols.
			if strings.EqualFold(h.Get("Upgrade"), "websocket") {
				continue
			}
		}
		h.Del(name)
	}
}

func addVia(h http.Header, r *http.Request) {
	h.Add("Via", strconv.Itoa(r.ProtoMajor)+"."+strconv.Itoa(r.ProtoMinor)+" feedgate")
}

// countingWriter records the status and counts body bytes written to the
// client. It unwraps for http.ResponseController and hijacks for websocket
// upgrades.
type countingWriter struct {
	http.ResponseWriter
	status   int
	n        int64
	hijacked net.Conn
	ex       *exchange
	rec      *record
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// ReadFrom lets io.Copy (goproxy's body copy) use the server's pooled
// buffers instead of allocating 32 KiB per response.
func (w *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if w.rec != nil && w.rec.streamed {
		n, err = copyFlushing(w.ResponseWriter, src)
	} else if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
	}
	w.n += n
	return n, err
}

// streamBufs are the buffers of copyFlushing.
var streamBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// streamLatency is how long a piece of a streamed body may wait in the
// response buffer before it is flushed to the client.
const streamLatency = 10 * time.Millisecond

// copyFlushing copies src to w, flushing at most streamLatency after a
// write, so that a streamed body reaches the client piece by piece without
// a flush per read when it is fast (as httputil.ReverseProxy's
// FlushInterval does).
func copyFlushing(w http.ResponseWriter, src io.Reader) (int64, error) {
	bp := streamBufs.Get().(*[]byte)
	defer streamBufs.Put(bp)
	lw := &latencyWriter{w: w, rc: http.NewResponseController(w)}
	defer lw.stop()
	var n int64
	for {
		nr, rerr := src.Read(*bp)
		if nr > 0 {
			nw, werr := lw.Write((*bp)[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// latencyWriter flushes what was written at most streamLatency later, from
// a timer; the mutex keeps the timer's flush and the copy's writes apart.
type latencyWriter struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	rc      *http.ResponseController
	t       *time.Timer
	pending bool
	done    bool
}

func (lw *latencyWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	n, err := lw.w.Write(p)
	if !lw.pending && err == nil {
		lw.pending = true
		if lw.t == nil {
			lw.t = time.AfterFunc(streamLatency, lw.flush)
		} else {
			lw.t.Reset(streamLatency)
		}
	}
	return n, err
}

func (lw *latencyWriter) flush() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.pending && !lw.done {
		_ = lw.rc.Flush()
	}
	lw.pending = false
}

// stop ends the timer; what is left is flushed as the handler returns.
func (lw *latencyWriter) stop() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.done = true
	if lw.t != nil {
		lw.t.Stop()
	}
}

func (w *countingWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *countingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The websocket's bytes keep the exchange from going idle.
	w.hijacked = &activeConn{Conn: c, e: w.ex}
	return w.hijacked, brw, nil
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type countingBody struct {
	rc  io.ReadCloser
	rec *record
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.rec.bodySent.Add(int64(n))
	if n > 0 && b.rec.ex != nil {
		b.rec.ex.touch()
	}
	if err != nil && err != io.EOF {
		// A malformed body (bad chunking, short Content-Length) is the
		// client's fault, not the upstream's.
		b.rec.clientErr.Store(true)
	}
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// HTTPServer returns the server for the proxy listener (see Front), with
// timeouts suited to a forward proxy: bounded header reads and idle
// keep-alive, but no read or write deadline, which would cut long
// downloads.
func (s *Server) HTTPServer() *Front {
	f := s.newFront(s)
	f.ConnState = s.connState
	// A policy change cuts an exchange by closing its connection.
	f.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	return f
}

// newFront is a Front for h with the settings every listener of feedgate
// shares (the proxy port and each transparent connection) and the
// server's pooled buffers.
func (s *Server) newFront(h http.Handler) *Front {
	return &Front{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(errorWriter{s.errLog}, "", 0),
		bufs:              &s.frontBufs,
	}
}

// connState enforces max_connections. Counting happens here rather than in
// a listener wrapper, because a wrapped connection would no longer be a
// *net.TCPConn once hijacked, and a tunnel's copy loops would have to hold
// a buffer while they wait (relay.go).
func (s *Server) connState(c net.Conn, cs http.ConnState) {
	switch cs {
	case http.StateNew:
		if rf := s.openConn(remoteAddr(c)); rf != nil {
			s.m.Rejected(rf.reason)
			reply := overloaded
			if rf.reason == metrics.RejectClientLimit {
				reply = tooManyFromClient
			}
			// The server has not read anything yet: answer and close.
			// Closing makes the server report StateClosed, which
			// gives the slot back.
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, reply)
			_ = c.Close()
		}
	case http.StateHijacked, http.StateClosed:
		s.closeConn(remoteAddr(c))
	}
}

// overloaded is the reply to a connection or tunnel beyond the limits.
const overloaded = "HTTP/1.1 503 Service Unavailable\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 1\r\n" +
	"X-Feedgate-Reason: limit\r\n" +
	"Content-Length: 36\r\n" +
	"Connection: close\r\n\r\n" +
	"feedgate: too many connections open\n"

// tooManyFromClient is the reply to a connection beyond
// max_connections_per_client: 429, the client's own doing (RFC 6585).
const tooManyFromClient = "HTTP/1.1 429 Too Many Requests\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 1\r\n" +
	"X-Feedgate-Reason: client_limit\r\n" +
	"Content-Length: 48\r\n" +
	"Connection: close\r\n\r\n" +
	"feedgate: too many connections from this client\n"

// Shutdown closes the connections that are still open (tunnels, upgraded
// connections and plain requests still in flight), so that their records
// are written, and waits for them up to ctx's deadline. Call it after
// http.Server.Shutdown, which does not see hijacked connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopRecheck()
	defer s.idle.stop()
	defer s.pool.CloseIdleConnections()
	err := s.live.closeAll(ctx, s.m)
	// What is left of the transparent listeners' connections is idle
	// between requests: close it, and take no more.
	s.transparent.closeAll()
	return err
}
