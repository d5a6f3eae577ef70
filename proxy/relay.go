package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// relayBufSize is the size of the buffer one direction of a busy tunnel
// copies through. A loopback or LAN socket rarely has more queued than
// this when the copy loop wakes; a larger buffer mostly costs memory per
// slow client that holds one while its write waits.
const relayBufSize = 64 << 10

// relayBuf is a tunnel direction's copy buffer.
type relayBuf = [relayBufSize]byte

// relayBufs lends tunnels their copy buffers. A direction holds one only
// while bytes are in flight, from a read that returned some until they are
// written; an idle tunnel holds none.
type relayBufs struct {
	pool sync.Pool
	// held counts the buffers lent out, for the tests that hold idle
	// tunnels to that.
	held atomic.Int64
}

func (p *relayBufs) get() *relayBuf {
	p.held.Add(1)
	if b, ok := p.pool.Get().(*relayBuf); ok {
		return b
	}
	return new(relayBuf)
}

func (p *relayBufs) put(b *relayBuf) {
	p.held.Add(-1)
	p.pool.Put(b)
}

// relay copies one direction of a tunnel in user space, the way Squid and
// nginx do, rather than with splice(2): measured on loopback with TLS
// through the tunnel (docs/performance.md, "Bulk through a tunnel"), a
// spliced copy costs the proxy less CPU but the two ends more, and the
// download is slower as a whole. Waiting for bytes, it holds no buffer:
// it waits on the socket's readiness through syscall.RawConn and takes a
// buffer only for the read that follows.
type relay struct {
	bufs *relayBufs
	// raw is the source socket, nil when the source is not a plain TCP
	// connection (a wrapper that replays bytes a parent proxy sent early);
	// then the copy reads into a buffer it holds while it waits.
	raw syscall.RawConn
	// read is readOnce bound to this relay, made once so that waiting
	// allocates nothing.
	read func(fd uintptr) bool
	// The state of one read, between readOnce and copyChunk.
	buf  *relayBuf
	max  int
	n    int
	rerr error
}

func newRelay(bufs *relayBufs, src net.Conn) *relay {
	r := &relay{bufs: bufs, raw: rawSource(src)}
	r.read = r.readOnce
	return r
}

// readOnce is the callback of RawConn.Read: it reads what the socket has
// into a buffer it takes for the purpose, or gives the buffer back and
// asks to wait when the socket has nothing.
func (r *relay) readOnce(fd uintptr) bool {
	if r.buf == nil {
		r.buf = r.bufs.get()
	}
	for {
		n, err := readFD(fd, r.buf[:r.max])
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			r.release()
			return false
		case nil:
			r.n, r.rerr = n, nil
		default:
			r.n, r.rerr = 0, os.NewSyscallError("read", err)
		}
		return true
	}
}

func (r *relay) release() {
	if r.buf != nil {
		r.bufs.put(r.buf)
		r.buf = nil
	}
}

// copyChunk copies src to dst until lr.N bytes moved, src ended (a nil
// error with lr.N left over) or an error, the way io.Copy(dst, lr) would.
func (r *relay) copyChunk(dst net.Conn, lr *io.LimitedReader) (int64, error) {
	defer r.release()
	if r.raw == nil {
		r.buf = r.bufs.get()
		return io.CopyBuffer(writerOnly{dst}, lr, r.buf[:])
	}
	var total int64
	for lr.N > 0 {
		r.max = int(min(lr.N, relayBufSize))
		if err := r.raw.Read(r.read); err != nil {
			return total, err // a deadline, or the socket closed
		}
		if r.rerr != nil {
			return total, r.rerr
		}
		if r.n == 0 {
			return total, nil // src ended
		}
		n, err := dst.Write(r.buf[:r.n])
		total += int64(n)
		lr.N -= int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// writerOnly hides dst's ReadFrom, which for a TCP source would splice.
type writerOnly struct{ io.Writer }
