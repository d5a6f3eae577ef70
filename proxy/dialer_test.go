package proxy_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
	"github.com/feedgate/feedgate/proxy/upstream"
)

// newEnvWithDialer runs a proxy like newEnv, on the policy of cfg, with
// dialer as Options.Dialer exactly as given.
func newEnvWithDialer(t *testing.T, cfg envConfig, dialer proxy.ContextDialer) *env {
	t.Helper()
	cfg.dialer = dialer
	return newEnv(t, cfg)
}

// destinationRequests are a plain-HTTP and a CONNECT request for host.
func destinationRequests(host string) map[string]string {
	return map[string]string{
		"GET":     "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\n\r\n",
		"CONNECT": "CONNECT " + host + ":443 HTTP/1.1\r\nHost: " + host + ":443\r\n\r\n",
	}
}

// TestNewLeavesInjectedDialerAlone: proxy.New applies the destination
// policy through its own copy of an injected *Dialer. The caller's Dialer
// keeps its fields, and two proxies sharing one each apply their own
// policy: when New installed itself as the shared Dialer's Guard, the
// second proxy dialed under the first one's policy.
func TestNewLeavesInjectedDialerAlone(t *testing.T) {
	rec := &testutil.DialRecorder{}
	ov := upstream.Overrides{}
	if err := ov.ParseResolve("pinned.example.test:80:127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	res := &testutil.Resolver{Addrs: map[string][]netip.Addr{
		"private.example.test": {netip.MustParseAddr("10.1.2.3")},
		"loop.example.test":    {netip.MustParseAddr("127.0.0.1")},
	}}
	shared := &upstream.Dialer{Overrides: ov, Resolver: res, Timeout: 7 * time.Second, Dial: rec.Dial}
	dialPtr := reflect.ValueOf(shared.Dial).Pointer()

	open := newEnvWithDialer(t, policyWith(t, ""), shared)
	strict := newEnvWithDialer(t, policyWith(t, "deny_private = true"), shared)

	if shared.Guard != nil || shared.Timeout != 7*time.Second || shared.Resolver != res ||
		reflect.ValueOf(shared.Dial).Pointer() != dialPtr || len(shared.Overrides) != 1 ||
		reflect.ValueOf(shared.Overrides).Pointer() != reflect.ValueOf(ov).Pointer() {
		t.Fatalf("proxy.New changed the injected Dialer: %+v", *shared)
	}
	for _, tt := range []struct {
		name   string
		e      *env
		host   string
		status int // 403 refused, 502 dialed (the recorder fails every dial)
		dialed string
	}{
		{"private allowed", open, "private.example.test", 502, "10.1.2.3"},
		{"private refused by the other proxy's policy", strict, "private.example.test", 403, ""},
		{"loopback refused", open, "loop.example.test", 403, ""},
		{"loopback refused, other proxy", strict, "loop.example.test", 403, ""},
		{"override trusted", strict, "pinned.example.test", 502, "127.0.0.1"},
	} {
		reqs := destinationRequests(tt.host)
		if tt.host == "pinned.example.test" {
			delete(reqs, "CONNECT") // the override is for port 80 only
		}
		for method, req := range reqs {
			t.Run(tt.name+"/"+method, func(t *testing.T) {
				seen := len(rec.Dialed())
				resp := rawRequest(t, tt.e, req)
				dialed := rec.Dialed()[seen:]
				if resp.StatusCode != tt.status {
					t.Errorf("status %d; want %d", resp.StatusCode, tt.status)
				}
				if tt.status == 403 && resp.Header.Get("X-Feedgate-Reason") != "destination" {
					t.Errorf("X-Feedgate-Reason %q; want destination", resp.Header.Get("X-Feedgate-Reason"))
				}
				if tt.dialed == "" && len(dialed) != 0 || tt.dialed != "" && (len(dialed) != 1 || !strings.HasPrefix(dialed[0], tt.dialed+":")) {
					t.Errorf("dialed %v; want %q", dialed, tt.dialed)
				}
			})
		}
	}
	if shared.Guard != nil {
		t.Errorf("the injected Dialer has a Guard after serving requests")
	}
}

