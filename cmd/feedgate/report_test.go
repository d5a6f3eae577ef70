package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/cmd/feedgate/internal/report"
)

// The report package's test logs: feedgate.log has 13 records (4
// malformed lines), squid.log 8 (1 malformed), with the built-in policy.
const (
	reportFeedgateLog = "internal/report/testdata/feedgate.log"
	reportSquidLog    = "internal/report/testdata/squid.log"
)

// gzipFile writes a gzip copy of src and returns its path.
func gzipFile(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), filepath.Base(src)+".gz")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(b)
	zw.Close()
	if err := os.WriteFile(dst, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestReportCLI runs feedgate report in process over the report
// package's test logs: inputs plain, gzip and on stdin, windows in the
// policy's timezone, and the output formats.
func TestReportCLI(t *testing.T) {
	t.Parallel()
	feedgateGz, squidGz := gzipFile(t, reportFeedgateLog), gzipFile(t, reportSquidLog)
	plain, _ := os.ReadFile(reportFeedgateLog)
	gz, _ := os.ReadFile(feedgateGz)
	tests := []struct {
		name                        string
		args                        []string
		stdin                       []byte
		records, skipped, malformed int64
		inputs                      string // names and formats
	}{
		{name: "a feedgate log", args: []string{reportFeedgateLog}, records: 13, malformed: 4, inputs: reportFeedgateLog + " feedgate"},
		{name: "gzip inputs, flags after the files", args: []string{feedgateGz, squidGz, "-format", "json"}, records: 21, malformed: 5,
			inputs: feedgateGz + " feedgate, " + squidGz + " squid"},
		{name: "stdin", args: []string{"-", reportSquidLog}, stdin: plain, records: 21, malformed: 5, inputs: "stdin feedgate, " + reportSquidLog + " squid"},
		{name: "gzip on stdin", args: []string{"-"}, stdin: gz, records: 13, malformed: 4, inputs: "stdin feedgate"},
		{name: "a window of local dates", args: []string{"-from", "2024-09-29", "-until", "2024-11-04", reportFeedgateLog}, records: 7, skipped: 6, malformed: 4},
		{name: "a window in RFC 3339", args: []string{"-from", "2024-09-29T04:00:00Z", "-until", "2024-11-04T00:00:00-05:00", reportFeedgateLog}, records: 7, skipped: 6, malformed: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			args := append([]string{"-format", "json"}, tt.args...)
			if code := runReport(args, bytes.NewReader(tt.stdin), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr.String())
			}
			var res report.Result
			if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
				t.Fatalf("%v\n%s", err, stdout.String())
			}
			if res.Records != tt.records || res.Skipped != tt.skipped || res.Malformed.Count != tt.malformed {
				t.Errorf("records %d, skipped %d, malformed %d; want %d, %d, %d", res.Records, res.Skipped, res.Malformed.Count, tt.records, tt.skipped, tt.malformed)
			}
			var inputs []string
			for _, in := range res.Inputs {
				inputs = append(inputs, in.Name+" "+in.Format)
			}
			if tt.inputs != "" && strings.Join(inputs, ", ") != tt.inputs {
				t.Errorf("inputs %q; want %q", strings.Join(inputs, ", "), tt.inputs)
			}
			if !strings.Contains(stderr.String(), "feedgate report: ") {
				t.Errorf("no summary on stderr: %q", stderr.String())
			}
		})
	}
}

func TestReportCLIOutputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	run := func(args ...string) (int, string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		code := runReport(args, strings.NewReader(""), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	// CSV to a directory: one file per table.
	csvDir := filepath.Join(dir, "csv")
	if code, out, errs := run("-format", "csv", "-o", csvDir, reportFeedgateLog, reportSquidLog); code != 0 || out != "" {
		t.Fatalf("csv -o DIR: exit %d, stdout %q\n%s", code, out, errs)
	}
	for _, table := range report.Tables() {
		b, err := os.ReadFile(filepath.Join(csvDir, table+".csv"))
		if err != nil || len(b) == 0 {
			t.Errorf("%s.csv: %v, %d bytes", table, err, len(b))
		}
	}
	days, _ := os.ReadFile(filepath.Join(csvDir, "days.csv"))
	if !strings.HasPrefix(string(days), "date,vendor,category,action,requests,bytes_sent,bytes_received\n") || !strings.Contains(string(days), "2024-11-03,kaspersky,update,block,2,0,0\n") {
		t.Errorf("days.csv:\n%s", days)
	}
	// CSV to stdout: every table, marked.
	code, out, _ := run("-format", "csv", reportFeedgateLog)
	for _, table := range report.Tables() {
		if !strings.Contains(out, "# table: "+table+"\n") {
			t.Errorf("csv on stdout: no table %s (exit %d):\n%s", table, code, out)
		}
	}
	// JSON to a file.
	jsonFile := filepath.Join(dir, "report.json")
	if code, out, errs := run("-format", "json", "-o", jsonFile, reportFeedgateLog); code != 0 || out != "" {
		t.Fatalf("json -o FILE: exit %d, stdout %q\n%s", code, out, errs)
	}
	if b, _ := os.ReadFile(jsonFile); !json.Valid(b) || !bytes.Contains(b, []byte(`"records": 13`)) {
		t.Errorf("report.json:\n%s", b)
	}
	// HTML, the default format.
	code, out, errs := run(reportFeedgateLog)
	if code != 0 || !strings.Contains(strings.ToLower(out[:min(len(out), 100)]), "<!doctype html") {
		t.Errorf("html: exit %d\n%s\n%s", code, out[:min(len(out), 300)], errs)
	}
}

// TestReportCLIErrors: usage errors exit 2, inputs that cannot be read
// 1, and neither writes a report.
func TestReportCLIErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notGzip := filepath.Join(dir, "bad.gz")
	os.WriteFile(notGzip, []byte{0x1f, 0x8b, 0, 0}, 0o644)
	truncated := filepath.Join(dir, "cut.gz")
	gz, _ := os.ReadFile(gzipFile(t, reportFeedgateLog))
	os.WriteFile(truncated, gz[:len(gz)/2], 0o644)
	notKey := filepath.Join(dir, "not.key")
	os.WriteFile(notKey, []byte("hello\n"), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-format", "json"}, 2, "name at least one log FILE"},
		{[]string{"-format", "pdf", reportFeedgateLog}, 2, `-format "pdf"`},
		{[]string{"-format", "json", "-from", "last week", reportFeedgateLog}, 2, "-from: invalid time"},
		{[]string{"-format", "json", "-from", "2024-10-01", "-until", "2024-09-01", reportFeedgateLog}, 2, "is not after"},
		{[]string{"-format", "json", "-", "-"}, 2, "can be read once"},
		{[]string{"-format", "json", "-top", "0", reportFeedgateLog}, 2, "-top 0"},
		{[]string{"-format", "json", "-key", notKey, reportFeedgateLog}, 2, "not a verifier key"},
		{[]string{"-format", "json", "-key", filepath.Join(dir, "missing.key"), reportFeedgateLog}, 2, "-key: open"},
		{[]string{"-format", "json", "-config", filepath.Join(dir, "missing.toml"), reportFeedgateLog}, 1, "missing.toml"},
		{[]string{"-format", "json", reportFeedgateLog, filepath.Join(dir, "missing.log")}, 1, "missing.log: no such file"},
		{[]string{"-format", "json", dir}, 1, "is a directory"},
		{[]string{"-format", "json", notGzip}, 1, "bad.gz"},
		{[]string{"-format", "json", truncated}, 1, "cut.gz: line"},
	} {
		var stdout, stderr bytes.Buffer
		code := runReport(tc.args, strings.NewReader(""), &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) || stdout.Len() != 0 {
			t.Errorf("report %q: exit %d, stdout %d bytes\n%s\nwant exit %d with %q and no report", tc.args, code, stdout.Len(), stderr.String(), tc.code, tc.want)
		}
	}
}

// TestReportUsage: feedgate's usage names the report command.
func TestReportUsage(t *testing.T) {
	t.Parallel()
	var stdout bytes.Buffer
	run([]string{"help"}, &stdout, io.Discard)
	if !strings.Contains(stdout.String(), "feedgate report [-config FILE] [-from TIME] [-until TIME] [-format html|json|csv] [-o FILE] [-key VERIFIER]") {
		t.Errorf("usage has no report line:\n%s", stdout.String())
	}
}
