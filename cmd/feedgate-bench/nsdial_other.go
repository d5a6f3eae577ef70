//go:build !linux

package main

import (
	"context"
	"errors"
	"net"
)

// nsDialer needs Linux network namespaces.
type nsDialer struct{}

func openNSDialer(string) (*nsDialer, error) {
	return nil, errors.New("network namespaces need Linux")
}

func (*nsDialer) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("network namespaces need Linux")
}

func (*nsDialer) dial(string) (net.Conn, error) {
	return nil, errors.New("network namespaces need Linux")
}

func (*nsDialer) close() {}
