package rules_test

import (
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
)

func TestNormalizePath(t *testing.T) {
	p := loadDefault(t)
	for _, l := range readFields(t, "testdata/paths.txt", 2) {
		in, want := l.fields[0], l.fields[1]
		got, err := rules.NormalizePath(in)
		if want == "error" {
			if err == nil {
				t.Errorf("paths.txt:%d: NormalizePath(%q) = %q; want an error", l.line, in, got)
			} else if !strings.Contains(err.Error(), "invalid path") {
				t.Errorf("paths.txt:%d: NormalizePath(%q) error %q; want it to say invalid path", l.line, in, err)
			}
		} else if err != nil || got != want {
			t.Errorf("paths.txt:%d: NormalizePath(%q) = %q, %v; want %q", l.line, in, got, err, want)
		}
		// The proxy relies on Decide to flag what it must refuse.
		d := p.Decide(rules.Request{Host: "www.kaspersky.com", Port: 80, Path: in, Time: salesCutoff})
		if d.Invalid != (want == "error") {
			t.Errorf("paths.txt:%d: Decide(path %q).Invalid = %v; want %v", l.line, in, d.Invalid, want == "error")
		}
	}
}

// A path in normal form is the common case on the request path.
func TestNormalizePathAllocs(t *testing.T) {
	for _, p := range []string{"", "/", "/buy", "/renewal-center/home", "/bases/av/kdb/i386/kdb-i386-0607g.xml.dif", "/a/"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = rules.NormalizePath(p) }); n != 0 {
			t.Errorf("NormalizePath(%q) allocates %v times per call; want 0", p, n)
		}
	}
}

// testdata/pathmatch.toml has path entries of every shape; each line of
// testdata/pathmatch.txt is "host path category", the category Decide must
// find.
func TestPathMatching(t *testing.T) {
	p := loadFile(t, "testdata/pathmatch.toml")
	for _, l := range readFields(t, "testdata/pathmatch.txt", 3) {
		host, path, want := l.fields[0], l.fields[1], l.fields[2]
		if path == "-" {
			path = ""
		}
		d := p.Decide(rules.Request{Host: host, Port: 80, Path: path, Time: salesCutoff})
		if d.Category != want || d.Invalid {
			t.Errorf("pathmatch.txt:%d: Decide(%s, path %q) = %s (pattern %q, invalid %v); want %s", l.line, host, path, d.Category, d.Pattern, d.Invalid, want)
		}
	}
}

// FuzzNormalizePath checks path normalisation: NormalizePath never panics;
// what it returns is its own normal form, starts with '/' (or is "" for
// ""), and has no empty segment, dot segment, percent-escape, '\', ';' or
// NUL; and Decide decides a path as it decides its normal form and its
// ASCII upper-case spelling, and flags it Invalid exactly when it has no
// normal form.
func FuzzNormalizePath(f *testing.F) {
	p := loadDefault(f)
	for _, l := range readFields(f, "testdata/paths.txt", 2) {
		f.Add(l.fields[0])
	}
	for _, tc := range readClassifyCases(f) {
		f.Add(tc.path)
	}
	at := time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC)
	decide := func(path string) rules.Decision {
		return p.Decide(rules.Request{Host: "www.kaspersky.com", Port: 80, Path: path, Time: at})
	}
	f.Fuzz(func(t *testing.T, path string) {
		d := decide(path)
		n, err := rules.NormalizePath(path)
		if (err != nil) != d.Invalid {
			t.Fatalf("NormalizePath(%q) error %v, but Decide's Invalid is %v", path, err, d.Invalid)
		}
		if err != nil {
			if d.Category != "web" {
				t.Fatalf("Decide(path %q) = %s for a path without a normal form; want the host's own class, web", path, d.Category)
			}
			return
		}
		if msg := checkNormalForm(n); msg != "" {
			t.Fatalf("NormalizePath(%q) = %q: %s", path, n, msg)
		}
		if path != "" && n == "" || path == "" && n != "" {
			t.Fatalf("NormalizePath(%q) = %q; want \"\" exactly for \"\"", path, n)
		}
		if again, err := rules.NormalizePath(n); err != nil || again != n {
			t.Fatalf("NormalizePath(%q) = %q, but NormalizePath(%q) = %q, %v; want it unchanged", path, n, n, again, err)
		}
		for _, v := range []string{n, asciiUpper(path)} {
			if got := decide(v); got != d {
				t.Fatalf("Decide(path %q) = %+v; want the same as for %q: %+v", v, got, path, d)
			}
		}
	})
}

// checkNormalForm returns what is wrong with n as a normal-form path, ""
// if nothing is.
func checkNormalForm(n string) string {
	switch {
	case n == "":
		return ""
	case n[0] != '/':
		return "does not start with '/'"
	case strings.Contains(n, "//"):
		return "has an empty segment"
	case strings.ContainsAny(n, "\\;\x00"):
		return "has a '\\', ';' or NUL"
	}
	for _, seg := range strings.Split(n, "/") {
		if seg == "." || seg == ".." {
			return "has a dot segment"
		}
	}
	for i := 0; i < len(n); i++ {
		if n[i] != '%' {
			continue
		}
		if i+2 < len(n) && isHexDigit(n[i+1]) && isHexDigit(n[i+2]) {
			return "has a percent-escape"
		}
		if i+5 < len(n) && (n[i+1] == 'u' || n[i+1] == 'U') && isHexDigit(n[i+2]) && isHexDigit(n[i+3]) && isHexDigit(n[i+4]) && isHexDigit(n[i+5]) {
			return "has a %u escape"
		}
	}
	return ""
}

func isHexDigit(c byte) bool { return strings.IndexByte("0123456789abcdefABCDEF", c) >= 0 }
