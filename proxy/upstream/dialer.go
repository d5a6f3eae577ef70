package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Resolver looks up the addresses of a host. *net.Resolver implements it;
// tests inject one that answers from a table, so that no DNS query leaves the
// machine.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Overrides maps "host:port" to the address to dial instead, like curl's
// --resolve. Keys are lower case without a trailing dot.
type Overrides map[string]netip.AddrPort

// ParseResolve parses one -resolve value, "HOST:PORT:ADDR", where ADDR is an
// IP (the port is kept) or IP:PORT; IPv6 addresses go in brackets.
func (o Overrides) ParseResolve(s string) error {
	host, rest, ok1 := strings.Cut(s, ":")
	portStr, addr, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || host == "" {
		return fmt.Errorf("-resolve %q: want HOST:PORT:ADDR, e.g. dnl-01.geo.kaspersky.com:80:127.0.0.1", s)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return fmt.Errorf("-resolve %q: invalid port %q", s, portStr)
	}
	var ap netip.AddrPort
	if a, err := netip.ParseAddr(strings.Trim(addr, "[]")); err == nil {
		ap = netip.AddrPortFrom(a, uint16(port))
	} else if ap, err = netip.ParseAddrPort(addr); err != nil {
		return fmt.Errorf("-resolve %q: ADDR %q is not an IP or IP:PORT", s, addr)
	}
	o[overrideKey(host, int(port))] = ap
	return nil
}

func overrideKey(host string, port int) string {
	return strings.ToLower(strings.TrimSuffix(host, ".")) + ":" + strconv.Itoa(port)
}

// Dialer is the one dialer for plain HTTP and CONNECT: it applies -resolve
// overrides, resolves names with the injected resolver, and dials with a
// timeout.
type Dialer struct {
	// Overrides are dialed instead of resolving their host.
	Overrides Overrides
	// Resolver resolves other names; nil means net.DefaultResolver.
	Resolver Resolver
	// Timeout bounds one dial; zero means 10 seconds.
	Timeout time.Duration
	// Guard, if set, vets every address about to be dialed that did not
	// come from Overrides (the operator's -resolve is trusted): resolved
	// addresses and IP literals alike, so a name that resolves to a denied
	// address is refused whatever its name (no DNS-rebinding gap).
	// New (and so proxy.New) leaves an injected Dialer as it is and dials
	// through a copy whose Guard is the destination policy, followed by
	// this Guard if set.
	Guard func(netip.AddrPort) error
	// Dial connects to an address; nil means a net.Dialer. Tests record
	// the address here instead of connecting.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Mark, if not zero, is set as SO_MARK on every socket the net.Dialer
	// opens (transparent_mark), so that the firewall can tell feedgate's
	// own upstream connections from the clients' and not redirect them
	// back to feedgate. It needs CAP_NET_ADMIN; it applies only when Dial
	// is nil.
	Mark int
}

// Lookup returns the addresses host:port is dialed at: the -resolve
// override for it if there is one, else what the resolver answers within
// the Dialer's Timeout. It is
// the lookup every dial makes, so that a name checked against an address
// (the transparent listener's host verification) is checked the way it
// would be dialed.
func (d *Dialer) Lookup(ctx context.Context, host string, port int) ([]netip.Addr, error) {
	if ap, ok := d.Overrides[overrideKey(host, port)]; ok {
		return []netip.Addr{ap.Addr()}, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	// Only a real lookup needs a deadline: the answers above cost no
	// timer, which a transparent listener would otherwise pay per request.
	timeout := d.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	return addrs, nil
}

// DialContext dials addr ("host:port") over TCP.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.dial(ctx, network, addr, d.Guard)
}

// dialTrusted dials an address from the operator's own configuration (a
// parent proxy) like DialContext, but without the Guard: a parent on a
// private or loopback address is the operator's choice, not a client's.
// Only code that dials such an address may call it, never with an address
// a client named.
func (d *Dialer) dialTrusted(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.dial(ctx, network, addr, nil)
}

