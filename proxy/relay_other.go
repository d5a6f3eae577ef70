//go:build !unix

package proxy

import (
	"errors"
	"net"
	"syscall"
)

// rawSource returns nil: relay then reads through net.Conn.
func rawSource(net.Conn) syscall.RawConn { return nil }

func readFD(uintptr, []byte) (int, error) { return 0, errors.ErrUnsupported }
