package accesslog

import (
	"strings"
	"testing"
)

// TestPlainPrefix tries every byte at every position of plain strings up
// to three words long: the prefix ends at the first byte that needs care.
func TestPlainPrefix(t *testing.T) {
	t.Parallel()
	plain := strings.Repeat("~ aZ09/.!#[]{}%", 2)[:24]
	for n := range len(plain) + 1 {
		if got := plainPrefix(plain[:n]); got != n {
			t.Errorf("plainPrefix(%q) = %d; want %d", plain[:n], got, n)
		}
		for pos := range n {
			for c := range 256 {
				b := []byte(plain[:n])
				b[pos] = byte(c)
				want := n
				if c < ' ' || c >= 0x80 || c == '"' || c == '\\' {
					want = pos
				}
				if got := plainPrefix(string(b)); got != want {
					t.Errorf("plainPrefix(%q) = %d; want %d", b, got, want)
				}
			}
		}
	}
}
