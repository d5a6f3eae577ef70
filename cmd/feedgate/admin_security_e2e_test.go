package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/crypto/bcrypt"
)

// adminPassword is the password of the basic auth tests' user
// "prometheus"; the web configs hold its bcrypt hash.
const adminPassword = "example-password"

// passwordHash is adminPassword's bcrypt hash, at the lowest cost so that
// the tests stay fast.
func passwordHash(t *testing.T) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(adminPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// writeTestFile writes text to dir/name and returns the path.
func writeTestFile(t *testing.T, dir, name string, text []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeServerCert writes a certificate for the admin listener, signed by a
// new authority, to dir/admin.crt and dir/admin.key, and returns the
// authority.
func writeServerCert(t *testing.T, dir string) *testAuthority {
	t.Helper()
	ca := newTestAuthority(t, "feedgate admin test CA")
	cert, key := ca.issue(t, x509.ExtKeyUsageServerAuth, "localhost", "127.0.0.1")
	writeTestFile(t, dir, "admin.crt", cert)
	writeTestFile(t, dir, "admin.key", key)
	return ca
}

// adminGet sends GET url with client (a plain one when nil) and basic auth
// credentials when user is not empty, and returns the response with its
// body read.
func adminGet(t *testing.T, client *http.Client, method, u, user, password string) (*http.Response, string, error) {
	t.Helper()
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// loopbackAddr is addr with an unspecified host (0.0.0.0, ::) replaced by
// 127.0.0.1, which the tests reach it at.
func loopbackAddr(t *testing.T, addr string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// TestAdminBasicAuth: with basic_auth_users, every admin URL answers 401
// without the right user and password, and as usual with them.
func TestAdminBasicAuth(t *testing.T) {
	dir := t.TempDir()
	file := writeTestFile(t, dir, "web.yml", []byte("basic_auth_users:\n  prometheus: "+passwordHash(t)+"\n"))
	inst := start(t, "-web.config.file", file)
	base := "http://" + inst.Admin

	for _, tc := range []struct {
		method, path string
		status       int // with the right credentials
	}{
		{"GET", "/", 200},
		{"GET", "/clients/127.0.0.1", 200},
		{"GET", "/static/status.css", 200},
		{"GET", "/metrics", 200},
		{"GET", "/api/v1/status", 200},
		{"GET", "/api/v1/traffic", 200},
		{"GET", "/api/v1/decisions", 200},
		{"GET", "/api/v1/clients", 200},
		{"GET", "/api/v1/clients/127.0.0.1", 200},
		{"GET", "/healthz", 200},
		{"GET", "/readyz", 200},
		{"GET", "/proxy.pac", 200},
		{"GET", "/feeds/kaspersky/block.txt", 200},
		// Credentials do not stand in for -admin.enable-reload.
		{"POST", "/-/reload", 403},
	} {
		for _, cred := range []struct{ name, user, password string }{
			{"no credentials", "", ""},
			{"wrong password", "prometheus", "wrong-password"},
			{"unknown user", "nobody", adminPassword},
		} {
			resp, body, err := adminGet(t, nil, tc.method, base+tc.path, cred.user, cred.password)
			if err != nil {
				t.Fatalf("%s %s, %s: %v", tc.method, tc.path, cred.name, err)
			}
			// The toolkit answers before feedgate's handler: plain text
			// that browsers do not sniff.
			if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != "Basic" || body != "Unauthorized\n" ||
				resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("%s %s, %s: %d %v %q; want 401 Basic, plain text, nosniff", tc.method, tc.path, cred.name, resp.StatusCode, resp.Header, body)
			}
		}
		resp, body, err := adminGet(t, nil, tc.method, base+tc.path, "prometheus", adminPassword)
		if err != nil {
			t.Fatalf("%s %s with credentials: %v", tc.method, tc.path, err)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s with credentials: %d %q; want %d", tc.method, tc.path, resp.StatusCode, body, tc.status)
		}
	}

	// feedgate clients sends the credentials of its -admin URL.
	var out, errOut bytes.Buffer
	u := "http://" + url.UserPassword("prometheus", adminPassword).String() + "@" + inst.Admin
	if code := run([]string{"clients", "-admin", u}, &out, &errOut); code != 0 {
		t.Errorf("feedgate clients -admin http://prometheus:...@%s: exit %d: %s", inst.Admin, code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"clients", "-admin", inst.Admin}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "401 Unauthorized") {
		t.Errorf("feedgate clients without credentials: exit %d: %s; want 1 and 401", code, errOut.String())
	}
	// A wrong password is refused, and not repeated in the message.
	errOut.Reset()
	wrong := "http://" + url.UserPassword("prometheus", "wrong-secret").String() + "@" + inst.Admin
	if code := run([]string{"clients", "-admin", wrong}, &out, &errOut); code != 1 || strings.Contains(errOut.String(), "wrong-secret") || !strings.Contains(errOut.String(), "prometheus:xxxxx@") {
		t.Errorf("feedgate clients with a wrong password: exit %d: %s; want 1, the URL with the password redacted", code, errOut.String())
	}
}

// TestAdminTLS: the admin listener serves HTTPS with a web config's
// certificate, and with client_auth_type RequireAndVerifyClientCert only to
// clients with a certificate from client_ca_file.
func TestAdminTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA := writeServerCert(t, dir)
	clientCA := newTestAuthority(t, "feedgate admin clients CA")
	writeTestFile(t, dir, "clients-ca.crt", clientCA.pem)
	// Relative names are relative to the web config's directory.
	tlsOnly := writeTestFile(t, dir, "tls.yml", []byte("tls_server_config:\n  cert_file: admin.crt\n  key_file: admin.key\n"))
	clientCerts := writeTestFile(t, dir, "client-certs.yml", []byte("tls_server_config:\n  cert_file: admin.crt\n  key_file: admin.key\n"+
		"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients-ca.crt\n"))

	httpsClient := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: serverCA.pool()}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	clientCert := func(ca *testAuthority) *tls.Certificate {
		certPEM, keyPEM := ca.issue(t, x509.ExtKeyUsageClientAuth, "prometheus")
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}

	t.Run("server certificate", func(t *testing.T) {
		inst := start(t, "-web.config.file", tlsOnly)
		resp, body, err := adminGet(t, httpsClient(nil), "GET", "https://"+inst.Admin+"/metrics", "", "")
		if err != nil || resp.StatusCode != 200 || resp.TLS == nil || !strings.Contains(body, "feedgate_") {
			t.Fatalf("https /metrics: %v %v", resp, err)
		}
		resp, body, err = adminGet(t, nil, "GET", "http://"+inst.Admin+"/metrics", "", "")
		if err == nil && (resp.StatusCode == 200 || strings.Contains(body, "feedgate_")) {
			t.Errorf("plain http to the TLS admin listener: %d %q; want a failure", resp.StatusCode, body)
		}
	})

	t.Run("client certificates", func(t *testing.T) {
		inst := start(t, "-web.config.file", clientCerts)
		for _, tc := range []struct {
			name string
			cert *tls.Certificate
			ok   bool
		}{
			{"no certificate", nil, false},
			{"certificate from another CA", clientCert(newTestAuthority(t, "someone else's CA")), false},
			{"certificate from client_ca_file", clientCert(clientCA), true},
		} {
			resp, _, err := adminGet(t, httpsClient(tc.cert), "GET", "https://"+inst.Admin+"/metrics", "", "")
			switch {
			case tc.ok && (err != nil || resp.StatusCode != 200):
				t.Errorf("%s: %v, %v; want 200", tc.name, resp, err)
			case !tc.ok && err == nil:
				t.Errorf("%s: %d; want the handshake refused", tc.name, resp.StatusCode)
			}
		}
	})
}

// runRefused runs feedgate with args, which it must refuse at start, and
// returns its exit status and output; a feedgate that starts serving
// instead is killed after 30 s.
func runRefused(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	return exitCode(err), string(out)
}

// freeAddr returns a loopback address that nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestAdminBadWebConfigRefusesToStart: a web config that the toolkit
// would not serve stops feedgate before it listens, with the flag and the
// problem on stderr.
func TestAdminBadWebConfigRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		text string // "" for a file that does not exist
		want string
	}{
		{"missing file", "", "no such file or directory"},
		{"bad YAML", "basic_auth_users: [\n", "yaml: "},
		{"unknown key", "basic_auth_user:\n  prometheus: x\n", "field basic_auth_user not found"},
		{"plain-text password", "basic_auth_users:\n  prometheus: " + adminPassword + "\n",
			`basic_auth_users: "prometheus": the password must be a bcrypt hash`},
		{"missing certificate", "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", "cert_file"},
		{"header the toolkit does not set", "http_server_config:\n  headers:\n    Server: feedgate\n", `HTTP header "Server" can not be configured`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yml")
			if tc.text != "" {
				writeTestFile(t, dir, filepath.Base(file), []byte(tc.text))
			}
			listen := freeAddr(t)
			code, out := runRefused(t, "run", "-listen", listen, "-admin", "127.0.0.1:0", "-web.config.file", file)
			prefix := "feedgate run: -web.config.file " + file + ": "
			if code != 1 || !strings.HasPrefix(out, prefix) || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d:\n%s\nwant 1 and %q with %q", code, out, prefix, tc.want)
			}
			if strings.Contains(out, "feedgate started") || strings.Contains(out, adminPassword) {
				t.Errorf("output:\n%s\nwant neither a start nor the password", out)
			}
			if c, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
				c.Close()
				t.Errorf("the proxy address %s is listening after a refused start", listen)
			}
		})
	}
}

