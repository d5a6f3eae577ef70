package evidence

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

func openLog(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func newTestWriter(t *testing.T, f *os.File, signer note.Signer, dir string) *Writer {
	t.Helper()
	w, err := NewWriter(f, Options{Instance: "gw1", Signer: signer, Every: 4, Interval: time.Hour,
		LogFile: f.Name(), StateFile: filepath.Join(dir, "state.json")})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func writeRecords(t *testing.T, w *Writer, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := fmt.Fprintf(w, `{"msg":"request","n":%d}`+"\n", i); err != nil {
			t.Fatal(err)
		}
	}
}

func verifyFiles(t *testing.T, v note.Verifiers, paths ...string) (*Result, error) {
	t.Helper()
	var in []Input
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		in = append(in, Input{Name: filepath.Base(p), R: f})
	}
	return Verify(in, v)
}

// TestChainAcrossCrashAndRotation: a writer that crashed after a record
// no checkpoint covers is followed by one that reads the record back and
// signs it; the chain then goes on across a rotation of the file, and
// the files verify in order as one chain.
func TestChainAcrossCrashAndRotation(t *testing.T) {
	s, v := testKeys(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.log")

	a := newTestWriter(t, openLog(t, path), s, dir)
	writeRecords(t, a, 0, 5) // a checkpoint after 4; the fifth is unsigned
	a.stop()
	if res, err := verifyFiles(t, v, path); err != nil || len(res.UnsignedTail()) != 1 || res.Chains[0].Signed != 4 {
		t.Fatalf("after the crash: %v, %+v; want 5 records, 4 signed", err, res)
	}

	b := newTestWriter(t, openLog(t, path), s, dir)
	writeRecords(t, b, 5, 3)
	if err := b.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	b.out = openLog(t, path)
	b.Reopened(0)
	writeRecords(t, b, 8, 6)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	res, err := verifyFiles(t, v, rotated, path)
	if err != nil {
		t.Fatal(err)
	}
	if c := res.Chains[0]; res.Records != 14 || c.Signed != 14 || len(res.UnsignedTail()) != 0 {
		t.Errorf("result %+v, chain %+v; want 14 records, all signed", res, c)
	}
	// Out of order, the files do not verify.
	if _, err := verifyFiles(t, v, path, rotated); err == nil {
		t.Error("the rotated files in the wrong order verified")
	}
}

// BenchmarkWrite seals one decision record of a usual size and appends it
// to the tree: the evidence log's cost per request.
func BenchmarkWrite(b *testing.B) {
	s, _ := testKeys(b)
	dir := b.TempDir()
	w, err := NewWriter(io.Discard, Options{Instance: "bench", Signer: s,
		LogFile: filepath.Join(dir, "log"), StateFile: filepath.Join(dir, "state")})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	line := []byte(`{"time":"2024-09-29T04:00:00.123456789Z","level":"INFO","msg":"request","kind":"http","client":"10.1.2.3","method":"GET","host":"deb.debian.org","port":80,"path":"/debian/pool/main/o/openssl/libssl3_3.0.11-1~deb12u2_amd64.deb","vendor":"none","category":"none","rule":"default","action":"allow","flagged":false,"status":200,"bytes_sent":0,"bytes_received":1837392,"duration_seconds":0.0123,"policy":"us-bis-kaspersky-2024"}` + "\n")
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.Write(line); err != nil {
			b.Fatal(err)
		}
	}
}
