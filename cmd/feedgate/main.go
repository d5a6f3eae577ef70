// Command feedgate is an update-feed enforcement proxy: a forward HTTP(S)
// proxy that recognises a vendor's update, licensing, cloud and web
// endpoints and allows, logs or blocks each request by dated rules.
//
// Usage:
//
//	feedgate [run] [-config FILE] [-listen ADDR] [-admin ADDR] [-at TIME] [-resolve HOST:PORT:ADDR ...]
//	feedgate check [-config FILE] [-export LIST]
//	feedgate explain [-config FILE] [-at TIME] [-method M] [-json] TARGET ...
//	feedgate evidence keygen -dir DIR [-name NAME]
//	feedgate verify -key VERIFIER [-allow-tail] FILE...
//	feedgate report [-config FILE] [-from T] [-until T] [-format html|json|csv] [-o FILE] [-key VERIFIER] FILE...
//	feedgate export -format edl|hosts|dnsmasq|rpz|squid|pac [-config FILE] [...]
//	feedgate version
package main

import (
	"os"
	"runtime/debug"
)

func main() {
	// A proxy's live heap is small while it allocates per request, so the
	// default GOGC=100 collects every few megabytes. 400 trades a few more
	// megabytes of heap for a quarter of the collections. GOGC in the
	// environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
