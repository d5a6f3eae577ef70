package proxy

import (
	"io"
	"net/http"
	"strings"
)

// forward sends a decided plain-HTTP request through upstream (feedgate's
// pool, or the transport for what the pool does not take) and relays the
// response. It does for such a request what goproxy's handleHttp does,
// without the per-request proxy context, the debug lines it formats
// whether or not they are logged, and a second copy of the headers:
// together a few per cent of the CPU of a request. Websocket upgrades,
// whose hijack and copy loops goproxy provides, still go through goproxy.
func (s *Server) forward(w *countingWriter, r *http.Request) {
	// As goproxy's RemoveProxyHeaders: removeHopHeaders has already
	// dropped the Proxy-* and Connection headers.
	r.RequestURI = ""
	resp, err := s.upstream(s.tr, r)
	if err != nil {
		resp = s.failed(r, err)
	} else if framedAmbiguously(r) {
		closeAfterChunked(resp.Header)
	}
	defer resp.Body.Close()

	h := w.Header()
	clear(h)
	for k, vs := range resp.Header {
		// Assigned, not Set: the upstream's spelling is kept. The values
		// are shared rather than copied: resp is not used after this
		// exchange, and Set, Del and Add leave a shared slice as it is.
		h[k] = vs
	}
	// Trailers the upstream announced are announced to the client, which
	// makes the response chunked, so that they can follow the body.
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)

	if strings.HasPrefix(h.Get("Content-Type"), "text/event-stream") {
		// Server-sent events: each piece reaches the client as it comes.
		_, _ = io.Copy(flushEach{w}, resp.Body)
	} else {
		_, _ = io.Copy(w, resp.Body)
	}
	_ = resp.Body.Close()

	if len(resp.Trailer) > 0 {
		// The head is written, so the values set now are sent as trailers.
		w.Flush()
		if len(resp.Trailer) == announced {
			for k, vs := range resp.Trailer {
				h[k] = append(h[k], vs...)
			}
		} else {
			for k, vs := range resp.Trailer {
				for _, v := range vs {
					h.Add(http.TrailerPrefix+k, v)
				}
			}
		}
	}
}

// flushEach flushes after every write.
type flushEach struct{ w *countingWriter }

func (f flushEach) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	f.w.Flush()
	return n, err
}
