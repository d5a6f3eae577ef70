package upstream

import (
	"bufio"
	"cmp"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// defaultUserAgent is what Request.Write sends for a request without a
// User-Agent header.
const defaultUserAgent = "Go-http-client/1.1"

// writeHead writes the head of req as req.Write does, byte for byte, and
// reports whether it did. It takes only a GET or HEAD without a body, with
// an ASCII host and header values on one line each (the requests that
// make up an update feed's traffic), and leaves everything else to
// req.Write. What it saves per request is Request.Write's formatting, its
// header sorter and string replacer, and the transfer writer that works
// out framing a bodiless GET does not have. TestWriteHeadAgreesWithWrite
// holds it to req.Write's bytes.
func writeHead(bw *bufio.Writer, req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead || req.URL == nil ||
		req.Body != nil && req.Body != http.NoBody || req.ContentLength != 0 ||
		req.TransferEncoding != nil || req.Trailer != nil || req.Close {
		return false
	}
	host := cmp.Or(req.Host, req.URL.Host)
	if !plainHost(host) {
		return false
	}
	uri := req.URL.RequestURI()
	if hasCTL(uri) {
		return false
	}
	var buf [32]string
	keys := buf[:0]
	for k, vs := range req.Header {
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				return false
			}
		}
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)

	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	ua := defaultUserAgent
	if vs, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(vs) > 0 {
			ua = textproto.TrimString(vs[0])
		}
	}
	if ua != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(ua)
		bw.WriteString("\r\n")
	}
	for _, k := range keys {
		for _, v := range req.Header[k] {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
	return true
}

// plainHost reports a Host that Request.Write sends as it is: not empty,
// ASCII letters, digits and the punctuation of names, ports and IP
// literals, and no IPv6 zone (which it strips).
func plainHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// hasCTL reports a control byte, which Request.Write refuses in a URL.
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}
