package proxy_test

// Shared scaffolding for the in-process end-to-end tests: a real proxy on a
// loopback listener, a fake policy clock, a fake resolver (no test ever lets
// the system resolver run), a goroutine-safe decision log, origins on
// 127.0.0.1, and helpers that read metrics from the test's own registry.

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/intercept"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
	"github.com/feedgate/feedgate/proxy/upstream"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
)

// Policy clock instants around the default policy's cut-offs
// (sales 2024-07-20T04:00:00Z, updates 2024-09-29T04:00:00Z).
var (
	beforeCutoffs  = time.Date(2024, 7, 1, 12, 0, 0, 0, time.UTC)
	salesCutoff    = time.Date(2024, 7, 20, 4, 0, 0, 0, time.UTC)
	betweenCutoffs = time.Date(2024, 8, 15, 12, 0, 0, 0, time.UTC)
	updatesCutoff  = time.Date(2024, 9, 29, 4, 0, 0, 0, time.UTC)
	afterCutoffs   = time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC)
)

// envConfig configures newEnv. Zero values mean: the embedded default
// policy, the clock at afterCutoffs, no overrides and an empty resolver.
type envConfig struct {
	policy  *config.Config
	now     time.Time
	resolve []string // "HOST:PORT:ADDR" values for Overrides.ParseResolve
	// resolver replaces the empty fake resolver.
	resolver *testutil.Resolver
	// dialTimeout and responseHeaderTimeout go to proxy.Options.
	dialTimeout, responseHeaderTimeout time.Duration
	// dialerTimeout is the injected upstream.Dialer's own Timeout.
	dialerTimeout time.Duration
	// logTo receives the decision log instead of env.log.
	logTo io.Writer
	// squid writes the log in Squid's format instead of JSON.
	squid bool
	// dial replaces the Dialer's connect step (to record addresses).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// dialer, if set, is passed as proxy.Options.Dialer exactly as given,
	// instead of an upstream.Dialer built from resolve, resolver and dial.
	dialer proxy.ContextDialer
	// listeners are passed as proxy.Options.Listeners.
	listeners []netip.AddrPort
	// roots verify upstream TLS (proxy.Options.RootCAs); ca is the
	// interception CA (proxy.Options.InterceptCA).
	roots *x509.CertPool
	ca    *intercept.CA
	// originalDst is passed as proxy.Options.OriginalDst; nil means the
	// env's redirections (see env.redirect).
	originalDst func(net.Conn) (netip.AddrPort, error)
	// errorLog receives the proxy's operational log, debug level
	// included; nil discards it.
	errorLog io.Writer
}

// env is one running proxy with its collaborators.
type env struct {
	srv      *proxy.Server
	hs       *proxy.Front
	addr     string
	proxyURL *url.URL
	reg      *prometheus.Registry
	clock    *testutil.Clock
	log      *testutil.SyncBuffer
	resolver *testutil.Resolver
	// redirected maps each transparent listener's address to the
	// original destination of the connections it accepts.
	redirectMu sync.Mutex
	redirected map[string]netip.AddrPort
}

func loadDefaultPolicy(t testing.TB) *config.Config {
	t.Helper()
	p, _, err := config.Load(rules.FS{FS: configs.Files()}, configs.DefaultPolicy, rules.Options{})
	if err != nil {
		t.Fatalf("loading the default policy: %v", err)
	}
	return p
}

// loadTestPolicy loads a policy file from testdata (or any path); catalogs
// may be "builtin:" paths into the embedded catalogs.
func loadTestPolicy(t *testing.T, file string) *config.Config {
	t.Helper()
	p, _, err := config.Load(rules.Dir{}, file, rules.Options{Builtin: rules.FS{FS: configs.Files()}})
	if err != nil {
		t.Fatalf("loading %s: %v", file, err)
	}
	return p
}

func decisionLog(w io.Writer, squid bool) accesslog.Sink {
	if squid {
		return accesslog.NewSquid(w)
	}
	return accesslog.NewJSON(w)
}

