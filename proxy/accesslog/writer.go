package accesslog

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// Writer buffers the decision log so that a busy proxy does not make one
// write system call per request (as Squid buffers its access.log). What is
// buffered reaches the underlying writer within the flush interval, when
// the buffer fills, and on Close, so that no record is lost at shutdown.
type Writer struct {
	mu     sync.Mutex
	bw     *bufio.Writer
	done   chan struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewWriter buffers w and flushes it every interval.
func NewWriter(w io.Writer, interval time.Duration) *Writer {
	l := &Writer{bw: bufio.NewWriterSize(w, 64<<10), done: make(chan struct{})}
	l.wg.Add(1)
	go l.flushLoop(interval)
	return l
}

// Write implements io.Writer. Sinks write one whole record per call.
func (l *Writer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, io.ErrClosedPipe
	}
	return l.bw.Write(p)
}

// Flush writes out what is buffered.
func (l *Writer) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bw.Flush()
}

// Close flushes and stops the flusher. Later writes fail.
func (l *Writer) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	err := l.bw.Flush()
	l.mu.Unlock()
	close(l.done)
	l.wg.Wait()
	return err
}

func (l *Writer) flushLoop(interval time.Duration) {
	defer l.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = l.Flush()
		case <-l.done:
			return
		}
	}
}
