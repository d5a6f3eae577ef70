package sniff

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

type firstBytes struct {
	line int
	in   []byte
	want Protocol
}

func readCases(t *testing.T) []firstBytes {
	t.Helper()
	f, err := os.Open("testdata/first-bytes.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]Protocol{"incomplete": Incomplete, "tls": TLS, "http": HTTP, "other": Other}
	var cases []firstBytes
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		in, err := strconv.Unquote(line[:i])
		want, ok := names[line[i+1:]]
		if err != nil || !ok {
			t.Fatalf("first-bytes.txt:%d: %q: %v", n, line, err)
		}
		cases = append(cases, firstBytes{n, []byte(in), want})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 20 {
		t.Fatalf("read %d cases; the file is cut short", len(cases))
	}
	return cases
}

// TestClassify: each case classifies as its file says, and every prefix of
// it (a client's partial writes) as incomplete or as the same: Classify
// never changes its mind as bytes arrive.
func TestClassify(t *testing.T) {
	for _, c := range readCases(t) {
		if got := Classify(c.in); got != c.want {
			t.Errorf("first-bytes.txt:%d: Classify(%q) = %v; want %v", c.line, c.in, got, c.want)
		}
		for i := range c.in {
			if got := Classify(c.in[:i]); got != Incomplete && got != c.want {
				t.Errorf("first-bytes.txt:%d: Classify(%q), a prefix, = %v; want incomplete or %v", c.line, c.in[:i], got, c.want)
			}
		}
	}
}

// dribble writes b to c one byte at a time, then does what end says:
// "close" closes, "half" half-closes (as net.Pipe cannot, it closes), ""
// leaves the connection open.
func dribble(c net.Conn, b []byte, pause time.Duration, end string) {
	for i := range b {
		if _, err := c.Write(b[i : i+1]); err != nil {
			return
		}
		time.Sleep(pause)
	}
	if end != "" {
		_ = c.Close()
	}
}

// TestRead: Read tells from whole, dribbled and silent clients, returns
// every byte it read, and never reads past its bound.
func TestRead(t *testing.T) {
	hello := []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03rest of the hello")
	get := []byte("GET /bases/av.kdc HTTP/1.1\r\nHost: x\r\n\r\n")
	tests := []struct {
		name    string
		send    []byte
		pause   time.Duration
		end     string
		timeout time.Duration
		max     int
		want    Protocol
		// wantBytes: Read returns exactly these bytes (a prefix of
		// send); nil means "a prefix of send, at least one byte".
		wantBytes []byte
	}{
		{"tls at once", hello, 0, "", time.Second, 4096, TLS, nil},
		{"http dribbled", get, time.Millisecond, "", 5 * time.Second, 4096, HTTP, []byte("GET ")},
		{"tls dribbled", hello, time.Millisecond, "", 5 * time.Second, 4096, TLS, []byte("\x16\x03")},
		{"silent client", nil, 0, "", 50 * time.Millisecond, 4096, Other, []byte{}},
		{"closes before saying anything", nil, 0, "close", time.Second, 4096, Other, []byte{}},
		{"closes mid-method", []byte("GE"), 0, "close", time.Second, 4096, Other, []byte("GE")},
		{"stalls mid-method", []byte("GE"), 0, "", 50 * time.Millisecond, 4096, Other, []byte("GE")},
		{"garbage", []byte("\x00\x01binary"), 0, "", time.Second, 4096, Other, nil},
		{"bound reached before a decision", bytes.Repeat([]byte("A"), 15), 0, "", time.Second, 8, Other, []byte("AAAAAAAA")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go dribble(client, tt.send, tt.pause, tt.end)
			got, p, err := Read(server, tt.timeout, tt.max)
			if err != nil {
				t.Fatalf("Read error %v", err)
			}
			if p != tt.want {
				t.Errorf("Read = %v; want %v", p, tt.want)
			}
			if !bytes.HasPrefix(tt.send, got) {
				t.Errorf("Read returned %q, not a prefix of what was sent (%q)", got, tt.send)
			}
			if tt.wantBytes != nil && !bytes.Equal(got, tt.wantBytes) {
				t.Errorf("Read returned %q; want %q", got, tt.wantBytes)
			}
			if tt.wantBytes == nil && len(got) == 0 {
				t.Errorf("Read returned no bytes")
			}
			if len(got) > tt.max {
				t.Errorf("Read returned %d bytes; the bound is %d", len(got), tt.max)
			}
			// What Read did not take is still there for the relay.
			if tt.end == "" && len(got) < len(tt.send) {
				rest := make([]byte, len(tt.send)-len(got))
				_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(server, rest); err != nil || !bytes.Equal(append(got, rest...), tt.send) {
					t.Errorf("the rest of the stream: %q, %v; want %q", rest, err, tt.send[len(got):])
				}
			}
		})
	}
}

// FuzzClassify: whatever the bytes, Classify answers, and an answer other
// than incomplete holds for every longer input that starts with them.
func FuzzClassify(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n"), []byte("x"))
	f.Add([]byte("\x16\x03\x01"), []byte("\x00"))
	f.Add([]byte("AAAA"), []byte("AAAAAAAAAAAAAAAAAAAAAAA"))
	f.Fuzz(func(t *testing.T, b, more []byte) {
		p := Classify(b)
		if p > Other {
			t.Fatalf("Classify(%q) = %v", b, p)
		}
		if p != Incomplete {
			if q := Classify(append(append([]byte{}, b...), more...)); q != p {
				t.Fatalf("Classify(%q) = %v, but with %q after it %v", b, p, more, q)
			}
		}
	})
}
