// Package admin is feedgate's admin listener: the status page and the
// JSON APIs behind it, metrics, health and readiness, the reload
// endpoint, the client inventory, and the feeds and PAC file devices
// poll. It reads the running proxy only through Deps.
//
// Every URL is in New's table; a page is a handler in a file of its own
// that reads what it needs from Deps, and one line in the table.
package admin

import (
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/feedgate/feedgate/proxy/activity"
	"github.com/feedgate/feedgate/proxy/inventory"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
)

// readHeaderTimeout bounds how long a client may take to send its request
// headers.
const readHeaderTimeout = 10 * time.Second

// Deps is what the admin listener reads from the running feedgate.
type Deps struct {
	// Registry is served at /metrics; the handler's own error counter
	// is registered on it too.
	Registry *prometheus.Registry
	// Ready reports whether the proxy is serving: /readyz answers 503
	// while it is not.
	Ready func() bool
	// Config returns the configuration in force, which a reload
	// replaces.
	Config func() *config.Config
	// Now is the policy clock (feedgate run -at), which decides what
	// the feeds list.
	Now func() time.Time
	// ProxyAddr is the proxy listener's address, which the PAC file
	// gives clients when the policy sets no pac_proxy.
	ProxyAddr net.Addr
	// Inventory is served at /api/v1/clients.
	Inventory *inventory.Inventory
	// Reload reloads the policy; trigger names what asked for it.
	Reload func(trigger string) error
	// ReloadEnabled allows POST /-/reload (-admin.enable-reload);
	// without it the endpoint answers 403.
	ReloadEnabled bool
	// Pprof serves Go's profiles at /debug/pprof/ (-pprof).
	Pprof bool
	// Activity is the recent traffic the status page shows.
	Activity Activity
	// Reloads reports the last load or reload of the policy; nil shows
	// none.
	Reloads func() ReloadStatus
	// Wall is the wall clock that records and the traffic counts are
	// stamped with; nil means time.Now.
	Wall func() time.Time
}

// policy returns the policy in force.
func (d Deps) policy() *rules.Policy { return d.Config().Policy }

// New returns the admin listener's handler.
func New(d Deps) http.Handler {
	if d.Activity == nil {
		d.Activity = activity.New(activity.Options{})
	}
	mux := http.NewServeMux()
	if d.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.Registry, promhttp.HandlerOpts{Registry: d.Registry}))
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", readyz(d.Ready))
	mux.HandleFunc("POST /-/reload", reloadHandler(d.Reload, d.ReloadEnabled))
	pg := parsePages(func() *time.Location { return d.policy().Location })
	mux.HandleFunc("GET /{$}", statusPage(d, pg))
	mux.HandleFunc("GET /clients/{client}", clientPage(d, pg))
	mux.Handle("GET /static/", staticHandler())
	mux.HandleFunc("GET /api/v1/status", statusHandler(d))
	mux.HandleFunc("GET /api/v1/traffic", trafficHandler(d))
	mux.HandleFunc("GET /api/v1/decisions", decisionsHandler(d))
	mux.Handle("/api/v1/clients", clientsHandler(d.Inventory))
	mux.HandleFunc("GET /api/v1/clients/{client}", clientHandler(d))
	mux.HandleFunc("GET /feeds/{vendor}/{file}", feedHandler(d.policy, d.Now))
	mux.HandleFunc("GET /proxy.pac", pacHandler(d.Config, d.ProxyAddr))
	mux.HandleFunc("GET /wpad.dat", pacHandler(d.Config, d.ProxyAddr))
	return secure(mux)
}

// NewServer returns the admin listener's server, serving New(d).
func NewServer(d Deps) *http.Server {
	return &http.Server{Handler: New(d), ReadHeaderTimeout: readHeaderTimeout}
}
