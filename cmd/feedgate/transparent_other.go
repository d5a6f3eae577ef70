//go:build !linux

package main

import (
	"errors"
	"net"
)

// listenTransparent fails: transparent interception needs Linux's
// netfilter.
func listenTransparent(string, bool) (net.Listener, error) {
	return nil, errors.New("transparent listener: transparent interception needs Linux")
}
