package proxy_test

import (
	"crypto/tls"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
	"github.com/feedgate/feedgate/rules/config"
)

func sniSeries(result string) series {
	return series{"feedgate_sni_checks_total", []string{"result", result}}
}

func tunnelsClosedSeries(reason string) series {
	return series{"feedgate_tunnels_closed_total", []string{"reason", reason}}
}

// tlsThroughTunnel opens a tunnel to target and runs a TLS handshake with
// serverName in its ClientHello ("" sends none), then one HTTP request.
func tlsThroughTunnel(t *testing.T, e *env, target, serverName string, o *tlsOrigin) (*tls.Conn, error) {
	t.Helper()
	c, resp := openTunnel(t, e, target)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: status %d; want 200 (the SNI check comes after it)", target, resp.StatusCode)
	}
	cfg := &tls.Config{RootCAs: o.roots, ServerName: serverName}
	if serverName == "" {
		// Go sends no SNI for an IP literal; verify against the IP SAN.
		cfg.ServerName = "127.0.0.1"
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc, nil
}

// TestConnectSNI: the ClientHello's server name is decided as well as the
// CONNECT host, and the stricter answer wins.
func TestConnectSNI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		connect     string // CONNECT host, resolved to the TLS origin
		sni         string // "" for none
		at          time.Time
		keys        string // policy keys on top of the builtin catalog; "" for the default policy
		result      string
		wantOK      bool
		action      string
		rule        string
		vendor, cat string
	}{
		{"kaspersky-sni-behind-innocuous-host-after-cutoff", "www.example.test", "dnl-01.geo.kaspersky.com", afterCutoffs, "",
			metrics.SNIMismatch, false, "block", "updates-cutoff", "kaspersky", "update"},
		{"kaspersky-sni-behind-innocuous-host-before-cutoffs", "www.example.test", "dnl-01.geo.kaspersky.com", beforeCutoffs, "",
			metrics.SNIMismatch, true, "allow", "default", "kaspersky", "update"},
		{"kaspersky-sni-between-cutoffs-is-flagged", "www.example.test", "s01.upd.kaspersky.com", betweenCutoffs, "",
			metrics.SNIMismatch, true, "log", "sales-cutoff-flag", "kaspersky", "update"},
		{"innocuous-sni-matches", "www.example.test", "www.example.test", afterCutoffs, "",
			metrics.SNIMatch, true, "allow", "default", "none", "none"},
		{"no-sni-flagged-by-default", "www.example.test", "", afterCutoffs, "",
			metrics.SNINone, true, "log", "tunnel_without_sni", "none", "none"},
		{"no-sni-allowed-by-setting", "www.example.test", "", afterCutoffs, "[tls]\ntunnel_without_sni = \"allow\"\n",
			metrics.SNINone, true, "allow", "default", "none", "none"},
		{"no-sni-blocked-by-setting", "www.example.test", "", afterCutoffs, "[tls]\ntunnel_without_sni = \"block\"\n",
			metrics.SNINone, false, "block", "tunnel_without_sni", "none", "none"},
		{"no-sni-flagged-by-setting", "www.example.test", "", afterCutoffs, "[tls]\ntunnel_without_sni = \"log\"\n",
			metrics.SNINone, true, "log", "tunnel_without_sni", "none", "none"},
		{"no-sni-report-mode-block-is-logged", "www.example.test", "", afterCutoffs, "mode = \"report\"\n[tls]\ntunnel_without_sni = \"block\"\n",
			metrics.SNINone, true, "log", "tunnel_without_sni", "none", "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := newTLSOrigin(t)
			cfg := envConfig{now: tt.at}
			if tt.keys != "" {
				cfg = policyWith(t, tt.keys)
				cfg.now = tt.at
			}
			cfg.resolve = []string{tt.connect + ":443:" + hostPort(t, o.URL)}
			e := newEnv(t, cfg)
			target := tt.connect + ":443"
			check := sniSeries(tt.result)
			reqs := requestsSeries(tt.vendor, tt.cat, tt.action, tt.rule)
			before := e.snapshot(t, check, reqs)

			tc, err := tlsThroughTunnel(t, e, target, tt.sni, o)
			if tt.wantOK {
				if err != nil {
					t.Fatalf("TLS through the tunnel: %v; want a handshake", err)
				}
				if _, err := io.WriteString(tc, "GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				if b, _ := io.ReadAll(tc); len(b) == 0 {
					t.Errorf("no response through the tunnel")
				}
				_ = tc.Close()
			} else {
				if err == nil {
					t.Fatalf("TLS handshake through the tunnel succeeded; want it refused")
				}
				if !strings.Contains(err.Error(), "access denied") {
					t.Errorf("handshake error %v; want a TLS access_denied alert", err)
				}
				if o.Hits() != 0 {
					t.Errorf("origin handled %d requests; want none", o.Hits())
				}
			}
			want := map[string]any{"kind": "connect", "host": tt.connect, "sni_result": tt.result, "action": tt.action, "rule": tt.rule, "vendor": tt.vendor, "category": tt.cat}
			if tt.sni != "" {
				want["sni"] = tt.sni
			}
			if !tt.wantOK {
				want["closed"] = "blocked"
			}
			e.waitRecord(t, want)
			e.waitIdle(t)
			e.checkDeltas(t, before, delta{check, 1}, delta{reqs, 1})
		})
	}
}