func newEnv(t testing.TB, cfg envConfig) *env {
	t.Helper()
	if cfg.policy == nil {
		cfg.policy = loadDefaultPolicy(t)
	}
	if cfg.now.IsZero() {
		cfg.now = afterCutoffs
	}
	if cfg.resolver == nil {
		cfg.resolver = &testutil.Resolver{}
	}
	ov := upstream.Overrides{}
	for _, r := range cfg.resolve {
		if err := ov.ParseResolve(r); err != nil {
			t.Fatalf("ParseResolve(%q): %v", r, err)
		}
	}
	e := &env{clock: testutil.NewClock(cfg.now), reg: prometheus.NewRegistry(), log: &testutil.SyncBuffer{}, resolver: cfg.resolver,
		redirected: map[string]netip.AddrPort{}}
	if cfg.originalDst == nil {
		cfg.originalDst = e.originalDst
	}
	var errLog *slog.Logger
	if cfg.errorLog != nil {
		errLog = slog.New(slog.NewTextHandler(cfg.errorLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m := metrics.New(e.reg, metrics.Options{Now: e.clock.Now, NoRuntimeCollectors: true})
	var dialer proxy.ContextDialer = &upstream.Dialer{Overrides: ov, Resolver: cfg.resolver, Timeout: cfg.dialerTimeout, Dial: cfg.dial}
	if cfg.dialer != nil {
		dialer = cfg.dialer
	}
	srv, err := proxy.New(proxy.Options{
		Config:                cfg.policy,
		Metrics:               m,
		AccessLog:             decisionLog(cmp.Or[io.Writer](cfg.logTo, e.log), cfg.squid),
		Clock:                 e.clock,
		Dialer:                dialer,
		Listeners:             cfg.listeners,
		DialTimeout:           cfg.dialTimeout,
		ResponseHeaderTimeout: cfg.responseHeaderTimeout,
		RootCAs:               cfg.roots,
		InterceptCA:           cfg.ca,
		OriginalDst:           cfg.originalDst,
		ErrorLog:              errLog,
	})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	e.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.hs = srv.HTTPServer()
	e.addr = ln.Addr().String()
	e.proxyURL = &url.URL{Scheme: "http", Host: e.addr}
	go func() { _ = e.hs.Serve(ln) }()
	t.Cleanup(func() {
		_ = e.hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), testutil.WaitLimit)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("proxy Shutdown: %v", err)
		}
	})
	return e
}

// redirect starts a transparent listener on 127.0.0.1 whose connections
// were all going to orig, as if one firewall rule redirected them there,
// and returns its address. orig "" stands for clients that connect to the
// transparent port itself: their connections have no original
// destination. The listener closes when the test ends, before the proxy
// shuts down.
func (e *env) redirect(t testing.TB, orig string) string {
	t.Helper()
	var ap netip.AddrPort
	if orig != "" {
		var err error
		if ap, err = netip.ParseAddrPort(orig); err != nil {
			t.Fatalf("original destination %q: %v", orig, err)
		}
	}
	return e.serveTransparent(t, ap, proxy.TransparentOptions{})
}

// serveTransparent starts srv.ServeTransparent on a new 127.0.0.1
// listener, with orig as the original destination of its connections, and
// returns the listener's address.
func (e *env) serveTransparent(t testing.TB, orig netip.AddrPort, o proxy.TransparentOptions) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	e.redirectMu.Lock()
	e.redirected[addr] = orig
	e.redirectMu.Unlock()
	done := make(chan error, 1)
	go func() { done <- e.srv.ServeTransparent(ln, o) }()
	t.Cleanup(func() {
		_ = ln.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Errorf("ServeTransparent on %s returned %v; want the closed listener's error", addr, err)
		}
	})
	return addr
}

// errNotRedirected is the env's answer for a connection that has no
// original destination.
var errNotRedirected = errors.New("test: the connection was not redirected")

// originalDst is the env's proxy.Options.OriginalDst: the destination its
// listener was started for (see redirect).
func (e *env) originalDst(c net.Conn) (netip.AddrPort, error) {
	e.redirectMu.Lock()
	defer e.redirectMu.Unlock()
	if ap, ok := e.redirected[c.LocalAddr().String()]; ok && ap.IsValid() {
		return ap, nil
	}
	return netip.AddrPort{}, errNotRedirected
}

// client returns an http.Client that sends everything through the proxy.
// roots, if not nil, verify https origins.
func (e *env) client(t *testing.T, roots *x509.CertPool) (*http.Client, *http.Transport) {
	t.Helper()
	tr := &http.Transport{Proxy: http.ProxyURL(e.proxyURL), DisableCompression: true}
	if roots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testutil.WaitLimit}, tr
}

