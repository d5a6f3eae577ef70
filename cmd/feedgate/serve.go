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
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/feedgate/feedgate/cmd/feedgate/internal/admin"
	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/activity"
	"github.com/feedgate/feedgate/proxy/evidence"
	"github.com/feedgate/feedgate/proxy/intercept"
	"github.com/feedgate/feedgate/proxy/inventory"
	"github.com/feedgate/feedgate/proxy/upstream"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
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

// runFlags are feedgate run's flags.
type runFlags struct {
	config, listen, admin, at string
	pprof, enableReload       bool
	resolves                  multiFlag
	// transparent are -transparent listen addresses, added to the
	// configuration's; tproxy makes them TPROXY sockets.
	transparent multiFlag
	tproxy      bool
	// webConfig is the admin listener's TLS and basic auth file (the
	// exporter toolkit's format); adminInsecure lets -admin go beyond
	// loopback without one.
	webConfig     string
	adminInsecure bool
}

// parseRunFlags parses feedgate run's command line; on a mistake it has
// told stderr, and feedgate exits with 2.
func parseRunFlags(args []string, stderr io.Writer) (*runFlags, bool) {
	var f runFlags
	fs := newFlagSet("run", stderr)
	fs.StringVar(&f.config, "config", "", "policy `FILE` (default: the built-in policy)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:3128", "proxy listen `ADDR`")
	fs.StringVar(&f.admin, "admin", "127.0.0.1:9128", "admin listen `ADDR` (/metrics, /healthz, /readyz)")
	fs.StringVar(&f.at, "at", "", "start the policy clock at `TIME` (RFC 3339); it then advances in real time")
	fs.BoolVar(&f.pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the admin listener")
	fs.StringVar(&f.webConfig, "web.config.file", "", "the admin listener's TLS, client certificate and basic auth `FILE` (Prometheus exporter web configuration; re-read for every connection and request)")
	fs.BoolVar(&f.adminInsecure, "admin.insecure", false, "allow -admin beyond loopback without basic auth or client certificates: the network alone decides who reaches it")
	fs.BoolVar(&f.enableReload, "admin.enable-reload", false, "allow POST /-/reload on the admin listener (SIGHUP always reloads)")
	fs.Var(&f.resolves, "resolve", "dial `HOST:PORT:ADDR` instead of resolving HOST for PORT (repeatable; ADDR is IP or IP:PORT)")
	fs.Var(&f.transparent, "transparent", "listen at `ADDR` for connections the firewall redirected (repeatable; adds to the transparent key)")
	fs.BoolVar(&f.tproxy, "transparent.tproxy", false, "the transparent listeners are TPROXY sockets (needs CAP_NET_ADMIN; as transparent_tproxy)")
	if err := fs.Parse(args); err != nil {
		return nil, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "feedgate run: unexpected argument %q\n", fs.Arg(0))
		return nil, false
	}
	return &f, true
}

// usageError is a feedgate run error in a flag's value: exit status 2
// rather than 1.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// runFailed reports why feedgate run cannot start and returns its exit
// status.
func runFailed(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "feedgate run: %v\n", err)
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

