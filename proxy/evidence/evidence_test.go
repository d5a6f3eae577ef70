package evidence

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// TestTreeMatchesTlog checks the right-edge tree against tlog's own
// RFC 6962 tree hash at every size up to 300.
func TestTreeMatchesTlog(t *testing.T) {
	var stored []tlog.Hash
	tr := &Tree{}
	if tr.Root() != tlog.RecordHash(nil) && tr.Root() != emptyRoot {
		t.Fatal("empty root")
	}
	for n := int64(0); n < 300; n++ {
		data := []byte(fmt.Sprintf("record %d", n))
		hs, err := tlog.StoredHashes(n, data, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for i, x := range idx {
				out[i] = stored[x]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		tr.Append(tlog.RecordHash(data))
		want, err := tlog.TreeHash(n+1, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for i, x := range idx {
				out[i] = stored[x]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		if got := tr.Root(); got != want {
			t.Fatalf("size %d: root %v; tlog says %v", n+1, got, want)
		}
		again, err := NewTree(tr.Size(), tr.Stack())
		if err != nil || again.Root() != want {
			t.Fatalf("size %d: NewTree from the stack: %v, %v", n+1, again, err)
		}
	}
}

func TestSealUnseal(t *testing.T) {
	sealed, leaf, err := Seal([]byte(`{"msg":"request","host":"a"}`+"\n"), "gw1", 7, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"msg":"request","host":"a","instance":"gw1","seq":7,"checkpoints":1,"leaf_hash":"`
	if !strings.HasPrefix(string(sealed), want) || !strings.HasSuffix(string(sealed), "\"}\n") {
		t.Fatalf("sealed %q", sealed)
	}
	body, stated, ok := Unseal(bytes.TrimSuffix(sealed, []byte("\n")))
	if !ok || stated != leaf || string(body) != `{"msg":"request","host":"a","instance":"gw1","seq":7,"checkpoints":1}` || tlog.RecordHash(body) != leaf {
		t.Fatalf("Unseal = %q, %v, %v", body, stated, ok)
	}
}

// testKeys returns a signer and its verifier, and another key's verifier
// named alike.
func testKeys(t testing.TB) (note.Signer, note.Verifiers) {
	t.Helper()
	skey, vkey, err := GenerateKey("feedgate-test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, note.VerifierList(v)
}

// genLog writes n records through a Writer with a checkpoint every 7
// records and at Close, and returns the log's lines.
func genLog(t testing.TB, signer note.Signer, n int) []string {
	t.Helper()
	dir := t.TempDir()
	var out bytes.Buffer
	clock := time.Date(2024, 9, 29, 4, 0, 0, 0, time.UTC)
	w, err := NewWriter(&out, Options{Instance: "gw1", Signer: signer, Every: 7, Interval: time.Hour,
		LogFile: filepath.Join(dir, "log"), StateFile: filepath.Join(dir, "state"),
		Now: func() time.Time { clock = clock.Add(time.Second); return clock }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		fmt.Fprintf(w, `{"time":"2024-09-29T04:00:%02dZ","level":"INFO","msg":"request","kind":"http","client":"10.0.0.%d","host":"s%02d.upd.kaspersky.com","action":"block","status":403}`+"\n", i%60, i%250, i%20)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(out.String(), "\n")
	return lines[:len(lines)-1]
}

func verifyLines(lines []string, v note.Verifiers) (*Result, error) {
	return Verify([]Input{{Name: "log", R: strings.NewReader(strings.Join(lines, ""))}}, v)
}

func TestVerifyIntact(t *testing.T) {
	s, v := testKeys(t)
	lines := genLog(t, s, 50)
	res, err := verifyLines(lines, v)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 50 || res.Checkpoints != 8 || len(res.UnsignedTail()) != 0 || res.Chains[0].Signed != 50 {
		t.Errorf("result %+v (chain %+v); want 50 records, 8 checkpoints, all signed", res, res.Chains[0])
	}
	// Another key's checkpoints do not verify, at the first checkpoint.
	_, other := testKeys(t)
	_, err = verifyLines(lines, other)
	if p, ok := err.(*Problem); !ok || p.Line != 8 || !strings.Contains(p.Msg, "verifier key given") {
		t.Errorf("verify with another key: %v; want a problem at log:8 naming the key", err)
	}
}

// mutation is one change of a log and the line where it must be found.
type mutation struct {
	name  string
	apply func([]string) []string
	line  int // 0: the log verifies, with an unsigned tail
}

func isCheckpoint(l string) bool { return strings.Contains(l, `"msg":"checkpoint"`) }

// mutations returns every single-line mutation of lines: an edit of one
// byte of each line, the deletion of each line, the insertion of a copy
// of the line before each, the swap of each pair, and the truncation
// after each line.
func mutations(lines []string, rng *rand.Rand) []mutation {
	var out []mutation
	for i := range lines {
		at := i + 1
		out = append(out, mutation{fmt.Sprintf("edit line %d", at), func(ls []string) []string {
			b := []byte(ls[i])
			k := rng.IntN(len(b) - 1) // not the newline
			c := b[k]
			for b[k] == c || b[k] == '\n' {
				b[k] = byte(32 + rng.IntN(95))
			}
			ls[i] = string(b)
			return ls
		}, at})
		if at < len(lines) {
			out = append(out, mutation{fmt.Sprintf("delete line %d", at), func(ls []string) []string {
				return append(ls[:i:i], ls[i+1:]...)
			}, at})
		}
		if i > 0 {
			out = append(out, mutation{fmt.Sprintf("insert a copy of line %d at %d", at-1, at), func(ls []string) []string {
				return append(append(ls[:i:i], ls[i-1]), ls[i:]...)
			}, at})
		}
		if i+1 < len(lines) && !(isCheckpoint(lines[i]) && isCheckpoint(lines[i+1])) {
			out = append(out, mutation{fmt.Sprintf("swap lines %d and %d", at, at+1), func(ls []string) []string {
				ls[i], ls[i+1] = ls[i+1], ls[i]
				return ls
			}, at})
		}
		if at < len(lines) && !isCheckpoint(lines[i]) {
			out = append(out, mutation{fmt.Sprintf("truncate after line %d", at), func(ls []string) []string {
				return ls[:at]
			}, 0})
		}
	}
	return out
}

// TestTampering applies every single-line mutation of a generated log and
// checks that verify names the line, or reports the unsigned tail of a
// truncated log. A truncation just after a checkpoint leaves a log that
// ends signed; only a tree head kept elsewhere tells it from a complete
// one (docs/evidence.md).
func TestTampering(t *testing.T) {
	s, v := testKeys(t)
	lines := genLog(t, s, 50)
	rng := rand.New(rand.NewPCG(1, 2))
	checkMutations(t, lines, v, mutations(lines, rng))
}

// TestTamperingRandom applies 1,000 random mutations, each of a random
// kind at a random line, with a fixed seed.
func TestTamperingRandom(t *testing.T) {
	s, v := testKeys(t)
	lines := genLog(t, s, 120)
	rng := rand.New(rand.NewPCG(14, 15))
	all := mutations(lines, rng)
	var pick []mutation
	for range 1000 {
		pick = append(pick, all[rng.IntN(len(all))])
	}
	checkMutations(t, lines, v, pick)
}

func checkMutations(t *testing.T, lines []string, v note.Verifiers, ms []mutation) {
	t.Helper()
	for _, m := range ms {
		got := m.apply(append([]string(nil), lines...))
		res, err := verifyLines(got, v)
		if m.line == 0 {
			if err != nil || len(res.UnsignedTail()) != 1 {
				t.Errorf("%s: %v, unsigned tail %v; want it verified up to an unsigned tail", m.name, err, res.UnsignedTail())
			}
			continue
		}
		p, ok := err.(*Problem)
		if !ok || p.Line != m.line {
			t.Errorf("%s: %v; want a problem at log:%d", m.name, err, m.line)
		}
	}
}

// FuzzVerify feeds verify any bytes, starting from a real signed log:
// it never panics, and a log it passes holds only sealed records whose
// leaf hashes and checkpoints check out, which Verify itself asserts;
// here, that the counts it reports are those of the lines.
func FuzzVerify(f *testing.F) {
	s, v := testKeys(f)
	lines := genLog(f, s, 12)
	f.Add([]byte(strings.Join(lines, "")))
	f.Add([]byte(strings.Join(lines[:5], "")))
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Verify([]Input{{Name: "fuzz", R: bytes.NewReader(data)}}, v)
		if err != nil {
			if _, ok := err.(*Problem); !ok {
				t.Fatalf("Verify error %T %v; want a *Problem", err, err)
			}
			return
		}
		n := bytes.Count(data, []byte("\n"))
		if res.Records+res.Checkpoints != n {
			t.Fatalf("verified %d records and %d checkpoints in %d lines", res.Records, res.Checkpoints, n)
		}
	})
}
