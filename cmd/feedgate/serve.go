package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/feedgate/feedgate/cmd/feedgate/internal/admin"
	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/intercept"
	"github.com/feedgate/feedgate/proxy/inventory"
	"github.com/feedgate/feedgate/rules"
)

// offsetClock is the policy clock of -at: it starts at a chosen instant and
// advances in real time.
type offsetClock struct{ offset time.Duration }

func (c offsetClock) Now() time.Time { return time.Now().Add(c.offset) }

func (offsetClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// shutdownGrace bounds how long in-flight requests and tunnels may take to
// finish after SIGTERM or SIGINT.
const shutdownGrace = 10 * time.Second

// closeGrace bounds closing the connections left after shutdownGrace and
// writing their records.
const closeGrace = 5 * time.Second

// logFlushInterval bounds how long a decision record waits in the buffer.
const logFlushInterval = 200 * time.Millisecond

func runProxy(args []string, stdout, stderr io.Writer, stop <-chan os.Signal) int {
	fs := newFlagSet("run", stderr)
	config := fs.String("config", "", "policy `FILE` (default: the built-in policy)")
	listen := fs.String("listen", "127.0.0.1:3128", "proxy listen `ADDR`")
	adminAddr := fs.String("admin", "127.0.0.1:9128", "admin listen `ADDR` (/metrics, /healthz, /readyz)")
	at := fs.String("at", "", "start the policy clock at `TIME` (RFC 3339); it then advances in real time")
	pprofOn := fs.Bool("pprof", false, "serve Go profiles at /debug/pprof/ on the admin listener")
	enableReload := fs.Bool("admin.enable-reload", false, "allow POST /-/reload on the admin listener (SIGHUP always reloads)")
	var resolves multiFlag
	fs.Var(&resolves, "resolve", "dial `HOST:PORT:ADDR` instead of resolving HOST for PORT (repeatable; ADDR is IP or IP:PORT)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "feedgate run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	// Catch signals before anything is announced, so that a SIGTERM sent
	// right after "feedgate started" still shuts down gracefully.
	if stop == nil {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(sig)
		stop = sig
	}
	errLog := slog.New(slog.NewJSONHandler(stderr, nil))
	p, warnings, err := loadPolicy(*config)
	printProblems(stderr, warnings, err)
	if err != nil {
		return 1
	}
	// Decision records are buffered and flushed every logFlushInterval and
	// at exit, instead of one write per request.
	var logFile *accesslog.File
	var out io.Writer = stdout
	if p.Log.File != "" {
		if logFile, err = accesslog.OpenFile(p.Log.File); err != nil {
			fmt.Fprintf(stderr, "feedgate run: [log] file: %v\n", err)
			return 1
		}
		defer logFile.Close()
		out = logFile
	}
	decisionOut := accesslog.NewWriter(out, logFlushInterval)
	defer decisionOut.Close()
	decisions, err := accesslog.New(p.Log.Format, decisionOut)
	if err != nil {
		fmt.Fprintf(stderr, "feedgate run: [log] format: %v\n", err)
		return 1
	}
	overrides := proxy.Overrides{}
	for _, r := range resolves {
		if err := overrides.ParseResolve(r); err != nil {
			fmt.Fprintf(stderr, "feedgate run: %v\n", err)
			return 2
		}
	}
	var clock proxy.Clock = offsetClock{}
	if *at != "" {
		t, err := rules.ParseInstant(*at, p.Location)
		if err != nil {
			fmt.Fprintf(stderr, "feedgate run: -at: %v\n", err)
			return 2
		}
		clock = offsetClock{offset: time.Until(t)}
	}

	if err := checkOpenProxy(*listen, p); err != nil {
		fmt.Fprintf(stderr, "feedgate run: %v\n", err)
		return 1
	}
	pl, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "feedgate run: proxy listener: %v\n", err)
		return 1
	}
	al, err := net.Listen("tcp", *adminAddr)
	if err != nil {
		pl.Close()
		fmt.Fprintf(stderr, "feedgate run: admin listener: %v\n", err)
		return 1
	}

	var srv *proxy.Server
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{Version: buildVersion(), Now: clock.Now})
	opts := proxy.Options{
		Policy: p, Metrics: m, AccessLog: decisions, ErrorLog: errLog, Clock: clock,
		Dialer:    &proxy.Dialer{Overrides: overrides},
		Listeners: []netip.AddrPort{addrPort(pl.Addr()), addrPort(al.Addr())},
	}
	inv, invErr := inventory.New(inventory.Options{MaxEntries: p.Inventory.MaxClients, StateFile: p.Inventory.StateFile})
	if invErr != nil {
		// Enforcement matters more than the inventory: start with an
		// empty one, but keep the unreadable file for a human.
		aside := p.Inventory.StateFile + ".unreadable-" + time.Now().UTC().Format("20060102T150405Z")
		_ = os.Rename(p.Inventory.StateFile, aside)
		errLog.Error("inventory state file unreadable; starting with an empty inventory", "error", invErr, "moved_to", aside)
	}
	reg.MustRegister(inv.Collector())
	opts.Inventory = inv
	if err = loadTLS(p, &opts, time.Now()); err == nil {
		srv, err = proxy.New(opts)
	}
	if err != nil {
		pl.Close()
		al.Close()
		fmt.Fprintf(stderr, "feedgate run: %v\n", err)
		return 1
	}
	m.ConfigLoaded(time.Now())
	rl := &reloader{file: *config, listen: *listen, srv: srv, m: m, log: errLog, started: p}
	var ready atomic.Bool
	proxyHTTP := srv.HTTPServer()
	invCtx, stopInv := context.WithCancel(context.Background())
	invDone := make(chan struct{})
	go func() {
		defer close(invDone)
		inv.Run(invCtx, p.Inventory.SaveInterval, func(err error) { errLog.Warn("inventory state file", "error", err) })
	}()
	adminHTTP := admin.NewServer(admin.Deps{
		Registry:      reg,
		Ready:         ready.Load,
		Policy:        srv.Policy,
		Now:           clock.Now,
		ProxyAddr:     pl.Addr(),
		Inventory:     inv,
		Reload:        rl.reload,
		ReloadEnabled: *enableReload,
		Pprof:         *pprofOn,
	})

	// SIGHUP reloads the policy; SIGUSR1 reopens the access log file.
	ops := make(chan os.Signal, 4)
	signal.Notify(ops, syscall.SIGHUP, syscall.SIGUSR1)
	defer func() { signal.Stop(ops); close(ops) }()
	go func() {
		for sig := range ops {
			switch sig {
			case syscall.SIGHUP:
				_ = rl.reload("SIGHUP")
			case syscall.SIGUSR1:
				if err := decisionOut.Flush(); err != nil {
					errLog.Warn("access log flush", "error", err)
				}
				if logFile != nil {
					if err := logFile.Reopen(); err != nil {
						errLog.Error("access log reopen failed; still writing to the old file", "error", err)
					} else {
						errLog.Info("access log reopened", "file", p.Log.File)
					}
				}
			}
		}
	}()

	errc := make(chan error, 2)
	go func() { errc <- proxyHTTP.Serve(pl) }()
	go func() { errc <- adminHTTP.Serve(al) }()
	ready.Store(true)
	errLog.Info("feedgate started",
		"version", buildVersion(), "proxy", pl.Addr().String(), "admin", al.Addr().String(),
		"policy", p.Name, "file", p.File, "mode", p.Mode.String(), "policy_time", clock.Now().In(p.Location).Format(time.RFC3339))

	status := 0
	select {
	case s := <-stop:
		errLog.Info("shutting down", "signal", s.String())
	case err := <-errc:
		errLog.Error("listener failed", "error", err)
		status = 1
	}
	ready.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	// Stop accepting and let plain requests finish, then close tunnels
	// (their records are written as they close), then the admin listener.
	if err := proxyHTTP.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errLog.Warn("proxy shutdown", "error", err)
	}
	// Whatever is still open now (tunnels, websockets, plain requests
	// that outlived the grace) is closed; its records are written as it
	// closes, which takes a moment of its own even when the grace ran out.
	closeCtx, cancelClose := context.WithTimeout(context.Background(), closeGrace)
	defer cancelClose()
	if err := srv.Shutdown(closeCtx); err != nil {
		errLog.Warn("connection shutdown", "error", err)
	}
	_ = adminHTTP.Shutdown(ctx)
	stopInv() // the inventory saves once more as it stops
	<-invDone
	if err := decisionOut.Close(); err != nil {
		errLog.Warn("decision log", "error", err)
	}
	errLog.Info("stopped")
	return status
}

