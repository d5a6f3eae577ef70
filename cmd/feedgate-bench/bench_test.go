package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The bench re-executes itself as the origin and the stdlib-go proxy;
	// in tests, itself is the test binary.
	serveChild()
	os.Exit(m.Run())
}

// TestBenchSmallRun runs the whole comparison, briefly, against direct
// traffic, feedgate on loopback (with and without the tamper-evident log)
// and the stdlib-go proxy, and checks the table and the JSON have every
// row. The namespace contenders are left out: tests stay on loopback.
func TestBenchSmallRun(t *testing.T) {
	jsonFile := filepath.Join(t.TempDir(), "bench.json")
	mdFile := filepath.Join(t.TempDir(), "performance.md")
	md, err := os.ReadFile(filepath.Join("testdata", "performance.md"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mdFile, md, 0o644); err != nil {
		t.Fatal(err)
	}
	o := options{markdown: mdFile, args: []string{"-markdown", mdFile},
		rounds: 1, duration: 300 * time.Millisecond, conns: 4, newConns: 2, tunnels: 20, settle: 200 * time.Millisecond,
		downloadMiB: 8, squidWorkers: 1, squid: "squid", tinyproxy: "tinyproxy",
		without: "squid,tinyproxy,transparent", measure: "keepalive,fixedrate,newconn,connect,tunnels", jsonOut: jsonFile,
	}
	var out bytes.Buffer
	if err := run(o, &out); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, row := range []string{"keep-alive req/s", "keep-alive p99 ms", "fixed-rate req/s", "fixed-rate p99 ms",
		"fixed rate: ", "'s keep-alive throughput (", "new connections req/s", "CONNECT TLS download MB/s",
		"CONNECT raw download MB/s", "RSS per idle tunnel KiB", "goroutines per idle tunnel", "proxy CPU s per GiB, TLS download",
		"proxy CPU s per GiB, raw download", "machine CPU s per GiB, TLS download", "TLS download: TLS 1.3 TLS_"} {
		if !strings.Contains(out.String(), row) {
			t.Errorf("table has no %q row:\n%s", row, out.String())
		}
	}
	md, err = os.ReadFile(mdFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"| metric | direct | feedgate | feedgate-evidence | stdlib-go |", "| keep-alive req/s |",
		"| RSS per idle tunnel after a TLS handshake |", "**Command:** `go run ./cmd/feedgate-bench -markdown " + mdFile + "`",
		"**Fewer than 3 rounds", "Text after the markers"} {
		if !strings.Contains(string(md), part) {
			t.Errorf("the Markdown file has no %q:\n%s", part, md)
		}
	}
	var doc struct {
		Contenders []string `json:"contenders"`
		Metrics    []struct {
			Metric string              `json:"metric"`
			Median map[string]*float64 `json:"median"`
		} `json:"metrics"`
	}
	b, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("JSON output: %v", err)
	}
	if strings.Join(doc.Contenders, ",") != "direct,feedgate,feedgate-evidence,stdlib-go" {
		t.Errorf("contenders %v; want direct, feedgate, feedgate-evidence and stdlib-go", doc.Contenders)
	}
	// Squid is left out: the goals against it cannot be judged, the one
	// on feedgate's own memory can.
	if n := strings.Count(out.String(), goalNoSquid); n != 4 {
		t.Errorf("%d goals cannot be judged without Squid; want 4:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "RSS per idle tunnel after a TLS handshake") {
		t.Errorf("no verdict on the memory per tunnel:\n%s", out.String())
	}
	for _, col := range []string{"feedgate-evidence/feedgate", "feedgate/stdlib-go"} {
		if !strings.Contains(out.String(), col) {
			t.Errorf("table has no %s column:\n%s", col, out.String())
		}
	}
	// Rates and latencies must be positive; CPU and memory deltas of so
	// short a run may round to zero, but must be there.
	positive := map[string]bool{"keepalive_rps": true, "keepalive_p50_ms": true, "keepalive_p99_ms": true,
		"fixedrate_rps": true, "fixedrate_p50_ms": true, "fixedrate_p99_ms": true,
		"newconn_rps": true, "connect_tls_mbps": true, "connect_raw_mbps": true, "tunnel_goroutines": true}
	seen := map[string]bool{}
	for _, m := range doc.Metrics {
		seen[m.Metric] = true
		for _, c := range []string{"feedgate", "stdlib-go"} {
			v := m.Median[c]
			switch {
			case c == "stdlib-go" && m.Metric == "tunnel_goroutines": // it exports no count
			case v == nil:
				t.Errorf("metric %s: no %s median", m.Metric, c)
			case positive[m.Metric] && *v <= 0:
				t.Errorf("metric %s: %s median %v; want a positive number", m.Metric, c, *v)
			}
		}
	}
	for m := range positive {
		if !seen[m] {
			t.Errorf("JSON has no %s metric", m)
		}
	}
}

func TestUnknownMeasurement(t *testing.T) {
	err := run(options{rounds: 1, measure: "keepalive,tunnel"}, nil)
	if err == nil || !strings.Contains(err.Error(), `"tunnel"`) {
		t.Errorf("run with -measure keepalive,tunnel: %v; want an error naming tunnel", err)
	}
}

// TestFixedRateNeedsARate: without keep-alive figures to take it from,
// the fixed rate must be given.
func TestFixedRateNeedsARate(t *testing.T) {
	err := run(options{rounds: 1, measure: "fixedrate,newconn"}, nil)
	if err == nil || !strings.Contains(err.Error(), "-rate") {
		t.Errorf("run with -measure fixedrate and no -rate: %v; want an error asking for -rate", err)
	}
}

func TestFixedRateFor(t *testing.T) {
	proxy := func(name string) *contender { return &contender{name: name, pids: func() []int { return nil }} }
	direct := &contender{name: "direct"}
	res := results{}
	for name, rps := range map[string][]float64{"direct": {40000, 42000, 41000}, "feedgate": {16000, 17000, 18000}, "squid": {12000, 13000, 12500}} {
		for _, v := range rps {
			res.add("keepalive_rps", name, v)
		}
	}
	for _, tc := range []struct {
		name       string
		rate       float64
		contenders []*contender
		want       float64
		note       string // "" for an error
	}{
		{"the lowest proxy sets it", 0, []*contender{direct, proxy("feedgate"), proxy("squid")}, 7500, "60 % of squid's keep-alive throughput (12500 req/s"},
		{"direct traffic does not count", 0, []*contender{direct, proxy("feedgate")}, 10200, "60 % of feedgate's keep-alive throughput (17000 req/s"},
		{"-rate wins", 9000, []*contender{direct, proxy("squid")}, 9000, "fixed rate: 9000 req/s in all over 64 keep-alive connections (-rate)"},
		{"no proxy", 0, []*contender{direct}, 0, ""},
		{"a proxy not measured", 0, []*contender{direct, proxy("tinyproxy")}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rate, note, err := fixedRateFor(options{rate: tc.rate, conns: 64}, res, tc.contenders)
			if tc.note == "" {
				if err == nil {
					t.Fatalf("rate %v, note %q; want an error", rate, note)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rate != tc.want || !strings.Contains(note, tc.note) {
				t.Errorf("rate %v, note %q; want %v and a note with %q", rate, note, tc.want, tc.note)
			}
		})
	}
}

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name, in string
		status   int
		closing  bool
		rest     string // what must be left unread: the next response
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT", 200, false, "NEXT"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nNEXT", 200, false, "NEXT"},
		{"close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nokNEXT", 200, true, "NEXT"},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nokNEXT", 200, true, "NEXT"},
		{"no length reads to close", "HTTP/1.1 200 OK\r\n\r\neverything", 200, true, ""},
		{"no body", "HTTP/1.1 304 Not Modified\r\n\r\nNEXT", 304, false, "NEXT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			status, closing, err := readResponse(br)
			if err != nil || status != tt.status || closing != tt.closing {
				t.Fatalf("readResponse = %d, %v, %v; want %d, %v, nil", status, closing, err, tt.status, tt.closing)
			}
			rest, _ := readRest(br)
			if rest != tt.rest {
				t.Errorf("left %q unread; want %q", rest, tt.rest)
			}
		})
	}
}

