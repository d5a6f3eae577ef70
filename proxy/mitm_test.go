package proxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/intercept"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
	"github.com/feedgate/feedgate/rules/config"
)

// interceptEnv runs the default policy with www.kaspersky.com intercepted,
// between the cut-offs: its store paths are blocked, the rest is flagged.
func interceptEnv(t *testing.T) (*env, *tlsOrigin, *x509.CertPool) {
	t.Helper()
	return interceptEnvWith(t, nil)
}

// interceptEnvWith is interceptEnv with an origin that serves h (nil: the
// usual originHandler).
func interceptEnvWith(t *testing.T, h http.Handler) (*env, *tlsOrigin, *x509.CertPool) {
	t.Helper()
	cfg, o, pool := interceptConfig(t, h)
	return newEnv(t, cfg), o, pool
}

// interceptConfig is the envConfig of interceptEnvWith, with its origin and
// the roots a client needs.
func interceptConfig(t *testing.T, h http.Handler) (envConfig, *tlsOrigin, *x509.CertPool) {
	t.Helper()
	o := newTLSOriginWith(t, h)
	ca, p := interceptPolicy(t, "www.kaspersky.com")
	cfg := envConfig{policy: p, now: betweenCutoffs, roots: o.roots, ca: ca,
		resolve: []string{"www.kaspersky.com:443:" + hostPort(t, o.URL), "s01.upd.kaspersky.com:443:" + hostPort(t, o.URL)}}
	// The client trusts feedgate's CA, and the origin's certificate for
	// the hosts that are tunnelled rather than intercepted.
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	pool.AddCert(o.Certificate())
	return cfg, o, pool
}

// interceptPolicy makes an interception CA and returns it with the default
// policy that intercepts hosts with it.
func interceptPolicy(t *testing.T, hosts ...string) (*intercept.CA, *config.Config) {
	t.Helper()
	certFile, keyFile, err := intercept.CreateCA(t.TempDir(), "", time.Now())
	if err != nil {
		t.Fatalf("CreateCA: %v", err)
	}
	ca, err := intercept.LoadCA(certFile, keyFile, time.Now())
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	quoted := make([]string, len(hosts))
	for i, h := range hosts {
		quoted[i] = strconv.Quote(h)
	}
	return ca, defaultPolicyWith(t, fmt.Sprintf("[tls.intercept]\nhosts = [%s]\nca_cert = %q\nca_key = %q\n",
		strings.Join(quoted, ", "), filepath.ToSlash(certFile), filepath.ToSlash(keyFile)))
}

// TestIntercept: a client that trusts feedgate's CA gets path-level
// decisions inside HTTPS; a blocked path never reaches the origin.
func TestIntercept(t *testing.T) {
	t.Parallel()
	e, o, pool := interceptEnv(t)
	c, tr := e.client(t, pool)

	resp, body := get(t, c, "https://www.kaspersky.com/small")
	if resp.StatusCode != 200 || body == "" {
		t.Fatalf("allowed path: %d %q; want 200 from the origin", resp.StatusCode, body)
	}
	if got := resp.TLS.PeerCertificates[0].Issuer.CommonName; got != "feedgate interception CA" {
		t.Errorf("leaf issued by %q; want feedgate's CA", got)
	}
	hits := o.Hits()
	resp, body = get(t, c, "https://www.kaspersky.com/renewal-center/home")
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Feedgate-Rule") != "sales-cutoff-store" {
		t.Fatalf("blocked path: %d (rule %q) %q; want 403 from sales-cutoff-store", resp.StatusCode, resp.Header.Get("X-Feedgate-Rule"), body)
	}
	if o.Hits() != hits {
		t.Errorf("the blocked path reached the origin")
	}
	tr.CloseIdleConnections()
	e.waitRecord(t, map[string]any{"kind": "mitm", "path": "/small", "action": "log", "category": "web", "status": 200})
	e.waitRecord(t, map[string]any{"kind": "mitm", "path": "/renewal-center/home", "action": "block", "category": "store", "status": 403})
	e.waitRecord(t, map[string]any{"kind": "connect", "host": "www.kaspersky.com", "sni_result": "intercepted"})

	// Hosts not named in [tls.intercept] are tunnelled, not intercepted.
	resp, _ = get(t, c, "https://s01.upd.kaspersky.com/small")
	if resp.StatusCode != 200 {
		t.Fatalf("tunnelled host: %d", resp.StatusCode)
	}
	if got := resp.TLS.PeerCertificates[0].Issuer.CommonName; got == "feedgate interception CA" {
		t.Errorf("a host outside [tls.intercept] was intercepted")
	}
}

