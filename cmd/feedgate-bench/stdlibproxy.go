package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// stdlibProxyEnv, set in the environment to name=address pairs
// (comma-separated), makes this program the stdlib-go contender: a forward
// proxy built from net/http alone, the baseline that shows what feedgate's
// policy, logging and tunnel path cost beyond what any Go proxy costs. It
// sends the names to the addresses, as Squid's hosts file does.
const stdlibProxyEnv = "FEEDGATE_BENCH_STDLIB_PROXY"

// hopHeaders are the hop-by-hop headers a proxy does not forward.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// serveStdlibProxy listens on loopback, prints its port as one JSON line
// and serves absolute-URI requests through one keep-alive http.Transport,
// and CONNECTs by hijacking the connection and copying both ways.
func serveStdlibProxy(hosts string) error {
	names := map[string]string{}
	for _, h := range strings.Split(hosts, ",") {
		if name, addr, ok := strings.Cut(h, "="); ok {
			names[name] = addr
		}
	}
	var dialer net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if a, ok := names[host]; ok {
			addr = net.JoinHostPort(a, port)
		}
		return dialer.DialContext(ctx, network, addr)
	}
	transport := &http.Transport{DialContext: dial, MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024,
		IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	handler := func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			up, err := dial(r.Context(), "tcp", r.Host)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer up.Close()
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Time{})
			if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
				return
			}
			// Reading the connection itself, when nothing is buffered,
			// lets io.Copy splice.
			var client io.Reader = conn
			if brw.Reader.Buffered() > 0 {
				client = brw.Reader
			}
			go func() { io.Copy(up, client); up.Close() }()
			io.Copy(conn, up)
			return
		}
		if r.URL.Host == "" {
			http.Error(w, "not a proxy request", http.StatusBadRequest)
			return
		}
		out := r.Clone(r.Context())
		out.RequestURI, out.Close = "", false // the origin connection stays open
		for _, h := range hopHeaders {
			out.Header.Del(h)
		}
		resp, err := transport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for _, h := range hopHeaders {
			resp.Header.Del(h)
		}
		maps.Copy(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if err := json.NewEncoder(os.Stdout).Encode(struct {
		Port int `json:"port"`
	}{l.Addr().(*net.TCPAddr).Port}); err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(handler), ReadHeaderTimeout: 10 * time.Second}
	return fmt.Errorf("serving: %w", srv.Serve(l))
}

// startStdlibProxy starts the stdlib-go contender, sending the origin's
// name to loopback.
func startStdlibProxy() (*contender, error) {
	var started struct {
		Port int `json:"port"`
	}
	cmd, err := startSelf(stdlibProxyEnv, benchHost+"=127.0.0.1", "", &started)
	if err != nil {
		return nil, fmt.Errorf("stdlib-go: %w", err)
	}
	pid := cmd.Process.Pid
	return &contender{
		name: "stdlib-go", proxy: fmt.Sprintf("127.0.0.1:%d", started.Port), host: benchHost,
		pids: func() []int { return processTree(pid) },
		stop: func() { cmd.Process.Kill(); cmd.Wait() },
	}, nil
}
