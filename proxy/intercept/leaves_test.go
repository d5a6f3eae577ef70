package intercept

// White-box tests of the leaves and their cache, and a real TLS handshake
// over loopback.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// certTestWait bounds every wait here; it only keeps a broken test from
// hanging.
const certTestWait = 15 * time.Second

// TestLeafName checks the names leaves are cached and made for. Names
// reach the cache only once the policy has decided them, so the spellings
// rules.CanonicalHost refuses (zones, ports, IPv4 in brackets) never do;
// they are here to show that the cache refuses them too, rather than
// signing for a name the policy never saw.
func TestLeafName(t *testing.T) {
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61) // 253
	tests := []struct {
		in, want string
		wantErr  string
	}{
		{in: "dnl-01.geo.kaspersky.com", want: "dnl-01.geo.kaspersky.com"},
		{in: "DNL-01.Geo.Kaspersky.COM.", want: "dnl-01.geo.kaspersky.com"},
		{in: "127.0.0.1", want: "127.0.0.1"},
		{in: "::1", want: "::1"},
		{in: "0:0:0:0:0:0:0:1", want: "::1"},
		{in: "[::1]", want: "::1"},
		{in: "0:0:0:0:0:FFFF:7F00:1", want: "::ffff:127.0.0.1"},
		{in: "host1", want: "host1"},
		{in: long, want: long},
		{in: long + ".", want: long},
		// An SNI that canonicalises to the intercepted host, as the
		// inner server's check lets through, gets that host's leaf.
		{in: "\uff37\uff37\uff37.Kaspersky.com", want: "www.kaspersky.com"},
		{in: "", wantErr: "empty"},
		{in: ".", wantErr: "empty"},
		{in: long + "x", wantErr: "longer than 253"},
		{in: "example.test:443", wantErr: "not an IPv6 address"},
		{in: "FE80::1%eth0", wantErr: "without a zone"},
		{in: "[127.0.0.1]", wantErr: "not an IPv6 address"},
	}
	for _, tt := range tests {
		got, err := leafName(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("leafName(%q) = %q, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("leafName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestLeafCertificate(t *testing.T) {
	now := certTestNow()
	ca := certTestNewCA(t, now)
	// Longer than a CN may be (64), in labels of at most 63 as every
	// name the policy decides.
	long := strings.Repeat("x", 60) + ".cn-too-long.example.test"
	tests := []struct {
		host   string
		name   string // the canonical name verified and expected in the SAN
		wantIP bool
	}{
		{"dnl-01.geo.kaspersky.com", "dnl-01.geo.kaspersky.com", false},
		{"S01.UPD.Kaspersky.com.", "s01.upd.kaspersky.com", false},
		{"127.0.0.1", "127.0.0.1", true},
		{"::1", "::1", true},
		{long, long, false},
	}
	c := newLeafCache(ca, certTestNow, 16)
	var keys []*ecdsa.PrivateKey
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			cert, err := c.get(tt.host)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			certTestVerify(t, ca, cert, tt.name, now)
			l := cert.Leaf
			if tt.wantIP {
				if want := []net.IP{net.ParseIP(tt.name)}; len(l.DNSNames) != 0 || len(l.IPAddresses) != 1 || !l.IPAddresses[0].Equal(want[0]) {
					t.Errorf("SANs DNS=%v IP=%v; want only IP %v", l.DNSNames, l.IPAddresses, want)
				}
			} else if len(l.IPAddresses) != 0 || !slices.Equal(l.DNSNames, []string{tt.name}) {
				t.Errorf("SANs DNS=%v IP=%v; want only DNS %s", l.DNSNames, l.IPAddresses, tt.name)
			}
			wantCN := tt.name
			if len(wantCN) > 64 {
				wantCN = "" // RFC 5280's upper bound; the SAN carries the name
			}
			if l.Subject.CommonName != wantCN {
				t.Errorf("CN = %q; want %q", l.Subject.CommonName, wantCN)
			}
			key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
			if !ok || key.Curve != elliptic.P256() || !key.PublicKey.Equal(l.PublicKey) {
				t.Fatalf("private key is %T and must be the leaf's ECDSA P-256 key", cert.PrivateKey)
			}
			keys = append(keys, key)
			if l.IsCA || l.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(l.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("IsCA=%v KeyUsage=%v ExtKeyUsage=%v; want a server-auth leaf", l.IsCA, l.KeyUsage, l.ExtKeyUsage)
			}
			if !bytes.Equal(l.AuthorityKeyId, ca.Cert.SubjectKeyId) {
				t.Errorf("AuthorityKeyId %x; want the CA's SubjectKeyId %x", l.AuthorityKeyId, ca.Cert.SubjectKeyId)
			}
			if want := now.Add(-time.Hour); !l.NotBefore.Equal(want) {
				t.Errorf("NotBefore = %v; want %v", l.NotBefore, want)
			}
			if want := now.Add(30 * 24 * time.Hour); !l.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %v; want %v", l.NotAfter, want)
			}
		})
	}
	for i := range keys {
		for j := range i {
			if keys[i].Equal(keys[j]) {
				t.Errorf("leaves %d and %d share a key", j, i)
			}
		}
	}
}