// TestInterceptUntrustedClient: a client without feedgate's CA fails the
// handshake with a certificate error, and nothing reaches the origin.
func TestInterceptUntrustedClient(t *testing.T) {
	t.Parallel()
	e, o, _ := interceptEnv(t)
	c, _ := e.client(t, o.roots) // trusts the origin, not feedgate
	_, err := c.Get("https://www.kaspersky.com/small")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("GET without feedgate's CA: %v; want an unknown-authority error", err)
	}
	if o.Hits() != 0 {
		t.Errorf("origin hit %d times; want 0", o.Hits())
	}
	e.waitRecord(t, map[string]any{"kind": "connect", "host": "www.kaspersky.com", "closed": "tls_handshake"})
}

// TestInterceptOtherSNIOrHost: an intercepted tunnel serves only its own
// host: a ClientHello for another name fails, and so does a request whose
// Host header names another host (421).
func TestInterceptOtherSNIOrHost(t *testing.T) {
	t.Parallel()
	e, _, pool := interceptEnv(t)
	conn, resp := openTunnel(t, e, "www.kaspersky.com:443")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	if err := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "other.example.test"}).Handshake(); err == nil {
		t.Fatalf("handshake for another SNI name succeeded; want it refused")
	}

	conn, _ = openTunnel(t, e, "www.kaspersky.com:443")
	tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "www.kaspersky.com"})
	fmt.Fprintf(tc, "GET /small HTTP/1.1\r\nHost: s01.upd.kaspersky.com\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("request for another host inside the tunnel: %d; want 421", r.StatusCode)
	}
}

// TestInterceptRefusesConnectInside: a CONNECT sent inside an intercepted
// tunnel is refused (400, recorded rejected invalid): the tunnel it asks
// for would be neither decided nor relayed as one, and its bytes would
// pass unseen under a decision made for the outer host.
func TestInterceptRefusesConnectInside(t *testing.T) {
	t.Parallel()
	e, o, pool := interceptEnv(t)
	conn, resp := openTunnel(t, e, "www.kaspersky.com:443")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "www.kaspersky.com"})
	_ = tc.SetDeadline(time.Now().Add(testutil.WaitLimit))
	hits := o.Hits()
	fmt.Fprintf(tc, "CONNECT www.kaspersky.com:443 HTTP/1.1\r\nHost: www.kaspersky.com:443\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(tc), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("reading the answer to the inner CONNECT: %v", err)
	}
	if r.StatusCode != http.StatusBadRequest {
		t.Errorf("CONNECT inside an intercepted tunnel: %d; want 400", r.StatusCode)
	}
	if o.Hits() != hits {
		t.Errorf("the inner CONNECT reached the origin")
	}
	e.waitRecord(t, map[string]any{"kind": "mitm", "method": "CONNECT", "rejected": "invalid", "status": 400})
}

