package accesslog

import (
	"fmt"
	"os"
	"sync"
)

// File is an append-only log file that can be reopened under the same
// name, so that logrotate can move it away and signal feedgate (SIGUSR1)
// instead of copying and truncating it.
type File struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

// OpenFile opens (creating if needed, mode 0640) path for appending.
func OpenFile(path string) (*File, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return f, nil
}

// Write appends p.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Reopen opens the path again and switches to it; on failure the old file
// stays in use, so that no record is lost. Flush any buffer in front of
// the file first, so that its records land in the file they belong to.
func (l *File) Reopen() error {
	f, err := openAppend(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

// Close closes the file.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
