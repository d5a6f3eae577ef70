package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// maxParentReply bounds the header of a parent proxy's CONNECT reply.
const maxParentReply = 16 << 10

// ParentError is a parent proxy's refusal of a tunnel.
type ParentError struct {
	Status int
	Target string
}

func (e *ParentError) Error() string {
	return fmt.Sprintf("parent proxy refused CONNECT %s: status %d", e.Target, e.Status)
}

// parentProxy chains tunnels through an HTTP parent proxy.
type parentProxy struct {
	addr string // host:port
	auth string // Proxy-Authorization value, "" for none
}

// newParentProxy checks a parent's URL (http only) and keeps its
// credentials ("user:password", or "") as a Basic Proxy-Authorization.
func newParentProxy(u *url.URL, credentials string) (*parentProxy, error) {
	if u.Scheme != "http" {
		return nil, fmt.Errorf("parent proxy %s: only http:// parents are supported", u.Redacted())
	}
	if u.Port() == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("parent proxy %s: want http://host:port", u.Redacted())
	}
	p := &parentProxy{addr: u.Host}
	if credentials != "" {
		p.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(credentials))
	}
	return p, nil
}

// dialConnect opens a tunnel to target through the parent. The reply is
// read with the context's deadline and a bounded header; the connection
// comes back positioned right after the reply, as the raw *net.TCPConn
// (so that the splice path stays open) unless the parent sent bytes past
// its reply, which are then replayed first.
func (p *parentProxy) dialConnect(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), target string) (net.Conn, error) {
	c, err := dial(ctx, "tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("parent proxy %s: %w", p.addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if p.auth != "" {
		req += "Proxy-Authorization: " + p.auth + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("parent proxy %s: %w", p.addr, ctxErr(ctx, err))
	}
	br := bufio.NewReaderSize(&io.LimitedReader{R: c, N: maxParentReply}, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("parent proxy %s: reading its reply: %w", p.addr, ctxErr(ctx, err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_ = c.Close()
		return nil, &ParentError{Status: resp.StatusCode, Target: target}
	}
	if !stop() {
		_ = c.Close()
		return nil, fmt.Errorf("parent proxy %s: %w", p.addr, ctx.Err())
	}
	_ = c.SetDeadline(time.Time{})
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		return &prefixConn{Conn: c, r: io.MultiReader(strings.NewReader(string(b)), c)}, nil
	}
	return c, nil
}

// ctxErr prefers the context's error to the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// readCredentialsFile reads "user:password" from the first line of path.
func readCredentialsFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("credentials: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSpace(line)
	if line == "" || !strings.Contains(line, ":") {
		return "", errors.New("credentials: " + path + ": want one line user:password")
	}
	return line, nil
}
