package accesslog_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

func TestLogWriterCloseFlushesEverything(t *testing.T) {
	var out testutil.SyncBuffer
	w := accesslog.NewWriter(&out, time.Hour) // no timed flush during the test
	var want strings.Builder
	for i := range 10000 {
		line := fmt.Sprintf("{\"n\":%d}\n", i)
		want.WriteString(line)
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != want.String() {
		t.Errorf("after Close the log has %d bytes; want all %d written", len(got), want.Len())
	}
	if _, err := w.Write([]byte("late\n")); err == nil {
		t.Error("Write after Close succeeded; want an error")
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestLogWriterFlushesOnItsOwn(t *testing.T) {
	var out testutil.SyncBuffer
	w := accesslog.NewWriter(&out, 10*time.Millisecond)
	defer w.Close()
	w.Write([]byte("one record\n"))
	deadline := time.Now().Add(10 * time.Second)
	for out.String() != "one record\n" {
		if time.Now().After(deadline) {
			t.Fatalf("record not flushed without Close; log %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
