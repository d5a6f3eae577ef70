// Package upstream is everything that connects feedgate to the next hop:
// the dialer (with -resolve overrides and the destination policy), the
// parent proxy (upstream_proxy), and the pool of plain-HTTP upstream
// connections. It knows nothing of clients, decisions or records; the
// proxy core asks it for connections and round trips.
package upstream

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/feedgate/feedgate/rules/config"
)

// contextDialer is what an injected dialer must do; the proxy's
// ContextDialer is the same interface.
type contextDialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Options configure a Router. Zero values mean the documented defaults.
type Options struct {
	// Dialer dials upstreams; nil means a Dialer with the system resolver
	// and DialTimeout. New never modifies it. The destination policy
	// applies to what it dials for clients: a *Dialer is used through a
	// copy whose Guard is the policy (ahead of its own Guard); any other
	// dialer has IP literals vetted before the dial and every
	// connection's RemoteAddr vetted after it. Parent proxies are dialed
	// through it without the policy.
	Dialer interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
	// DialTimeout is the Timeout of the Dialer New makes when Dialer is
	// nil; zero means the Dialer's default.
	DialTimeout time.Duration
	// Parent is upstream_proxy as the policy loader parsed it; the URL is
	// not checked again.
	Parent config.Upstream
	// Listeners are feedgate's own listening addresses; dials to them are
	// refused so the proxy cannot be made to loop into itself.
	Listeners []netip.AddrPort
	// DenyPrivate reports whether the policy in force refuses private
	// and other internal destinations (deny_private). It is asked at every
	// dial, so that a reloaded policy applies at once; nil means never.
	DenyPrivate func() bool
	// ErrorLog receives operational warnings; nil discards them.
	ErrorLog *slog.Logger
}

// Router opens the connections from feedgate to the next hop: directly,
// under the destination policy, or through the parent proxy of
// upstream_proxy, which is chosen once, when the Router is made.
type Router struct {
	// dialer dials the destinations clients name, with the policy.
	dialer contextDialer
	// lookup resolves a name as dialer would, nil when an injected dialer
	// that is not a *Dialer resolves names where feedgate cannot see.
	lookup func(ctx context.Context, host string, port int) ([]netip.Addr, error)
	// parent chooses the parent proxy (upstream_proxy), nil for direct
	// connections.
	parent      *parents
	listeners   []netip.AddrPort
	denyPrivate func() bool
}

// New builds a Router. Its errors name the setting at fault.
func New(o Options) (*Router, error) {
	r := &Router{listeners: o.Listeners, denyPrivate: o.DenyPrivate}
	r.dialer = destinationDialer(o.Dialer, o.DialTimeout, r.checkDestination)
	if d, ok := r.dialer.(*Dialer); ok {
		r.lookup = d.Lookup
	}
	parent, err := newParentFunc(o.Parent)
	if err != nil {
		return nil, err
	}
	r.parent = parent
	if f := o.Parent.AuthFile; f != "" {
		if open, err := credentialsFileTooOpen(f); err == nil && open && o.ErrorLog != nil {
			o.ErrorLog.Warn("upstream_proxy_auth_file can be read by other users; chmod 600 it", "file", f)
		}
	}
	return r, nil
}

// HasParent reports whether upstream_proxy names a parent proxy (a fixed
// one, or "env"). Plain-HTTP requests then all go through a transport
// whose Proxy is ParentFor, never through the Pool, which only connects
// directly.
func (r *Router) HasParent() bool { return r.parent != nil }

// Verify checks a name a client sent (a TLS server name, an HTTP Host)
// against the address its connection was really going to. resolved
// reports whether the name resolved, as feedgate would dial it (-resolve
// first); matches whether dst's address is among the answers. A name is
// not resolved when the injected dialer resolves names out of sight.
// Transparent connections are always dialed to their original
// destination, never to the name, so a mismatch is a forgery signal, not
// a routing problem.
func (r *Router) Verify(ctx context.Context, name string, dst netip.AddrPort) (resolved, matches bool) {
	if r.lookup == nil {
		return false, false
	}
	addrs, err := r.lookup(ctx, name, int(dst.Port()))
	if err != nil || len(addrs) == 0 {
		return false, false
	}
	want := dst.Addr().Unmap()
	for _, a := range addrs {
		if a.Unmap() == want {
			return true, true
		}
	}
	return true, false
}
