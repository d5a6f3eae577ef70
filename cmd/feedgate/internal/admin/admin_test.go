package admin

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/proxy/inventory"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
)

// afterUpdates is an instant after the built-in policy's updates cut-off.
var afterUpdates = time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC)

// loadConfig compiles configuration text that may name the built-in
// catalogs.
func loadConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	builtin := rules.FS{FS: configs.Files()}
	src := rules.FS{FS: fstest.MapFS{"policy.toml": {Data: []byte(text)}}}
	p, _, err := config.Load(src, "policy.toml", rules.Options{Builtin: builtin})
	if err != nil {
		t.Fatalf("loading %q: %v", text, err)
	}
	return p
}

const kaspersky = "catalogs = [\"builtin:catalog/kaspersky.toml\"]\n"

// testDeps are working dependencies: a ready proxy on 127.0.0.1:3128 with
// the built-in catalog, whose reloads succeed.
func testDeps(t *testing.T) Deps {
	c := loadConfig(t, kaspersky)
	inv, err := inventory.New(inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return Deps{
		Registry:  prometheus.NewRegistry(),
		Ready:     func() bool { return true },
		Config:    func() *config.Config { return c },
		Now:       func() time.Time { return afterUpdates },
		ProxyAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:3128")),
		Inventory: inv,
		Reload:    func(string) error { return nil },
	}
}

// serve sends one request to New(d) and returns the response and its body.
func serve(t *testing.T, d Deps, method, target string) (*http.Response, string) {
	t.Helper()
	rr := httptest.NewRecorder()
	New(d).ServeHTTP(rr, httptest.NewRequest(method, target, nil))
	resp := rr.Result()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestPlainBodies pins the exact status, content type and body of the
// admin answers that load balancers, probes and scripts read.
func TestPlainBodies(t *testing.T) {
	notReady := testDeps(t)
	notReady.Ready = func() bool { return false }
	disabled := testDeps(t)
	enabled := testDeps(t)
	enabled.ReloadEnabled = true
	var triggers []string
	enabled.Reload = func(trigger string) error { triggers = append(triggers, trigger); return nil }
	failing := testDeps(t)
	failing.ReloadEnabled = true
	failing.Reload = func(string) error { return errors.New("policy.toml:9: unknown action \"blok\"") }
	textPlain := "text/plain; charset=utf-8"

	for _, tc := range []struct {
		name           string
		d              Deps
		method, target string
		status         int
		contentType    string
		body           string
	}{
		{"healthz", testDeps(t), "GET", "/healthz", 200, textPlain, "ok\n"},
		{"readyz", testDeps(t), "GET", "/readyz", 200, textPlain, "ready\n"},
		{"readyz not ready", notReady, "GET", "/readyz", 503, textPlain, "not ready\n\n"},
		{"reload disabled", disabled, "POST", "/-/reload", 403, textPlain,
			"reload over HTTP is not enabled: start feedgate with -admin.enable-reload, or send SIGHUP\n"},
		{"reload", enabled, "POST", "/-/reload", 200, textPlain, "policy reloaded\n"},
		{"reload failed", failing, "POST", "/-/reload", 500, textPlain,
			"reload failed; the running policy stays in force:\npolicy.toml:9: unknown action \"blok\"\n"},
		{"GET reload", enabled, "GET", "/-/reload", 405, textPlain, "Method Not Allowed\n"},
		{"POST healthz", testDeps(t), "POST", "/healthz", 405, textPlain, "Method Not Allowed\n"},
		{"unknown path", testDeps(t), "GET", "/nope", 404, textPlain, "404 page not found\n"},
		{"pprof off", testDeps(t), "GET", "/debug/pprof/", 404, textPlain, "404 page not found\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := serve(t, tc.d, tc.method, tc.target)
			if resp.StatusCode != tc.status || body != tc.body {
				t.Errorf("%s %s: %d %q; want %d %q", tc.method, tc.target, resp.StatusCode, body, tc.status, tc.body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tc.contentType {
				t.Errorf("Content-Type = %q; want %q", ct, tc.contentType)
			}
		})
	}
	if len(triggers) != 1 || triggers[0] != "http" {
		t.Errorf("reload triggers %q; want [http]", triggers)
	}
}

func TestMetrics(t *testing.T) {
	d := testDeps(t)
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "feedgate_test_total", Help: "A test counter."})
	d.Registry.MustRegister(c)
	c.Inc()
	resp, body := serve(t, d, "GET", "/metrics")
	if resp.StatusCode != 200 || !strings.Contains(body, "feedgate_test_total 1\n") {
		t.Errorf("/metrics: %d\n%s", resp.StatusCode, body)
	}
	// promhttp counts its own errors on the registry it serves.
	if _, body := serve(t, d, "GET", "/metrics"); !strings.Contains(body, "promhttp_metric_handler_errors_total") {
		t.Errorf("/metrics lacks promhttp's own counter:\n%s", body)
	}
}

func TestPprof(t *testing.T) {
	d := testDeps(t)
	d.Pprof = true
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/symbol"} {
		if resp, _ := serve(t, d, "GET", path); resp.StatusCode != 200 {
			t.Errorf("%s with Pprof: %d; want 200", path, resp.StatusCode)
		}
	}
}