// TestConnectSNINotTLSAndTimeout: a tunnel whose client speaks something
// other than TLS, or nothing within sni_timeout, is decided by its CONNECT
// host and keeps working; its bytes arrive unchanged.
func TestConnectSNINotTLSAndTimeout(t *testing.T) {
	t.Parallel()
	echo := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	for _, tt := range []struct {
		name, result string
		wait         bool // stay silent past sni_timeout first
	}{
		{"not-tls", metrics.SNINotTLS, false},
		{"timeout", metrics.SNITimeout, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := policyWith(t, "[tls]\nsni_timeout = \"100ms\"\n")
			cfg.resolve = []string{"echo.example.test:443:" + echo.Addr()}
			e := newEnv(t, cfg)
			before := e.snapshot(t, sniSeries(tt.result))
			c, resp := openTunnel(t, e, "echo.example.test:443")
			if resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %d", resp.StatusCode)
			}
			if tt.wait {
				waitFor(t, "the SNI check to time out", func() bool { return e.value(t, sniSeries(tt.result)) > before[sniSeries(tt.result).String()] })
			}
			msg := "SSH-2.0-OpenSSH_9.6 hello through the tunnel\r\n"
			if _, err := io.WriteString(c, msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
				t.Fatalf("echo through the tunnel: %q, %v; want %q", got, err, msg)
			}
			_ = c.CloseWrite()
			_, _ = io.Copy(io.Discard, c)
			e.waitRecord(t, map[string]any{"kind": "connect", "sni_result": tt.result, "action": "log", "rule": "tunnel_without_sni"})
			e.waitIdle(t)
			e.checkDeltas(t, before, delta{sniSeries(tt.result), 1})
		})
	}
}

// TestTunnelCutAtTransition: a tunnel opened before the updates cut-off is
// closed when the policy clock passes it, by one timer and no polling; a
// tunnel the new window does not block stays open.
func TestTunnelCutAtTransition(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		keys    string
		wantCut bool
	}{
		{"cut", "", true},
		{"cut-tunnels-off", "off", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			echo := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
			cfg := envConfig{}
			if tt.keys == "off" {
				cfg = envConfig{policy: defaultPolicyWith(t, "[tls]\ncut_tunnels = false\n")}
			}
			cfg.now = updatesCutoff.Add(-2 * time.Second)
			cfg.resolve = []string{"s01.upd.kaspersky.com:443:" + echo.Addr(), "echo.example.test:443:" + echo.Addr()}
			e := newEnv(t, cfg)
			cut := tunnelsClosedSeries(metrics.TunnelPolicyChange)
			before := e.snapshot(t, cut)

			kas, _ := openTunnel(t, e, "s01.upd.kaspersky.com:443")
			other, _ := openTunnel(t, e, "echo.example.test:443")
			for _, c := range []tunnelConn{kas, other} {
				roundTrip(t, c, "before the cut-off\n")
			}
			if n := e.clock.Timers(); n != 1 {
				t.Fatalf("%d timers armed; want exactly 1 for the next transition", n)
			}
			e.clock.Set(updatesCutoff)
			if tt.wantCut {
				_ = kas.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
				if _, err := kas.Read(make([]byte, 1)); err == nil {
					t.Fatalf("the Kaspersky tunnel still carries bytes after the cut-off")
				}
				r := e.waitRecord(t, map[string]any{"kind": "connect", "host": "s01.upd.kaspersky.com"})
				checkRecord(t, r, map[string]any{"closed": metrics.TunnelPolicyChange, "cut_rule": "updates-cutoff", "rule": "sales-cutoff-flag"})
				e.checkDeltas(t, before, delta{cut, 1})
			} else {
				roundTrip(t, kas, "after the cut-off, cut_tunnels off\n")
				e.checkDeltas(t, before, delta{cut, 0})
			}
			roundTrip(t, other, "after the cut-off\n")
			if n := e.clock.Timers(); n != 0 {
				t.Errorf("%d timers armed after the last transition; want 0", n)
			}
		})
	}
}