// dial opens a raw connection to the proxy, with a deadline against hangs.
func (e *env) dial(t testing.TB) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(testutil.WaitLimit))
	return c.(*net.TCPConn)
}

// record is one parsed decision-log line.
type record map[string]any

func (r record) num(k string) float64 {
	n, _ := r[k].(float64)
	return n
}

func (e *env) records(t *testing.T) []record {
	t.Helper()
	var out []record
	sc := bufio.NewScanner(strings.NewReader(e.log.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("decision log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// matching returns the records whose fields equal want (values compared
// in their JSON form, so numbers may be given as ints).
func matching(recs []record, want map[string]any) []record {
	var out []record
	for _, r := range recs {
		ok := true
		for k, v := range want {
			if fmt.Sprint(r[k]) != fmt.Sprint(v) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, r)
		}
	}
	return out
}

// waitRecords waits until n records match want and returns them. Records are
// written after the response has been sent, so tests must wait for them.
func (e *env) waitRecords(t *testing.T, n int, want map[string]any) []record {
	t.Helper()
	deadline := time.Now().Add(testutil.WaitLimit)
	for {
		got := matching(e.records(t), want)
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				t.Fatalf("decision records matching %v: got %d; want %d\nlog:\n%s", want, len(got), n, e.log.String())
			}
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) waitRecord(t *testing.T, want map[string]any) record {
	t.Helper()
	return e.waitRecords(t, 1, want)[0]
}

// checkRecord compares fields of a record.
func checkRecord(t *testing.T, r record, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if fmt.Sprint(r[k]) != fmt.Sprint(v) {
			t.Errorf("record[%q] = %v; want %v (record %v)", k, r[k], v, r)
		}
	}
}

// metricValue gathers reg and returns the value of the series name{labels}
// (label pairs as key, value, ...): a counter's or gauge's value, or a
// histogram's sample count. A series that does not exist reads as 0.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metricValue(%s): odd label list %v", name, labels)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
			t.Fatalf("metric %s has an unexpected type", name)
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for i := 0; i < len(pairs); i += 2 {
		if got[pairs[i]] != pairs[i+1] {
			return false
		}
	}
	return true
}

// series names one metric series for snapshot/delta checks.
type series struct {
	name   string
	labels []string
}

func (s series) String() string { return s.name + fmt.Sprint(s.labels) }

func requestsSeries(vendor, category, action, rule string) series {
	return series{"feedgate_requests_total", []string{"vendor", vendor, "category", category, "action", action, "rule", rule}}
}

func bytesSeries(vendor, category, dir string) series {
	return series{"feedgate_transferred_bytes_total", []string{"vendor", vendor, "category", category, "direction", dir}}
}

func upstreamErrSeries(reason string) series {
	return series{"feedgate_upstream_errors_total", []string{"reason", reason}}
}

func activeSeries(kind string) series {
	return series{"feedgate_active_connections", []string{"kind", kind}}
}

func durationSeries(kind string) series {
	return series{"feedgate_request_duration_seconds", []string{"kind", kind}}
}

func (e *env) value(t *testing.T, s series) float64 {
	t.Helper()
	return metricValue(t, e.reg, s.name, s.labels...)
}

// snapshot reads several series at once, for later delta checks.
func (e *env) snapshot(t *testing.T, ss ...series) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range ss {
		out[s.String()] = e.value(t, s)
	}
	return out
}

// delta is the exact amount a series must move by.
type delta struct {
	s    series
	want float64
}

// checkDeltas asserts that every series moved by exactly its delta since
// before was taken.
func (e *env) checkDeltas(t *testing.T, before map[string]float64, deltas ...delta) {
	t.Helper()
	for _, d := range deltas {
		if got := e.value(t, d.s) - before[d.s.String()]; got != d.want {
			t.Errorf("%s moved by %v; want %v", d.s, got, d.want)
		}
	}
}

