package main

// The network-namespace harness of the transparent tests: three namespaces
// (client, gateway, origin) that the test creates, linked only to each
// other by veth pairs and addressed with documentation space, so that no
// packet of these tests can reach the host's own network. The client has
// no proxy settings; the gateway forwards, and an nftables rule redirects
// the client's web traffic to feedgate's transparent port; the origin runs
// real HTTP and TLS servers, served by this test process from sockets it
// opened inside the origin namespace.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	endian "encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Interface names inside the namespaces; no interface of the topology ever
// exists in the host's namespace.
const (
	clientIf    = "fgc0" // client's end of client <-> gateway
	gwClientIf  = "fgg0" // gateway's end of client <-> gateway
	gwOriginIf  = "fgg1" // gateway's end of gateway <-> origin
	originIf    = "fgo0" // origin's end of gateway <-> origin
	nftTable    = "fgtest"
	redirectTo  = 3129 // feedgate's transparent port in the gateway
	gwProxyPort = 3128 // feedgate's explicit port in the gateway
)

// family is one IP version's addresses in the topology.
type family struct {
	name      string
	client    netip.Addr // the client
	gwClient  netip.Addr // the gateway, on the client's side
	gwOrigin  netip.Addr // the gateway, on the origin's side
	origin    netip.Addr // the origin's main address
	forged    netip.Addr // another origin address, for forged names (IPv4 only)
	prefixLen int
}

// families are IPv4 and IPv6, in that order.
func families() []family {
	a := netip.MustParseAddr
	return []family{
		{name: "ipv4", client: a("198.51.100.2"), gwClient: a("198.51.100.1"), gwOrigin: a("192.0.2.1"),
			origin: a("192.0.2.10"), forged: a("192.0.2.20"), prefixLen: 24},
		{name: "ipv6", client: a("2001:db8:1::2"), gwClient: a("2001:db8:1::1"), gwOrigin: a("2001:db8:2::1"),
			origin: a("2001:db8:2::10"), prefixLen: 64},
	}
}

// ipv4 and ipv6 return the topology's families by name.
func ipv4() family { return families()[0] }
func ipv6() family { return families()[1] }

// dst is addr:port as net.Dial and the records write it ([v6]:port).
func dst(addr netip.Addr, port int) string {
	return netip.AddrPortFrom(addr, uint16(port)).String()
}

// curlAddr is addr as curl's --resolve takes it.
func curlAddr(addr netip.Addr) string {
	if addr.Is6() {
		return "[" + addr.String() + "]"
	}
	return addr.String()
}

// netns is the name of a network namespace under /var/run/netns.
type netns string

func (n netns) path() string { return filepath.Join("/var/run/netns", string(n)) }

// do runs fn on an OS thread that has joined the namespace, and returns
// fn's error. Sockets fn opens stay in the namespace after the thread has
// left it. fn must not start work on other threads (name lookups do):
// dial and listen on IP addresses only.
func (n netns) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fail := func(err error) {
			runtime.UnlockOSThread()
			errc <- err
		}
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			fail(fmt.Errorf("the test's own network namespace: %w", err))
			return
		}
		defer home.Close()
		target, err := os.Open(n.path())
		if err != nil {
			fail(fmt.Errorf("network namespace %s: %w", n, err))
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			fail(fmt.Errorf("setns %s: %w", n, err))
			return
		}
		ferr := fn()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked, so Go ends it with this
			// goroutine rather than run other goroutines in n.
			errc <- fmt.Errorf("setns back from %s: %w", n, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// listen opens a TCP listener in the namespace; network is "tcp" (a
// wildcard address there listens on both families), "tcp4" or "tcp6".
func (n netns) listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// dial connects from the namespace to addr, an IP address and port.
func (n netns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("dial from %s: %q is not an IP address and port (a name lookup would leave the namespace's thread)", n, addr)
	}
	var c net.Conn
	err := n.do(func() (err error) {
		c, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// httpClient is an http.Client in the namespace, without any proxy:
// names maps a host name to the address it dials (as curl's --resolve); a
// host that is an IP address is dialed as it is. TLS trusts pool.
func (n netns) httpClient(names map[string]netip.Addr, pool *x509.CertPool) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if a, ok := names[host]; ok {
			addr = net.JoinHostPort(a.String(), port)
		}
		return n.dial(ctx, network, addr)
	}
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: pool}},
		Timeout:   20 * time.Second,
	}
}

