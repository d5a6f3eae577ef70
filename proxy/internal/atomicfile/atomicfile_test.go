package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWrite(t *testing.T) {
	old := syscall.Umask(0o077) // the mode must not depend on the umask
	defer syscall.Umask(old)
	dir := t.TempDir()
	tests := []struct {
		name string
		mode os.FileMode
		data string
	}{
		{"key.pem", 0o600, "secret"},
		{"cert.pem", 0o644, "public"},
		{"key.pem", 0o600, "replaced"}, // an existing file is replaced whole
	}
	for _, tt := range tests {
		path := filepath.Join(dir, tt.name)
		if err := Write(path, []byte(tt.data), tt.mode); err != nil {
			t.Fatalf("Write(%s): %v", tt.name, err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != tt.data {
			t.Errorf("%s: read %q, %v; want %q", tt.name, b, err, tt.data)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != tt.mode {
			t.Errorf("%s: mode %v, %v; want %v", tt.name, fi.Mode().Perm(), err, tt.mode)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries; want the 2 files and no temporary file", len(entries))
	}
}

func TestWriteFails(t *testing.T) {
	dir := t.TempDir()
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("Write into a missing directory succeeded")
	}
	// A rename onto a directory fails after the temporary file was
	// written: it must be removed.
	target := filepath.Join(dir, "taken")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(target, []byte("x"), 0o600); err == nil {
		t.Fatal("Write over a non-empty directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after a failed write; want only the directory", len(entries))
	}
}
