package proxy

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// bytesReceived returns how many bytes the kernel has received on c
// (TCP_INFO's bytes_received), and false when it cannot tell. A tunnel's
// copy loop only learns of bytes when a chunk ends, so whether the
// other direction is alive is asked of the kernel, which needs no wrapper
// around the connection. (last_data_recv would be the obvious field, but on
// loopback it does not track each arriving segment.)
func bytesReceived(c net.Conn) (uint64, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return 0, false
	}
	return info.Bytes_received, true
}