func readRest(br *bufio.Reader) (string, error) {
	var b strings.Builder
	_, err := br.WriteTo(&b)
	return b.String(), err
}

func TestFormatSpread(t *testing.T) {
	tests := []struct {
		rounds []float64
		want   string
	}{
		{nil, "-"},
		{[]float64{8397}, "8397"},
		{[]float64{8201, 8397, 8590}, "8397 ±194"},
		{[]float64{32.4, 32.7, 32.4}, "32.4 ±0.2"},
		{[]float64{0.48, 0.16, 0.32}, "0.32 ±0.16"},
		{[]float64{1, 2, 3, 4}, "2.50 ±1.50"},
	}
	for _, tt := range tests {
		if got := formatSpread(tt.rounds); got != tt.want {
			t.Errorf("formatSpread(%v) = %q; want %q", tt.rounds, got, tt.want)
		}
	}
}

func TestTableCells(t *testing.T) {
	res := results{}
	for _, r := range [][2]float64{{1300, 1000}, {1200, 1000}, {1500, 1100}} { // feedgate, squid
		res.add("keepalive_rps", "feedgate", r[0])
		res.add("keepalive_rps", "squid", r[1])
	}
	got := tableCells(res, []string{"feedgate", "squid"})
	want := [][]string{
		{"metric", "feedgate", "squid", "feedgate/direct", "feedgate/squid"},
		{"keep-alive req/s", "1300 ±150", "1000 ±50", "-", "1.30x ±0.08"},
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("tableCells =\n%q\nwant\n%q", got, want)
	}
}