// waitIdle waits until no request or tunnel is in flight. The active gauges
// are decremented last in the proxy's handlers, after the record, the byte
// counters and the duration histogram, so this is the point at which every
// metric of the finished requests has settled.
func (e *env) waitIdle(t *testing.T) {
	t.Helper()
	waitFor(t, "active connections to drop to 0", func() bool {
		return e.value(t, activeSeries(accesslog.KindHTTP)) == 0 && e.value(t, activeSeries(accesslog.KindConnect)) == 0 &&
			e.value(t, activeSeries(accesslog.KindTransparent)) == 0
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testutil.WaitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// resolveTo builds an Overrides value pointing host:port at an origin.
func resolveTo(host string, port int, origin string) string {
	return fmt.Sprintf("%s:%d:%s", host, port, origin)
}

// hostPort returns the "127.0.0.1:NNNN" part of an httptest URL.
func hostPort(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// origin is an httptest HTTP server that counts the requests it handles and
// remembers the headers of the last one.
type origin struct {
	*httptest.Server
	mu      sync.Mutex
	hits    int
	lastHdr http.Header
}

func (o *origin) Hits() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits
}

func (o *origin) LastHeader() http.Header {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lastHdr.Clone()
}

// bigBody is the 4 MiB body served at /big: a pattern that shows any
// reordering or loss.
var bigBody = func() []byte {
	b := make([]byte, 4<<20)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}()

// originHandler serves:
//
//	/hello         200 "hello from origin\n" with X-Origin: hello
//	/big           200, bigBody
//	/echo          200, the request body (and its method in X-Method)
//	/status/NNN    status NNN
//	anything else  200 "path=<path>\n"
func originHandler(o *origin) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.hits++
		o.lastHdr = r.Header.Clone()
		o.mu.Unlock()
		switch {
		case r.URL.Path == "/hello":
			w.Header().Set("X-Origin", "hello")
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "hello from origin\n")
		case r.URL.Path == "/big":
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(bigBody)
		case r.URL.Path == "/echo":
			// Read everything first: net/http's HTTP/1 server is not
			// full duplex by default.
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("X-Method", r.Method)
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			_, _ = w.Write(b)
		case strings.HasPrefix(r.URL.Path, "/status/"):
			var code int
			_, _ = fmt.Sscanf(strings.TrimPrefix(r.URL.Path, "/status/"), "%d", &code)
			w.WriteHeader(code)
		default:
			_, _ = io.WriteString(w, "path="+r.URL.Path+"\n")
		}
	})
}

func newOrigin(t testing.TB) *origin {
	t.Helper()
	o := &origin{}
	o.Server = httptest.NewServer(originHandler(o))
	t.Cleanup(o.Close)
	return o
}

// tlsNames are the names the test TLS certificate is valid for.
var tlsNames = []string{
	"www.example.test", "s01.upd.kaspersky.com", "dnl-01.geo.kaspersky.com",
	"activation-v2.kaspersky.com", "store.kaspersky.com", "www.kaspersky.com",
}

var testCert = sync.OnceValues(func() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "feedgate test origin"},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              tlsNames,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
})

// tlsOrigin is an httptest TLS server whose certificate covers tlsNames and
// which counts the TCP connections it accepted.
type tlsOrigin struct {
	*origin
	mu    sync.Mutex
	conns int
	roots *x509.CertPool
}

func (o *tlsOrigin) Conns() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.conns
}

func newTLSOrigin(t *testing.T) *tlsOrigin { return newTLSOriginWith(t, nil) }

// newTLSOriginWith is newTLSOrigin serving h instead of originHandler.
func newTLSOriginWith(t *testing.T, h http.Handler) *tlsOrigin {
	t.Helper()
	cert, err := testCert()
	if err != nil {
		t.Fatalf("test certificate: %v", err)
	}
	o := &tlsOrigin{origin: &origin{}}
	if h == nil {
		h = originHandler(o.origin)
	}
	s := httptest.NewUnstartedServer(h)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			o.mu.Lock()
			o.conns++
			o.mu.Unlock()
		}
	}
	s.StartTLS()
	o.Server = s
	t.Cleanup(s.Close)
	o.roots = x509.NewCertPool()
	o.roots.AddCert(s.Certificate())
	return o
}

// connectRequest is the raw CONNECT request for target.
func connectRequest(target string) string {
	return "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
}

// readResponse reads one HTTP response (with its whole body) from br.
func readResponse(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the proxy's response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the proxy's response body: %v", err)
	}
	return resp, string(body)
}

// get sends GET url through c and returns status, headers and body.
func get(t *testing.T, c *http.Client, rawURL string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(rawURL)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", rawURL, err)
	}
	return resp, string(body)
}

// rawErrorFragments are pieces of Go error text that must never appear in
// a body the proxy writes to a client.
var rawErrorFragments = []string{"dial tcp", "lookup ", "connect: connection refused", "i/o timeout", "context deadline exceeded", "timeout awaiting", testutil.FakeDNSText, "127.0.0.1:"}
