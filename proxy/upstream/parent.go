package upstream

// Tunnels through a parent (upstream) HTTP proxy: CONNECT to the parent,
// then the connection is the tunnel. Plain-HTTP requests to the parent need
// only its address and the Proxy-Authorization value.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/feedgate/feedgate/rules/config"
)

// parentProxy is a parent HTTP proxy that requests are sent through.
type parentProxy struct {
	addr string // host:port
	auth string // Proxy-Authorization value, "Basic ..."; "" for none
}

// maxParentReply bounds the bytes read for the parent's reply to CONNECT,
// headers and any interim 1xx replies together. A proxy's CONNECT reply
// is a status line and a handful of short headers; the bound only keeps a
// hostile or broken parent from making us buffer without end.
const maxParentReply = 16 << 10

// parentReplyBuffer is the read buffer for the reply, which bounds one line.
const parentReplyBuffer = 4 << 10

// ParentError is a parent proxy's refusal of a CONNECT: any reply other
// than 2xx. The reply's body is never read, so it cannot leak into logs or
// to clients.
type ParentError struct {
	Status int    // the parent's status code
	Target string // the host:port the tunnel was for
}

func (e *ParentError) Error() string {
	msg := fmt.Sprintf("parent proxy refused CONNECT %s: %d", e.Target, e.Status)
	// The standard text, not the parent's reason phrase, which is the
	// parent's to choose.
	if text := http.StatusText(e.Status); text != "" {
		msg += " " + text
	}
	return msg
}

// newParentProxy builds a parent proxy from a URL that the loader has not
// seen (a proxy variable's, for upstream_proxy = "env"), which must be
// http://host:port with nothing else, and credentials, "user:password" or
// "" for none. The URL gets the loader's check, config.ParseProxyURL, the one
// there is: credentials in it are refused like those in a policy file,
// and the host is spelled as net/http's transport spells the address it
// dials, which is how the parent's address is recognised there (see
// DialHTTP).
func newParentProxy(u *url.URL, credentials string) (*parentProxy, error) {
	if u == nil {
		return nil, errors.New("parent proxy: no URL")
	}
	pu, err := config.ParseProxyURL(u.String())
	if err != nil {
		// Quote only the redacted URL.
		return nil, fmt.Errorf("parent proxy %s: %w", u.Redacted(), err)
	}
	if credentials != "" {
		if err := checkCredentials(credentials); err != nil {
			return nil, fmt.Errorf("parent proxy %s: %w", u.Redacted(), err)
		}
	}
	return trustedParentProxy(pu, credentials), nil
}

// trustedParentProxy builds a parent proxy from a URL that
// config.ParseProxyURL returned, which is not checked again, and
// credentials that have been checked.
func trustedParentProxy(u *url.URL, credentials string) *parentProxy {
	p := &parentProxy{addr: u.Host}
	if credentials != "" {
		p.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(credentials))
	}
	return p
}

// checkCredentials checks a "user:password" value. Its errors never quote
// the value.
func checkCredentials(s string) error {
	user, _, ok := strings.Cut(s, ":")
	switch {
	case s == "":
		return errors.New("credentials are empty")
	case !ok:
		return errors.New("credentials want the form user:password")
	case user == "":
		return errors.New("credentials have an empty user name")
	}
	// RFC 7617 allows no control characters; one is most likely a file
	// that is not what it should be.
	for _, c := range []byte(s) {
		if c < ' ' || c == 0x7f {
			return errors.New("credentials contain a control character")
		}
	}
	return nil
}

// proxyAuthorization returns the Proxy-Authorization header value for
// plain-HTTP requests forwarded to the parent ("" if none).
func (p *parentProxy) proxyAuthorization() string { return p.auth }

