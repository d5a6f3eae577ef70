//go:build !linux

package upstream

import (
	"errors"
	"syscall"
)

// markControl fails: socket marks are Linux's.
func markControl(int) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error {
		return errors.New("transparent_mark: socket marks need Linux")
	}
}
