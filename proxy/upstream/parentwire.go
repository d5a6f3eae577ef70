package upstream

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http/httpproxy"

	"github.com/feedgate/feedgate/rules/config"
)

// parent is one parent proxy: its URL for the transport (credentials as
// userinfo, which the transport sends as Proxy-Authorization) and the
// dialer that chains tunnels through it.
type parent struct {
	url    *url.URL
	tunnel *parentProxy
}

func newParent(u *url.URL) (*parent, error) {
	pp, err := newParentProxy(withoutUser(u), credentials(u))
	if err != nil {
		return nil, err
	}
	return &parent{url: u, tunnel: pp}, nil
}

// parents is the parent proxy choice of upstream_proxy. A parent is dialed
// without the destination policy, and that trust comes from the operator's
// configuration alone: addrs holds the dial addresses of the parents built
// from it, spelled as net/http's transport spells them, and nothing a
// client does adds to it.
type parents struct {
	// choose says which parent, if any, carries a request for a URL.
	choose func(*url.URL) (*parent, error)
	addrs  map[string]bool
}

// newParentFunc builds the parent proxy choice of upstream_proxy: nil for
// direct connections, a fixed parent (with the credentials of the auth
// file), or the proxy environment variables for "env". Every parent is
// built here, once.
func newParentFunc(up config.Upstream) (*parents, error) {
	switch {
	case up.FromEnv:
		return envParents(httpproxy.FromEnvironment()), nil
	case up.URL != nil:
		// The loader has checked the URL (config.ParseProxyURL), and it
		// is taken as it is; the credentials file is read only now.
		u := *up.URL
		var creds string
		if up.AuthFile != "" {
			var err error
			if creds, err = readCredentialsFile(up.AuthFile); err != nil {
				return nil, fmt.Errorf("upstream_proxy_auth_file: %w", err)
			}
			user, pass, _ := strings.Cut(creds, ":")
			u.User = url.UserPassword(user, pass)
		}
		p := &parent{url: &u, tunnel: trustedParentProxy(up.URL, creds)}
		return &parents{
			choose: func(*url.URL) (*parent, error) { return p, nil },
			addrs:  map[string]bool{p.tunnel.addr: true},
		}, nil
	}
	return nil, nil
}

// envParents builds the parents of HTTP_PROXY and HTTPS_PROXY. A value
// that is not a usable parent is not trusted, and each request that would
// use it fails with its error.
func envParents(cfg *httpproxy.Config) *parents {
	f := cfg.ProxyFunc()
	built := map[string]*parent{}
	ps := &parents{addrs: map[string]bool{}}
	for _, v := range []string{cfg.HTTPProxy, cfg.HTTPSProxy} {
		u, err := parseEnvProxy(v)
		if err != nil || u == nil {
			continue
		}
		p, err := newParent(u)
		if err != nil {
			continue
		}
		built[u.String()] = p
		ps.addrs[p.tunnel.addr] = true
	}
	ps.choose = func(u *url.URL) (*parent, error) {
		pu, err := f(u)
		if err != nil || pu == nil {
			return nil, err
		}
		if p, ok := built[pu.String()]; ok {
			return p, nil
		}
		// Not a parent built above (its value does not parse as one,
		// or httpproxy parsed it otherwise): its error is reported
		// here, and its address is not trusted.
		return newParent(pu)
	}
	return ps
}