// topology is the three namespaces of one test.
type topology struct {
	t                  *testing.T
	ip, nft            string // the programs
	client, gw, origin netns
}

// newTopology creates the namespaces and links, addresses and routes them,
// and removes them all when the test ends. It needs root; without it, or
// without kernel support for network namespaces, the test fails.
func newTopology(t *testing.T) *topology {
	t.Helper()
	n := &topology{t: t, ip: tool(t, "ip", "iproute2"), nft: tool(t, "nft", "nftables")}
	if os.Geteuid() != 0 {
		t.Fatalf("the transparent tests create network namespaces and must run as root (bash .ci/run does); running as uid %d", os.Geteuid())
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	prefix := "fgt-" + hex.EncodeToString(id[:])
	n.client, n.gw, n.origin = netns(prefix+"-client"), netns(prefix+"-gw"), netns(prefix+"-origin")
	for _, ns := range []netns{n.client, n.gw, n.origin} {
		if out, err := exec.Command(n.ip, "netns", "add", string(ns)).CombinedOutput(); err != nil {
			t.Fatalf("cannot create network namespace %s (the transparent tests need root and network namespaces): %v\n%s", ns, err, out)
		}
		t.Cleanup(func() {
			// Deleting the namespace deletes its interfaces and, once
			// the last socket in it is closed, the namespace itself.
			if out, err := exec.Command(n.ip, "netns", "delete", string(ns)).CombinedOutput(); err != nil {
				t.Errorf("ip netns delete %s: %v\n%s", ns, err, out)
			}
			_ = os.RemoveAll(filepath.Join("/etc/netns", string(ns)))
		})
	}
	// Each pair is created with both ends already inside their namespaces.
	n.run("link", "add", clientIf, "netns", string(n.client), "type", "veth", "peer", "name", gwClientIf, "netns", string(n.gw))
	n.run("link", "add", gwOriginIf, "netns", string(n.gw), "type", "veth", "peer", "name", originIf, "netns", string(n.origin))
	for _, l := range []struct {
		ns  netns
		ifs []string
	}{{n.client, []string{"lo", clientIf}}, {n.gw, []string{"lo", gwClientIf, gwOriginIf}}, {n.origin, []string{"lo", originIf}}} {
		for _, ifc := range l.ifs {
			n.run("-n", string(l.ns), "link", "set", ifc, "up")
		}
	}
	for _, f := range families() {
		// nodad: the addresses are usable at once, without waiting
		// for duplicate address detection.
		n.addr(n.client, clientIf, f.client, f.prefixLen)
		n.addr(n.gw, gwClientIf, f.gwClient, f.prefixLen)
		n.addr(n.gw, gwOriginIf, f.gwOrigin, f.prefixLen)
		n.addr(n.origin, originIf, f.origin, f.prefixLen)
		if f.forged.IsValid() {
			n.addr(n.origin, originIf, f.forged, f.prefixLen)
		}
		n.run("-n", string(n.client), "route", "add", "default", "via", f.gwClient.String())
		n.run("-n", string(n.origin), "route", "add", "default", "via", f.gwOrigin.String())
	}
	n.sysctl(n.gw, "net/ipv4/ip_forward", "1")
	n.sysctl(n.gw, "net/ipv6/conf/all/forwarding", "1")
	// feedgate looks up names in the gateway (host verification): there
	// they go to a resolver that refuses at once, never to the host's.
	dir := filepath.Join("/etc/netns", string(n.gw))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

// run runs ip with args, and fails the test if it fails.
func (n *topology) run(args ...string) {
	n.t.Helper()
	if out, err := exec.Command(n.ip, args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (n *topology) addr(ns netns, ifc string, a netip.Addr, bits int) {
	n.t.Helper()
	args := []string{"-n", string(ns), "addr", "add", netip.PrefixFrom(a, bits).String(), "dev", ifc}
	if a.Is6() {
		args = append(args, "nodad")
	}
	n.run(args...)
}

// sysctl sets a network sysctl of ns: /proc/sys/net is the namespace of
// the thread that opens it.
func (n *topology) sysctl(ns netns, key, value string) {
	n.t.Helper()
	err := ns.do(func() error { return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644) })
	if err != nil {
		n.t.Fatalf("sysctl %s=%s in %s: %v", key, value, ns, err)
	}
}

// exec is the command prefix that runs a program in ns.
func (n *topology) exec(ns netns) []string { return []string{n.ip, "netns", "exec", string(ns)} }

// redirectRules is the gateway's nftables ruleset: the client's web
// traffic, and the client's connections to feedgate's explicit port (to
// test the loop guard), go to the transparent port, and QUIC is dropped,
// as docs/transparent.md says.
func redirectRules() string {
	return fmt.Sprintf(`table inet %s {
	chain pre {
		type nat hook prerouting priority dstnat;
		iifname %[2]q tcp dport { 80, 443, %[3]d } redirect to :%[4]d
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname %[2]q udp dport 443 counter drop
	}
}
`, nftTable, gwClientIf, gwProxyPort, redirectTo)
}

// redirect loads the redirect rules in the gateway.
func (n *topology) redirect(t *testing.T) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "redirect.nft")
	if err := os.WriteFile(file, []byte(redirectRules()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(n.ip, "netns", "exec", string(n.gw), n.nft, "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("nft -f (in %s): %v\n%s", n.gw, err, out)
	}
}

// unredirect removes the redirect rules: the gateway only forwards.
func (n *topology) unredirect(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(n.ip, "netns", "exec", string(n.gw), n.nft, "delete", "table", "inet", nftTable).CombinedOutput(); err != nil {
		t.Fatalf("nft delete table (in %s): %v\n%s", n.gw, err, out)
	}
}

// curl runs the real curl in the client namespace, with no proxy: every
// proxy variable is removed from its environment and --noproxy covers the
// rest.
func (n *topology) curl(t *testing.T, args ...string) curlResult {
	t.Helper()
	return curlVia(t, n.exec(n.client), nil, append([]string{"--noproxy", "*"}, args...)...)
}

// curlProxy runs curl in the client namespace with proxy as its only
// proxy.
func (n *topology) curlProxy(t *testing.T, proxy string, args ...string) curlResult {
	t.Helper()
	return curlVia(t, n.exec(n.client), nil, append([]string{"-x", proxy}, args...)...)
}

// Origins

// originNames are the names the origin's certificate is for.
var originNames = []string{"www.example.test", "nowhere.example.test", "dnl-01.geo.kaspersky.com", "s01.upd.kaspersky.com", mirrorHost}

// tally counts an origin's connections and requests by the local address
// they reached, so that a test can tell which address feedgate dialed.
type tally struct {
	mu    sync.Mutex
	conns map[netip.Addr]int
	hits  map[netip.Addr]int
}

func (c *tally) add(m *map[netip.Addr]int, a net.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if *m == nil {
		*m = map[netip.Addr]int{}
	}
	(*m)[addrOf(a)]++
}

// counts returns the connections and requests so far to addr, or to any
// address if addr is the zero Addr.
func (c *tally) counts(addr netip.Addr) (conns, hits int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, k := range c.conns {
		if !addr.IsValid() || a == addr {
			conns += k
		}
	}
	for a, k := range c.hits {
		if !addr.IsValid() || a == addr {
			hits += k
		}
	}
	return conns, hits
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// nsServer is one origin server: HTTP, or HTTPS, on a port of every
// address of the origin namespace, both families.
type nsServer struct {
	tally
	srv *http.Server
}

// origins are the origin namespace's servers: HTTP on port 80 and HTTPS on
// 443, with a certificate for originNames from a test CA.
type origins struct {
	plain, tls *nsServer
	caFile     string
	pool       *x509.CertPool
}

// serveOrigins starts the origin's servers, on listeners opened inside
// its namespace; they stop when the test ends.
func (n *topology) serveOrigins() *origins {
	n.t.Helper()
	leaf, caFile := testCA(n.t, originNames...)
	pem, err := os.ReadFile(caFile)
	if err != nil {
		n.t.Fatal(err)
	}
	o := &origins{caFile: caFile, pool: x509.NewCertPool()}
	o.pool.AppendCertsFromPEM(pem)
	o.plain = n.serve(":80", nil)
	o.tls = n.serve(":443", &tls.Config{Certificates: []tls.Certificate{leaf}, NextProtos: []string{"http/1.1"}})
	return o
}

func (n *topology) serve(addr string, cfg *tls.Config) *nsServer {
	n.t.Helper()
	ln, err := n.origin.listen("tcp", addr)
	if err != nil {
		n.t.Fatalf("listen on %s in %s: %v", addr, n.origin, err)
	}
	s := &nsServer{}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
			s.add(&s.hits, local)
			originHandler(w, r)
		}),
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.add(&s.conns, c.LocalAddr())
			}
		},
		ReadHeaderTimeout: 10 * time.Second,
		// The hostile-input tests make the servers log handshake and
		// request errors; those are expected.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.srv.Serve(ln)
	}()
	n.t.Cleanup(func() {
		_ = s.srv.Close()
		<-done
	})
	return s
}