// TestReloadRecheck: SetPolicy decides open tunnels again at once.
func TestReloadRecheck(t *testing.T) {
	t.Parallel()
	echo := testutil.NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	e := newEnv(t, envConfig{now: beforeCutoffs, resolve: []string{"s01.upd.kaspersky.com:443:" + echo.Addr(), "echo.example.test:443:" + echo.Addr()}})
	kas, _ := openTunnel(t, e, "s01.upd.kaspersky.com:443")
	other, _ := openTunnel(t, e, "echo.example.test:443")
	roundTrip(t, kas, "x\n")
	roundTrip(t, other, "y\n")
	before := e.snapshot(t, tunnelsClosedSeries(metrics.TunnelPolicyChange))
	e.srv.SetConfig(policyWith(t, "[[rule]]\nname = \"block-now\"\nvendor = \"kaspersky\"\naction = \"block\"\n").policy)
	_ = kas.SetReadDeadline(time.Now().Add(testutil.WaitLimit))
	if _, err := kas.Read(make([]byte, 1)); err == nil {
		t.Fatalf("tunnel still open after a reload that blocks it")
	}
	roundTrip(t, other, "still here\n")
	e.waitRecord(t, map[string]any{"host": "s01.upd.kaspersky.com", "closed": metrics.TunnelPolicyChange, "cut_rule": "block-now"})
	e.checkDeltas(t, before, delta{tunnelsClosedSeries(metrics.TunnelPolicyChange), 1})
}

func roundTrip(t *testing.T, c tunnelConn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write through the tunnel: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through the tunnel: %q, %v; want %q", got, err, msg)
	}
}

// defaultPolicyWith is the default policy with tables appended (they must
// start with a table header, so that they do not land in the last rule).
func defaultPolicyWith(t *testing.T, tables string) *config.Config {
	t.Helper()
	b, err := fs.ReadFile(configs.Files(), configs.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), `catalogs = ["catalog/kaspersky.toml"]`, `catalogs = ["builtin:catalog/kaspersky.toml"]`, 1)
	file := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(file, []byte(text+"\n"+tables), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadTestPolicy(t, file)
}

// TestClientGroupInRecord: a request's client group is in its record, and
// rules that select groups apply to it.
func TestClientGroupInRecord(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	cfg := policyWith(t, "[clients]\nloopback = [\"127.0.0.0/8\"]\nlab = [\"10.9.0.0/16\"]\n\n"+
		"[[rule]]\nname = \"block-loopback\"\nvendor = \"kaspersky\"\nclients = [\"loopback\"]\naction = \"block\"\n")
	cfg.resolve = []string{"s01.upd.kaspersky.com:80:" + hostPort(t, o.URL), "www.example.test:80:" + hostPort(t, o.URL)}
	e := newEnv(t, cfg)
	c, _ := e.client(t, nil)
	if resp, _ := get(t, c, "http://s01.upd.kaspersky.com/small"); resp.StatusCode != 403 {
		t.Errorf("Kaspersky from the loopback group: %d; want 403", resp.StatusCode)
	}
	if resp, _ := get(t, c, "http://www.example.test/small"); resp.StatusCode != 200 {
		t.Errorf("other traffic from the loopback group: %d; want 200", resp.StatusCode)
	}
	e.waitRecord(t, map[string]any{"host": "s01.upd.kaspersky.com", "client_group": "loopback", "rule": "block-loopback", "action": "block"})
	e.waitRecord(t, map[string]any{"host": "www.example.test", "client_group": "loopback", "action": "allow"})
}
