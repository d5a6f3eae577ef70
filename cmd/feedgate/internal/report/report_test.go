package report

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/proxy/evidence"
	"github.com/feedgate/feedgate/rules"
)

// builtinPolicy is feedgate's built-in policy: America/New_York, the
// store cut-off on 2024-07-20 and the updates cut-off (every Kaspersky
// category) on 2024-09-29, threat intelligence exempt.
func builtinPolicy(t testing.TB) *rules.Policy {
	t.Helper()
	src := rules.FS{FS: configs.Files()}
	p, _, err := rules.Load(src, configs.DefaultPolicy, rules.Options{Builtin: src})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func at(t *testing.T, p *rules.Policy, s string) time.Time {
	t.Helper()
	if s == "" {
		return time.Time{}
	}
	ts, err := rules.ParseInstant(s, p.Location)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// run reports over testdata files.
func run(t *testing.T, opts Options, files ...string) *Result {
	t.Helper()
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		fh, err := os.Open(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		err = r.Add(f, fh)
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return r.Result()
}

// Compact one-line forms of the rows, for exact comparison.
func dayRows(res *Result) []string {
	var out []string
	for _, d := range res.Days {
		out = append(out, fmt.Sprintf("%s %s/%s %s %d %d/%d", d.Date, d.Vendor, d.Category, d.Action, d.Requests, d.BytesSent, d.BytesReceived))
	}
	return out
}

func clientRows(res *Result) []string {
	var out []string
	for _, c := range res.Clients {
		out = append(out, fmt.Sprintf("%s %s/%s %d %s..%s %s %s", c.Client, c.Vendor, c.Category, c.Requests,
			c.FirstSeen.Format("2006-01-02T15:04:05.000-07:00"), c.LastSeen.Format("2006-01-02T15:04:05.000-07:00"), c.LastAction, c.LastRule))
	}
	return out
}

func hostRows(hosts []Host) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, fmt.Sprintf("%s %s/%s %s %d allowed %d clients %d", h.Host, h.Vendor, h.Category, h.Signature, h.Requests, h.Allowed, h.Clients))
	}
	return out
}

func cutoffRows(res *Result) []string {
	var out []string
	for _, c := range res.Cutoffs {
		var by []string
		for _, k := range slices.Sorted(maps.Keys(c.AllowedBy)) {
			by = append(by, fmt.Sprintf("%s=%d", k, c.AllowedBy[k]))
		}
		out = append(out, fmt.Sprintf("%s covered=%v %d: blocked %d allowed %d %v squid %d", c.Rule, c.Covered, c.Requests, c.Blocked, c.Allowed, by, c.FromSquid))
	}
	return out
}

