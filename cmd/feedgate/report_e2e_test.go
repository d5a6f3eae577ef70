package main

// End-to-end tests of feedgate report (issue 15): exact numbers over the
// decision log of a real feedgate run across a cut-off, verified with its
// evidence log, and over the access.log of a real Squid, whose lines the
// report decides with the policy.

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/feedgate/feedgate/cmd/feedgate/internal/report"
)

// reportCmd runs the binary's feedgate report with stdin and returns its
// exit code, the report it wrote on stdout, parsed, and stderr.
func reportCmd(t *testing.T, stdin []byte, args ...string) (int, *report.Result, string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"report", "-format", "json"}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var res *report.Result
	if stdout.Len() > 0 {
		res = &report.Result{}
		if err := json.Unmarshal(stdout.Bytes(), res); err != nil {
			t.Fatalf("feedgate report %q: %v\n%s", args, err, stdout.String())
		}
	}
	return exitCode(err), res, stderr.String()
}

// dayTotals sums the days table per "vendor/category action", over the
// dates: the runs here happen today, and could straddle a midnight.
func dayTotals(res *report.Result) map[string]int64 {
	out := map[string]int64{}
	for _, d := range res.Days {
		out[d.Vendor+"/"+d.Category+" "+d.Action] += d.Requests
	}
	return out
}

func hostTotals(hosts []report.Host) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, fmt.Sprintf("%s %s/%s %s %d allowed %d clients %d", h.Host, h.Vendor, h.Category, h.Signature, h.Requests, h.Allowed, h.Clients))
	}
	return out
}

func clientTotals(res *report.Result) []string {
	var out []string
	for _, c := range res.Clients {
		out = append(out, fmt.Sprintf("%s %s/%s %d %s %s", c.Client, c.Vendor, c.Category, c.Requests, c.LastAction, c.LastRule))
	}
	slices.Sort(out)
	return out
}

// cutoffReportPolicy is a policy with threat-intelligence-like host exemption
// and an updates cut-off at cutoff (a TOML date-time).
func cutoffReportPolicy(cutoff string) string {
	return fmt.Sprintf(`name = "report-e2e"
timezone = "America/New_York"
catalogs = ["builtin:catalog/kaspersky.toml"]

[[rule]]
name = "site-exempt"
hosts = ["www.kaspersky.com"]
action = "allow"

[[rule]]
name = "updates-cutoff"
vendor = "kaspersky"
action = "block"
from = %s

[log]
file = "decisions.log"
evidence_key = "keys/signer.key"
instance = "gw-report"
checkpoint_every = 5
`, cutoff)
}

