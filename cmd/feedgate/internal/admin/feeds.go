package admin

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
	"github.com/feedgate/feedgate/rules/feeds"
)

// feedHandler serves GET /feeds/{vendor}/{action}.txt: the host patterns
// whose action in force now is {action}, as a firewall's external dynamic
// list. It reads the running policy and the policy clock on every request,
// so a firewall that polls it follows cut-offs and reloads.
func feedHandler(policy func() *rules.Policy, now func() time.Time) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutSuffix(r.PathValue("file"), ".txt")
		action, okA := rules.ParseAction(name)
		if !ok || !okA {
			http.Error(w, "want /feeds/{vendor}/{allow|log|block}.txt", http.StatusNotFound)
			return
		}
		var b bytes.Buffer
		if err := feeds.Write(&b, feeds.EDL, policy(), r.PathValue("vendor"), action, now()); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", feeds.ContentType(feeds.EDL))
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(b.Bytes())
	}
}

// pacHandler serves the proxy auto-config file (/proxy.pac, /wpad.dat).
func pacHandler(current func() *config.Config, listen net.Addr) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := current()
		addr, err := pacProxy(c.PAC, listen)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", feeds.PACContentType)
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(feeds.PAC(c.Policy, addr, c.PAC.All))
	}
}

// pacProxy is the proxy address the PAC file gives clients: pac_proxy, or
// the proxy listener's own address when that is a specific one.
func pacProxy(pac config.PAC, listen net.Addr) (string, error) {
	if pac.Proxy != "" {
		return pac.Proxy, nil
	}
	var ap netip.AddrPort
	if ta, ok := listen.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	}
	if ap.IsValid() && !ap.Addr().IsUnspecified() {
		return ap.String(), nil
	}
	return "", fmt.Errorf("feedgate listens on %s, which clients cannot use as an address: set pac_proxy = \"host:port\" in the policy", listen)
}
