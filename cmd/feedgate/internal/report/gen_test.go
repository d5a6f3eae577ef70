package report

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/evidence"
	"github.com/feedgate/feedgate/rules"
)

// genHost is a host of generated traffic and its class.
type genHost struct {
	host, vendor, category, match, signature string
	connect                                  bool
	path                                     string
}

// genHosts is the traffic mix: mostly other traffic, then Kaspersky's
// update, KSN, licensing and web hosts, threat intelligence, and update
// bases on an internal mirror found by a signature.
var genHosts = []genHost{
	{host: "www.example.com", vendor: "none", category: "none", path: "/index.html"},
	{host: "cdn.example.net", vendor: "none", category: "none", connect: true},
	{host: "login.example.org", vendor: "none", category: "none", connect: true},
	{host: "updates.example.com", vendor: "none", category: "none", path: "/v2/manifest.json"},
	{host: "api.example.com", vendor: "none", category: "none", connect: true},
	{host: "s01.upd.kaspersky.com", vendor: "kaspersky", category: "update", match: "host", path: "/bases/av/kdb/i386/base.kdc"},
	{host: "dnl-01.geo.kaspersky.com", vendor: "kaspersky", category: "update", match: "host", path: "/index/u0607g.xml"},
	{host: "ksn-file.geoksn.kaspersky.com", vendor: "kaspersky", category: "ksn", match: "host", connect: true},
	{host: "activation-v2.kaspersky.com", vendor: "kaspersky", category: "licensing", match: "host", connect: true},
	{host: "www.kaspersky.com", vendor: "kaspersky", category: "web", match: "host", connect: true},
	{host: "opentip.kaspersky.com", vendor: "kaspersky", category: "web", match: "host", connect: true},
	{host: "kav-mirror.corp.example", vendor: "kaspersky", category: "update", match: "signature", signature: "bases-tree", path: "/bases/av/kdb/i386/dailyc.kdc"},
}

// genOptions shape a generated log.
type genOptions struct {
	records int
	seed    uint64
	sealed  bool // records carry the evidence log's fields
}

// genLog writes a decision log of realistic records, as feedgate writes
// them (UTC times with nanoseconds), over ten days around the updates
// cut-off, from 2,000 clients, decided with p at each record's time. It
// returns the count per "date vendor/category action", dates in the
// policy's timezone, for checking a report against.
func genLog(w io.Writer, p *rules.Policy, o genOptions) (map[string]int64, error) {
	rng := rand.New(rand.NewPCG(o.seed, 0x5eed))
	bw := bufio.NewWriterSize(w, 1<<20)
	counts := map[string]int64{}
	start := time.Date(2024, 9, 24, 4, 0, 0, 0, time.UTC)
	step := 10 * 24 * time.Hour / time.Duration(max(o.records, 1))
	var line, sealed []byte
	var dayStart, dayEnd time.Time
	var date string
	for i := range o.records {
		ts := start.Add(time.Duration(i)*step + time.Duration(rng.IntN(int(step)+1)))
		if ts.Before(dayStart) || !ts.Before(dayEnd) {
			lt := ts.In(p.Location)
			date = lt.Format(time.DateOnly)
			y, m, d := lt.Date()
			dayStart, dayEnd = time.Date(y, m, d, 0, 0, 0, 0, p.Location), time.Date(y, m, d+1, 0, 0, 0, 0, p.Location)
		}
		// Two in three requests are other traffic.
		h := genHosts[rng.IntN(5)]
		if rng.IntN(3) == 0 {
			h = genHosts[5+rng.IntN(len(genHosts)-5)]
		}
		client := fmt.Sprintf("10.%d.%d.%d", rng.IntN(8), rng.IntN(16), 1+rng.IntN(16))
		req := rules.Request{Host: h.host, Port: 443, Time: ts}
		kind, method := "connect", "CONNECT"
		if !h.connect {
			kind, method, req.Port, req.Path, req.Method = "http", "GET", 80, h.path, "GET"
		}
		dec := p.Decide(req)
		action := dec.Action.String()
		status, recv := 200, int64(1000+rng.IntN(500000))
		if dec.Action == rules.Block {
			status, recv = 403, 0
		}
		level := "INFO"
		if dec.Action == rules.Log {
			level = "WARN"
		}
		line = append(line[:0], `{"time":"`...)
		line = ts.AppendFormat(line, time.RFC3339Nano)
		line = fmt.Appendf(line, `","level":%q,"msg":"request","kind":%q,"client":%q,"method":%q,"host":%q,"port":%d,`, level, kind, client, method, h.host, req.Port)
		if !h.connect {
			line = fmt.Appendf(line, `"path":%q,`, h.path)
		}
		line = fmt.Appendf(line, `"vendor":%q,"category":%q,`, dec.Vendor, dec.Category)
		if m := dec.MatchedBy(); m != "" {
			line = fmt.Appendf(line, `"match":%q,`, m)
			if dec.Signature != "" {
				line = fmt.Appendf(line, `"signature":%q,`, dec.Signature)
			}
		}
		line = fmt.Appendf(line, `"rule":%q,"action":%q,"flagged":%t,"status":%d,"bytes_sent":%d,"bytes_received":%d,"duration_seconds":%s,"policy":%q}`,
			dec.RuleName, action, dec.Action == rules.Log, status, rng.IntN(2000), recv,
			strconv.FormatFloat(float64(rng.IntN(5000000))/1e6, 'f', -1, 64), p.Name)
		out := append(line, '\n')
		if o.sealed {
			var err error
			if sealed, _, err = evidence.Seal(line, "gw1", uint64(i), uint64(i/1000), sealed); err != nil {
				return nil, err
			}
			out = sealed
		}
		if _, err := bw.Write(out); err != nil {
			return nil, err
		}
		counts[fmt.Sprintf("%s %s/%s %s", date, dec.Vendor, dec.Category, action)]++
	}
	return counts, bw.Flush()
}