// originHandler answers as the vendor's servers would, and says in
// X-Origin-Host which Host it was asked for.
func originHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Origin", "test")
	w.Header().Set("X-Origin-Host", r.Host)
	switch r.URL.Path {
	case "/teapot":
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and stout\n")
	case "/slow":
		slowDownload(w, r)
	default:
		io.WriteString(w, originPayload)
	}
}

// feedgate in the gateway

// transparentPolicy is the shipped default policy (configs/feedgate.toml:
// its rules and timeline) on the built-in catalog, for clients of the
// topology, with top added to its top-level keys and tlsKeys to a [tls]
// table.
func transparentPolicy(t *testing.T, top, tlsKeys string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "configs", "feedgate.toml"))
	if err != nil {
		t.Fatal(err)
	}
	const catalogs = `catalogs = ["catalog/kaspersky.toml"]`
	text := string(b)
	if !strings.Contains(text, catalogs) || strings.Contains(text, "\n[tls]") {
		t.Fatalf("configs/feedgate.toml changed: want a %s line and no [tls] table", catalogs)
	}
	keys := `catalogs = ["builtin:catalog/kaspersky.toml"]
allowed_clients = ["198.51.100.0/24", "2001:db8:1::/64"]
` + top
	text = strings.Replace(text, catalogs, keys, 1)
	return text + "\n[tls]\nsni_timeout = \"1s\"\n" + tlsKeys + "\n"
}