// runProxy is feedgate run: stop, when not nil, replaces SIGINT and
// SIGTERM.
func runProxy(args []string, stdout, stderr io.Writer, stop <-chan os.Signal) int {
	f, ok := parseRunFlags(args, stderr)
	if !ok {
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
	if err := checkAdminSecurity(f, errLog); err != nil {
		return runFailed(stderr, err)
	}
	c, warnings, err := loadConfig(f.config)
	printProblems(stderr, warnings, err)
	if err != nil {
		return 1
	}
	dlog, err := openDecisionLog(c.Log, stdout, errLog)
	if err != nil {
		return runFailed(stderr, err)
	}
	defer dlog.close()
	g, err := buildProxy(f, c, dlog.sink, errLog)
	if err != nil {
		return runFailed(stderr, err)
	}
	rl := newReloader(f.config, f.listen, g.srv, g.m, errLog, c)
	g.startInventory(c.Inventory.SaveInterval)
	g.adminHTTP = buildAdmin(g, rl, f)
	g.webConfig = f.webConfig
	stopOps := handleOps(rl, dlog, errLog)
	defer stopOps()

	status := g.serve(stop)
	g.shutdown()
	if err := dlog.finish(); err != nil {
		errLog.Warn("decision log", "error", err)
	}
	errLog.Info("stopped")
	return status
}

// decisionLog is where decision records go: standard output or [log]
// file, through a buffer flushed every logFlushInterval and at exit,
// instead of one write per request; with [log] evidence_key, sealed and
// signed on the way (see proxy/evidence).
type decisionLog struct {
	settings config.Log
	file     *accesslog.File // nil when records go to standard output
	out      *accesslog.Writer
	ev       *evidence.Writer // nil without evidence_key
	sink     accesslog.Sink   // JSON or Squid lines, as [log] format says
}

func openDecisionLog(settings config.Log, stdout io.Writer, errLog *slog.Logger) (*decisionLog, error) {
	d := &decisionLog{settings: settings}
	var out io.Writer = stdout
	if settings.File != "" {
		var err error
		if d.file, err = accesslog.OpenFile(settings.File); err != nil {
			return nil, fmt.Errorf("[log] file: %w", err)
		}
		out = d.file
	}
	d.out = accesslog.NewWriter(out, logFlushInterval)
	var records io.Writer = d.out
	if e := settings.Evidence; e != nil {
		signer, err := config.ReadSigner(e.KeyFile)
		if err == nil {
			d.ev, err = evidence.NewWriter(d.out, evidence.Options{
				Instance: e.Instance, Signer: signer, Every: e.CheckpointEvery, Interval: e.CheckpointInterval,
				LogFile: settings.File, StateFile: settings.StateFile(), ErrorLog: errLog,
			})
		}
		if err != nil {
			d.close()
			return nil, fmt.Errorf("[log] evidence_key: %w", err)
		}
		records = d.ev
	}
	var err error
	if d.sink, err = accesslog.New(settings.Format, records); err != nil {
		d.close()
		return nil, fmt.Errorf("[log] format: %w", err)
	}
	return d, nil
}

// reopen writes out the buffer and reopens the file, after logrotate
// moved it (SIGUSR1). The evidence chain signs what went to the old file
// and goes on in the new one.
func (d *decisionLog) reopen(errLog *slog.Logger) {
	if d.ev != nil && d.file != nil {
		if err := d.ev.Checkpoint(); err != nil {
			errLog.Warn("evidence checkpoint before reopening the log", "error", err)
		}
	}
	if err := d.out.Flush(); err != nil {
		errLog.Warn("access log flush", "error", err)
	}
	if d.file == nil {
		return
	}
	if err := d.file.Reopen(); err != nil {
		errLog.Error("access log reopen failed; still writing to the old file", "error", err)
		return
	}
	errLog.Info("access log reopened", "file", d.settings.File)
	if d.ev != nil {
		var size int64
		if fi, err := os.Stat(d.settings.File); err == nil {
			size = fi.Size()
		}
		d.ev.Reopened(size)
	}
}

// finish signs the last records and writes out the buffer, at exit.
func (d *decisionLog) finish() error {
	var evErr error
	if d.ev != nil {
		evErr = d.ev.Close()
	}
	return errors.Join(evErr, d.out.Close())
}

// close writes out the buffer and closes the file; it is safe after an
// earlier finish.
func (d *decisionLog) close() {
	if d.ev != nil {
		_ = d.ev.Close()
	}
	_ = d.out.Close()
	if d.file != nil {
		_ = d.file.Close()
	}
}

// gateway is what feedgate run serves: the proxy on its listener, with its
// metrics, inventory and policy clock, and the admin listener.
type gateway struct {
	errLog  *slog.Logger
	started *config.Config // the configuration feedgate started with
	clock   proxy.Clock
	pl, al  net.Listener // proxy and admin
	// tls are the transparent listeners, served with transparentOpts.
	tls             []net.Listener
	transparentOpts proxy.TransparentOptions
	reg             *prometheus.Registry
	m               *metrics.Metrics
	inv             *inventory.Inventory
	act             *activity.Activity
	stopInv         func() // saves the inventory once more and stops its saves
	srv             *proxy.Server
	proxyHTTP       *proxy.Front
	adminHTTP       *http.Server
	// webConfig is -web.config.file, which the exporter toolkit reads
	// again for every TLS handshake and every request.
	webConfig string
	ready     atomic.Bool
}

// buildProxy opens both listeners and builds the proxy on the first; the
// proxy refuses to dial either of them.
func buildProxy(f *runFlags, c *config.Config, decisions accesslog.Sink, errLog *slog.Logger) (*gateway, error) {
	p := c.Policy
	overrides := upstream.Overrides{}
	for _, r := range f.resolves {
		if err := overrides.ParseResolve(r); err != nil {
			return nil, usageError{err}
		}
	}
	clock, err := policyClock(f.at, p.Location)
	if err != nil {
		return nil, usageError{fmt.Errorf("-at: %w", err)}
	}
	transparent := append(slices.Clone(c.Transparent.Listen), f.transparent...)
	tproxy := f.tproxy || c.Transparent.TProxy
	for _, addr := range append([]string{f.listen}, transparent...) {
		if err := checkOpenProxy(addr, c); err != nil {
			return nil, err
		}
	}
	pl, al, err := openListeners(f.listen, f.admin)
	if err != nil {
		return nil, err
	}
	g := &gateway{errLog: errLog, started: c, clock: clock, pl: pl, al: al, reg: prometheus.NewRegistry(),
		transparentOpts: proxy.TransparentOptions{TProxy: tproxy}}
	for _, addr := range transparent {
		tl, err := listenTransparent(addr, tproxy)
		if err != nil {
			g.closeListeners()
			return nil, err
		}
		g.tls = append(g.tls, tl)
	}
	g.m = metrics.New(g.reg, metrics.Options{Version: buildVersion(), Now: clock.Now})
	// The status page's recent traffic sees every record the log does.
	g.act = activity.New(activity.Options{})
	own := []netip.AddrPort{addrPort(pl.Addr()), addrPort(al.Addr())}
	for _, tl := range g.tls {
		own = append(own, addrPort(tl.Addr()))
	}
	opts := proxy.Options{
		Config: c, Metrics: g.m, AccessLog: accesslog.Tee(decisions, g.act), ErrorLog: errLog, Clock: clock,
		Dialer:    &upstream.Dialer{Overrides: overrides, Mark: c.Transparent.Mark},
		Listeners: own,
	}
	g.inv = openInventory(c.Inventory, errLog)
	g.reg.MustRegister(g.inv.Collector())
	opts.Inventory = g.inv
	if err = loadTLS(c.Intercept, &opts, time.Now()); err == nil {
		g.srv, err = proxy.New(opts)
	}
	if err != nil {
		g.closeListeners()
		return nil, err
	}
	g.m.ConfigLoaded(time.Now())
	g.proxyHTTP = g.srv.HTTPServer()
	return g, nil
}

// policyClock is the clock the policy is decided on: the wall clock, or
// with -at one that starts at that instant.
func policyClock(at string, loc *time.Location) (proxy.Clock, error) {
	if at == "" {
		return offsetClock{}, nil
	}
	t, err := rules.ParseInstant(at, loc)
	if err != nil {
		return nil, err
	}
	return offsetClock{offset: time.Until(t)}, nil
}

// proxyListenConfig turns TCP keep-alive off on accepted client
// connections, as Squid leaves it off: four setsockopt calls per
// connection were 8 % of feedgate's CPU under a load of new connections,
// and an idle client connection is closed by feedgate's own timeouts
// (keep-alive idle, header, tunnel_idle_timeout). A tunnel turns it on
// for its client connection (proxy.Server), where a dead peer would
// otherwise hold the tunnel until tunnel_idle_timeout.
func proxyListenConfig() net.ListenConfig { return net.ListenConfig{KeepAlive: -1} }

// openListeners opens the proxy and admin listeners, or neither.
func openListeners(listen, adminAddr string) (pl, al net.Listener, err error) {
	lc := proxyListenConfig()
	pl, err = lc.Listen(context.Background(), "tcp", listen)
	if err != nil {
		return nil, nil, fmt.Errorf("proxy listener: %w", err)
	}
	al, err = net.Listen("tcp", adminAddr)
	if err != nil {
		pl.Close()
		return nil, nil, fmt.Errorf("admin listener: %w", err)
	}
	return pl, al, nil
}

// closeListeners closes every listener of a gateway that will not serve.
func (g *gateway) closeListeners() {
	for _, l := range append([]net.Listener{g.pl, g.al}, g.tls...) {
		_ = l.Close()
	}
}

// openInventory opens the client inventory and its state file.
func openInventory(settings config.Inventory, errLog *slog.Logger) *inventory.Inventory {
	inv, err := inventory.New(inventory.Options{MaxEntries: settings.MaxClients, StateFile: settings.StateFile})
	if err != nil {
		// Enforcement matters more than the inventory: start with an
		// empty one, but keep the unreadable file for a human.
		aside := settings.StateFile + ".unreadable-" + time.Now().UTC().Format("20060102T150405Z")
		_ = os.Rename(settings.StateFile, aside)
		errLog.Error("inventory state file unreadable; starting with an empty inventory", "error", err, "moved_to", aside)
	}
	return inv
}

// startInventory saves the inventory every interval until stopInv.
func (g *gateway) startInventory(every time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.inv.Run(ctx, every, func(err error) { g.errLog.Warn("inventory state file", "error", err) })
	}()
	g.stopInv = func() { cancel(); <-done }
}