// TestInterceptWebsocket: a websocket upgraded inside an intercepted
// tunnel is relayed until it ends, as on the proxy port, not cut when its
// handler takes the connection over.
func TestInterceptWebsocket(t *testing.T) {
	t.Parallel()
	e, _, pool := interceptEnvWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want a websocket", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, "echo: "+line); err != nil {
				return
			}
		}
	}))
	conn, resp := openTunnel(t, e, "www.kaspersky.com:443")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "www.kaspersky.com"})
	_ = tc.SetDeadline(time.Now().Add(testutil.WaitLimit))
	fmt.Fprintf(tc, "GET /chat HTTP/1.1\r\nHost: www.kaspersky.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(tc)
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the upgrade: %v", err)
	}
	if r.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade inside the intercepted tunnel: %d; want 101", r.StatusCode)
	}
	for _, msg := range []string{"one\n", "two\n"} {
		if _, err := io.WriteString(tc, msg); err != nil {
			t.Fatalf("writing %q: %v", msg, err)
		}
		line, err := br.ReadString('\n')
		if err != nil || line != "echo: "+msg {
			t.Fatalf("websocket echo: %q, %v; want %q", line, err, "echo: "+msg)
		}
	}
	tc.Close()
	e.waitRecord(t, map[string]any{"kind": "mitm", "path": "/chat", "status": 101})
}

// TestInterceptClientGoneWhileUpstreamWaits: inside an intercepted
// connection too, a client that leaves while the upstream has not answered
// cancels the upstream request (the front end watches the client through
// the TLS layer), and the record says 499.
func TestInterceptClientGoneWhileUpstreamWaits(t *testing.T) {
	t.Parallel()
	h := newHangingOrigin()
	e, _, pool := interceptEnvWith(t, h)
	conn, resp := openTunnel(t, e, "www.kaspersky.com:443")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "www.kaspersky.com"})
	_ = tc.SetDeadline(time.Now().Add(testutil.WaitLimit))
	h.leaveWhileWaiting(t, tc, "GET /hang HTTP/1.1\r\nHost: www.kaspersky.com\r\n\r\n")
	e.waitRecord(t, map[string]any{"kind": "mitm", "path": "/hang", "status": float64(accesslog.StatusClientClosed)})
}

// TestInterceptDialPanicIsContained: the upstream of an intercepted
// request is dialed by net/http's transport on a goroutine of its own; a
// panic in the dial fails that request with a 502 and an error in the
// operational log, and the proxy serves on (TestPanicIsContained covers
// the other ways in).
func TestInterceptDialPanicIsContained(t *testing.T) {
	t.Parallel()
	cfg, o, pool := interceptConfig(t, nil)
	n := &faultNet{docNet: newDocNet(), panicDial: map[string]bool{"192.0.2.50:443": true}}
	opsLog := &testutil.SyncBuffer{}
	cfg.dial, cfg.errorLog = n.dial, opsLog
	// The intercepted host's upstream is the panicking address; a host
	// that is tunnelled still reaches the origin.
	cfg.resolve = []string{"www.kaspersky.com:443:192.0.2.50", "s01.upd.kaspersky.com:443:" + hostPort(t, o.URL)}
	e := newEnv(t, cfg)
	c, _ := e.client(t, pool)
	resp, body := get(t, c, "https://www.kaspersky.com/small")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("an intercepted request whose dial panicked: %d %q; want 502", resp.StatusCode, body)
	}
	if strings.Contains(body, "panic") || strings.Contains(body, "192.0.2.50") {
		t.Errorf("the reply %q shows the panic or the upstream's address", body)
	}
	if logged := opsLog.String(); !strings.Contains(logged, `level=ERROR msg="panic dialing upstream"`) || !strings.Contains(logged, "goroutine ") {
		t.Errorf("the operational log has no panic with its stack:\n%s", logged)
	}
	e.waitRecord(t, map[string]any{"kind": "mitm", "path": "/small", "status": 502})
	if resp, body := get(t, c, "https://s01.upd.kaspersky.com/small"); resp.StatusCode != http.StatusOK {
		t.Errorf("a tunnel after the panic: %d %q; want 200", resp.StatusCode, body)
	}
}
