package testutil

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TableRow is one line of a request table: name | field | "quoted bytes".
type TableRow struct {
	Line        int // 1-based, for FILE:LINE in a test's failure
	Name, Field string
	Raw         string // the third column, unquoted
}

// ReadTable reads a request table from path: one row per line of three
// columns separated by "|", the last a Go-quoted string; blank lines and
// lines starting with # are skipped. field names the middle column in
// errors.
func ReadTable(t testing.TB, path, field string) []TableRow {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Base(path)
	var rows []TableRow
	for i, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.SplitN(line, "|", 3)
		if len(f) != 3 {
			t.Fatalf("%s:%d: want name | %s | request", file, i+1, field)
		}
		raw, err := strconv.Unquote(strings.TrimSpace(f[2]))
		if err != nil {
			t.Fatalf("%s:%d: %v", file, i+1, err)
		}
		rows = append(rows, TableRow{Line: i + 1, Name: strings.TrimSpace(f[0]), Field: strings.TrimSpace(f[1]), Raw: raw})
	}
	return rows
}
