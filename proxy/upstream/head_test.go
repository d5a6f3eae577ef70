package upstream

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// readHeads reads testdata/request-heads.txt: name, who and request.
func readHeads(t testing.TB) [][3]string {
	t.Helper()
	var rows [][3]string
	for _, r := range testutil.ReadTable(t, "testdata/request-heads.txt", "who") {
		rows = append(rows, [3]string{r.Name, r.Field, r.Raw})
	}
	return rows
}

// bothWays writes req's head with writeHead and with Request.Write, and
// reports whether writeHead took it.
func bothWays(t testing.TB, req *http.Request) (own bool, got, want []byte) {
	t.Helper()
	var a, b bytes.Buffer
	bw := bufio.NewWriter(&a)
	own = writeHead(bw, req)
	bw.Flush()
	if err := req.Write(&b); err != nil && own {
		t.Fatalf("writeHead took a request that Request.Write refuses: %v", err)
	}
	if own {
		// Request.Write has also written the body, which a request
		// that writeHead takes does not have.
		want = b.Bytes()
	}
	return own, a.Bytes(), want
}

// prepare makes req what the proxy forwards: a client request.
func prepare(req *http.Request) {
	req.RequestURI = ""
	req.Close = false
}

func TestWriteHeadAgreesWithWrite(t *testing.T) {
	rows := readHeads(t)
	if len(rows) < 20 {
		t.Fatalf("request-heads.txt has %d requests; the file was not read right", len(rows))
	}
	for _, row := range rows {
		name, who, raw := row[0], row[1], row[2]
		t.Run(name, func(t *testing.T) {
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
			if err != nil {
				t.Fatalf("http.ReadRequest: %v", err)
			}
			prepare(req)
			own, got, want := bothWays(t, req)
			if own != (who == "own") {
				t.Fatalf("writeHead took it: %v; the file says %q", own, who)
			}
			if own && !bytes.Equal(got, want) {
				t.Errorf("writeHead wrote\n%q\nRequest.Write writes\n%q", got, want)
			}
		})
	}
}

// TestWriteHeadAgreesWithWriteBuilt covers headers that no parsed request
// has but the proxy's own code could set: names that are not canonical,
// values with line breaks or outer spaces, an empty header list.
func TestWriteHeadAgreesWithWriteBuilt(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		host   string
		own    bool
	}{
		{"non-canonical name", http.Header{"x-lower": {"v"}}, "", true},
		{"outer spaces", http.Header{"X-A": {"  v  "}}, "", true},
		{"empty list", http.Header{"X-A": {}}, "", true},
		{"empty user-agent list", http.Header{"User-Agent": {}}, "", true},
		{"user-agent spaces", http.Header{"User-Agent": {" ua "}}, "", true},
		{"via", http.Header{"Via": {"1.1 feedgate"}}, "", true},
		{"line break in value", http.Header{"X-A": {"a\r\nX-Injected: 1"}}, "", false},
		{"line break in user-agent", http.Header{"User-Agent": {"a\nb"}}, "", false},
		{"invalid name", http.Header{"Bad Name": {"v"}}, "", false},
		{"host header in the map", http.Header{"Host": {"c.example"}}, "", true},
		{"host with space", nil, "a.example x", false},
		{"host with slash", nil, "a.example/x", false},
		{"more than 32 names", manyHeaders(40), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, _ := url.Parse("http://a.example/x?y")
			req := &http.Request{Method: "GET", URL: u, Header: tt.header, Host: tt.host, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
			if req.Header == nil {
				req.Header = http.Header{}
			}
			own, got, want := bothWays(t, req)
			if own != tt.own {
				t.Fatalf("writeHead took it: %v; want %v", own, tt.own)
			}
			if own && !bytes.Equal(got, want) {
				t.Errorf("writeHead wrote\n%q\nRequest.Write writes\n%q", got, want)
			}
		})
	}
}

func manyHeaders(n int) http.Header {
	h := http.Header{}
	for i := range n {
		h.Set("X-H"+strconv.Itoa(i), strconv.Itoa(i))
	}
	return h
}

// FuzzWriteHead: whatever http.ReadRequest accepts, writeHead either
// leaves to Request.Write or writes exactly its bytes.
func FuzzWriteHead(f *testing.F) {
	for _, row := range readHeads(f) {
		f.Add(row[2])
	}
	f.Fuzz(func(t *testing.T, raw string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		prepare(req)
		if own, got, want := bothWays(t, req); own && !bytes.Equal(got, want) {
			t.Errorf("writeHead wrote\n%q\nRequest.Write writes\n%q", got, want)
		}
	})
}
