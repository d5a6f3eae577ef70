package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/section.golden.md")

func TestReplaceSection(t *testing.T) {
	const b, e = markdownBegin, markdownEnd
	tests := []struct {
		name, doc, section string
		want               string
		err                string // part of the error; "" for none
	}{
		{"replaced", "head\n" + b + "\nold\n" + e + "\ntail\n", "new\n", "head\n" + b + "\nnew\n" + e + "\ntail\n", ""},
		{"a newline added to the section", "head\n" + b + "\nold\n" + e + "\ntail", "new", "head\n" + b + "\nnew\n" + e + "\ntail", ""},
		{"empty between the markers", b + e, "new\n", b + "\nnew\n" + e, ""},
		{"emptied", "x" + b + "\nold\n" + e + "y", "", "x" + b + "\n" + e + "y", ""},
		{"no markers", "head\nold\ntail\n", "new\n", "", "found 0 and 0"},
		{"no end marker", "head\n" + b + "\nold\n", "new\n", "", "found 1 and 0"},
		{"no begin marker", "head\nold\n" + e + "\n", "new\n", "", "found 0 and 1"},
		{"two begin markers", b + "\n" + b + "\n" + e + "\n", "new\n", "", "found 2 and 1"},
		{"end before begin", e + "\nold\n" + b + "\n", "new\n", "", "comes before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := replaceSection(tt.doc, tt.section)
			switch {
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v; want one with %q", err, tt.err)
			case tt.err != "" && !strings.Contains(err.Error(), markdownBegin):
				t.Errorf("error %q does not name the markers", err)
			case tt.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case got != tt.want:
				t.Errorf("replaceSection =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestWriteMarkdown rewrites a copy of testdata/performance.md twice and
// checks that everything outside the markers, the markers included, is
// what it was, byte for byte, and that the file keeps its mode.
func TestWriteMarkdown(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join("testdata", "performance.md"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "performance.md")
	if err := os.WriteFile(path, orig, 0o640); err != nil {
		t.Fatal(err)
	}
	before, _, _ := strings.Cut(string(orig), markdownBegin)
	_, after, _ := strings.Cut(string(orig), markdownEnd)
	for _, section := range []string{"| first | run |\n", "the second run\n"} {
		if err := checkMarkdown(path); err != nil {
			t.Fatalf("checkMarkdown: %v", err)
		}
		if err := writeMarkdown(path, section); err != nil {
			t.Fatalf("writeMarkdown: %v", err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := before + markdownBegin + "\n" + section + markdownEnd + after
		if string(got) != want {
			t.Errorf("after writing %q:\n%s\nwant\n%s", section, got, want)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, %v; want 0640", fi.Mode().Perm(), err)
	}
}

func TestMarkdownErrors(t *testing.T) {
	dir := t.TempDir()
	noMarkers := filepath.Join(dir, "plain.md")
	if err := os.WriteFile(noMarkers, []byte("# Performance\n\nno markers here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{noMarkers, filepath.Join(dir, "missing.md")} {
		if err := checkMarkdown(path); err == nil {
			t.Errorf("checkMarkdown(%s): no error", path)
		}
		if err := writeMarkdown(path, "new\n"); err == nil {
			t.Errorf("writeMarkdown(%s): no error", path)
		}
	}
	if b, _ := os.ReadFile(noMarkers); string(b) != "# Performance\n\nno markers here\n" {
		t.Errorf("a file without markers was changed: %q", b)
	}
	// A run with -markdown fails before it measures anything.
	o := options{rounds: 1, markdown: noMarkers, measure: "keepalive"}
	if err := run(o, nil); err == nil || !strings.Contains(err.Error(), markdownBegin) {
		t.Errorf("run with a file without markers: %v; want an error naming the markers", err)
	}
}

// TestMarkdownSection compares a section, from fixed results and machine,
// with testdata/section.golden.md (go test -update rewrites it).
func TestMarkdownSection(t *testing.T) {
	res := results{}
	names := []string{"direct", "feedgate", "squid", "stdlib-go"}
	for i, r := range [][4]float64{{30000, 9000, 7000, 8800}, {29000, 9500, 7200, 9000}, {31000, 8800, 6900, 8700}} {
		for j, n := range names {
			res.add("keepalive_rps", n, r[j])
			res.add("connect_tls_mbps", n, r[j]/20+float64(i))
		}
		res.add("tunnel_rss_kib", "feedgate", 30+float64(i))
		res.add("tunnel_rss_kib", "squid", 35)
		res.add("tunnel_rss_kib", "stdlib-go", 26)
	}
	o := options{rounds: 3, duration: 2 * time.Second, conns: 64, newConns: 32, downloadMiB: 256, tunnels: 1000, squidWorkers: 2}
	ri := runInfo{
		date: time.Date(2026, 12, 8, 10, 30, 0, 0, time.UTC), command: commandLine([]string{"-rounds", "3", "-markdown", "docs/performance.md"}),
		cpu: "AMD EPYC", cores: 2, kernel: "Linux 6.18.44", goVersion: "go1.26.8", squid: "5.7",
		loadStart: "1.98 2.15 1.90", loadAfter: "2.50 2.20 1.95",
	}
	got := markdownSection(ri, o, res, names, []string{"a note"}, judgeGoals(res, names))
	golden := filepath.Join("testdata", "section.golden.md")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("markdownSection =\n%s\nwant (%s)\n%s", got, golden, want)
	}
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "go run ./cmd/feedgate-bench"},
		{[]string{"-rounds", "3", "-without", "tinyproxy"}, "go run ./cmd/feedgate-bench -rounds 3 -without tinyproxy"},
		{[]string{"-json", "my file.json", "-x", "it's"}, `go run ./cmd/feedgate-bench -json 'my file.json' -x 'it'\''s'`},
		{[]string{""}, "go run ./cmd/feedgate-bench ''"},
	}
	for _, tt := range tests {
		if got := commandLine(tt.args); got != tt.want {
			t.Errorf("commandLine(%q) = %s; want %s", tt.args, got, tt.want)
		}
	}
}