// TestCertCacheTLSHandshake runs real TLS handshakes over loopback against
// a server whose certificates come from the cache.
func TestCertCacheTLSHandshake(t *testing.T) {
	ca := certTestNewCA(t, time.Now())
	c := newLeafCache(ca, time.Now, 16)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: c.GetCertificate("fallback.test")})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, ln, func(conn net.Conn) {
		_ = conn.SetDeadline(time.Now().Add(certTestWait))
		// A failed handshake is the expected outcome of the untrusting
		// client; the client side asserts.
		_ = conn.(*tls.Conn).Handshake()
	})

	pool := certTestPool(ca)
	tests := []struct {
		name     string
		config   *tls.Config
		wantName string // the name the peer certificate must carry
		wantErr  bool   // an unknown-authority verification failure
	}{
		{
			name:     "sni-trusted",
			config:   &tls.Config{ServerName: "dnl-01.geo.kaspersky.com", RootCAs: pool},
			wantName: "dnl-01.geo.kaspersky.com",
		},
		{
			// A client dialing a bare IP sends no SNI, so the server uses
			// the fallback; verify by hand against the fallback name.
			name: "no-sni-fallback",
			config: &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
				inter := x509.NewCertPool()
				for _, ic := range cs.PeerCertificates[1:] {
					inter.AddCert(ic)
				}
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: "fallback.test", Roots: pool, Intermediates: inter})
				return err
			}},
			wantName: "fallback.test",
		},
		{
			name:    "sni-untrusted",
			config:  &tls.Config{ServerName: "dnl-01.geo.kaspersky.com", RootCAs: x509.NewCertPool()},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), certTestWait)
			defer cancel()
			d := tls.Dialer{Config: tt.config}
			conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
			if tt.wantErr {
				if err == nil {
					conn.Close()
					t.Fatal("handshake succeeded without trusting the CA")
				}
				var verr *tls.CertificateVerificationError
				var uerr x509.UnknownAuthorityError
				if !errors.As(err, &verr) || !errors.As(err, &uerr) {
					t.Errorf("handshake error %v (%T); want an x509 unknown-authority verification error", err, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.Close()
			cs := conn.(*tls.Conn).ConnectionState()
			if len(cs.PeerCertificates) != 2 {
				t.Fatalf("server sent %d certificates; want 2 (leaf, CA)", len(cs.PeerCertificates))
			}
			if got := cs.PeerCertificates[0].DNSNames; !slices.Equal(got, []string{tt.wantName}) {
				t.Errorf("peer certificate names %v; want [%s]", got, tt.wantName)
			}
		})
	}
}

func TestCertCacheReuse(t *testing.T) {
	c := newLeafCache(certTestNewCA(t, certTestNow()), certTestNow, 16)
	first, err := c.get("dnl-01.geo.kaspersky.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"dnl-01.geo.kaspersky.com", "DNL-01.geo.kaspersky.com."} {
		again, err := c.get(host)
		if err != nil {
			t.Fatal(err)
		}
		if again != first {
			t.Errorf("get(%q) returned a different certificate", host)
		}
	}
	if h, m, e := c.stats(); h != 2 || m != 1 || e != 0 {
		t.Errorf("stats = %d hits, %d misses, %d evictions; want 2, 1, 0", h, m, e)
	}
}

