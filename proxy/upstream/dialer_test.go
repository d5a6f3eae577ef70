package upstream_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
	"github.com/feedgate/feedgate/proxy/upstream"
)

func TestOverridesParseResolve(t *testing.T) {
	tests := []struct {
		in      string
		wantKey string
		wantTo  string
		wantErr string // substring; "" means success
	}{
		{in: "dnl-01.geo.kaspersky.com:80:127.0.0.1", wantKey: "dnl-01.geo.kaspersky.com:80", wantTo: "127.0.0.1:80"},
		{in: "s01.upd.kaspersky.com:443:127.0.0.1:8443", wantKey: "s01.upd.kaspersky.com:443", wantTo: "127.0.0.1:8443"},
		{in: "WWW.Example.TEST.:443:127.0.0.1", wantKey: "www.example.test:443", wantTo: "127.0.0.1:443"},
		{in: "v6.example.test:443:[::1]", wantKey: "v6.example.test:443", wantTo: "[::1]:443"},
		{in: "v6.example.test:443:[::1]:8080", wantKey: "v6.example.test:443", wantTo: "[::1]:8080"},
		{in: "v6.example.test:443:::1", wantKey: "v6.example.test:443", wantTo: "[::1]:443"},
		{in: "max.example.test:65535:10.0.0.1", wantKey: "max.example.test:65535", wantTo: "10.0.0.1:65535"},

		{in: "", wantErr: "want HOST:PORT:ADDR"},
		{in: "host.example.test", wantErr: "want HOST:PORT:ADDR"},
		{in: "host.example.test:443", wantErr: "want HOST:PORT:ADDR"},
		{in: ":443:127.0.0.1", wantErr: "want HOST:PORT:ADDR"},
		{in: "host.example.test:0:127.0.0.1", wantErr: `invalid port "0"`},
		{in: "host.example.test:65536:127.0.0.1", wantErr: `invalid port "65536"`},
		{in: "host.example.test:https:127.0.0.1", wantErr: `invalid port "https"`},
		{in: "host.example.test:-1:127.0.0.1", wantErr: `invalid port "-1"`},
		{in: "host.example.test::127.0.0.1", wantErr: `invalid port ""`},
		{in: "host.example.test:443:", wantErr: `ADDR "" is not an IP or IP:PORT`},
		{in: "host.example.test:443:localhost", wantErr: `ADDR "localhost" is not an IP or IP:PORT`},
		{in: "host.example.test:443:127.0.0.1:99999", wantErr: `ADDR "127.0.0.1:99999" is not an IP or IP:PORT`},
		{in: "host.example.test:443:256.0.0.1", wantErr: `ADDR "256.0.0.1" is not an IP or IP:PORT`},
		{in: "host.example.test:443:[::1]:http", wantErr: `ADDR "[::1]:http" is not an IP or IP:PORT`},
	}
	for i, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			o := upstream.Overrides{}
			err := o.ParseResolve(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("%d: ParseResolve(%q) = nil, overrides %v; want error containing %q", i, tt.in, o, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "-resolve") {
					t.Errorf("%d: ParseResolve(%q) error = %q; want it to contain %q and name -resolve", i, tt.in, err, tt.wantErr)
				}
				if len(o) != 0 {
					t.Errorf("%d: ParseResolve(%q) failed but added %v", i, tt.in, o)
				}
				return
			}
			if err != nil {
				t.Fatalf("%d: ParseResolve(%q) = %v; want nil", i, tt.in, err)
			}
			want := netip.MustParseAddrPort(tt.wantTo)
			if got, ok := o[tt.wantKey]; !ok || got != want || len(o) != 1 {
				t.Errorf("%d: ParseResolve(%q) gave %v; want {%s: %s}", i, tt.in, o, tt.wantKey, want)
			}
		})
	}
}