// dialConnect opens a tunnel to target (host:port) through the parent: it
// dials the parent with dial (the caller's dialer; nil means a plain
// net.Dialer), sends CONNECT, and reads the reply, all within ctx, which
// must be bounded: its deadline and its cancellation both interrupt a
// parent that stalls. The parent's own address is not subject to
// destination checks here; vetting it, and the target, is the caller's
// business.
//
// On success the connection is positioned right after the reply's headers,
// with no deadline set. It is the connection dial returned (a
// *net.TCPConn for a TCP dialer, so that the tunnel's copy loop can wait
// on the socket without holding a buffer) unless the parent sent bytes
// beyond the headers in the same read: a server that speaks first (SMTP,
// SSH) can have its greeting arrive with the 200. Those bytes cannot be
// pushed back into the socket, so then a wrapper replays them first, and
// that tunnel's download direction holds its copy buffer while it waits.
//
// A reply other than 2xx is a *ParentError; any failure closes the
// connection.
func (p *parentProxy) dialConnect(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), target string) (net.Conn, error) {
	if err := checkConnectTarget(target); err != nil {
		return nil, fmt.Errorf("parent proxy %s: %w", p.addr, err)
	}
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("parent proxy %s: %w", p.addr, err)
	}
	c, err := p.connect(ctx, conn, target)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("parent proxy %s: %w", p.addr, err)
	}
	return c, nil
}