// buildAdmin is the admin listener's server, reading the running proxy.
func buildAdmin(g *gateway, rl *reloader, f *runFlags) *http.Server {
	return admin.NewServer(admin.Deps{
		Registry:      g.reg,
		Ready:         g.ready.Load,
		Config:        g.srv.Config,
		Now:           g.clock.Now,
		ProxyAddr:     g.pl.Addr(),
		Inventory:     g.inv,
		Reload:        rl.reload,
		ReloadEnabled: f.enableReload,
		Pprof:         f.pprof,
		Activity:      g.act,
		Reloads:       rl.status,
		Wall:          time.Now,
	})
}

// handleOps reloads the policy on SIGHUP and reopens the access log file
// on SIGUSR1, until the returned stop.
func handleOps(rl *reloader, dlog *decisionLog, errLog *slog.Logger) (stop func()) {
	ops := make(chan os.Signal, 4)
	signal.Notify(ops, syscall.SIGHUP, syscall.SIGUSR1)
	go func() {
		for sig := range ops {
			switch sig {
			case syscall.SIGHUP:
				_ = rl.reload("SIGHUP")
			case syscall.SIGUSR1:
				dlog.reopen(errLog)
			}
		}
	}()
	return func() { signal.Stop(ops); close(ops) }
}

// serve serves both listeners until stop or until one fails, and returns
// the exit status.
func (g *gateway) serve(stop <-chan os.Signal) int {
	errc := make(chan error, 2+len(g.tls))
	go func() { errc <- g.proxyHTTP.Serve(g.pl) }()
	go func() {
		// With a web config the toolkit wraps the handler in its basic
		// auth and serves TLS; without one it is a plain Serve.
		flags := &web.FlagConfig{WebConfigFile: &g.webConfig}
		errc <- web.Serve(g.al, g.adminHTTP, flags, g.errLog.With("listener", "admin"))
	}()
	transparent := []string{}
	for _, tl := range g.tls {
		transparent = append(transparent, tl.Addr().String())
		go func() { errc <- g.srv.ServeTransparent(tl, g.transparentOpts) }()
	}
	g.ready.Store(true)
	p := g.started.Policy
	g.errLog.Info("feedgate started",
		"version", buildVersion(), "proxy", g.pl.Addr().String(), "admin", g.al.Addr().String(),
		"transparent", transparent,
		"policy", p.Name, "file", p.File, "mode", p.Mode.String(), "policy_time", g.clock.Now().In(p.Location).Format(time.RFC3339))

	status := 0
	select {
	case s := <-stop:
		g.errLog.Info("shutting down", "signal", s.String())
	case err := <-errc:
		g.errLog.Error("listener failed", "error", err)
		status = 1
	}
	g.ready.Store(false)
	return status
}