// TestDialer checks name handling in the shared dialer against loopback
// listeners: overrides win and skip the resolver, IP literals skip the
// resolver, resolved addresses are dialed in order, failures are DNS errors.
func TestDialer(t *testing.T) {
	t.Parallel()
	up := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.WriteString(c, "hi") })
	refused := testutil.ClosedPort(t)
	upAP := netip.MustParseAddrPort(up.Addr())
	refusedAP := netip.MustParseAddrPort(refused)

	tests := []struct {
		name        string
		overrides   []string
		addrs       map[string][]netip.Addr
		dial        string
		wantOK      bool
		wantLookups []string
		wantDNS     bool
		wantRefused bool
	}{
		{name: "override", overrides: []string{"www.example.test:443:" + up.Addr()}, dial: "www.example.test:443", wantOK: true},
		{name: "override-case-and-dot", overrides: []string{"www.example.test:443:" + up.Addr()}, dial: "WWW.EXAMPLE.test.:443", wantOK: true},
		{name: "override-is-per-port", overrides: []string{"www.example.test:80:" + up.Addr()},
			dial: "www.example.test:" + upPort(upAP), wantLookups: []string{"www.example.test"}, wantDNS: true},
		{name: "ip-literal-not-resolved", dial: up.Addr(), wantOK: true},
		{name: "resolved", addrs: map[string][]netip.Addr{"r.example.test": {upAP.Addr()}},
			dial: "r.example.test:" + upPort(upAP), wantOK: true, wantLookups: []string{"r.example.test"}},
		{name: "not-found", dial: "nx.example.test:443", wantLookups: []string{"nx.example.test"}, wantDNS: true},
		{name: "no-addresses", addrs: map[string][]netip.Addr{"empty.example.test": {}},
			dial: "empty.example.test:443", wantLookups: []string{"empty.example.test"}, wantDNS: true},
		{name: "refused", addrs: map[string][]netip.Addr{"r.example.test": {refusedAP.Addr()}},
			dial: "r.example.test:" + upPort(refusedAP), wantLookups: []string{"r.example.test"}, wantRefused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ov := upstream.Overrides{}
			for _, s := range tt.overrides {
				if err := ov.ParseResolve(s); err != nil {
					t.Fatal(err)
				}
			}
			res := &testutil.Resolver{Addrs: tt.addrs}
			d := &upstream.Dialer{Overrides: ov, Resolver: res}
			ctx, cancel := context.WithTimeout(context.Background(), testutil.WaitLimit)
			defer cancel()
			c, err := d.DialContext(ctx, "tcp", tt.dial)
			if c != nil {
				defer c.Close()
			}
			if got := strings.Join(res.Lookups(), ","); got != strings.Join(tt.wantLookups, ",") {
				t.Errorf("resolver lookups = %q; want %q", got, tt.wantLookups)
			}
			if tt.wantOK {
				if err != nil {
					t.Fatalf("DialContext(%q) = %v; want a connection", tt.dial, err)
				}
				b, _ := io.ReadAll(c)
				if string(b) != "hi" {
					t.Errorf("read %q from the dialed conn; want %q (the test upstream)", b, "hi")
				}
				return
			}
			if err == nil {
				t.Fatalf("DialContext(%q) succeeded; want an error", tt.dial)
			}
			var dnsErr *net.DNSError
			if got := errors.As(err, &dnsErr); got != tt.wantDNS {
				t.Errorf("DialContext(%q) error %v: is DNSError = %v; want %v", tt.dial, err, got, tt.wantDNS)
			}
			if got := errors.Is(err, syscall.ECONNREFUSED); got != tt.wantRefused {
				t.Errorf("DialContext(%q) error %v: is ECONNREFUSED = %v; want %v", tt.dial, err, got, tt.wantRefused)
			}
		})
	}
}

// TestDialerTriesEveryAddress: the first address refusing does not fail the
// dial when a later one answers.
func TestDialerTriesEveryAddress(t *testing.T) {
	t.Parallel()
	up := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.WriteString(c, "hi") })
	upAP := netip.MustParseAddrPort(up.Addr())
	// 127.0.0.2 is loopback on Linux; nothing listens on it at this port.
	res := &testutil.Resolver{Addrs: map[string][]netip.Addr{"multi.example.test": {netip.MustParseAddr("127.0.0.2"), upAP.Addr()}}}
	d := &upstream.Dialer{Resolver: res}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.WaitLimit)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", "multi.example.test:"+upPort(upAP))
	if err != nil {
		t.Fatalf("DialContext: %v; want the second address to answer", err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != up.Addr() {
		t.Errorf("connected to %s; want %s", got, up.Addr())
	}
}

// TestDialerResolverTimeout: a resolver that is still busy when the dial's
// context expires yields a timeout, not a "not found" DNS answer.
func TestDialerResolverTimeout(t *testing.T) {
	t.Parallel()
	res := &testutil.Resolver{Hang: map[string]bool{"slow.example.test": true}}
	d := &upstream.Dialer{Resolver: res}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := d.DialContext(ctx, "tcp", "slow.example.test:443")
	if err == nil {
		t.Fatal("DialContext succeeded; want a timeout")
	}
	var ne net.Error
	timeout := errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
	if !timeout {
		t.Errorf("DialContext error %q is not a timeout (DeadlineExceeded or net.Error.Timeout)", err)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		t.Errorf("DialContext error %q claims the name was not found; the lookup timed out", err)
	}
}

func TestDialerBadAddress(t *testing.T) {
	d := &upstream.Dialer{Resolver: &testutil.Resolver{}}
	for _, addr := range []string{"no-port.example.test", "host.example.test:http", ""} {
		if c, err := d.DialContext(context.Background(), "tcp", addr); err == nil {
			c.Close()
			t.Errorf("DialContext(%q) succeeded; want an error", addr)
		}
	}
}

func upPort(ap netip.AddrPort) string { return strings.TrimPrefix(ap.String(), ap.Addr().String()+":") }