// connect sends CONNECT on conn and reads the reply.
func (p *parentProxy) connect(ctx context.Context, conn net.Conn, target string) (net.Conn, error) {
	// The deadline makes the blocked read or write return in time; the
	// AfterFunc does the same on cancellation, which has no deadline.
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		if err := conn.SetDeadline(deadline); err != nil {
			return nil, fmt.Errorf("CONNECT %s: %w", target, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	// ioErr puts the context's error beside an I/O error the deadline
	// caused, so that callers see a timeout or a cancellation whichever
	// of the two clocks fired first.
	ioErr := func(what string, err error) error {
		cerr := ctx.Err()
		if cerr == nil && hasDeadline && !time.Now().Before(deadline) {
			cerr = context.DeadlineExceeded
		}
		if cerr != nil && !errors.Is(err, cerr) {
			return fmt.Errorf("CONNECT %s: %s: %w (%w)", target, what, cerr, err)
		}
		return fmt.Errorf("CONNECT %s: %s: %w", target, what, err)
	}

	if _, err := conn.Write(p.connectRequest(target)); err != nil {
		stop()
		return nil, ioErr("sending the request", err)
	}
	lr := &io.LimitedReader{R: conn, N: maxParentReply}
	br := bufio.NewReaderSize(lr, parentReplyBuffer)
	status, err := readParentReply(br)
	if err != nil {
		stop()
		if lr.N == 0 && errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("CONNECT %s: the reply is longer than %d bytes", target, maxParentReply)
		}
		return nil, ioErr("reading the reply", err)
	}
	// If the AfterFunc has started, the deadline may be in the past
	// whatever we do now: the caller has given up anyway.
	if !stop() {
		return nil, ioErr("reading the reply", ctx.Err())
	}
	if status/100 != 2 {
		return nil, &ParentError{Status: status, Target: target}
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	if n := br.Buffered(); n > 0 {
		early, _ := br.Peek(n)
		return &replayConn{Conn: conn, pending: bytes.Clone(early)}, nil
	}
	return conn, nil
}

// connectRequest renders the CONNECT request, in one buffer so that it goes
// out in one write.
func (p *parentProxy) connectRequest(target string) []byte {
	b := make([]byte, 0, 64+2*len(target)+len(p.auth))
	b = append(b, "CONNECT "...)
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, target...)
	b = append(b, "\r\n"...)
	if p.auth != "" {
		b = append(b, "Proxy-Authorization: "...)
		b = append(b, p.auth...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// checkConnectTarget checks that target is host:port and has nothing that
// could end the request line or a header early.
func checkConnectTarget(target string) error {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return fmt.Errorf("CONNECT target %q: %w", target, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); host == "" || err != nil || n == 0 {
		return fmt.Errorf("CONNECT target %q: want host:port", target)
	}
	for _, c := range []byte(target) {
		if c <= ' ' || c == 0x7f {
			return fmt.Errorf("CONNECT target %q: control character or space", target)
		}
	}
	return nil
}

// readParentReply reads a reply's status line and headers and returns the
// status code. Interim 1xx replies (other than 101) are skipped, as RFC
// 9110 15.2 asks. Headers are not kept: a 2xx to CONNECT has no body and
// its Content-Length or Transfer-Encoding must be ignored (RFC 9110 9.3.6),
// and nothing of a refusal is passed on but its status. Running out of
// bytes mid-reply is io.ErrUnexpectedEOF.
func readParentReply(br *bufio.Reader) (int, error) {
	for {
		line, err := parentReplyLine(br)
		if err != nil {
			return 0, err
		}
		status, err := parseParentStatusLine(line)
		if err != nil {
			return 0, err
		}
		for {
			h, err := parentReplyLine(br)
			if err != nil {
				return 0, err
			}
			if len(h) == 0 {
				break
			}
		}
		if status/100 != 1 || status == http.StatusSwitchingProtocols {
			return status, nil
		}
	}
}

// parentReplyLine reads one line of the reply without its line ending
// (CRLF, or a bare LF, which RFC 9112 2.2 lets a recipient accept).
func parentReplyLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, fmt.Errorf("a reply line is longer than %d bytes", br.Size())
	case errors.Is(err, io.EOF):
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// parseParentStatusLine parses "HTTP/1.x NNN reason".
func parseParentStatusLine(line []byte) (int, error) {
	const prefix = "HTTP/1.x NNN"
	if len(line) < len(prefix) || !bytes.HasPrefix(line, []byte("HTTP/1.")) ||
		(line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
		(len(line) > len(prefix) && line[len(prefix)] != ' ') {
		return 0, fmt.Errorf("the reply is not HTTP/1.x: %q", truncateForError(line))
	}
	status := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("malformed status in %q", truncateForError(line))
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 || status > 599 {
		return 0, fmt.Errorf("status %d out of range", status)
	}
	return status, nil
}

// truncateForError keeps an unexpected reply line short in error messages.
func truncateForError(b []byte) []byte {
	const most = 64
	if len(b) > most {
		return b[:most]
	}
	return b
}

// replayConn is a tunnel connection through a parent proxy that sent bytes
// beyond its reply's headers: Read returns them first.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection, so that a tunnel through the
// wrapper still passes half-closes on.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("half-close is not supported on %T", c.Conn)
}

// SyscallConn gives access to the wrapped socket, so that the tunnel's idle
// check (the proxy core's) can still ask the kernel whether bytes arrived;
// a connection it cannot ask about is never closed as idle.
func (c *replayConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, fmt.Errorf("%T has no file descriptor", c.Conn)
}

// NetConn returns the wrapped connection, as tls.Conn's method does.
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// maxCredentialsFile bounds how much of a credentials file is read.
const maxCredentialsFile = 4 << 10

// readCredentialsFile reads "user:password" from the first line of a file,
// trailing whitespace (and line ending) removed, as well as a leading UTF-8
// byte order mark. Its errors never quote the file's contents. It does not
// look at the file's permissions: see credentialsFileTooOpen.
func readCredentialsFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("credentials file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialsFile+1))
	if err != nil {
		return "", fmt.Errorf("credentials file %s: %w", path, err)
	}
	line, _, found := bytes.Cut(b, []byte{'\n'})
	if !found && len(b) > maxCredentialsFile {
		return "", fmt.Errorf("credentials file %s: the first line is longer than %d bytes", path, maxCredentialsFile)
	}
	s := strings.TrimRight(strings.TrimPrefix(string(line), "\uFEFF"), " \t\r\v\f")
	if err := checkCredentials(s); err != nil {
		return "", fmt.Errorf("credentials file %s: first line: %w", path, err)
	}
	return s, nil
}

// credentialsFileTooOpen reports whether anyone but the owner may read,
// write or execute the file (mode & 0o077), so that the caller can warn.
func credentialsFileTooOpen(path string) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("credentials file: %w", err)
	}
	return fi.Mode().Perm()&0o077 != 0, nil
}