func wantRows(t *testing.T, what string, got, want []string) {
	t.Helper()
	if want == nil {
		return
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %s\n want %s", what, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}

// TestReport checks exact numbers over testdata logs. feedgate.log is a
// decision log with, line by line: records on both sides of the updates
// cut-off (2024-09-29 00:00 EDT, its last millisecond before and the
// instant itself, once in UTC and once with an offset), threat
// intelligence let through after it, other traffic, a checkpoint, an
// operational message, garbage, an empty line, signature records on a
// mirror around the end of daylight saving time (2024-11-03, 25 hours
// in New York), a refused request, a host with escapes, a record without
// a time, one cut short, and a licence check let through after the
// cut-off. squid.log is a Squid access.log over the same policy, decided
// at each line's own time.
func TestReport(t *testing.T) {
	t.Parallel()
	p := builtinPolicy(t)
	tests := []struct {
		name                    string
		files                   []string
		from, until             string
		records, skipped        int64
		malformed               []string
		days, clients           []string
		hosts, sigHosts, cutoff []string
	}{
		{
			name: "feedgate log", files: []string{"feedgate.log"}, records: 13,
			malformed: []string{
				`feedgate.log:7: a JSON object that is not a decision record (msg "feedgate started")`,
				"feedgate.log:8: neither a JSON record nor a Squid access.log line (fewer than 10 fields)",
				`feedgate.log:17: a decision record without a valid time ("")`,
				"feedgate.log:18: a line starting with { that is not a JSON object: JSON syntax error",
			},
			days: []string{
				"2024-09-28 kaspersky/ksn log 1 0/7",
				"2024-09-28 kaspersky/update log 1 0/100",
				"2024-09-29 kaspersky/update block 2 0/0",
				"2024-09-29 kaspersky/web allow 1 10/20",
				"2024-09-29 none/none allow 1 5/50",
				"2024-11-02 kaspersky/update block 1 0/0",
				"2024-11-03 kaspersky/update block 2 0/0",
				"2024-11-04 kaspersky/update block 1 0/0",
				"2024-11-04 none/none allow 1 0/1",
				"2024-11-04 none/none rejected 1 0/0",
				"2024-11-05 kaspersky/licensing log 1 0/0",
			},
			clients: []string{
				"10.0.0.6 kaspersky/licensing 1 2024-11-05T07:00:00.000-05:00..2024-11-05T07:00:00.000-05:00 log sales-cutoff-flag",
				"10.0.0.4 kaspersky/update 3 2024-11-02T23:59:00.000-04:00..2024-11-04T00:00:00.000-05:00 block updates-cutoff",
				"10.0.0.5 kaspersky/update 1 2024-11-03T23:59:00.000-05:00..2024-11-03T23:59:00.000-05:00 block updates-cutoff",
				"10.0.0.3 kaspersky/web 1 2024-09-29T01:00:00.500-04:00..2024-09-29T01:00:00.500-04:00 allow threat-intel-exempt",
				"10.0.0.2 kaspersky/update 1 2024-09-29T00:30:00.000-04:00..2024-09-29T00:30:00.000-04:00 block updates-cutoff",
				"10.0.0.1 kaspersky/update 2 2024-09-28T08:00:00.000-04:00..2024-09-29T00:00:00.000-04:00 block updates-cutoff",
				"10.0.0.2 kaspersky/ksn 1 2024-09-28T23:59:59.999-04:00..2024-09-28T23:59:59.999-04:00 log sales-cutoff-flag",
			},
			hosts: []string{
				"s01.upd.kaspersky.com kaspersky/update  3 allowed 1 clients 2",
				"activation-v2.kaspersky.com kaspersky/licensing  1 allowed 1 clients 1",
				"dnl-01.geo.kaspersky.com kaspersky/update  1 allowed 0 clients 1",
				"ksn-file.geoksn.kaspersky.com kaspersky/ksn  1 allowed 1 clients 1",
				"opentip.kaspersky.com kaspersky/web  1 allowed 1 clients 1",
			},
			sigHosts: []string{"kav-mirror.corp.example kaspersky/update bases-tree 3 allowed 0 clients 2"},
			cutoff: []string{
				"sales-cutoff-store covered=true 0: blocked 0 allowed 0 [] squid 0",
				"updates-cutoff covered=true 8: blocked 6 allowed 2 [sales-cutoff-flag=1 threat-intel-exempt=1] squid 0",
			},
		},
		{
			name: "a window in the policy's timezone: local midnights", files: []string{"feedgate.log"},
			from: "2024-09-29", until: "2024-11-04", records: 7, skipped: 6,
			days: []string{
				"2024-09-29 kaspersky/update block 2 0/0",
				"2024-09-29 kaspersky/web allow 1 10/20",
				"2024-09-29 none/none allow 1 5/50",
				"2024-11-02 kaspersky/update block 1 0/0",
				"2024-11-03 kaspersky/update block 2 0/0",
			},
			cutoff: []string{
				"sales-cutoff-store covered=true 0: blocked 0 allowed 0 [] squid 0",
				"updates-cutoff covered=true 6: blocked 5 allowed 1 [threat-intel-exempt=1] squid 0",
			},
		},
		{
			name: "a window that ends before the cut-off says nothing about it", files: []string{"feedgate.log"},
			until: "2024-09-28T23:59:59.999", records: 1, skipped: 12,
			days: []string{"2024-09-28 kaspersky/update log 1 0/100"},
			cutoff: []string{
				"sales-cutoff-store covered=true 0: blocked 0 allowed 0 [] squid 0",
				"updates-cutoff covered=false 0: blocked 0 allowed 0 [] squid 0",
			},
		},
		{
			name: "squid log, decided at each line's time", files: []string{"squid.log"}, records: 8,
			malformed: []string{"squid.log:7: squid line without a target URL (error:invalid-request)"},
			days: []string{
				"2024-07-01 kaspersky/update allow 1 0/1000",
				"2024-08-15 kaspersky/ksn log 1 0/500",
				"2024-08-15 kaspersky/store block 1 0/300",
				"2024-09-28 kaspersky/update log 1 0/10",
				"2024-09-29 kaspersky/update block 1 0/10",
				"2024-10-01 kaspersky/update block 1 0/2000",
				"2024-10-01 kaspersky/web allow 1 0/800",
				"2024-10-01 none/none allow 1 0/50",
			},
			sigHosts: []string{"kav-mirror.corp.example kaspersky/update bases-tree 1 allowed 0 clients 1"},
			cutoff: []string{
				"sales-cutoff-store covered=true 1: blocked 1 allowed 0 [] squid 1",
				"updates-cutoff covered=true 3: blocked 2 allowed 1 [threat-intel-exempt=1] squid 3",
			},
		},
		{
			name: "both logs merge", files: []string{"feedgate.log", "squid.log"}, records: 21,
			cutoff: []string{
				"sales-cutoff-store covered=true 1: blocked 1 allowed 0 [] squid 1",
				"updates-cutoff covered=true 11: blocked 8 allowed 3 [sales-cutoff-flag=1 threat-intel-exempt=2] squid 3",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := run(t, Options{Policy: p, From: at(t, p, tt.from), Until: at(t, p, tt.until)}, tt.files...)
			if res.Records != tt.records || res.Skipped != tt.skipped {
				t.Errorf("records %d, skipped %d; want %d, %d", res.Records, res.Skipped, tt.records, tt.skipped)
			}
			if tt.malformed != nil && (res.Malformed.Count != int64(len(tt.malformed)) || !slices.Equal(res.Malformed.First, tt.malformed)) {
				t.Errorf("malformed %d:\n %s\nwant\n %s", res.Malformed.Count, strings.Join(res.Malformed.First, "\n "), strings.Join(tt.malformed, "\n "))
			}
			wantRows(t, "days", dayRows(res), tt.days)
			wantRows(t, "clients", clientRows(res), tt.clients)
			wantRows(t, "hosts", hostRows(res.Hosts), tt.hosts)
			wantRows(t, "signature hosts", hostRows(res.SignatureHosts), tt.sigHosts)
			wantRows(t, "cut-offs", cutoffRows(res), tt.cutoff)
			var sum int64
			for _, d := range res.Days {
				sum += d.Requests
			}
			if sum != res.Records {
				t.Errorf("the days hold %d requests; want every record, %d", sum, res.Records)
			}
		})
	}
}

// TestStatements: the sentences an auditor reads.
func TestStatements(t *testing.T) {
	t.Parallel()
	p := builtinPolicy(t)
	res := run(t, Options{Policy: p}, "feedgate.log", "squid.log")
	want := []string{
		"From 2024-07-20 00:00 EDT (rule sales-cutoff-store), 0 of 1 kaspersky store request was let through; 1 blocked. 1 of these is from Squid logs, whose action is what this policy decides, not what happened. The records were not verified: no verifier key was given.",
		"From 2024-09-29 00:00 EDT (rule updates-cutoff), 3 of 11 kaspersky requests (any category) were let through (2 by rule threat-intel-exempt, 1 by rule sales-cutoff-flag); 8 blocked. 3 of these are from Squid logs, whose action is what this policy decides, not what happened. The records were not verified: no verifier key was given.",
	}
	for i, c := range res.Cutoffs {
		if c.Statement != want[i] {
			t.Errorf("statement %d:\n %s\nwant\n %s", i, c.Statement, want[i])
		}
	}
	res = run(t, Options{Policy: p, Until: at(t, p, "2024-09-01")}, "feedgate.log")
	if got := res.Cutoffs[1].Statement; !strings.HasPrefix(got, "No record is at or after 2024-09-29 00:00 EDT (rule updates-cutoff): the records say nothing about this cut-off.") {
		t.Errorf("statement without records after the cut-off: %s", got)
	}
	res = run(t, Options{Policy: p, From: at(t, p, "2024-11-04")}, "feedgate.log")
	if got := res.Cutoffs[0].Statement; !strings.HasPrefix(got, "From 2024-07-20 00:00 EDT (rule sales-cutoff-store), the records hold no kaspersky store request, so none was let through.") {
		t.Errorf("statement without requests of the class: %s", got)
	}
	if got := res.Cutoffs[1].Statement; !strings.HasPrefix(got, "From 2024-09-29 00:00 EDT (rule updates-cutoff), 1 of 2 kaspersky requests (any category) was let through (1 by rule sales-cutoff-flag); 1 blocked.") {
		t.Errorf("statement with one request let through: %s", got)
	}
}

// TestMalformedNeverFatal: any line, however broken, is counted and the
// input goes on; only the first positions are kept.
func TestMalformedNeverFatal(t *testing.T) {
	t.Parallel()
	p := builtinPolicy(t)
	good := `{"time":"2024-10-01T12:00:00Z","msg":"request","client":"10.0.0.1","host":"s01.upd.kaspersky.com","vendor":"kaspersky","category":"update","rule":"updates-cutoff","action":"block"}`
	var in bytes.Buffer
	for i := range 30 {
		fmt.Fprintf(&in, "%s\n", [...]string{"{", "}{", "\x00\xff", `{"msg":"request","time":"x"}`, strings.Repeat("x ", 20)}[i%5])
		in.WriteString(good + "\n")
	}
	in.WriteString(strings.Repeat("y", 300<<10) + "\n") // longer than the read buffer
	in.WriteString(good)                                // no final newline
	r, err := New(Options{Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add("-", &in); err != nil {
		t.Fatal(err)
	}
	res := r.Result()
	if res.Records != 31 || res.Malformed.Count != 31 || len(res.Malformed.First) != maxMalformed {
		t.Errorf("records %d, malformed %d (%d named); want 31, 31 (%d named)", res.Records, res.Malformed.Count, len(res.Malformed.First), maxMalformed)
	}
	if res.Malformed.First[0] != "-:1: a line starting with { that is not a JSON object: JSON syntax error" || !strings.HasPrefix(res.Malformed.First[19], "-:39: ") {
		t.Errorf("malformed positions: %q", res.Malformed.First)
	}
	if res.Inputs[0].Lines != 62 || res.Inputs[0].Format != "feedgate" {
		t.Errorf("input: %+v; want 62 lines of a feedgate log", res.Inputs[0])
	}
}

// sealedLog writes the records of testdata/feedgate.log into an evidence
// log (a checkpoint every 4 records) and returns its path and the
// verifier.
func sealedLog(t *testing.T) (string, note.Verifiers) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(nil, "gw-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	w, err := evidence.NewWriter(f, evidence.Options{Instance: "gw1", Signer: signer, Every: 4, Interval: time.Hour,
		LogFile: path, StateFile: filepath.Join(dir, "state.json"), Now: func() time.Time { return time.Date(2024, 11, 6, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	src, _ := os.ReadFile("testdata/feedgate.log")
	for _, line := range strings.SplitAfter(string(src), "\n") {
		if strings.Contains(line, `"msg":"request"`) && strings.Contains(line, `"time"`) && strings.HasSuffix(line, "}\n") {
			if _, err := w.Write([]byte(line)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path, note.VerifierList(verifier)
}

func TestVerification(t *testing.T) {
	t.Parallel()
	p := builtinPolicy(t)
	path, v := sealedLog(t)
	report := func(files ...string) *Result {
		t.Helper()
		r, err := New(Options{Policy: p, Verifiers: v})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			fh, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Add(filepath.Base(f), fh); err != nil {
				t.Fatal(err)
			}
			fh.Close()
		}
		return r.Result()
	}

	res := report(path, "testdata/squid.log")
	ver := res.Verification
	if !ver.Checked || !ver.OK || ver.Problem != "" || len(ver.Chains) != 1 || !slices.Equal(ver.Unverified, []string{"squid.log"}) {
		t.Fatalf("verification %+v; want OK, one chain, squid.log unverified", ver)
	}
	c := ver.Chains[0]
	// 13 records: checkpoints after 4, 8, 12 and (at Close) 13.
	if c.Instance != "gw1" || c.Records != 13 || c.Signed != 13 || c.Where != "decisions.log:17" || !c.SignedAt.Equal(time.Date(2024, 11, 6, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("chain %+v; want gw1, 13 records all signed by the checkpoint at decisions.log:17", c)
	}
	if res.Records != 21 || res.Malformed.Count != 1 || res.Inputs[0].Format != "feedgate" || !slices.Equal(res.Inputs[0].Instances, []string{"gw1"}) {
		t.Errorf("records %d, malformed %d, input %+v; want 21, 1 (squid.log's), a feedgate input of gw1", res.Records, res.Malformed.Count, res.Inputs[0])
	}
	wantSummary := "The feedgate records verified against the verifier key: instance gw1, 13 records, all signed (last checkpoint 2024-11-06 07:00 EST, decisions.log:17). Squid logs cannot be verified (squid.log)."
	if ver.Summary != wantSummary || !strings.HasSuffix(res.Cutoffs[1].Statement, " "+wantSummary) {
		t.Errorf("summary %q\nstatement %q\nwant the summary %q, which ends the statement", ver.Summary, res.Cutoffs[1].Statement, wantSummary)
	}

	// An edited record is named, and the report still counts it.
	b, _ := os.ReadFile(path)
	edited := strings.Replace(string(b), `"action":"block"`, `"action":"allow"`, 1)
	bad := filepath.Join(t.TempDir(), "decisions.log")
	os.WriteFile(bad, []byte(edited), 0o644)
	res = report(bad)
	ver = res.Verification
	if ver.OK || !strings.HasPrefix(ver.Problem, "decisions.log:3: altered record") || !strings.HasPrefix(ver.Summary, "Verification FAILED at decisions.log:3: altered record") {
		t.Errorf("verification of an edited log: %+v", ver)
	}
	if res.Records != 13 || !strings.Contains(res.Cutoffs[1].Statement, "Verification FAILED") {
		t.Errorf("records %d, statement %q; want 13, saying the verification failed", res.Records, res.Cutoffs[1].Statement)
	}

	// An unsigned tail is reported as such; a log cut mid-line fails.
	lines := strings.SplitAfter(string(b), "\n")
	tail := filepath.Join(t.TempDir(), "decisions.log")
	os.WriteFile(tail, []byte(strings.Join(lines[:len(lines)-2], "")), 0o644)
	res = report(tail)
	if c := res.Verification.Chains[0]; !res.Verification.OK || c.Records != 13 || c.Signed != 12 ||
		!strings.Contains(res.Verification.Summary, "signed up to record 12 (checkpoint 2024-11-06 07:00 EST, decisions.log:15); the 1 record after it is not signed yet") {
		t.Errorf("log without its last checkpoint: %+v", res.Verification)
	}
	os.WriteFile(tail, []byte("\n"+string(b)), 0o644)
	if res = report(tail); res.Verification.OK || !strings.HasPrefix(res.Verification.Problem, "decisions.log:1: not a sealed record") {
		t.Errorf("log with a blank first line: %+v", res.Verification)
	}
	os.WriteFile(tail, []byte(strings.TrimSuffix(string(b), "\n")), 0o644)
	if res = report(tail); res.Verification.OK || !strings.Contains(res.Verification.Problem, "decisions.log:17: the last line has no newline") {
		t.Errorf("log cut mid-line: %+v", res.Verification)
	}
}

// TestDaysAcrossDST: every hour over both daylight saving changes of
// 2024 lands on its local date; the days have 23, 24 and 25 hours.
func TestDaysAcrossDST(t *testing.T) {
	t.Parallel()
	p := builtinPolicy(t)
	var in bytes.Buffer
	for _, span := range [][2]string{{"2024-03-09T00:00:00-05:00", "2024-03-12T00:00:00-04:00"}, {"2024-11-02T00:00:00-04:00", "2024-11-05T00:00:00-05:00"}} {
		a, _ := time.Parse(time.RFC3339, span[0])
		b, _ := time.Parse(time.RFC3339, span[1])
		for ts := a; ts.Before(b); ts = ts.Add(30 * time.Minute) {
			fmt.Fprintf(&in, `{"time":%q,"msg":"request","client":"10.0.0.1","host":"www.example.com","vendor":"none","category":"none","rule":"default","action":"allow"}`+"\n", ts.UTC().Format(time.RFC3339Nano))
		}
	}
	r, _ := New(Options{Policy: p})
	if err := r.Add("dst", &in); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"2024-03-09 none/none allow 48 0/0", "2024-03-10 none/none allow 46 0/0", "2024-03-11 none/none allow 48 0/0",
		"2024-11-02 none/none allow 48 0/0", "2024-11-03 none/none allow 50 0/0", "2024-11-04 none/none allow 48 0/0",
	}
	wantRows(t, "days", dayRows(r.Result()), want)
}