// shutdown stops accepting and lets plain requests finish, then closes
// tunnels (their records are written as they close), then the admin
// listener, and saves the inventory a last time.
func (g *gateway) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	// No new redirected connections; those open are closed with the
	// proxy's below.
	for _, tl := range g.tls {
		_ = tl.Close()
	}
	if err := g.proxyHTTP.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		g.errLog.Warn("proxy shutdown", "error", err)
	}
	// Whatever is still open now (tunnels, websockets, plain requests
	// that outlived the grace) is closed; its records are written as it
	// closes, which takes a moment of its own even when the grace ran out.
	closeCtx, cancelClose := context.WithTimeout(context.Background(), closeGrace)
	defer cancelClose()
	if err := g.srv.Shutdown(closeCtx); err != nil {
		g.errLog.Warn("connection shutdown", "error", err)
	}
	_ = g.adminHTTP.Shutdown(ctx)
	g.stopInv() // the inventory saves once more as it stops
}

// checkOpenProxy refuses to listen beyond loopback with the default client
// list: that would be an open proxy, or, for the default list, a proxy
// nobody on the network can use.
func checkOpenProxy(listen string, c *config.Config) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", listen, err)
	}
	if loopbackHost(host) {
		return nil
	}
	if !c.Access.ClientsConfigured {
		return fmt.Errorf("-listen %s reaches beyond loopback, but the policy %s sets no allowed_clients: "+
			"feedgate would be an open proxy. Add allowed_clients = [\"10.0.0.0/8\", ...] with the networks that may use it", listen, c.Policy.File)
	}
	return nil
}

// loopbackHost reports whether a listen address's host keeps the listener
// on loopback: a loopback IP or the name localhost. An empty host is every
// interface.
func loopbackHost(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback() || host == "localhost"
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}

// loadTLS loads what [tls.intercept] names: the interception CA, and the
// extra roots upstream servers are verified against (with the system's).
func loadTLS(ic config.Intercept, opts *proxy.Options, now time.Time) error {
	if ic.On {
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
