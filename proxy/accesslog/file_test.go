package accesslog_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
)

// TestLogFileReopen is logrotate's move-and-signal: records written before
// the reopen stay in the moved file, later ones go to a new file under the
// old name, and nothing buffered is lost.
func TestLogFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	f, err := accesslog.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	w := accesslog.NewWriter(f, time.Hour) // only explicit flushes
	w.Write([]byte("one\n"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("two\n"))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("three\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for file, want := range map[string]string{path + ".1": "one\ntwo\n", path: "three\n"} {
		b, err := os.ReadFile(file)
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", filepath.Base(file), b, err, want)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("new log file mode %v, %v; want 0640", st.Mode().Perm(), err)
	}
}