func TestFeeds(t *testing.T) {
	d := testDeps(t)
	builtin := rules.FS{FS: configs.Files()}
	c, _, err := config.Load(builtin, configs.DefaultPolicy, rules.Options{Builtin: builtin})
	if err != nil {
		t.Fatal(err)
	}
	d.Config = func() *config.Config { return c }
	resp, body := serve(t, d, "GET", "/feeds/kaspersky/block.txt")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("block feed: %d %v", resp.StatusCode, resp.Header)
	}
	if !strings.Contains(body, "\nstore.kaspersky.com\n") || !strings.Contains(body, "# at: ") {
		t.Errorf("the block feed after the updates cut-off lacks store.kaspersky.com or its header:\n%s", body)
	}
	// The feed follows the clock it is given.
	d.Now = func() time.Time { return time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC) }
	if _, body := serve(t, d, "GET", "/feeds/kaspersky/block.txt"); strings.Contains(body, "\nstore.kaspersky.com\n") {
		t.Errorf("the block feed before the sales cut-off lists store.kaspersky.com:\n%s", body)
	}

	for _, tc := range []struct{ target, body string }{
		{"/feeds/kaspersky/blok.txt", "want /feeds/{vendor}/{allow|log|block}.txt\n"},
		{"/feeds/kaspersky/block", "want /feeds/{vendor}/{allow|log|block}.txt\n"},
		{"/feeds/eset/block.txt", ""},
	} {
		resp, body := serve(t, d, "GET", tc.target)
		if resp.StatusCode != 404 || tc.body != "" && body != tc.body {
			t.Errorf("%s: %d %q; want 404 %q", tc.target, resp.StatusCode, body, tc.body)
		}
	}
}

func TestPAC(t *testing.T) {
	withProxy := testDeps(t)
	c := loadConfig(t, "pac_proxy = \"proxy.corp.example:3128\"\n"+kaspersky)
	withProxy.Config = func() *config.Config { return c }
	// A listener's own address, as the kernel reports it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	listener := testDeps(t)
	listener.ProxyAddr = ln.Addr()
	wildcard := testDeps(t)
	wildcard.ProxyAddr = &net.TCPAddr{IP: net.IPv6unspecified, Port: 3128}

	for _, tc := range []struct {
		name   string
		d      Deps
		status int
		has    string
	}{
		{"listener address", listener, 200, `"PROXY ` + ln.Addr().String() + `"`},
		{"pac_proxy", withProxy, 200, `"PROXY proxy.corp.example:3128"`},
		{"wildcard listener", wildcard, 503,
			"feedgate listens on [::]:3128, which clients cannot use as an address: set pac_proxy = \"host:port\" in the policy\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/proxy.pac", "/wpad.dat"} {
				resp, body := serve(t, tc.d, "GET", path)
				if resp.StatusCode != tc.status || !strings.Contains(body, tc.has) {
					t.Errorf("%s: %d %q; want %d and %q", path, resp.StatusCode, body, tc.status, tc.has)
				}
				if tc.status == 200 && (resp.Header.Get("Content-Type") != "application/x-ns-proxy-autoconfig" || resp.Header.Get("Cache-Control") != "no-cache") {
					t.Errorf("%s headers %v", path, resp.Header)
				}
			}
		})
	}
}

func TestNewServer(t *testing.T) {
	s := NewServer(testDeps(t))
	if s.ReadHeaderTimeout != 10*time.Second || s.Handler == nil {
		t.Errorf("server: ReadHeaderTimeout %v, handler %v", s.ReadHeaderTimeout, s.Handler)
	}
}
