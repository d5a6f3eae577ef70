package report

import (
	"bytes"
	"os"
	"testing"
)

// FuzzAdd feeds the report any input, from the feedgate and Squid logs of
// testdata: a line is a record or a malformed line, never a panic, and
// the counts add up to the lines.
func FuzzAdd(f *testing.F) {
	p := builtinPolicy(f)
	for _, file := range []string{"testdata/feedgate.log", "testdata/squid.log"} {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		for _, line := range bytes.SplitAfter(data, []byte("\n"))[:3] {
			f.Add(line)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := New(Options{Policy: p})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Add("fuzz", bytes.NewReader(data)); err != nil {
			return // an input that cannot be read is reported as such
		}
		res := r.Result()
		if res.Records < 0 || res.Malformed.Count < 0 || res.Records+res.Skipped+res.Malformed.Count > int64(bytes.Count(data, []byte("\n"))+1) {
			t.Fatalf("%d records, %d skipped, %d malformed from %d lines", res.Records, res.Skipped, res.Malformed.Count, bytes.Count(data, []byte("\n"))+1)
		}
	})
}
