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
	"slices"
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

// repoRoot is the repository's root, relative to this package's directory,
// where go test runs the tests.
const repoRoot = "../.."

// binary is the feedgate executable, built once for every end-to-end test:
// these here and those of the deployment and monitoring files in configs/.
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

// lines is a child process's output, kept line by line as it is read, so
// that the test can read it while the process writes and never sees half a
// line.
type lines struct {
	mu  sync.Mutex
	all []string
}

// read keeps every line of r until r ends, and shows each to watch, if not
// nil, as it comes.
func (l *lines) read(r io.Reader, watch func(line string)) {
	br := bufio.NewReader(r)
	for {
		s, err := br.ReadString('\n')
		if s != "" {
			line := strings.TrimSuffix(s, "\n")
			l.mu.Lock()
			l.all = append(l.all, line)
			l.mu.Unlock()
			if watch != nil {
				watch(line)
			}
		}
		if err != nil {
			return
		}
	}
}

// list returns the lines read so far.
func (l *lines) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// String returns the output read so far, each line with its newline.
func (l *lines) String() string {
	var b strings.Builder
	for _, line := range l.list() {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// process is a child process of a test (feedgate, Prometheus): its stdout
// and stderr are read as it writes them, and it is stopped when the test
// ends.
type process struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout *lines
	stderr *lines
	exited chan struct{} // closed once the process has exited and its output is read
	err    error         // what Wait returned, once exited is closed
}

// startProcess runs path with args; watch, if not nil, sees every line of
// its stderr as it comes.
func startProcess(t *testing.T, name, path string, watch func(line string), args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, cmd: exec.Command(path, args...), stdout: &lines{}, stderr: &lines{}, exited: make(chan struct{})}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	var reading sync.WaitGroup
	reading.Go(func() { p.stdout.read(stdout, nil) })
	reading.Go(func() { p.stderr.read(stderr, watch) })
	go func() {
		// Wait closes the pipes: everything must be read before.
		reading.Wait()
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop is stopWithin(20 * time.Second).
func (p *process) stop() error { return p.stopWithin(20 * time.Second) }

// stopWithin sends SIGTERM and waits for the process to exit (at once if it
// has already), and returns what Wait returned. A process still running
// after d is killed, and the test fails.
func (p *process) stopWithin(d time.Duration) error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("%s did not exit within %v of SIGTERM; killed", p.name, d)
	}
	return p.err
}

// hasExited reports whether the process has exited.
func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// instance is a running feedgate.
type instance struct {
	*process
	Proxy string // host:port of the proxy listener
	Admin string // host:port of the admin listener
	Mode  string // the policy's mode: enforce or report
	// adminClient reaches Admin; nil means http.DefaultClient. A feedgate
	// in another network namespace is reached through a dialer there.
	adminClient *http.Client
}

// start runs feedgate with args on loopback ports chosen by the kernel and
// waits until it reports its listeners.
func start(t *testing.T, args ...string) *instance {
	t.Helper()
	return startExact(t, append([]string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, args...)...)
}

// startExact runs feedgate with exactly args, and waits for its "feedgate
// started" line.
func startExact(t *testing.T, args ...string) *instance {
	t.Helper()
	return startVia(t, binary, args...)
}

// startVia runs path with args, where path is feedgate itself or a program
// that runs it (ip netns exec NAME feedgate ...), and waits for feedgate's
// "feedgate started" line.
func startVia(t *testing.T, path string, args ...string) *instance {
	t.Helper()
	started := make(chan map[string]any, 1)
	p := startProcess(t, "feedgate", path, func(line string) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "feedgate started" {
			select {
			case started <- rec:
			default:
			}
		}
	}, args...)
	select {
	case rec := <-started:
		inst := &instance{process: p}
		inst.Proxy, _ = rec["proxy"].(string)
		inst.Admin, _ = rec["admin"].(string)
		inst.Mode, _ = rec["mode"].(string)
		return inst
	case <-p.exited:
		t.Fatalf("feedgate %q exited before listening: %v\nstderr:\n%s", args, p.err, p.stderr)
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Fatalf("feedgate %q did not start in 30s\nstderr:\n%s", args, p.stderr)
	}
	return nil
}

// records returns the decision records written so far.
func (i *instance) records() []map[string]any {
	var out []map[string]any
	for _, line := range i.stdout.list() {
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
	c := i.adminClient
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Get("http://" + i.Admin + "/metrics")
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

// tool returns the path of an external program the tests need; a missing
// one fails the test (bash .ci/run installs them all).
func tool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install Debian's %s package (bash .ci/run does)", name, debianPackage)
	}
	return p
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

// testAuthority is a certificate authority made for one test.
type testAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestAuthority(t *testing.T, name string) *testAuthority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testAuthority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (a *testAuthority) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.cert)
	return p
}

// issue signs a certificate for names (host names, or IP addresses) with
// the given use, and returns it and its key as PEM.
func (a *testAuthority) issue(t *testing.T, usage x509.ExtKeyUsage, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// testCA makes a CA and a leaf certificate for names, and writes the CA to
// a PEM file that curl can trust with --cacert.
func testCA(t *testing.T, names ...string) (leaf tls.Certificate, caFile string) {
	t.Helper()
	ca := newTestAuthority(t, "feedgate test CA")
	certPEM, keyPEM := ca.issue(t, x509.ExtKeyUsageServerAuth, names...)
	leaf, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return leaf, caFile
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
	return curlVia(t, nil, env, args...)
}

// curlVia is curl run through the command wrap (ip netns exec NAME), or
// directly when wrap is empty.
func curlVia(t *testing.T, wrap []string, env []string, args ...string) curlResult {
	t.Helper()
	dir := t.TempDir()
	hdr := filepath.Join(dir, "headers")
	full := append([]string{"-sS", "--max-time", "20", "-D", hdr, "-o", filepath.Join(dir, "body"), "-w", "%{http_code}"}, args...)
	argv := append(slices.Clone(wrap), "curl")
	cmd := exec.Command(argv[0], append(argv[1:], full...)...)
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
