package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// TestCheckExport checks the warnings of check -export (and of a
// configuration that sets pac_proxy) about signatures that an export
// cannot carry.
func TestCheckExport(t *testing.T) {
	pacAll := filepath.Join(t.TempDir(), "check-pac-all.toml")
	src, err := os.ReadFile("testdata/check-pac.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pacAll, append([]byte("pac_all = true\n"), src...), 0o644); err != nil {
		t.Fatal(err)
	}
	const (
		builtin = "built-in feedgate.toml: warning: "
		// The built-in policy logs kaspersky/update between the cut-offs
		// and blocks it after, where other traffic is allowed.
		builtinDiffs = "which then get log instead of allow (2024-07-20T00:00:00-04:00 to 2024-09-29T00:00:00-04:00) and block instead of allow (from 2024-09-29T00:00:00-04:00); "
		list         = "internal mirrors are decided only where their traffic passes through feedgate (the proxy port or the transparent listener)"
		pac          = "a PAC file sees host names only, so clients that follow it reach hosts no catalog names DIRECT, and internal mirrors are never checked; set pac_all = true"
	)
	tests := []struct {
		name string
		args []string
		code int
		// want are the stderr lines: each holds its prefix, and its tail
		// if any, as "prefix ... tail".
		want []string
	}{
		{"no export", []string{"check"}, 0, nil},
		{"edl", []string{"check", "-export", "edl"}, 0, []string{
			builtin + "export edl: 8 signatures (update-index at built-in catalog/kaspersky.toml:",
		}},
		{"every export", []string{"check", "-export", "edl,hosts, dnsmasq,rpz,squid,pac"}, 0, []string{
			builtin + "export edl: ... " + builtinDiffs + "the edl list holds names only, so a firewall that enforces it never checks these paths: " + list,
			builtin + "export hosts: ... " + builtinDiffs + "the hosts list holds names only, so a machine that enforces it never checks these paths: " + list,
			builtin + "export dnsmasq: ... " + builtinDiffs + "the dnsmasq list holds names only, so a resolver that enforces it never checks these paths: " + list,
			builtin + "export rpz: ... " + builtinDiffs + "the rpz list holds names only, so a resolver that enforces it never checks these paths: " + list,
			builtin + "export squid: ... " + builtinDiffs + "the squid list holds names only, so a Squid that enforces it never checks these paths: " + list,
			builtin + "export pac: ... " + builtinDiffs + pac,
		}},
		{"each once", []string{"check", "-export", "pac,rpz,pac"}, 0, []string{
			builtin + "export pac: ",
			builtin + "export rpz: ",
		}},
		{"same answer as other traffic", []string{"check", "-config", "testdata/signatures-moot.toml", "-export", "edl,hosts,dnsmasq,rpz,squid,pac"}, 0, nil},
		{"pac_proxy", []string{"check", "-config", "testdata/check-pac.toml"}, 0, []string{
			"testdata/check-pac.toml: warning: export pac (pac_proxy is set): 8 signatures (update-index at builtin:catalog/kaspersky.toml: ... " +
				"classify requests on any host by their path as kaspersky/update, which then get block instead of allow (from 2024-09-29T00:00:00-04:00); " + pac,
		}},
		{"pac_proxy and a list", []string{"check", "-config", "testdata/check-pac.toml", "-export", "squid"}, 0, []string{
			"testdata/check-pac.toml: warning: export squid: ",
			"testdata/check-pac.toml: warning: export pac (pac_proxy is set): ",
		}},
		{"pac_all", []string{"check", "-config", pacAll, "-export", "pac,edl"}, 0, []string{
			pacAll + ": warning: export edl: ",
		}},
		{"pac_all alone", []string{"check", "-config", pacAll}, 0, nil},
		{"clients only", []string{"check", "-config", "testdata/clients.toml", "-export", "edl"}, 0, nil},
		{"unknown export", []string{"check", "-export", "edl,csv"}, 2, []string{
			`feedgate check: -export: unknown export "csv" (known: edl, hosts, dnsmasq, rpz, squid, pac)`,
		}},
		{"upper case", []string{"check", "-export", "PAC"}, 2, []string{
			`feedgate check: -export: unknown export "PAC" (known: edl, hosts, dnsmasq, rpz, squid, pac)`,
		}},
		{"empty name", []string{"check", "-export", "edl,"}, 2, []string{
			`feedgate check: -export: unknown export "" (known: edl, hosts, dnsmasq, rpz, squid, pac)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Fatalf("%v: exit %d; want %d (stderr %q)", tt.args, code, tt.code, stderr.String())
			}
			var got []string
			if s := strings.TrimSuffix(stderr.String(), "\n"); s != "" {
				got = strings.Split(s, "\n")
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%v: stderr\n%s\nwant %d lines:\n%s", tt.args, stderr.String(), len(tt.want), strings.Join(tt.want, "\n"))
			}
			for i, w := range tt.want {
				prefix, tail, _ := strings.Cut(w, " ... ")
				if !strings.HasPrefix(got[i], prefix) || !strings.HasSuffix(got[i], tail) {
					t.Errorf("%v: stderr line %d\n%s\nwant\n%s", tt.args, i+1, got[i], w)
				}
			}
			if code == 0 && !strings.Contains(stdout.String(), "): OK\n") {
				t.Errorf("%v: stdout %q; want the timeline", tt.args, stdout.String())
			}
		})
	}
}

// TestCheckExportNamesSignatures checks that the warning names every
// signature of the class, each at the line of the catalog that defines it.
func TestCheckExportNamesSignatures(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check", "-export", "edl"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	at := regexp.MustCompile(`([a-z0-9-]+) at built-in (catalog/[a-z]+\.toml):(\d+)`)
	var names []string
	for _, m := range at.FindAllStringSubmatch(stderr.String(), -1) {
		names = append(names, m[1])
		line, _ := strconv.Atoi(m[3])
		if got := signatureAt(t, filepath.Join("../../configs", m[2]), line); got != m[1] {
			t.Errorf("%s:%d defines signature %q; the warning says %q", m[2], line, got, m[1])
		}
	}
	want := []string{"update-index", "component-index", "bases-tree", "bases-files", "updates-tree", "bases-diffs", "updater-config", "rescue-disk"}
	if !slices.Equal(names, want) {
		t.Errorf("warning names signatures %q; want %q:\n%s", names, want, stderr.String())
	}
}

// signatureAt returns the name of the signature whose [[signature]] line
// is line of file, "" if there is none.
func signatureAt(t *testing.T, file string, line int) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		switch l := strings.TrimSpace(sc.Text()); {
		case n == line && l != "[[signature]]":
			return ""
		case n > line && strings.HasPrefix(l, "["):
			return ""
		case n > line && strings.HasPrefix(l, "name = "):
			return strings.Trim(strings.TrimPrefix(l, "name = "), `"`)
		}
	}
	return ""
}

// TestTimelineDiffs compares timelines whose windows start at different
// instants.
func TestTimelineDiffs(t *testing.T) {
	loc := time.UTC
	d := func(day int) time.Time { return time.Date(2024, 9, day, 0, 0, 0, 0, loc) }
	seg := func(from, until time.Time, a rules.Action) rules.Segment {
		return rules.Segment{From: from, Until: until, Action: a}
	}
	var never time.Time
	tests := []struct {
		name string
		a, b []rules.Segment
		want []string
	}{
		{"same", []rules.Segment{seg(never, never, rules.Allow)}, []rules.Segment{seg(never, never, rules.Allow)}, nil},
		{"always different", []rules.Segment{seg(never, never, rules.Block)}, []rules.Segment{seg(never, never, rules.Allow)},
			[]string{"block instead of allow (always)"}},
		{"same changes", []rules.Segment{seg(never, d(2), rules.Allow), seg(d(2), never, rules.Block)},
			[]rules.Segment{seg(never, d(2), rules.Allow), seg(d(2), never, rules.Block)}, nil},
		{"other windows", []rules.Segment{seg(never, d(2), rules.Allow), seg(d(2), d(5), rules.Log), seg(d(5), never, rules.Block)},
			[]rules.Segment{seg(never, d(3), rules.Allow), seg(d(3), never, rules.Log)},
			[]string{
				"log instead of allow (2024-09-02T00:00:00Z to 2024-09-03T00:00:00Z)",
				"block instead of log (from 2024-09-05T00:00:00Z)",
			}},
		{"merged", []rules.Segment{seg(never, d(4), rules.Block), seg(d(4), never, rules.Allow)},
			[]rules.Segment{seg(never, d(2), rules.Allow), seg(d(2), d(3), rules.Allow), seg(d(3), never, rules.Log)},
			[]string{
				"block instead of allow (before 2024-09-03T00:00:00Z)",
				"block instead of log (2024-09-03T00:00:00Z to 2024-09-04T00:00:00Z)",
				"allow instead of log (from 2024-09-04T00:00:00Z)",
			}},
	}
	for _, tt := range tests {
		if got := timelineDiffs(tt.a, tt.b, loc); !slices.Equal(got, tt.want) {
			t.Errorf("%s: timelineDiffs = %q; want %q", tt.name, got, tt.want)
		}
	}
}