// checkOpenProxy refuses to listen beyond loopback with the default client
// list: that would be an open proxy, or, for the default list, a proxy
// nobody on the network can use.
func checkOpenProxy(listen string, p *rules.Policy) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", listen, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() || host == "localhost" {
		return nil
	}
	if !p.Access.ClientsConfigured {
		return fmt.Errorf("-listen %s reaches beyond loopback, but the policy %s sets no allowed_clients: "+
			"feedgate would be an open proxy. Add allowed_clients = [\"10.0.0.0/8\", ...] with the networks that may use it", listen, p.File)
	}
	return nil
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}

// loadTLS loads what [tls.intercept] names: the interception CA, and the
// extra roots upstream servers are verified against (with the system's).
func loadTLS(p *rules.Policy, opts *proxy.Options, now time.Time) error {
	ic := p.TLS.Intercept
	if len(ic.Hosts) > 0 {
		ca, err := intercept.LoadCA(ic.CACert, ic.CAKey, now)
		if err != nil {
			return fmt.Errorf("[tls.intercept]: %w", err)
		}
		opts.InterceptCA = ca
	}
	if len(ic.UpstreamCA) == 0 {
		return nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range ic.UpstreamCA {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("[tls.intercept] upstream_ca: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("[tls.intercept] upstream_ca: %s: no PEM certificate found", f)
		}
	}
	opts.RootCAs = pool
	return nil
}
