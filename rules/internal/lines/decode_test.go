package lines

import (
	"testing"

	"github.com/BurntSushi/toml"
)

func TestDecodeErrorLine(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		line       int
	}{
		{"syntax error", "a = 1\nb = = 2\n", 2},
		{"type error", "a = 1\n[a]\nb = 2\n", 2},
		// FuzzLoad: the library reports line 0 for an escape cut off by
		// the end of the input.
		{"escape at the end, line 1", "\"\\", 1},
		{"escape at the end, line 3", "a = 1\n\nb = \"\\", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v map[string]any
			_, err := toml.Decode(tc.data, &v)
			if err == nil {
				t.Fatalf("toml.Decode(%q) succeeded; the case tests nothing", tc.data)
			}
			if line, msg := DecodeError(tc.data, err); line != tc.line {
				t.Errorf("DecodeError(%q) = line %d (%s); want line %d", tc.data, line, msg, tc.line)
			}
		})
	}
}