// TestReportOverFeedgateRun: a feedgate with the evidence log on serves
// 6 requests, gets a policy whose cut-off is a second away (SIGHUP), and
// serves 8 more after it; the report over its log has exactly these
// requests on each side of the cut-off, verifies, and fails (exit 1,
// report written) once a record is edited.
func TestReportOverFeedgateRun(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	if out, err := exec.Command(binary, "evidence", "keygen", "-dir", filepath.Join(dir, "keys"), "-name", "gw-report").CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	verifier := filepath.Join(dir, "keys", "verifier.key")
	policy := filepath.Join(dir, "policy.toml")
	writePolicy := func(text string) {
		t.Helper()
		if err := os.WriteFile(policy+".tmp", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(policy+".tmp", policy); err != nil {
			t.Fatal(err)
		}
	}
	writePolicy(cutoffReportPolicy("2099-01-01T00:00:00"))
	logPath := filepath.Join(dir, "decisions.log")
	inst := start(t, append(f.resolveArgs(), "-config", policy)...)
	get := func(n int, url string) {
		t.Helper()
		for range n {
			curl(t, nil, "-x", "http://"+inst.Proxy, url)
		}
	}
	// Before the cut-off: 3 updates and 1 exempt request (Kaspersky), 2
	// others.
	get(3, "http://s01.upd.kaspersky.com/bases/av/kdb/i386/base.kdc")
	get(2, "http://www.example.test/")
	get(1, "http://www.kaspersky.com/")
	waitFile(t, logPath, 7) // and the checkpoint after 5

	cut := time.Now().Truncate(time.Second).Add(2 * time.Second)
	writePolicy(cutoffReportPolicy(cut.UTC().Format(time.RFC3339)))
	if err := inst.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, inst, "feedgate_config_reloads_total", map[string]string{"result": "success"}, 1)
	time.Sleep(time.Until(cut) + 50*time.Millisecond)

	// After it: 5 Kaspersky requests blocked, 2 exempt, 1 other.
	get(4, "http://s01.upd.kaspersky.com/bases/av/kdb/i386/base.kdc")
	get(2, "http://www.kaspersky.com/")
	get(1, "http://dnl-01.geo.kaspersky.com/bases/av/kdb/i386/base.kdc")
	get(1, "http://www.example.test/")
	if err := inst.stop(); err != nil {
		t.Fatal(err)
	}

	code, res, stderr := reportCmd(t, nil, "-config", policy, "-key", verifier, logPath)
	if code != 0 || res == nil {
		t.Fatalf("report: exit %d\n%s", code, stderr)
	}
	if res.Records != 14 || res.Malformed.Count != 0 || !slices.Equal(res.Inputs[0].Instances, []string{"gw-report"}) {
		t.Errorf("records %d, malformed %v, inputs %+v; want 14 records of gw-report", res.Records, res.Malformed, res.Inputs)
	}
	wantDays := map[string]int64{"kaspersky/update allow": 3, "kaspersky/update block": 5, "kaspersky/web allow": 3, "none/none allow": 3}
	if got := dayTotals(res); !maps.Equal(got, wantDays) {
		t.Errorf("days %v; want %v", got, wantDays)
	}
	if got, want := clientTotals(res), []string{
		"127.0.0.1 kaspersky/update 8 block updates-cutoff",
		"127.0.0.1 kaspersky/web 3 allow site-exempt",
	}; !slices.Equal(got, want) {
		t.Errorf("clients %q; want %q", got, want)
	}
	if got, want := hostTotals(res.Hosts), []string{
		"s01.upd.kaspersky.com kaspersky/update  7 allowed 3 clients 1",
		"www.kaspersky.com kaspersky/web  3 allowed 3 clients 1",
		"dnl-01.geo.kaspersky.com kaspersky/update  1 allowed 0 clients 1",
	}; !slices.Equal(got, want) {
		t.Errorf("hosts %q; want %q", got, want)
	}
	if len(res.Cutoffs) != 1 {
		t.Fatalf("cut-offs %+v; want updates-cutoff", res.Cutoffs)
	}
	c := res.Cutoffs[0]
	newYork, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	if !c.At.Equal(cut) || !c.Covered || c.Requests != 7 || c.Blocked != 5 || c.Allowed != 2 || !maps.Equal(c.AllowedBy, map[string]int64{"site-exempt": 2}) {
		t.Errorf("cut-off %+v; want at %v: 7 requests, 5 blocked, 2 allowed by site-exempt", c, cut)
	}
	wantStatement := fmt.Sprintf("From %s (rule updates-cutoff), 2 of 7 kaspersky requests (any category) were let through (2 by rule site-exempt); 5 blocked. "+
		"The feedgate records verified against the verifier key: instance gw-report, 14 records, all signed (last checkpoint ",
		cut.In(newYork).Format("2006-01-02 15:04:05 MST"))
	if !strings.HasPrefix(c.Statement, wantStatement) {
		t.Errorf("statement\n %s\nwant it to start\n %s", c.Statement, wantStatement)
	}
	v := res.Verification
	if !v.Checked || !v.OK || len(v.Chains) != 1 || v.Chains[0].Records != 14 || v.Chains[0].Signed != 14 {
		t.Errorf("verification %+v; want OK, gw-report's 14 records signed", v)
	}

	// A window from the cut-off on; the log gzipped, on stdin.
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(b)
	zw.Close()
	code, res, stderr = reportCmd(t, gz.Bytes(), "-config", policy, "-key", verifier, "-from", cut.Format(time.RFC3339), "-")
	if code != 0 || res == nil || res.Records != 8 || res.Skipped != 6 || !res.Verification.OK || res.Cutoffs[0].Requests != 7 {
		t.Errorf("report -from the cut-off over stdin: exit %d, %+v\n%s", code, res, stderr)
	}

	// An edited record: the report is written, says so, and exits 1.
	lines := strings.SplitAfter(string(b), "\n")
	edited := 0
	for i, l := range lines {
		if strings.Contains(l, `"action":"block"`) {
			lines[i] = strings.Replace(l, `"action":"block"`, `"action":"allow"`, 1)
			edited = i + 1
			break
		}
	}
	if edited == 0 {
		t.Fatalf("no blocked record in\n%s", b)
	}
	bad := filepath.Join(dir, "edited.log")
	if err := os.WriteFile(bad, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, res, stderr = reportCmd(t, nil, "-config", policy, "-key", verifier, bad)
	wantProblem := fmt.Sprintf("%s:%d: altered record", bad, edited)
	if code != 1 || res == nil || res.Verification.OK || !strings.HasPrefix(res.Verification.Problem, wantProblem) ||
		!strings.Contains(res.Cutoffs[0].Statement, "Verification FAILED at "+wantProblem) || !strings.Contains(stderr, "FAILED") {
		t.Errorf("report over an edited log: exit %d, %+v\n%s\nwant 1, a report naming %s", code, res, stderr, wantProblem)
	}
}

// squidProxy is a Squid run by a test.
type squidProxy struct {
	addr      string
	accessLog string
	cmd       *exec.Cmd
}

// startSquid runs a real Squid on loopback that resolves names only
// through a hosts file pointing hosts at 127.0.0.1, and logs in Squid's
// native format (as cmd/feedgate-bench runs it).
func startSquid(t *testing.T, hosts []string) *squidProxy {
	t.Helper()
	bin := tool(t, "squid", "squid")
	// Squid drops privileges to its own user, which must reach and
	// write this directory: t.TempDir's parents are private.
	dir, err := os.MkdirTemp("", "feedgate-squid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var hostsFile strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&hostsFile, "127.0.0.1 %s\n", h)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hostsFile.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`http_port 127.0.0.1:%d
cache deny all
cache_mem 8 MB
access_log stdio:%[2]s/access.log squid
cache_log %[2]s/cache.log
pid_filename %[2]s/squid.pid
coredump_dir %[2]s
hosts_file %[2]s/hosts
dns_nameservers 127.0.0.1
http_access allow localhost
http_access deny all
pinger_enable off
shutdown_lifetime 1 seconds
visible_hostname feedgate-report-test
`, port, dir)
	confFile := filepath.Join(dir, "squid.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &squidProxy{addr: fmt.Sprintf("127.0.0.1:%d", port), accessLog: filepath.Join(dir, "access.log"), cmd: exec.Command(bin, "--foreground", "-f", confFile)}
	var out bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop(t) })
	// Squid says when it listens; a probe connection would be a line of
	// its access.log.
	deadline := time.Now().Add(30 * time.Second)
	for {
		log, _ := os.ReadFile(filepath.Join(dir, "cache.log"))
		if strings.Contains(string(log), "Accepting HTTP Socket connections at") {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("squid did not listen on %s in 30s\n%s\n%s", s.addr, out.String(), log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops Squid, which writes out its access.log, and waits for it.
func (s *squidProxy) stop(t *testing.T) {
	if s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-done
		t.Errorf("squid did not stop within 20s of SIGTERM; killed")
	}
}

// TestReportOverSquidLog: requests with a known outcome go through a real
// Squid to loopback origins; the report over its access.log classifies
// and decides each line with the built-in policy at its time (after the
// updates cut-off: Kaspersky is blocked, whatever Squid did).
func TestReportOverSquidLog(t *testing.T) {
	f := newFixture(t)
	sq := startSquid(t, append(slices.Clone(vendorHosts), "mirror.test"))
	get := func(n int, args ...string) {
		t.Helper()
		for range n {
			if res := curl(t, nil, append([]string{"-x", "http://" + sq.addr}, args...)...); res.status != "200" {
				t.Fatalf("curl %q through squid: status %s, %s", args, res.status, res.stderr)
			}
		}
	}
	plain, tlsPort := f.plain.port(), f.tls.port()
	get(3, "http://s01.upd.kaspersky.com:"+plain+"/bases/av/kdb/i386/base.kdc")
	get(2, "--cacert", f.caFile, "https://www.kaspersky.com:"+tlsPort+"/")
	get(1, "http://mirror.test:"+plain+"/bases/av/kdb/i386/dailyc.kdc")
	get(2, "http://www.example.test:"+plain+"/")
	// A request Squid cannot read, which it logs without a URL.
	conn, err := net.Dial("tcp", sq.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "NONSENSE\r\n\r\n")
	io.Copy(io.Discard, conn)
	conn.Close()
	sq.stop(t)
	log, err := os.ReadFile(sq.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "\n"); n != 9 {
		t.Fatalf("squid's access.log has %d lines; want 9\n%s", n, log)
	}

	dir := t.TempDir()
	if out, err := exec.Command(binary, "evidence", "keygen", "-dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	code, res, stderr := reportCmd(t, nil, "-key", filepath.Join(dir, "verifier.key"), sq.accessLog)
	if code != 0 || res == nil {
		t.Fatalf("report: exit %d\n%s\n%s", code, stderr, log)
	}
	wantMalformed := []string{sq.accessLog + ":9: squid line without a target URL (error:invalid-request)"}
	if res.Records != 8 || !slices.Equal(res.Malformed.First, wantMalformed) || res.Inputs[0].Format != "squid" {
		t.Errorf("records %d, malformed %+v, inputs %+v; want 8 records of a squid log, %q\n%s", res.Records, res.Malformed, res.Inputs, wantMalformed, log)
	}
	wantDays := map[string]int64{"kaspersky/update block": 4, "kaspersky/web block": 2, "none/none allow": 2}
	if got := dayTotals(res); !maps.Equal(got, wantDays) {
		t.Errorf("days %v; want %v\n%s", got, wantDays, log)
	}
	if got, want := clientTotals(res), []string{
		"127.0.0.1 kaspersky/update 4 block updates-cutoff",
		"127.0.0.1 kaspersky/web 2 block updates-cutoff",
	}; !slices.Equal(got, want) {
		t.Errorf("clients %q; want %q", got, want)
	}
	if got, want := hostTotals(res.Hosts), []string{
		"s01.upd.kaspersky.com kaspersky/update  3 allowed 0 clients 1",
		"www.kaspersky.com kaspersky/web  2 allowed 0 clients 1",
	}; !slices.Equal(got, want) {
		t.Errorf("hosts %q; want %q", got, want)
	}
	if got, want := hostTotals(res.SignatureHosts), []string{"mirror.test kaspersky/update bases-tree 1 allowed 0 clients 1"}; !slices.Equal(got, want) {
		t.Errorf("signature hosts %q; want %q", got, want)
	}
	var updates *report.Cutoff
	for i := range res.Cutoffs {
		if res.Cutoffs[i].Rule == "updates-cutoff" {
			updates = &res.Cutoffs[i]
		}
	}
	if updates == nil || updates.Requests != 6 || updates.Blocked != 6 || updates.Allowed != 0 || updates.FromSquid != 6 ||
		!strings.HasPrefix(updates.Statement, "From 2024-09-29 00:00 EDT (rule updates-cutoff), 0 of 6 kaspersky requests (any category) were let through; 6 blocked. 6 of these are from Squid logs") {
		t.Errorf("updates cut-off %+v", updates)
	}
	if v := res.Verification; !v.OK || !slices.Equal(v.Unverified, []string{sq.accessLog}) || !strings.Contains(v.Summary, "Squid logs cannot be verified") {
		t.Errorf("verification %+v; want the squid log named unverified", v)
	}
}