func (d *Dialer) dial(ctx context.Context, network, addr string, guard func(netip.AddrPort) error) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("dial %q: invalid port: %w", addr, err)
	}
	timeout := d.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	// One deadline covers resolving and connecting: a resolver that hangs
	// is as much a timeout as a SYN that is never answered. A caller's
	// deadline that comes first is enough (and costs no second timer).
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	dial := d.Dial
	if dial == nil {
		nd := &net.Dialer{KeepAlive: 30 * time.Second}
		if d.Mark != 0 {
			nd.Control = markControl(d.Mark)
		}
		dial = nd.DialContext
	}

	if ap, ok := d.Overrides[overrideKey(host, port)]; ok {
		return dial(ctx, network, ap.String())
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		r := d.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		addrs, err = r.LookupNetIP(ctx, "ip", host)
		if err != nil {
			var dnsErr *net.DNSError
			if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
				err = fmt.Errorf("%w: %v", cerr, err)
			} else if !errors.As(err, &dnsErr) && cerr == nil {
				// Keep the failure classifiable as DNS whatever
				// resolver produced it; a timed-out lookup stays a
				// timeout.
				err = &net.DNSError{Err: err.Error(), Name: host, IsNotFound: true}
			}
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("resolve %s: %w", host, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true})
		}
	}
	// Dial the addresses we resolved (never the name again, so what was
	// resolved is what is dialed), first success wins.
	var firstErr error
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
		if guard != nil {
			if err := guard(ap); err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
		}
		c, err := dial(ctx, network, ap.String())
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// destinationDialer returns the dialer for the destinations clients name:
// the injected one (Options.Dialer) with the destination policy (check)
// applied, or a Dialer with the system resolver and timeout. The injected
// value is never modified, so that one Dialer can serve several Routers
// (and so several proxy Servers), each with its own policy and listeners.
func destinationDialer(injected contextDialer, timeout time.Duration, check func(netip.AddrPort) error) contextDialer {
	d, isDialer := injected.(*Dialer)
	if injected != nil && !isDialer {
		return &guardedDialer{inner: injected, check: check}
	}
	c := Dialer{Timeout: timeout}
	if d != nil {
		c = *d
	}
	c.Guard = check
	if d != nil && d.Guard != nil {
		own := d.Guard
		c.Guard = func(ap netip.AddrPort) error {
			if err := check(ap); err != nil {
				return err
			}
			return own(ap)
		}
	}
	return &c
}

// guardedDialer applies the destination policy to an injected dialer that
// is not a *Dialer, which resolves names where feedgate cannot see the
// address it picks. An IP literal is checked before the dial, so that
// nothing is sent to a denied one. Every connection is then checked by its
// RemoteAddr, the address actually connected to; a denied one is closed
// before anything is written to it, but the connection was made.
type guardedDialer struct {
	inner contextDialer
	check func(netip.AddrPort) error
}

func (g *guardedDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %q: %w", addr, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("dial %q: invalid port: %w", addr, err)
		}
		if err := g.check(netip.AddrPortFrom(ip.Unmap(), uint16(port))); err != nil {
			return nil, err
		}
	}
	c, err := g.inner.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, fmt.Errorf("dial %s: the dialer returned no connection and no error", addr)
	}
	ap, ok := remoteAddrPort(c)
	if !ok {
		// Fail closed: a dialer whose connections do not say where they
		// lead cannot be held to the policy.
		_ = c.Close()
		return nil, fmt.Errorf("dial %s: the connection's remote address %q is not an IP address and port, so the destination policy cannot check it", addr, c.RemoteAddr())
	}
	if err := g.check(ap); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func remoteAddrPort(c net.Conn) (netip.AddrPort, bool) {
	switch a := c.RemoteAddr().(type) {
	case nil:
		return netip.AddrPort{}, false
	case *net.TCPAddr:
		ap := a.AddrPort()
		return ap, ap.IsValid()
	default:
		ap, err := netip.ParseAddrPort(a.String())
		return ap, err == nil
	}
}
