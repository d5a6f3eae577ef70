package report

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// benchLines is the size of the generated log the benchmarks read.
const benchLines = 100000

// BenchmarkReportJSON measures the report over feedgate JSON records:
// one op is one record, read from a generated log of benchLines
// realistic records (again from the start when b.N is larger), and
// records/s is the rate. The plain log is also given to jq, computing
// the same per-day counts, once per run, as jq-records/s beside it: the
// tool an operator would otherwise reach for. The counts must agree.
func BenchmarkReportJSON(b *testing.B) {
	p := builtinPolicy(b)
	for _, bc := range []struct {
		name   string
		sealed bool
	}{{"plain", false}, {"sealed", true}} {
		b.Run(bc.name, func(b *testing.B) {
			data, ends, counts := genBytes(b, p, genOptions{records: benchLines, seed: 1, sealed: bc.sealed})
			b.SetBytes(int64(len(data) / benchLines))
			b.ReportAllocs()
			r, _ := New(Options{Policy: p})
			b.ResetTimer()
			for left := b.N; left > 0; {
				n := min(left, benchLines)
				if err := r.Add("bench", bytes.NewReader(data[:ends[n]])); err != nil {
					b.Fatal(err)
				}
				left -= n
			}
			res := r.Result()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			if res.Records != int64(b.N) {
				b.Fatalf("%d records; want %d", res.Records, b.N)
			}
			// jq runs for the measuring runs only, not for the probes
			// that size b.N (as with -benchtime 200x, the CI's).
			counted := strings.HasSuffix(flag.Lookup("test.benchtime").Value.String(), "x")
			if bc.sealed || b.N == 1 || (!counted && b.N < benchLines) {
				return
			}
			jqRate := jqPerDay(b, data, counts)
			b.ReportMetric(jqRate, "jq-records/s")
		})
	}
}

// jqPerDay runs jq over data, computing the per-day counts of the
// report's days table (dates in America/New_York, the built-in policy's
// timezone, from the UTC times the generator writes, all in 2024),
// checks them against want, and returns jq's rate in records/s.
func jqPerDay(tb testing.TB, data []byte, want map[string]int64) float64 {
	tb.Helper()
	jq, err := exec.LookPath("jq")
	if err != nil {
		tb.Fatal("jq not found: install Debian's jq package (bash .ci/run does)")
	}
	file := filepath.Join(tb.TempDir(), "gen.log")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(jq, "-n", jqProgram, file)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	start := time.Now()
	out, err := cmd.Output()
	elapsed := time.Since(start)
	if err != nil {
		tb.Fatalf("jq: %v", err)
	}
	var got map[string]int64
	if err := json.Unmarshal(out, &got); err != nil {
		tb.Fatalf("jq output: %v", err)
	}
	var records int64
	for k, n := range want {
		records += n
		if got[k] != n {
			tb.Errorf("jq: %s: %d; want %d", k, got[k], n)
		}
	}
	if len(got) != len(want) {
		tb.Errorf("jq: %d rows; want %d", len(got), len(want))
	}
	return float64(records) / elapsed.Seconds()
}

// jqProgram counts requests per New York date, vendor/category and
// action, the report's days table, for times in UTC ("Z") in 2024. jq
// 1.6's fromdate takes no fraction and no offset, and under a TZ with
// daylight saving time its mktime is an hour off in summer, so it runs
// in UTC and applies New York's 2024 offsets itself (EDT from
// 2024-03-10T07:00Z to 2024-11-03T06:00Z).
const jqProgram = `reduce (inputs | select(.msg == "request")) as $r ({};
  .[($r.time[0:19] + "Z" | fromdate | (. - (if . >= 1710054000 and . < 1730613600 then 14400 else 18000 end)) | strftime("%Y-%m-%d"))
    + " " + $r.vendor + "/" + $r.category + " " + $r.action] += 1)`

// TestJQAgrees: jq's per-day counts, as the benchmark computes them,
// are the generator's, and so the report's (TestGeneratedLog).
func TestJQAgrees(t *testing.T) {
	t.Parallel()
	data, _, counts := genBytes(t, builtinPolicy(t), genOptions{records: 3000, seed: 2})
	jqPerDay(t, data, counts)
}