// TestCertCacheSingleFlight holds the first signature until all the other
// gets have joined it, so the shared path is exercised every run.
func TestCertCacheSingleFlight(t *testing.T) {
	const n = 50
	c := newLeafCache(certTestNewCA(t, certTestNow()), certTestNow, 16)
	var signs atomic.Int32
	release := make(chan struct{})
	sign := c.sign
	c.sign = func(host string, now time.Time) (*tls.Certificate, error) {
		signs.Add(1)
		<-release
		return sign(host, now)
	}

	start := make(chan struct{})
	certs := make([]*tls.Certificate, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			certs[i], errs[i] = c.get("activation-v2.kaspersky.com")
		}()
	}
	close(start)
	deadline := time.Now().Add(certTestWait)
	for {
		if h, _, _ := c.stats(); h == n-1 {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatal("the other gets never joined the signature in flight")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()

	if got := signs.Load(); got != 1 {
		t.Errorf("%d signatures for one host; want 1", got)
	}
	if h, m, _ := c.stats(); h != n-1 || m != 1 {
		t.Errorf("stats = %d hits, %d misses; want %d, 1", h, m, n-1)
	}
	for i := range n {
		if errs[i] != nil || certs[i] == nil || certs[i] != certs[0] {
			t.Fatalf("get %d = %p, %v; want the shared certificate %p", i, certs[i], errs[i], certs[0])
		}
	}
}

// TestCertCacheErrorNotCached checks that a failed signature reaches the
// caller and the next get signs again.
func TestCertCacheErrorNotCached(t *testing.T) {
	c := newLeafCache(certTestNewCA(t, certTestNow()), certTestNow, 16)
	errSign := errors.New("signer unavailable")
	sign := c.sign
	var calls int
	c.sign = func(host string, now time.Time) (*tls.Certificate, error) {
		calls++
		if calls == 1 {
			return nil, errSign
		}
		return sign(host, now)
	}
	if _, err := c.get("store.kaspersky.com"); !errors.Is(err, errSign) || !strings.Contains(err.Error(), "store.kaspersky.com") {
		t.Errorf("first get error = %v; want it to wrap %v and name the host", err, errSign)
	}
	if cert, err := c.get("store.kaspersky.com"); err != nil || cert == nil {
		t.Errorf("second get = %v, %v; want a certificate", cert, err)
	}
	if _, m, _ := c.stats(); m != 2 || calls != 2 {
		t.Errorf("%d misses, %d signatures; want 2, 2", m, calls)
	}
}

func TestCertCacheEviction(t *testing.T) {
	type step struct {
		host     string
		wantMiss bool
	}
	tests := []struct {
		name          string
		max           int
		steps         []step
		wantEvictions uint64
	}{
		{
			name:          "oldest-goes",
			max:           2,
			steps:         []step{{"a.test", true}, {"b.test", true}, {"c.test", true}, {"b.test", false}, {"c.test", false}, {"a.test", true}},
			wantEvictions: 2, // a for c, then b for a
		},
		{
			name:          "use-keeps",
			max:           2,
			steps:         []step{{"a.test", true}, {"b.test", true}, {"a.test", false}, {"c.test", true}, {"a.test", false}, {"b.test", true}},
			wantEvictions: 2, // b for c, then c for b
		},
		{
			name:          "default-max",
			max:           0,
			steps:         []step{{"a.test", true}, {"b.test", true}, {"c.test", true}, {"a.test", false}},
			wantEvictions: 0,
		},
	}
	ca := certTestNewCA(t, certTestNow())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newLeafCache(ca, certTestNow, tt.max)
			for i, s := range tt.steps {
				_, before, _ := c.stats()
				if _, err := c.get(s.host); err != nil {
					t.Fatal(err)
				}
				if _, after, _ := c.stats(); (after > before) != s.wantMiss {
					t.Errorf("step %d get(%s): miss=%v; want %v", i, s.host, after > before, s.wantMiss)
				}
			}
			if _, _, e := c.stats(); e != tt.wantEvictions {
				t.Errorf("%d evictions; want %d", e, tt.wantEvictions)
			}
			if n := c.lru.Len(); n != len(c.entries) || (tt.max > 0 && n > tt.max) {
				t.Errorf("cache holds %d list entries and %d map entries; max %d", n, len(c.entries), tt.max)
			}
		})
	}
}

