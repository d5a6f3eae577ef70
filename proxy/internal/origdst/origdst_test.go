package origdst

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// TestParseSockaddr reads testdata/sockaddrs.txt: the byte layouts of
// both families, with the family in host order and the port in network
// order, and buffers too short or of an unknown family.
func TestParseSockaddr(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Fatal("testdata/sockaddrs.txt is written for a little-endian host")
	}
	f, err := os.Open("testdata/sockaddrs.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	cases := 0
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		in, want, ok := strings.Cut(line, "|")
		if !ok {
			t.Fatalf("sockaddrs.txt:%d: no |", n)
		}
		b, err := hex.DecodeString(strings.ReplaceAll(in, " ", ""))
		if err != nil {
			t.Fatalf("sockaddrs.txt:%d: %v", n, err)
		}
		want = strings.TrimSpace(want)
		got, err := parseSockaddr(b)
		switch {
		case want == "error" && err == nil:
			t.Errorf("sockaddrs.txt:%d: parseSockaddr(%x) = %v; want an error", n, b, got)
		case want != "error" && err != nil:
			t.Errorf("sockaddrs.txt:%d: parseSockaddr(%x) error %v; want %s", n, b, err, want)
		case want != "error" && got.String() != want:
			t.Errorf("sockaddrs.txt:%d: parseSockaddr(%x) = %v; want %s", n, b, got, want)
		}
		cases++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cases < 10 {
		t.Fatalf("read %d cases; the file is cut short", cases)
	}
}
