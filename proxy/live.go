package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/rules"
)

// cuttable is an open connection that carries a decided request: a CONNECT
// tunnel, an intercepted tunnel, a plain-HTTP exchange whose response is
// still in flight, or the websocket it was upgraded to. At every policy
// transition and reload each one is decided again, and cut when the answer
// became block; at shutdown each one is closed, so that its record is
// written.
type cuttable interface {
	io.Closer
	// redecide decides the connection again under p at an instant. ok is
	// false while it has no decision of its own yet (a tunnel still
	// reading its ClientHello decides with the newest policy itself).
	redecide(p *rules.Policy, at time.Time) (d rules.Decision, ok bool)
	// markCut notes that the policy now blocks the connection with d;
	// Close then closes it. Every connection to cut is marked before any
	// is closed, so that one whose carrier closed first (a request in an
	// intercepted tunnel) still knows why.
	markCut(d rules.Decision)
	// tunnelLike reports a connection that counts as a tunnel in
	// feedgate_tunnels_closed_total at shutdown.
	tunnelLike() bool
}

// liveSet tracks every cuttable connection. http.Server.Shutdown cannot see
// hijacked connections, and no http.Server API closes one exchange: the set
// can.
type liveSet struct {
	mu   sync.Mutex
	open map[cuttable]struct{}
	wg   sync.WaitGroup
}

func (ls *liveSet) add(c cuttable) {
	ls.mu.Lock()
	if ls.open == nil {
		ls.open = map[cuttable]struct{}{}
	}
	ls.open[c] = struct{}{}
	ls.wg.Add(1)
	ls.mu.Unlock()
}

func (ls *liveSet) remove(c cuttable) {
	ls.mu.Lock()
	delete(ls.open, c)
	ls.mu.Unlock()
	ls.wg.Done()
}

// hasExchange reports whether an exchange is open.
func (ls *liveSet) hasExchange() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for c := range ls.open {
		if _, ok := c.(*exchange); ok {
			return true
		}
	}
	return false
}

// list returns the open connections.
func (ls *liveSet) list() []cuttable {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	out := make([]cuttable, 0, len(ls.open))
	for c := range ls.open {
		out = append(out, c)
	}
	return out
}

// closeAll closes every open connection and waits until their records are
// written, or ctx ends.
func (ls *liveSet) closeAll(ctx context.Context, m *metrics.Metrics) error {
	ls.mu.Lock()
	for c := range ls.open {
		if c.tunnelLike() {
			m.TunnelClosed(metrics.TunnelShutdown)
		}
		_ = c.Close()
	}
	ls.mu.Unlock()
	done := make(chan struct{})
	go func() { ls.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("proxy: connections still closing: %w", ctx.Err())
	}
}

// exchange is one forwarded request (plain HTTP, or read inside an
// intercepted tunnel) from its decision until its response has been
// relayed, and, after a 101, the websocket it became. Cutting it closes the
// client connection under net/http's feet and cancels the upstream request:
// a response body that is still streaming (a large update download) stops
// mid-body, so the client sees a truncated transfer, never a complete one.
type exchange struct {
	req    rules.Request
	client net.Conn // the client connection; nil if unknown (then only cancel)
	cancel context.CancelFunc

	// last is when a byte last moved either way (UnixNano); the idle
	// sweep closes the exchange after the idle timeout without one.
	last atomic.Int64
	idle time.Duration
	// life closes an upgraded connection at max_tunnel_lifetime.
	life *time.Timer

	// done is set when the exchange is over (stop).
	done atomic.Bool

	mu       sync.Mutex
	upgraded bool
	upstream io.Closer // the upgraded upstream connection
	cutDec   *rules.Decision
	reason   string // why feedgate closed it: metrics.Tunnel*; "" if it did not
	aborted  bool
}

func newExchange(req rules.Request, client net.Conn, cancel context.CancelFunc, idle time.Duration) *exchange {
	e := &exchange{req: req, client: client, cancel: cancel, idle: idle}
	e.touch()
	return e
}

// touch notes that bytes moved. It is on the body path: an atomic store.
func (e *exchange) touch() { e.last.Store(time.Now().UnixNano()) }

// checkIdle closes the exchange if no byte moved for its idle timeout.
func (e *exchange) checkIdle(now time.Time) {
	if e.idle > 0 && !e.done.Load() && now.Sub(time.Unix(0, e.last.Load())) >= e.idle {
		e.abort(metrics.TunnelIdle, nil)
	}
}

// upgrade notes that the exchange became a long-lived connection: a
// websocket relayed over upstream (closed with the client when the
// exchange is cut; nil if none), or an intercepted tunnel.
func (e *exchange) upgrade(upstream io.Closer, lifetime time.Duration) {
	e.mu.Lock()
	e.upgraded, e.upstream = true, upstream
	aborted := e.aborted
	if lifetime > 0 && !aborted {
		e.life = time.AfterFunc(lifetime, func() { e.abort(metrics.TunnelLifetime, nil) })
	}
	e.mu.Unlock()
	if aborted && upstream != nil {
		_ = upstream.Close()
		return
	}
	// The exchange became a long-lived connection (a websocket): probe
	// its client as a tunnel's.
	if e.client != nil {
		probeIdleClient(e.client)
	}
}