func TestCertCacheRenewal(t *testing.T) {
	t0 := certTestNow()
	ca := certTestNewCA(t, t0)
	const host = "s01.upd.kaspersky.com"
	tests := []struct {
		name string
		// start is when the first leaf is made; later is when get runs
		// again, relative to the first leaf's NotAfter.
		start   time.Time
		later   time.Duration
		wantNew bool
		wantErr bool
	}{
		{name: "more-than-a-day-left", start: t0, later: -25 * time.Hour},
		{name: "exactly-a-day-left", start: t0, later: -24 * time.Hour},
		{name: "less-than-a-day-left", start: t0, later: -24*time.Hour + time.Second, wantNew: true},
		{name: "expired", start: t0, later: time.Second, wantNew: true},
		// The wall clock set back before the leaf's NotBefore.
		{name: "clock-set-back", start: t0.Add(48 * time.Hour), later: -(30*24*time.Hour + time.Hour + time.Second), wantNew: true},
		// Near the CA's own expiry a new leaf could not last longer, so
		// the old one is kept to the end, and then nothing can be signed.
		{name: "ca-capped-kept", start: ca.Cert.NotAfter.Add(-10 * 24 * time.Hour), later: -time.Hour},
		{name: "ca-expired", start: ca.Cert.NotAfter.Add(-10 * 24 * time.Hour), later: time.Second, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := testutil.NewClock(tt.start)
			c := newLeafCache(ca, clock.Now, 16)
			first, err := c.get(host)
			if err != nil {
				t.Fatal(err)
			}
			if min := ca.Cert.NotAfter; first.Leaf.NotAfter.After(min) {
				t.Errorf("leaf NotAfter %v is after the CA's %v", first.Leaf.NotAfter, min)
			}
			clock.Set(first.Leaf.NotAfter.Add(tt.later))
			second, err := c.get(host)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "not valid at") {
					t.Errorf("get after the CA expired = %v; want a CA validity error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if isNew := second != first; isNew != tt.wantNew {
				t.Fatalf("new certificate = %v; want %v", isNew, tt.wantNew)
			}
			if tt.wantNew {
				certTestVerify(t, ca, second, host, clock.Now())
				if _, m, _ := c.stats(); m != 2 {
					t.Errorf("%d misses; want 2 (the renewal signs)", m)
				}
			}
		})
	}
}

func BenchmarkCertCacheHit(b *testing.B) {
	c := newLeafCache(certTestNewCA(b, certTestNow()), certTestNow, 1024)
	const host = "dnl-01.geo.kaspersky.com"
	if _, err := c.get(host); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.get(host); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCertCacheMiss alternates two hosts in a one-entry cache, so every
// get evicts the other and signs: the cost of a new host, bookkeeping
// included.
func BenchmarkCertCacheMiss(b *testing.B) {
	c := newLeafCache(certTestNewCA(b, certTestNow()), certTestNow, 1)
	hosts := [2]string{"a.kaspersky.com", "b.kaspersky.com"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.get(hosts[i&1]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if _, m, _ := c.stats(); m != uint64(i) {
		b.Fatalf("%d misses in %d gets; want every get to miss", m, i)
	}
}

// BenchmarkLeafSign signs one leaf (always ECDSA P-256) with an ECDSA and
// with an RSA CA key, to show what an RSA CA costs per new host.
func BenchmarkLeafSign(b *testing.B) {
	now := certTestNow()
	cas := []struct {
		name string
		ca   *CA
	}{
		{"ca=ecdsa-p256", certTestNewCA(b, now)},
		{"ca=rsa-2048", certTestRSACA(b, now)},
	}
	for _, tc := range cas {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.ca.signLeaf("dnl-01.geo.kaspersky.com", now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