// TestGeneratedLog checks a report over a generated log against the
// generator's own counts. It also writes the big logs for measuring the
// report by hand (docs/performance.md):
//
//	FEEDGATE_REPORT_GEN=/tmp/10m.log FEEDGATE_REPORT_GEN_N=10000000 go test -run TestGeneratedLog ./cmd/feedgate/internal/report
func TestGeneratedLog(t *testing.T) {
	p := builtinPolicy(t)
	path := os.Getenv("FEEDGATE_REPORT_GEN")
	if path == "" {
		path = filepath.Join(t.TempDir(), "gen.log")
	}
	n := 20000
	if s := os.Getenv("FEEDGATE_REPORT_GEN_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatalf("FEEDGATE_REPORT_GEN_N: %v", err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := genLog(f, p, genOptions{records: n, seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f, err = os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, _ := New(Options{Policy: p})
	if err := r.Add(path, f); err != nil {
		t.Fatal(err)
	}
	res := r.Result()
	checkDays(t, res, want)
	if res.Records != int64(n) || res.Malformed.Count != 0 {
		t.Errorf("records %d, malformed %d %q; want %d, 0", res.Records, res.Malformed.Count, res.Malformed.First, n)
	}
}

// checkDays compares the report's days with counts per "date
// vendor/category action".
func checkDays(t testing.TB, res *Result, want map[string]int64) {
	t.Helper()
	got := map[string]int64{}
	for _, d := range res.Days {
		got[fmt.Sprintf("%s %s/%s %s", d.Date, d.Vendor, d.Category, d.Action)] = d.Requests
	}
	if len(got) != len(want) {
		t.Errorf("%d day rows; want %d", len(got), len(want))
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d requests; want %d", k, got[k], n)
		}
	}
}

// genBytes returns a generated log in memory and the offset of the end
// of each line.
func genBytes(t testing.TB, p *rules.Policy, o genOptions) ([]byte, []int, map[string]int64) {
	t.Helper()
	var b bytes.Buffer
	counts, err := genLog(&b, p, o)
	if err != nil {
		t.Fatal(err)
	}
	data := b.Bytes()
	ends := []int{0}
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	return data, ends, counts
}