// stop disarms the timers once the exchange is over.
func (e *exchange) stop() {
	e.done.Store(true)
	e.mu.Lock()
	if e.life != nil {
		e.life.Stop()
	}
	e.mu.Unlock()
}

// closedBy returns why feedgate closed the exchange ("" if it did not) and
// the decision that cut it at a policy change.
func (e *exchange) closedBy() (string, *rules.Decision) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reason, e.cutDec
}

// closedReason returns why feedgate closed the exchange, "" if it did not
// (or e is nil).
func (e *exchange) closedReason() string {
	if e == nil {
		return ""
	}
	r, _ := e.closedBy()
	return r
}

// abortGrace is how long an idle plain exchange whose upstream request was
// cancelled may take to end by itself (flushing what it has to the client)
// before its client connection is closed under it.
const abortGrace = time.Second

func (e *exchange) abort(reason string, d *rules.Decision) {
	e.mu.Lock()
	if e.aborted {
		e.mu.Unlock()
		return
	}
	e.aborted = true
	if e.reason == "" { // markCut may have named the reason already
		e.reason, e.cutDec = reason, d
	}
	reason = e.reason
	up, upgraded := e.upstream, e.upgraded
	e.mu.Unlock()
	if reason == metrics.TunnelIdle && !upgraded && e.client != nil {
		// Cancelling fails the upstream read, and the exchange ends
		// with what the client already has. A client that stalls its
		// own request body is not woken by that: close it after a grace.
		if e.cancel != nil {
			e.cancel()
		}
		time.AfterFunc(abortGrace, func() {
			if !e.done.Load() {
				_ = e.client.Close()
			}
		})
		return
	}
	// The client goes first: cancelling first would end the upstream
	// read, and net/http could then finish a chunked response cleanly
	// before the close, so that a cut download looked complete.
	if e.client != nil {
		_ = e.client.Close()
	}
	if e.cancel != nil {
		e.cancel()
	}
	if up != nil {
		_ = up.Close()
	}
}

func (e *exchange) redecide(p *rules.Policy, at time.Time) (rules.Decision, bool) {
	req := e.req
	req.Time = at
	return p.Decide(req), true
}

func (e *exchange) markCut(d rules.Decision) {
	e.mu.Lock()
	if e.reason == "" {
		e.reason, e.cutDec = metrics.TunnelPolicyChange, &d
	}
	e.mu.Unlock()
}

// Close aborts the exchange: at shutdown, or after markCut.
func (e *exchange) Close() error { e.abort(metrics.TunnelShutdown, nil); return nil }

func (e *exchange) tunnelLike() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.upgraded
}

// idleSweep is how often open exchanges are checked for idleness: one
// timer for all of them, armed while any is open, rather than one per
// request. An idle exchange is closed between tunnel_idle_timeout and that
// plus idleSweep after its last byte.
const idleSweep = 500 * time.Millisecond

// idleSweeper runs the idle sweep over the live set.
type idleSweeper struct {
	armed atomic.Bool
	mu    sync.Mutex
	t     *time.Timer
	done  bool
}

// watch makes sure a sweep is coming; it is called for every new exchange,
// so its common case is one atomic load.
func (sw *idleSweeper) watch(ls *liveSet) {
	if sw.armed.Load() || !sw.armed.CompareAndSwap(false, true) {
		return
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.done {
		return
	}
	if sw.t == nil {
		sw.t = time.AfterFunc(idleSweep, func() { sw.sweep(ls) })
	} else {
		sw.t.Reset(idleSweep)
	}
}

func (sw *idleSweeper) sweep(ls *liveSet) {
	now := time.Now()
	open := false
	for _, c := range ls.list() {
		if e, ok := c.(*exchange); ok {
			open = true
			e.checkIdle(now)
		}
	}
	sw.armed.Store(false)
	// An exchange added after the list was taken saw the sweep armed and
	// did not arm it; look again now that it is not.
	if open || ls.hasExchange() {
		sw.watch(ls)
	}
}

// stop disarms the sweep for good (shutdown).
func (sw *idleSweeper) stop() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.done = true
	if sw.t != nil {
		sw.t.Stop()
	}
}

// activeConn is a hijacked client connection (a websocket) whose reads and
// writes keep its exchange from going idle.
type activeConn struct {
	net.Conn
	e *exchange
}

func (c *activeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.e.touch()
	}
	return n, err
}

func (c *activeConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.e.touch()
	}
	return n, err
}

// clientConns counts each client's connections for
// max_connections_per_client: its connections that the HTTP server holds,
// plus its tunnel slots (CONNECT tunnels and websockets from admission to
// close). Between a CONNECT's admission and its hijack one connection is
// counted both ways, so the slot check allows one more.
type clientConns struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

// add adds delta to a's count and returns the new count.
func (c *clientConns) add(a netip.Addr, delta int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[netip.Addr]int{}
	}
	n := c.n[a] + delta
	if n <= 0 {
		delete(c.n, a)
		return 0
	}
	c.n[a] = n
	return n
}

func remoteAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

type connKey struct{}

// connFrom returns the client connection a request arrived on, stored by
// the server's ConnContext.
func connFrom(ctx context.Context) net.Conn {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	return c
}
