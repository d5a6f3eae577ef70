package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// binary is the feedgate executable built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "feedgate-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "feedgate")
	out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
	if err != nil {
		// -race needs cgo; fall back to a plain build where it is missing.
		out, err = exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "building feedgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// instance is a running feedgate process.
type instance struct {
	t      *testing.T
	cmd    *exec.Cmd
	Proxy  string // host:port of the proxy listener
	Admin  string // host:port of the admin listener
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan error
}

// start runs feedgate with args on loopback ports chosen by the kernel and
// waits until it reports its listeners.
func start(t *testing.T, args ...string) *instance {
	t.Helper()
	return startExact(t, append([]string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, args...)...)
}

// startExact runs feedgate with exactly args.
func startExact(t *testing.T, args ...string) *instance {
	t.Helper()
	cmd := exec.Command(binary, args...)
	inst := &instance{t: t, cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout = inst.stdout
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(inst.stderr, pw)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start feedgate: %v", err)
	}
	go func() { inst.done <- cmd.Wait(); pw.Close() }()
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "feedgate started" {
				started <- rec
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case rec := <-started:
		inst.Proxy, inst.Admin = rec["proxy"].(string), rec["admin"].(string)
	case err := <-inst.done:
		t.Fatalf("feedgate exited before listening: %v\nstderr:\n%s", err, inst.stderr)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("feedgate did not start in 30s\nstderr:\n%s", inst.stderr)
	}
	t.Cleanup(func() { inst.stop() })
	return inst
}

// stop sends SIGTERM and waits for a clean exit.
func (i *instance) stop() error {
	if i.cmd.ProcessState != nil {
		return nil
	}
	_ = i.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-i.done:
		i.done <- err
		return err
	case <-time.After(20 * time.Second):
		_ = i.cmd.Process.Kill()
		i.t.Errorf("feedgate did not exit within 20s of SIGTERM")
		return <-i.done
	}
}

// records returns the decision records written so far.
func (i *instance) records() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(i.stdout.String(), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			i.t.Fatalf("decision log line is not JSON: %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// waitRecords waits until at least n decision records are written; records
// are written when a response or tunnel ends, which can be just after the
// client has its answer.
func (i *instance) waitRecords(n int) []map[string]any {
	i.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := i.records()
		if len(recs) >= n || time.Now().After(deadline) {
			if len(recs) < n {
				i.t.Fatalf("got %d decision records; want %d\n%s", len(recs), n, i.stdout)
			}
			return recs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric returns the value of the sample name{labels} from /metrics, and 0
// if the series does not exist.
func (i *instance) metric(name string, labels map[string]string) float64 {
	i.t.Helper()
	fams := i.scrape()
	fam, ok := fams[name]
	if !ok {
		return 0
	}
next:
	for _, m := range fam.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

func (i *instance) scrape() map[string]*dto.MetricFamily {
	i.t.Helper()
	resp, err := http.Get("http://" + i.Admin + "/metrics")
	if err != nil {
		i.t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		i.t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// origin is a local test server standing in for a vendor host.
type origin struct {
	*httptest.Server
	hits  atomic.Int64 // requests served
	conns atomic.Int64 // TCP connections accepted
}

func newOrigin(t *testing.T, tlsCert *tls.Certificate, h http.HandlerFunc) *origin {
	o := &origin{}
	o.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		h(w, r)
	}))
	o.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			o.conns.Add(1)
		}
	}
	if tlsCert != nil {
		o.TLS = &tls.Config{Certificates: []tls.Certificate{*tlsCert}}
		o.StartTLS()
	} else {
		o.Start()
	}
	t.Cleanup(o.Close)
	return o
}

func (o *origin) port() string {
	_, p, _ := net.SplitHostPort(o.Listener.Addr().String())
	return p
}

// testCA makes a CA and a leaf certificate for names, and writes the CA to
// a PEM file that curl can trust with --cacert.
func testCA(t *testing.T, names ...string) (leaf tls.Certificate, caFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "feedgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: nil}, caFile
}

// curlResult is what one curl invocation produced.
type curlResult struct {
	status   string // the last HTTP status code curl saw ("000" if none)
	body     string
	headers  string
	stderr   string
	exitCode int
}

// curl runs the real curl. env adds environment variables (https_proxy);
// proxy variables from the test's own environment are removed so that only
// what the test sets is used.
func curl(t *testing.T, env []string, args ...string) curlResult {
	t.Helper()
	dir := t.TempDir()
	hdr := filepath.Join(dir, "headers")
	full := append([]string{"-sS", "--max-time", "20", "-D", hdr, "-o", filepath.Join(dir, "body"), "-w", "%{http_code}"}, args...)
	cmd := exec.Command("curl", full...)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "all_proxy", "no_proxy":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := curlResult{status: strings.TrimSpace(stdout.String()), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.exitCode = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("curl: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "body"))
	h, _ := os.ReadFile(hdr)
	res.body, res.headers = string(b), string(h)
	return res
}
