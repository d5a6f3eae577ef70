package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// Access holds who may use the proxy and where it may connect: the
// settings that keep feedgate from being an open proxy. They sit at the top
// level of the configuration file.
type Access struct {
	// AllowedClients lists the client networks that may use the proxy.
	// The default is loopback only.
	AllowedClients []netip.Prefix
	// ClientsConfigured reports whether allowed_clients was set in the
	// file; feedgate refuses to listen beyond loopback without it.
	ClientsConfigured bool
	// DenyPrivate also refuses destinations in private ranges (RFC 1918,
	// RFC 6598 shared space, IPv6 ULA) and space that is not globally
	// routable (the proxy's destination table). Off by
	// default: an internal egress gateway often proxies to internal
	// mirrors.
	DenyPrivate bool

	connectPorts, httpPorts []rules.PortRange
}

// defaultAccess is loopback clients only, tunnels only to TLS (as Squid and
// smokescreen ship), plain HTTP to 80 and 8080.
func defaultAccess() Access {
	return Access{
		AllowedClients: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		connectPorts:   []rules.PortRange{mustPorts("443")},
		httpPorts:      []rules.PortRange{mustPorts("80"), mustPorts("8080")},
	}
}

// ClientAllowed reports whether a client address may use the proxy.
func (a *Access) ClientAllowed(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range a.AllowedClients {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ConnectPortAllowed reports whether CONNECT may go to port.
func (a *Access) ConnectPortAllowed(port int) bool { return inPorts(a.connectPorts, port) }

// HTTPPortAllowed reports whether plain HTTP may go to port.
func (a *Access) HTTPPortAllowed(port int) bool { return inPorts(a.httpPorts, port) }

// ConnectPorts and HTTPPorts describe the port lists, for messages.
func (a *Access) ConnectPorts() string { return portsString(a.connectPorts) }

// HTTPPorts describes the plain-HTTP port list.
func (a *Access) HTTPPorts() string { return portsString(a.httpPorts) }

func inPorts(list []rules.PortRange, port int) bool {
	for _, r := range list {
		if r.Contains(port) {
			return true
		}
	}
	return false
}

// mustPorts parses a constant port list of this package.
func mustPorts(s string) rules.PortRange {
	r, err := rules.ParsePortRange(s)
	if err != nil {
		panic(err)
	}
	return r
}

func portsString(list []rules.PortRange) string {
	s := make([]string, len(list))
	for i, r := range list {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

// parseAccess validates the access keys of a policy file.
func (f *fileCtx) parseAccess(pf *file) Access {
	a := defaultAccess()
	a.DenyPrivate = pf.DenyPrivate
	if pf.AllowedClients != nil {
		a.ClientsConfigured = true
		a.AllowedClients = nil
		for _, s := range pf.AllowedClients {
			p, err := rules.ParseClientNet(s)
			if err != nil {
				f.errorf("allowed_clients", "%v", err)
				continue
			}
			a.AllowedClients = append(a.AllowedClients, p)
		}
	}
	if pf.ConnectPorts != nil {
		a.connectPorts = f.parsePortList("connect_ports", pf.ConnectPorts)
	}
	if pf.HTTPPorts != nil {
		a.httpPorts = f.parsePortList("http_ports", pf.HTTPPorts)
	}
	return a
}

// parsePortList parses a list of ports (integers) and ranges ("8000-8099").
func (f *fileCtx) parsePortList(key string, values []any) []rules.PortRange {
	out := []rules.PortRange{}
	for _, v := range values {
		var s string
		switch x := v.(type) {
		case int64:
			s = fmt.Sprint(x)
		case string:
			s = x
		default:
			f.errorf(key, "port %v: want a number such as 443 or a range such as \"8000-8099\"", v)
			continue
		}
		r, err := rules.ParsePortRange(s)
		if err != nil {
			f.errorf(key, "%v", err)
			continue
		}
		out = append(out, r)
	}
	return out
}

// Limits bound the resources clients can hold. They sit in the [limits]
// table of the configuration file; zero values mean the defaults below.
type Limits struct {
	// MaxConnections caps concurrent client connections (tunnels
	// included); a connection beyond it is answered 503 and closed.
	MaxConnections int
	// MaxTunnels caps concurrent CONNECT tunnels; beyond it a CONNECT is
	// answered 503 with Retry-After.
	MaxTunnels int
	// TunnelIdleTimeout closes a tunnel, a websocket or a plain-HTTP
	// exchange with no bytes in either direction for this long (Squid's
	// read_timeout is 15 minutes).
	TunnelIdleTimeout time.Duration
	// MaxTunnelLifetime closes a tunnel or websocket that has been open
	// this long, however busy; zero means no limit.
	MaxTunnelLifetime time.Duration
	// MaxConnectionsPerClient caps one client address's concurrent
	// connections (tunnels included); beyond it a connection or tunnel is
	// answered 429. Zero means no cap.
	MaxConnectionsPerClient int
}

// Default limits.
const (
	DefaultMaxConnections    = 10000
	DefaultMaxTunnels        = 5000
	DefaultTunnelIdleTimeout = 15 * time.Minute
)

type limitsFile struct {
	MaxConnections    int           `toml:"max_connections"`
	MaxTunnels        int           `toml:"max_tunnels"`
	TunnelIdleTimeout time.Duration `toml:"tunnel_idle_timeout"`
	MaxTunnelLifetime time.Duration `toml:"max_tunnel_lifetime"`
	// MaxConnectionsPerClient is like squid's maxconn ACL.
	MaxConnectionsPerClient int `toml:"max_connections_per_client"`
}

func (f *fileCtx) parseLimits(lf limitsFile) Limits {
	l := Limits{MaxConnections: DefaultMaxConnections, MaxTunnels: DefaultMaxTunnels, TunnelIdleTimeout: DefaultTunnelIdleTimeout}
	if lf.MaxConnections < 0 || lf.MaxTunnels < 0 {
		f.errorf("limits", "limits must not be negative")
	}
	if lf.TunnelIdleTimeout < 0 {
		f.errorf("limits.tunnel_idle_timeout", "tunnel_idle_timeout must not be negative")
	} else if lf.TunnelIdleTimeout > 0 && lf.TunnelIdleTimeout < time.Second {
		f.errorf("limits.tunnel_idle_timeout", "tunnel_idle_timeout %s is shorter than a second: write a duration such as \"15m\"", lf.TunnelIdleTimeout)
	}
	if lf.MaxTunnelLifetime < 0 {
		f.errorf("limits.max_tunnel_lifetime", "max_tunnel_lifetime must not be negative")
	} else if lf.MaxTunnelLifetime > 0 && lf.MaxTunnelLifetime < time.Second {
		f.errorf("limits.max_tunnel_lifetime", "max_tunnel_lifetime %s is shorter than a second: write a duration such as \"24h\"", lf.MaxTunnelLifetime)
	} else {
		l.MaxTunnelLifetime = lf.MaxTunnelLifetime
	}
	if lf.MaxConnectionsPerClient < 0 {
		f.errorf("limits.max_connections_per_client", "max_connections_per_client must not be negative")
	} else {
		l.MaxConnectionsPerClient = lf.MaxConnectionsPerClient
	}
	if lf.MaxConnections > 0 {
		l.MaxConnections = lf.MaxConnections
	}
	if lf.MaxTunnels > 0 {
		l.MaxTunnels = lf.MaxTunnels
	}
	if lf.TunnelIdleTimeout > 0 {
		l.TunnelIdleTimeout = lf.TunnelIdleTimeout
	}
	if l.MaxConnectionsPerClient > l.MaxConnections {
		f.errorf("limits.max_connections_per_client", "max_connections_per_client (%d) is above max_connections (%d)", l.MaxConnectionsPerClient, l.MaxConnections)
	}
	if l.MaxTunnels > l.MaxConnections {
		f.errorf("limits.max_tunnels", "max_tunnels (%d) is above max_connections (%d): every tunnel is a client connection", l.MaxTunnels, l.MaxConnections)
	}
	return l
}