// parseEnvProxy parses a proxy variable as httpproxy does: a value without
// a scheme is taken as http://value.
func parseEnvProxy(v string) (*url.URL, error) {
	if v == "" {
		return nil, nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme == "" || u.Host == "" {
		if u, err := url.Parse("http://" + v); err == nil {
			return u, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("proxy variable %q: %w", v, err)
	}
	return u, nil
}

func withoutUser(u *url.URL) *url.URL {
	c := *u
	c.User = nil
	return &c
}

func credentials(u *url.URL) string {
	if u.User == nil {
		return ""
	}
	pass, _ := u.User.Password()
	return u.User.Username() + ":" + pass
}

// ParentFor returns the parent proxy for a request's URL, nil for a direct
// connection. It is the transport's Proxy function.
func (r *Router) ParentFor(req *http.Request) (*url.URL, error) {
	if r.parent == nil {
		return nil, nil
	}
	p, err := r.parent.choose(req.URL)
	if p == nil {
		return nil, err
	}
	return p.url, nil
}

// DialTarget opens the upstream connection of a CONNECT tunnel: directly,
// with the destination policy, or chained through the parent proxy with a
// CONNECT of its own.
func (r *Router) DialTarget(ctx context.Context, target string) (net.Conn, error) {
	if r.parent != nil {
		p, err := r.parent.choose(&url.URL{Scheme: "https", Host: target})
		if err != nil {
			return nil, fmt.Errorf("parent proxy for %s: %w", target, err)
		}
		if p != nil {
			return p.tunnel.dialConnect(ctx, r.dialParent, target)
		}
	}
	return r.dialer.DialContext(ctx, "tcp", target)
}

// DialHTTP dials for plain HTTP: the transport and the pool. The transport
// dials the parent proxy it chose through here as well, and nothing tells
// that dial from a direct one to the same address, which a client can ask
// for when the parent is not used for its URL (NO_PROXY, or net/http never
// proxying loopback). So a configured parent's address is dialed without
// the policy, but the connection must then carry proxy requests only: the
// transport writes a CONNECT or an absolute URI first only to a proxy it
// chose, and a direct request (origin form, or a TLS handshake) is refused
// before a byte of it leaves. Every other address gets the policy.
func (r *Router) DialHTTP(ctx context.Context, network, addr string) (net.Conn, error) {
	if r.parent == nil || !r.parent.addrs[addr] {
		return r.dialer.DialContext(ctx, network, addr)
	}
	c, err := r.dialParent(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &parentConn{Conn: c}, nil
}

// dialParent dials a parent proxy through the injected dialer, without the
// destination policy: the parent is the operator's choice. It dials only
// the configured parents' addresses, so that no caller can widen the trust
// to an address a client named.
func (r *Router) dialParent(ctx context.Context, network, addr string) (net.Conn, error) {
	if r.parent == nil || !r.parent.addrs[addr] {
		return nil, fmt.Errorf("dial parent proxy %s: not a configured parent proxy", addr)
	}
	switch d := r.dialer.(type) {
	case *Dialer:
		return d.dialTrusted(ctx, network, addr)
	case *guardedDialer:
		return d.inner.DialContext(ctx, network, addr)
	}
	return nil, fmt.Errorf("dial parent proxy %s: no dialer for trusted addresses (%T)", addr, r.dialer)
}

// parentConn is a transport's connection to a parent proxy. Its first write
// must start a proxy request (see DialHTTP); otherwise that write and all
// later ones fail with a DestinationError, and the transport closes the
// connection. The transport writes from one goroutine at a time; the state
// is atomic only so that a stray concurrent write cannot slip through.
type parentConn struct {
	net.Conn
	state atomic.Int32 // 0 unchecked, 1 proxy requests, 2 refused
}

func (c *parentConn) Write(p []byte) (int, error) {
	switch c.state.Load() {
	case 1:
		return c.Conn.Write(p)
	case 0:
		if proxyRequestStart(p) {
			c.state.CompareAndSwap(0, 1)
			return c.Write(p)
		}
		c.state.Store(2)
	}
	// Not closed here: the transport closes it with this error, which is
	// then the one its caller sees.
	ap, _ := remoteAddrPort(c.Conn)
	return 0, &DestinationError{Addr: ap, Reason: reasonParent}
}

// proxyRequestStart reports whether p starts a request of the kind only a
// proxy is sent: CONNECT, or a method and an absolute http URI (net/http
// sends https requests through a proxy in a CONNECT tunnel).
func proxyRequestStart(p []byte) bool {
	method, rest, ok := bytes.Cut(p, []byte{' '})
	if !ok || len(method) == 0 {
		return false
	}
	for _, c := range method {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return string(method) == http.MethodConnect || bytes.HasPrefix(rest, []byte("http://"))
}
