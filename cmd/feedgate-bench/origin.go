package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// Origin sizes: a small response (an update index), and a large one.
const (
	smallSize = 128
	largeSize = 1 << 20
)

// originPorts are the ports of the origin process.
type originPorts struct {
	HTTP      int `json:"http"`       // plain HTTP: /small and /large
	TLS       int `json:"tls"`        // TLS listener for tunnels (HTTPS /small)
	Source    int `json:"source"`     // raw TCP: streams bytes until the client closes
	TLSSource int `json:"tls_source"` // TLS: streams bytes after the handshake until the client closes
}

// all lists the ports, for the proxies' name mappings and redirects.
func (p originPorts) all() []int { return []int{p.HTTP, p.TLS, p.Source, p.TLSSource} }

// serveOrigin is the origin process: it listens on four ports of host
// (loopback, or its address in the origin namespace), prints them as one
// JSON line and serves until killed. It runs in its own process so that its
// CPU and garbage collection are not the load generator's.
func serveOrigin(host string) error {
	small := make([]byte, smallSize)
	large := make([]byte, largeSize)
	for i := range small {
		small[i] = 'a' + byte(i%26)
	}
	copy(large, small)
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(small)))
		w.Write(small)
	})
	mux.HandleFunc("/large", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(large)))
		w.Write(large)
	})
	listen := func() (net.Listener, int, error) {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, 0, err
		}
		return l, l.Addr().(*net.TCPAddr).Port, nil
	}
	hl, hp, err := listen()
	if err != nil {
		return err
	}
	tl, tp, err := listen()
	if err != nil {
		return err
	}
	sl, sp, err := listen()
	if err != nil {
		return err
	}
	bl, bp, err := listen()
	if err != nil {
		return err
	}
	cert, err := selfSigned(benchHost)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	tlsSrv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Minute,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	go srv.Serve(hl)
	go tlsSrv.ServeTLS(tl, "", "")
	go serveSource(sl)
	go serveTLSSource(bl, cert)
	if err := json.NewEncoder(os.Stdout).Encode(originPorts{HTTP: hp, TLS: tp, Source: sp, TLSSource: bp}); err != nil {
		return err
	}
	select {}
}

// serveSource streams bytes to every connection, once the client has said
// something (its ClientHello), until the client closes.
func serveSource(l net.Listener) {
	buf := make([]byte, 1<<20)
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if _, err := c.Read(make([]byte, 16<<10)); err != nil {
				return
			}
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

// serveTLSSource completes a TLS handshake on every connection and then
// streams application data, a megabyte per write, until the client
// closes: a download as a client sees it through a tunnel. The cipher is
// what crypto/tls picks by default on both ends (TLS 1.3 with AES-GCM on
// a CPU with AES instructions); the bench reports the one negotiated.
func serveTLSSource(l net.Listener, cert tls.Certificate) {
	buf := make([]byte, 1<<20)
	conf := &tls.Config{Certificates: []tls.Certificate{cert}}
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			tc := tls.Server(c, conf)
			defer tc.Close()
			if err := tc.Handshake(); err != nil {
				return
			}
			for {
				if _, err := tc.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

func selfSigned(name string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// originEnv, set in the environment to the address to listen on, makes
// this program (or its test binary) the origin process.
const originEnv = "FEEDGATE_BENCH_ORIGIN"

// startOrigin re-executes this program as the origin process, listening on
// host, inside the network namespace netns unless it is "".
func startOrigin(netns, host string) (*exec.Cmd, originPorts, error) {
	var ports originPorts
	cmd, err := startSelf(originEnv, host, netns, &ports)
	if err != nil {
		return nil, originPorts{}, fmt.Errorf("origin: %w", err)
	}
	return cmd, ports, nil
}

// startSelf re-executes this program (or its test binary) with env set to
// value, inside the network namespace netns unless it is "", and decodes
// the JSON line it prints first, its addresses, into v.
func startSelf(env, value, netns string, v any) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	if netns != "" {
		cmd = exec.Command("ip", "netns", "exec", netns, self)
	}
	cmd.Env = append(os.Environ(), env+"="+value)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := json.NewDecoder(out).Decode(v); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("did not report its ports: %w", err)
	}
	go io.Copy(io.Discard, out)
	return cmd, nil
}