// TestAdminBeyondLoopback: -admin beyond loopback needs a web config that
// authenticates, or -admin.insecure.
func TestAdminBeyondLoopback(t *testing.T) {
	dir := t.TempDir()
	basic := writeTestFile(t, dir, "basic.yml", []byte("basic_auth_users:\n  prometheus: "+passwordHash(t)+"\n"))
	headersOnly := writeTestFile(t, dir, "headers.yml", []byte("http_server_config:\n  headers:\n    X-Frame-Options: deny\n"))
	for _, tc := range []struct {
		name   string
		args   []string
		status int      // of GET /healthz once started; 0: refused at start
		want   []string // on stderr
	}{
		{"all interfaces", []string{"-admin", "0.0.0.0:0"}, 0,
			[]string{"feedgate run: -admin 0.0.0.0:0 reaches beyond loopback", "-web.config.file FILE", "-admin.insecure"}},
		{"empty host", []string{"-admin", ":0"}, 0, []string{"feedgate run: -admin :0 reaches beyond loopback"}},
		{"web config without authentication", []string{"-admin", "0.0.0.0:0", "-web.config.file", headersOnly}, 0,
			[]string{"sets neither basic_auth_users nor tls_server_config client_auth_type: RequireAndVerifyClientCert", "-admin.insecure"}},
		{"-admin.insecure", []string{"-admin", "0.0.0.0:0", "-admin.insecure"}, 200,
			[]string{"without authentication (-admin.insecure)"}},
		{"basic auth", []string{"-admin", "0.0.0.0:0", "-web.config.file", basic}, 401,
			[]string{"passwords cross the network in clear"}},
		{"localhost", []string{"-admin", "localhost:0"}, 200, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"run", "-listen", "127.0.0.1:0"}, tc.args...)
			var stderr string
			if tc.status == 0 {
				var code int
				code, stderr = runRefused(t, args...)
				if code != 1 || strings.Contains(stderr, "feedgate started") {
					t.Errorf("exit %d:\n%s\nwant 1, refused", code, stderr)
				}
			} else {
				inst := startExact(t, args...)
				resp, _, err := adminGet(t, nil, "GET", "http://"+loopbackAddr(t, inst.Admin)+"/healthz", "", "")
				if err != nil || resp.StatusCode != tc.status {
					t.Errorf("GET /healthz: %v %v; want %d", resp, err, tc.status)
				}
				stderr = inst.stderr.String()
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr:\n%s\nwant %q", stderr, w)
				}
			}
		})
	}
}