// resolveTo points every origin name at addr, for both ports, with -resolve.
func resolveTo(addr netip.Addr) []string {
	var args []string
	for _, name := range originNames {
		if name == "nowhere.example.test" {
			continue // left to the resolver, which cannot find it
		}
		for _, port := range []int{80, 443} {
			args = append(args, "-resolve", fmt.Sprintf("%s:%d:%s", name, port, addr))
		}
	}
	return args
}

// feedgate runs feedgate in the gateway for the test t with the policy
// text, its explicit port on every IPv4 address of the gateway and its
// admin port on the gateway's loopback, plus args; metrics are read in the
// gateway. It stops when t ends.
func (n *topology) feedgate(t *testing.T, policy string, args ...string) *instance {
	t.Helper()
	file := writePolicy(t, policy)
	argv := append(n.exec(n.gw), binary, "run", "-config", file,
		"-listen", fmt.Sprintf("0.0.0.0:%d", gwProxyPort), "-admin", "127.0.0.1:9128")
	inst := startVia(t, argv[0], append(argv[1:], args...)...)
	inst.adminClient = n.gw.httpClient(nil, nil)
	return inst
}

// exactRecords waits for n decision records, then long enough for any
// further one to be written, and fails unless there are exactly n.
func exactRecords(t *testing.T, inst *instance, n int) []map[string]any {
	t.Helper()
	inst.waitRecords(n)
	time.Sleep(3 * logFlushInterval)
	recs := inst.records()
	if len(recs) != n {
		t.Fatalf("got %d decision records; want exactly %d\n%s", len(recs), n, inst.stdout)
	}
	return recs
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h),
// which golang.org/x/sys/unix does not name.
const ip6tSOOriginalDst = 80

// originalDst is what the kernel says about a redirected connection's
// original destination: SO_ORIGINAL_DST (a sockaddr_in) for IPv4,
// IP6T_SO_ORIGINAL_DST (a sockaddr_in6) for IPv6; the port is in network
// byte order in both. The test reads it itself to check the topology's
// redirection apart from feedgate.
func originalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%T is not a TCP connection", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	v4 := addrOf(c.LocalAddr()).Is4()
	var ap netip.AddrPort
	var gerr error
	err = raw.Control(func(fd uintptr) {
		if v4 {
			// sockaddr_in fits in the 16 bytes of an ipv6_mreq's address.
			m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if err != nil {
				gerr = err
				return
			}
			b := m.Multiaddr
			ap = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), endian.BigEndian.Uint16(b[2:4]))
			return
		}
		// sockaddr_in6 is the first member of an ip6_mtuinfo.
		m, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst)
		if err != nil {
			gerr = err
			return
		}
		var port [2]byte
		endian.NativeEndian.PutUint16(port[:], m.Addr.Port)
		ap = netip.AddrPortFrom(netip.AddrFrom16(m.Addr.Addr), endian.BigEndian.Uint16(port[:]))
	})
	return ap, errors.Join(err, gerr)
}

