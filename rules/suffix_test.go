package rules

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/configs"
)

// loadDefaultInternal loads the embedded default policy for the tests that
// look inside the matcher.
func loadDefaultInternal(tb testing.TB) *Policy {
	tb.Helper()
	p, _, err := Load(FS{FS: configs.Files()}, configs.DefaultPolicy, Options{})
	if err != nil {
		tb.Fatalf("Load(default): %v", err)
	}
	return p
}

// matchHosts are hosts around every node of the default catalog (the node
// itself, a label below it, a label wildcard's shape, a suffix it is not)
// plus the classify cases: where the two walks could disagree.
func matchHosts(tb testing.TB, p *Policy) []string {
	tb.Helper()
	var hosts []string
	for _, n := range p.catalog.table.nodes[1:] {
		hosts = append(hosts, n.key, "x."+n.key, "a.b."+n.key, "dnl-1."+n.key, "x"+n.key, n.key+".evil", "."+n.key, "a.."+n.key)
	}
	f, err := os.Open("testdata/classify.txt")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 5 && !strings.HasPrefix(fields[0], "#") {
			hosts = append(hosts, fields[0])
		}
	}
	return append(hosts, "", ".", "..", "com", "a", strings.Repeat("a.", 40)+"kaspersky.com", strings.Repeat("x", 300))
}

func TestMatchHashedAgreesWithTree(t *testing.T) {
	p := loadDefaultInternal(t)
	for _, host := range matchHosts(t, p) {
		for _, port := range []int{0, 80, 443, 27200} {
			for _, path := range []string{"", "/", "/renewal-center/", "/bases/av/"} {
				wantT, wantR := matchTree(p.catalog, host, port, path)
				gotT, gotR, st := matchHashed(p.catalog, host, port, path, false)
				if st == walkFallback {
					if len(host) <= maxHostLen && strings.Count(host, ".") < maxLabels {
						t.Errorf("matchHashed(%q) fell back to the map walk; want an answer", host)
					}
					continue
				}
				if gotT != wantT || gotR != wantR {
					t.Errorf("matchHashed(%q, %d, %q) = %v, %b; matchTree = %v, %b", host, port, path, gotT, gotR, wantT, wantR)
				}
			}
		}
	}
}

func TestLabelHashIgnoresPosition(t *testing.T) {
	labels := []string{"", "a", "com", "upd", "s07", "kaspersky", "activation-v2", "0123456789abcdef", "0123456789abcdefg", strings.Repeat("z", 63)}
	for _, label := range labels {
		want := labelHash(label, 0, len(label))
		for _, pre := range []string{"", "x.", "abcdefgh.", "0123456789.abcdef."} {
			for _, post := range []string{"", ".com", ".kaspersky.com"} {
				host := pre + label + post
				if got := labelHash(host, len(pre), len(pre)+len(label)); got != want {
					t.Errorf("labelHash(%q) inside %q = %x; want %x as on its own", label, host, got, want)
				}
			}
		}
	}
}

func TestDotAndPlainBytes(t *testing.T) {
	for _, tc := range []struct {
		word  string
		dots  uint64
		plain bool
	}{
		{"abcdefgh", 0, true},
		{"a.b.c.d.", 0x8000800080008000, true},
		{"........", 0x8080808080808080, true},
		{"-_09az.z", 0x0080000000000000, true},
		{"-_09az/:", 0, false},
		{"@AZ[`{~\x7f", 0, false},
		{"abcdefgZ", 0, false},
		{"abcdefg\x80", 0, false},
		{"\xff.......", 0x8080808080808000, false},
		{"abc%2edx", 0, false},
		{"abcdef,g", 0, false},
	} {
		w := load64(tc.word, 0)
		if got := dotBytes(w); got != tc.dots {
			t.Errorf("dotBytes(%q) = %x; want %x", tc.word, got, tc.dots)
		}
		if got := plainBytes(w); got != tc.plain {
			t.Errorf("plainBytes(%q) = %v; want %v", tc.word, got, tc.plain)
		}
	}
	// Every byte value, in every position of a word of plain bytes.
	for c := 0; c < 256; c++ {
		want := 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_'
		for pos := 0; pos < 8; pos++ {
			word := []byte("abcdefgh")
			word[pos] = byte(c)
			if got := plainBytes(load64(string(word), 0)); got != want {
				t.Errorf("plainBytes(%q) = %v; want %v", word, got, want)
			}
		}
	}
}

// A hash collision must cost a fallback to the map walk, never a wrong
// class: point the slot of "upd.kaspersky.com" at the hash of another
// label, and that label's hosts must still be decided by the tree.
func TestMatchHashedCollisionFallsBack(t *testing.T) {
	p := loadDefaultInternal(t)
	m := p.catalog
	upd := m.root.children["com"].children["kaspersky"].children["upd"]
	for i := range m.table.slots {
		if m.table.slots[i].node == upd.index {
			m.table.slots[i].hash = labelHash("evil", 0, 4)
			// Keep the slot findable from its new hash's home position.
			s := m.table.slots[i]
			m.table.slots[i] = suffixSlot{}
			j := slotIndex(s.hash, s.parent, m.table.mask)
			for m.table.slots[j].node != 0 {
				j = (j + 1) & m.table.mask
			}
			m.table.slots[j] = s
		}
	}
	host := "s07.evil.kaspersky.com"
	if _, _, st := matchHashed(m, host, 443, "", false); st != walkFallback {
		t.Fatalf("matchHashed(%q) after a forced collision: status %d; want walkFallback", host, st)
	}
	wantT, _ := matchTree(m, host, 443, "")
	if gotT, _ := match(m, host, 443, ""); gotT != wantT {
		t.Errorf("match(%q) = %v; want the map walk's %v", host, gotT, wantT)
	}
}

func FuzzMatchHashed(f *testing.F) {
	p := loadDefaultInternal(f)
	for _, h := range matchHosts(f, p) {
		f.Add(h, uint16(443), "")
	}
	f.Fuzz(func(t *testing.T, host string, port uint16, path string) {
		wantT, wantR := matchTree(p.catalog, host, int(port), path)
		gotT, gotR, st := matchHashed(p.catalog, host, int(port), path, false)
		if st == walkOK && (gotT != wantT || gotR != wantR) {
			t.Fatalf("matchHashed(%q, %d, %q) = %v, %b; matchTree = %v, %b", host, port, path, gotT, gotR, wantT, wantR)
		}
		if st == walkNotCanonical {
			t.Fatalf("matchHashed(%q) without the canonical check reported walkNotCanonical", host)
		}
	})
}