// TestAdminStrictHeaders: the binary's admin answers, found or not,
// carry the strict security headers.
func TestAdminStrictHeaders(t *testing.T) {
	inst := start(t)
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
			"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
		"X-Content-Type-Options":       "nosniff",
		"X-Frame-Options":              "DENY",
		"Referrer-Policy":              "no-referrer",
		"Cross-Origin-Opener-Policy":   "same-origin",
		"Cross-Origin-Resource-Policy": "same-origin",
	}
	for _, path := range []string{"/healthz", "/metrics", "/nope/%3Cscript%3E"} {
		resp, _, err := adminGet(t, nil, "GET", "http://"+inst.Admin+path, "", "")
		if err != nil {
			t.Fatal(err)
		}
		for name, v := range want {
			if got := resp.Header.Values(name); len(got) != 1 || got[0] != v {
				t.Errorf("GET %s: %s %q; want %q", path, name, got, v)
			}
		}
	}
}

// TestAdminExampleWebConfig: configs/web-config.example.yml, beside a
// certificate and key of the names it gives, is a valid web config that
// protects an admin listener beyond loopback with TLS and the password
// its comment names; its headers reach the toolkit's own 401s.
func TestAdminExampleWebConfig(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(repoRoot, "configs", "web-config.example.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := writeTestFile(t, dir, "web-config.yml", text)
	ca := writeServerCert(t, dir)
	if err := web.Validate(file); err != nil {
		t.Fatalf("web.Validate: %v", err)
	}
	inst := startExact(t, "run", "-listen", "127.0.0.1:0", "-admin", "0.0.0.0:0", "-web.config.file", file)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}}}
	u := "https://" + loopbackAddr(t, inst.Admin) + "/metrics"
	resp, _, err := adminGet(t, client, "GET", u, "", "")
	if err != nil || resp.StatusCode != 401 || resp.Header.Get("Content-Security-Policy") == "" || resp.Header.Get("X-Frame-Options") != "deny" {
		t.Errorf("GET /metrics without credentials: %v %v; want 401 with the example's headers", resp, err)
	}
	resp, _, err = adminGet(t, client, "GET", u, "prometheus", "change-me")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("GET /metrics as prometheus:change-me: %v %v; want 200", resp, err)
	}
	if strings.Contains(inst.stderr.String(), `"level":"WARN"`) {
		t.Errorf("warnings with the example web config:\n%s", inst.stderr)
	}
}
