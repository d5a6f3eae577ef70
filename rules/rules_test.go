package rules_test

import (
	"testing"
	"time"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/rules"
)

// The cut-off instants of the default policy (shared reference,
// regulation.md §1): 00:00 EDT on 2024-07-20 and on 2024-09-29.
var (
	salesCutoff   = time.Date(2024, 7, 20, 4, 0, 0, 0, time.UTC)
	updatesCutoff = time.Date(2024, 9, 29, 4, 0, 0, 0, time.UTC)
)

// loadDefault loads the embedded default policy, which must load cleanly.
func loadDefault(tb testing.TB) *rules.Policy {
	tb.Helper()
	p, warns, err := rules.Load(rules.FS{FS: configs.Files()}, configs.DefaultPolicy, rules.Options{})
	if err != nil {
		tb.Fatalf("Load(default) error: %v", err)
	}
	if len(warns) > 0 {
		tb.Fatalf("Load(default) warnings: %v; want none", warns)
	}
	return p
}

// loadFile loads a policy from the file system, which must load without
// errors or warnings.
func loadFile(tb testing.TB, file string) *rules.Policy {
	tb.Helper()
	p, warns, err := rules.Load(rules.Dir{}, file, rules.Options{})
	if err != nil {
		tb.Fatalf("Load(%s) error: %v", file, err)
	}
	if len(warns) > 0 {
		tb.Fatalf("Load(%s) warnings: %v; want none", file, warns)
	}
	return p
}

// classIndex returns the index in p.Classes of vendor/category.
func classIndex(tb testing.TB, p *rules.Policy, vendor, category string) int {
	tb.Helper()
	for i, c := range p.Classes {
		if c.Vendor == vendor && c.Category == category {
			return i
		}
	}
	tb.Fatalf("no class %s/%s in %v", vendor, category, p.Classes)
	return -1
}

// fmtTime renders an instant in UTC, or "-" for the zero time (unbounded).
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
