//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// rawSource returns src's socket for relay to wait on and read, nil for
// anything but a plain TCP connection.
func rawSource(src net.Conn) syscall.RawConn {
	tc, ok := src.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

func readFD(fd uintptr, b []byte) (int, error) {
	n, err := syscall.Read(int(fd), b)
	if n < 0 {
		n = 0
	}
	return n, err
}