// TestNetnsTopology checks the harness apart from feedgate: the
// namespaces reach nothing beyond each other, the gateway's rule redirects
// the client's web traffic to the transparent port with the original
// destination the kernel reports, and without the rule the gateway
// forwards the client's requests to the origin's servers intact.
func TestNetnsTopology(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	ctx := context.Background()

	t.Run("isolated", func(t *testing.T) {
		for _, ifc := range []string{clientIf, gwClientIf, gwOriginIf, originIf} {
			if out, err := exec.Command(n.ip, "link", "show", "dev", ifc).CombinedOutput(); err == nil {
				t.Errorf("interface %s is in the host's namespace:\n%s", ifc, out)
			}
		}
		// Beyond the topology there is no route: the gateway has none,
		// and tells the client so at once.
		for _, c := range []struct {
			from netns
			addr string
		}{
			{n.gw, "203.0.113.1:80"}, {n.gw, "[2001:db8:ff::1]:80"},
			{n.client, "203.0.113.1:80"}, {n.client, "[2001:db8:ff::1]:80"},
		} {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			conn, err := c.from.dial(dctx, "tcp", c.addr)
			cancel()
			if err == nil {
				conn.Close()
				t.Errorf("%s reached %s outside the topology", c.from, c.addr)
			} else if !errors.Is(err, unix.ENETUNREACH) && !errors.Is(err, unix.EHOSTUNREACH) {
				t.Errorf("dial %s from %s: %v; want network or host unreachable", c.addr, c.from, err)
			}
		}
	})

	t.Run("redirect", func(t *testing.T) {
		n.redirect(t)
		accepted := make(chan net.Conn, 8)
		for _, network := range []string{"tcp4", "tcp6"} {
			host := "0.0.0.0"
			if network == "tcp6" {
				host = "::"
			}
			ln, err := n.gw.listen(network, net.JoinHostPort(host, fmt.Sprint(redirectTo)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted <- c
				}
			}()
		}
		v4, v6 := ipv4(), ipv6()
		// The original destination is the address dialed. A connection
		// to the transparent port itself is not redirected: the kernel
		// reports the address it reached, and feedgate must take that
		// for "no original destination".
		for _, c := range []struct{ dial string }{
			{dst(v4.origin, 443)}, {dst(v4.forged, 80)}, {dst(v6.origin, 443)}, {dst(v6.origin, 80)},
			{dst(v4.gwClient, gwProxyPort)}, {dst(v6.gwClient, gwProxyPort)},
			{dst(v4.gwClient, redirectTo)}, {dst(v6.gwClient, redirectTo)},
		} {
			cc, err := n.client.dial(ctx, "tcp", c.dial)
			if err != nil {
				t.Fatalf("dial %s from the client: %v", c.dial, err)
			}
			var sc net.Conn
			select {
			case sc = <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatalf("a connection to %s did not reach the transparent port", c.dial)
			}
			local := netip.MustParseAddrPort(sc.LocalAddr().String())
			remote := netip.MustParseAddrPort(sc.RemoteAddr().String())
			od, err := originalDst(sc)
			cc.Close()
			sc.Close()
			want := netip.MustParseAddrPort(c.dial)
			if err != nil {
				t.Errorf("%s: original destination: %v", c.dial, err)
			} else if od != want {
				t.Errorf("%s: original destination %v; want %v", c.dial, od, want)
			}
			// redirect sends to the address of the interface the
			// packet came in on.
			if wantLocal := netip.AddrPortFrom(familyOf(want.Addr()).gwClient, redirectTo); local != wantLocal {
				t.Errorf("%s: accepted on %v; want %v", c.dial, local, wantLocal)
			}
			if remote.Addr() != familyOf(want.Addr()).client {
				t.Errorf("%s: accepted from %v; want the client's address", c.dial, remote)
			}
		}
		n.unredirect(t)
	})

	t.Run("forwarding", func(t *testing.T) {
		for _, f := range families() {
			conns0, _ := o.tls.counts(f.origin)
			_, hits0 := o.plain.counts(f.origin)
			res := n.curl(t, "--resolve", "www.example.test:80:"+curlAddr(f.origin), "http://www.example.test/teapot")
			if res.status != "418" || res.body != "short and stout\n" || !strings.Contains(res.headers, "X-Origin-Host: www.example.test") {
				t.Errorf("%s: curl http: status %s body %q headers %q stderr %q; want the origin's 418", f.name, res.status, res.body, res.headers, res.stderr)
			}
			res = n.curl(t, "--cacert", o.caFile, "--resolve", "www.example.test:443:"+curlAddr(f.origin), "https://www.example.test/")
			if res.status != "200" || res.body != originPayload {
				t.Errorf("%s: curl https: status %s body %q stderr %q; want the origin's 200", f.name, res.status, res.body, res.stderr)
			}
			client := n.client.httpClient(map[string]netip.Addr{"www.example.test": f.origin}, o.pool)
			for _, u := range []string{"http://www.example.test/", "https://www.example.test/"} {
				resp, err := client.Get(u)
				if err != nil {
					t.Errorf("%s: Go client %s: %v", f.name, u, err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != originPayload {
					t.Errorf("%s: Go client %s: %d %q; want 200 and the payload", f.name, u, resp.StatusCode, body)
				}
			}
			client.CloseIdleConnections()
			conns, _ := o.tls.counts(f.origin)
			_, hits := o.plain.counts(f.origin)
			if conns-conns0 != 2 || hits-hits0 != 2 {
				t.Errorf("%s: the origin saw %d TLS connections and %d HTTP requests; want 2 and 2", f.name, conns-conns0, hits-hits0)
			}
		}
	})
}

// familyOf is the topology's family of a.
func familyOf(a netip.Addr) family {
	if a.Is4() {
		return ipv4()
	}
	return ipv6()
}

// TestNetnsExplicitProxy runs feedgate in the gateway as an explicit
// proxy (no redirect rule, no transparent listener): the client, given
// the proxy, reaches the origin through it, and the harness reads
// feedgate's records and its metrics inside the gateway.
func TestNetnsExplicitProxy(t *testing.T) {
	n := newTopology(t)
	o := n.serveOrigins()
	v4 := ipv4()
	inst := n.feedgate(t, transparentPolicy(t, "", ""), append([]string{"-at", afterUpdates}, resolveTo(v4.origin)...)...)
	proxy := "http://" + dst(v4.gwClient, gwProxyPort)

	res := n.curlProxy(t, proxy, "http://www.example.test/teapot")
	if res.status != "418" || !strings.Contains(res.headers, "X-Origin-Host: www.example.test") {
		t.Errorf("curl -x http: status %s headers %q stderr %q; want the origin's 418", res.status, res.headers, res.stderr)
	}
	res = n.curlProxy(t, proxy, "--cacert", o.caFile, "https://www.example.test/")
	if res.status != "200" || res.body != originPayload {
		t.Errorf("curl -x https: status %s body %q stderr %q; want the origin's 200", res.status, res.body, res.stderr)
	}
	res = n.curlProxy(t, proxy, "http://dnl-01.geo.kaspersky.com/bases/av/kdb/i386/base.kdc")
	if res.status != "403" || !strings.Contains(res.headers, "X-Feedgate-Rule: updates-cutoff") {
		t.Errorf("curl -x blocked: status %s headers %q; want 403 from updates-cutoff", res.status, res.headers)
	}
	if _, hits := o.plain.counts(netip.Addr{}); hits != 1 {
		t.Errorf("the HTTP origin saw %d requests; want 1 (the blocked one never reaches it)", hits)
	}
	recs := exactRecords(t, inst, 3)
	client := v4.client.String()
	wantFields(t, findRecord(t, recs, "www.example.test", "http"), map[string]any{"client": client, "status": 418, "action": "allow"})
	wantFields(t, findRecord(t, recs, "www.example.test", "connect"), map[string]any{"client": client, "status": 200, "action": "allow"})
	wantFields(t, findRecord(t, recs, "dnl-01.geo.kaspersky.com", "http"), map[string]any{"client": client, "status": 403, "action": "block", "rule": "updates-cutoff"})
	if got := inst.metric("feedgate_requests_total", map[string]string{"vendor": "none", "action": "allow", "rule": "default"}); got != 2 {
		t.Errorf("feedgate_requests_total{vendor=none,action=allow} = %v; want 2", got)
	}
	waitMetric(t, inst, "feedgate_active_connections", map[string]string{"kind": "connect"}, 0)
}
