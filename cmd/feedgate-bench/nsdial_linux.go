package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsDialer opens TCP connections from inside a network namespace, so that
// one load generator, in this process, drives every contender: a socket
// belongs to the namespace it was created in, whichever thread uses it
// afterwards, so only its creation happens in the namespace.
type nsDialer struct {
	target, home int // namespace descriptors
}

func openNSDialer(name string) (*nsDialer, error) {
	target, err := unix.Open(filepath.Join("/var/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", name, err)
	}
	// No thread has left the host's namespace yet, so the process's is
	// the one to come back to.
	home, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(target)
		return nil, fmt.Errorf("opening this process's network namespace: %w", err)
	}
	return &nsDialer{target: target, home: home}, nil
}

// DialContext dials in the namespace on a thread of its own, which goes
// back to the host's namespace before any other goroutine may run on it.
func (d *nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(d.target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("entering the network namespace: %w", err)}
			return
		}
		var dialer net.Dialer
		c, err := dialer.DialContext(ctx, network, addr)
		if serr := unix.Setns(d.home, unix.CLONE_NEWNET); serr != nil {
			// Still locked: the runtime ends the thread with this
			// goroutine rather than run others in the wrong namespace.
			if c != nil {
				c.Close()
			}
			done <- result{nil, fmt.Errorf("leaving the network namespace: %w", serr)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

func (d *nsDialer) dial(addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), "tcp", addr)
}

func (d *nsDialer) close() {
	unix.Close(d.target)
	unix.Close(d.home)
}