// fakeContextDialer is an injected dialer that is not an *upstream.Dialer: it
// resolves names itself, from its own table, and connects to nothing. A
// name it knows yields one end of a pipe that reports the table's address
// as its RemoteAddr; anything else is recorded and fails.
type fakeContextDialer struct {
	remote map[string]net.Addr

	mu    sync.Mutex
	asked []string
	conns []*fakeConn
}

type fakeConn struct {
	net.Conn
	remote net.Addr
	closed atomic.Bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.remote }

func (c *fakeConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

func (d *fakeContextDialer) DialContext(_ context.Context, _, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.asked = append(d.asked, addr)
	host, _, _ := net.SplitHostPort(addr)
	remote, ok := d.remote[host]
	if !ok {
		return nil, testutil.ErrRecorded
	}
	ours, theirs := net.Pipe()
	_ = theirs.Close() // nothing may be written to a refused connection
	c := &fakeConn{Conn: ours, remote: remote}
	d.conns = append(d.conns, c)
	return c, nil
}

func (d *fakeContextDialer) state() (asked []string, conns []*fakeConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.asked...), append([]*fakeConn(nil), d.conns...)
}

// TestInjectedContextDialerIsGuarded: a ContextDialer that is not an
// *upstream.Dialer keeps the destination policy. IP literals are refused
// before it is asked; names it resolves itself are judged by the
// connection's RemoteAddr, which is closed when refused, and a connection
// that does not say where it leads is refused too.
func TestInjectedContextDialerIsGuarded(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	d := &fakeContextDialer{remote: map[string]net.Addr{
		"loop.example.test":     tcp("127.0.0.1:80"),
		"meta.example.test":     tcp("100.100.100.200:80"),
		"meta6.example.test":    tcp("[fd00:ec2::254]:80"),
		"nat64.example.test":    tcp("[64:ff9b::a9fe:a9fe]:80"),
		"private.example.test":  tcp("10.1.2.3:80"),
		"pipe.example.test":     pipeAddr{},
		"textaddr.example.test": textAddr("127.0.0.1:80"),
	}}
	e := newEnvWithDialer(t, policyWith(t, "deny_private = true"), d)
	for _, tt := range []struct {
		host   string
		status int
		reason string // in the 403 body
		asked  bool   // whether the injected dialer is asked at all
	}{
		{"127.0.0.1", 403, "loopback", false},
		{"[::ffff:127.0.0.1]", 403, "loopback", false},
		{"100.100.100.200", 403, "metadata", false},
		{"[fd00:ec2::254]", 403, "metadata", false},
		{"169.254.169.254", 403, "link-local", false},
		{"loop.example.test", 403, "loopback", true},
		{"meta.example.test", 403, "metadata", true},
		{"meta6.example.test", 403, "metadata", true},
		{"nat64.example.test", 403, "link-local", true},
		{"private.example.test", 403, "private", true},
		{"textaddr.example.test", 403, "loopback", true},
		{"pipe.example.test", 502, "", true},
		{"8.8.8.8", 502, "", true},
	} {
		for method, req := range destinationRequests(tt.host) {
			t.Run(tt.host+"/"+method, func(t *testing.T) {
				asked0, conns0 := d.state()
				resp := rawRequest(t, e, req)
				body, _ := io.ReadAll(resp.Body)
				asked, conns := d.state()
				asked, conns = asked[len(asked0):], conns[len(conns0):]
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d (body %q); want %d", resp.StatusCode, body, tt.status)
				}
				if tt.status == 403 {
					if got := resp.Header.Get("X-Feedgate-Reason"); got != "destination" {
						t.Errorf("X-Feedgate-Reason %q; want destination", got)
					}
					if !strings.Contains(string(body), "refused: "+tt.reason+" address") {
						t.Errorf("body %q does not name the reason %q", body, tt.reason)
					}
				}
				if got := len(asked) != 0; got != tt.asked {
					t.Errorf("the injected dialer was asked for %v; want asked = %v", asked, tt.asked)
				}
				for _, c := range conns {
					if !c.closed.Load() {
						t.Errorf("a refused connection to %v was left open", c.remote)
					}
				}
			})
		}
	}
}

// pipeAddr is the RemoteAddr of a connection that does not lead to an IP
// address.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// textAddr is a RemoteAddr of a type the guard does not know, which still
// spells an address and port.
type textAddr string

func (a textAddr) Network() string { return "tcp" }
func (a textAddr) String() string  { return string(a) }
