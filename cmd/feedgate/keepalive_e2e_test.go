package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTCPKeepAliveOnlyOnTunnels: feedgate's proxy listener leaves TCP
// keep-alive off on the connections it accepts (four system calls per
// connection, which plain HTTP does not need: feedgate's own timeouts
// close idle connections), and a tunnel turns it on for its client
// connection. Read from the kernel's socket table: the timer of an idle
// connection with keep-alive on is the keep-alive timer (2). A websocket
// is as long-lived as a tunnel and gets it too.
func TestTCPKeepAliveOnlyOnTunnels(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up.Close() })
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	// ws answers an upgrade with 101 and then holds the connection.
	ws := wsUpstream(t, func(_ net.Conn, br *bufio.Reader) { _, _ = io.Copy(io.Discard, br) })
	origin := newOrigin(t, nil, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	inst := start(t,
		"-resolve", "www.example.test:80:127.0.0.1:"+origin.port(),
		"-resolve", "www.example.test:443:"+up.Addr().String(),
		"-resolve", "ws.example.test:80:"+ws.Addr().String())

	// An idle keep-alive connection after one plain request.
	plain, err := net.Dial("tcp", inst.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_, _ = io.WriteString(plain, "GET http://www.example.test/ HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(plain), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("plain request: %v %v", resp, err)
	}
	// An idle tunnel.
	tun, err := net.Dial("tcp", inst.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	_, _ = io.WriteString(tun, "CONNECT www.example.test:443 HTTP/1.1\r\nHost: www.example.test:443\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(tun), &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}

	// An idle websocket.
	sock, err := net.Dial("tcp", inst.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	fmt.Fprint(sock, "GET http://ws.example.test/ws HTTP/1.1\r\nHost: ws.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(sock), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("websocket upgrade: %v %v; want 101", resp, err)
	}

	timer := func(c net.Conn) int {
		t.Helper()
		// The proxy's end of c: local address c's remote, remote c's local.
		local, remote := procAddr(t, c.RemoteAddr()), procAddr(t, c.LocalAddr())
		data, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 5 && f[1] == local && f[2] == remote {
				// f[5] is "tr:tm->when": the timer that is armed.
				tr, err := strconv.ParseInt(strings.SplitN(f[5], ":", 2)[0], 16, 64)
				if err != nil {
					t.Fatalf("timer field %q: %v", f[5], err)
				}
				return int(tr)
			}
		}
		t.Fatalf("no socket %s -> %s in /proc/net/tcp", local, remote)
		return -1
	}
	const keepAliveTimer = 2
	for _, c := range []struct {
		what string
		conn net.Conn
	}{{"tunnel", tun}, {"websocket", sock}} {
		deadline := time.Now().Add(10 * time.Second)
		for timer(c.conn) != keepAliveTimer {
			// The tunnel's goroutine turns it on just after the 200; the
			// websocket's exchange with the upstream's 101.
			if time.Now().After(deadline) {
				t.Fatalf("the %s's client connection has timer %d; want the keep-alive timer (%d)", c.what, timer(c.conn), keepAliveTimer)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if got := timer(plain); got == keepAliveTimer {
		t.Errorf("an idle plain-HTTP client connection has the keep-alive timer armed; want TCP keep-alive off")
	}
}

// procAddr writes a loopback IPv4 address as /proc/net/tcp does: the
// address as a little-endian hex word, then the port.
func procAddr(t *testing.T, a net.Addr) string {
	t.Helper()
	ta, ok := a.(*net.TCPAddr)
	ip := ta.IP.To4()
	if !ok || ip == nil {
		t.Fatalf("%v: want a TCP IPv4 address", a)
	}
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ta.Port)
}
