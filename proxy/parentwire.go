package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpproxy"

	"github.com/feedgate/feedgate/rules"
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

// parentFunc says which parent proxy, if any, carries a request for a URL.
type parentFunc func(*url.URL) (*parent, error)

// newParentFunc builds the parent proxy choice of upstream_proxy: nil for
// direct connections, a fixed parent (with the credentials of the auth
// file), built once, or the proxy environment variables for "env".
func newParentFunc(up rules.UpstreamProxy) (parentFunc, error) {
	switch {
	case up.FromEnv:
		f := httpproxy.FromEnvironment().ProxyFunc()
		return func(u *url.URL) (*parent, error) {
			pu, err := f(u)
			if err != nil || pu == nil {
				return nil, err
			}
			return newParent(pu)
		}, nil
	case up.URL != nil:
		u := *up.URL
		if up.AuthFile != "" {
			creds, err := readCredentialsFile(up.AuthFile)
			if err != nil {
				return nil, fmt.Errorf("upstream_proxy_auth_file: %w", err)
			}
			user, pass, _ := strings.Cut(creds, ":")
			u.User = url.UserPassword(user, pass)
		}
		p, err := newParent(&u)
		if err != nil {
			return nil, fmt.Errorf("upstream_proxy: %w", err)
		}
		return func(*url.URL) (*parent, error) { return p, nil }, nil
	}
	return nil, nil
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

// parentFor returns the parent proxy for a request's URL, nil for a direct
// connection. It is the transport's Proxy function.
func (s *Server) parentFor(req *http.Request) (*url.URL, error) {
	if s.parent == nil {
		return nil, nil
	}
	p, err := s.parent(req.URL)
	if p == nil {
		return nil, err
	}
	s.trustParent(p.url.Host)
	return p.url, nil
}

// trustParent records a parent's address, so that the transport's dials
// to it skip the destination policy (see Dialer.DialTrusted).
func (s *Server) trustParent(hostport string) { s.parents.Store(hostport, true) }

func (s *Server) isParent(hostport string) bool {
	_, ok := s.parents.Load(hostport)
	return ok
}

// dialTarget opens the upstream connection of a CONNECT tunnel: directly,
// or chained through the parent proxy with a CONNECT of its own.
func (s *Server) dialTarget(ctx context.Context, target string) (net.Conn, error) {
	if s.parent != nil {
		p, err := s.parent(&url.URL{Scheme: "https", Host: target})
		if err != nil {
			return nil, fmt.Errorf("parent proxy for %s: %w", target, err)
		}
		if p != nil {
			return p.tunnel.dialConnect(ctx, s.dialTrusted, target)
		}
	}
	return s.dialer.DialContext(ctx, "tcp", target)
}

// dialTrusted dials a parent proxy: through the injected dialer, without
// the destination policy.
func (s *Server) dialTrusted(ctx context.Context, network, addr string) (net.Conn, error) {
	switch d := s.dialer.(type) {
	case *Dialer:
		return d.DialTrusted(ctx, network, addr)
	case *guardedDialer:
		return d.inner.DialContext(ctx, network, addr)
	}
	return nil, fmt.Errorf("dial parent proxy %s: no dialer for trusted addresses (%T)", addr, s.dialer)
}
