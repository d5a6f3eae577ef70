// Command feedgate-bench compares feedgate with direct traffic, Squid,
// tinyproxy and a forward proxy of Go's standard library in one run, on
// loopback, and feedgate's transparent listener with its explicit proxy
// port in network namespaces, and prints one table.
//
// It starts an origin (plain HTTP, TLS, a TLS byte source and a raw byte
// source) in a process of its own, builds and starts feedgate with
// -resolve, starts Squid and tinyproxy with their own configurations in a
// temporary directory when they are installed, starts the stdlib-go proxy
// (stdlibproxy.go) in a process of its own, and, as root, builds a
// client, a gateway and an origin namespace (see netns.go) with a second
// origin and a second feedgate in them. It measures, interleaving the
// contenders round by round and rotating their order (roundOrder), with
// its own load generator, which opens its
// connections to the namespace contenders from inside the client
// namespace:
//
//   - plain-HTTP keep-alive requests/s, p50/p99 latency, and the proxy's
//     and the machine's CPU time per request;
//   - the p50/p99 latency of the same requests at a fixed rate below every
//     proxy's saturation (fixedRate);
//   - new-connection requests/s (Connection: close);
//   - CONNECT tunnel throughput on a large download, MB/s: TLS
//     application data after a handshake through the tunnel, as clients
//     tunnel, and raw bytes after a ClientHello, the tunnel alone;
//   - the proxy's and the machine's CPU seconds per GiB of each download;
//   - resident memory (and goroutines) per idle CONNECT tunnel, with a TLS
//     handshake done through each.
//
// Usage (from the repository root; apt-get install -y squid tinyproxy first
// to include them; the namespace contenders need root, iproute2 and
// nftables, and are skipped with a note without them):
//
//	go run ./cmd/feedgate-bench [-rounds 3] [-duration 3s] [-json FILE] [-markdown docs/performance.md]
//
// -markdown rewrites the part of a Markdown file between the comments
// <!-- feedgate-bench:begin --> and <!-- feedgate-bench:end --> with the
// machine, the date, the command, the table and issue 17's goals.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

type options struct {
	rounds       int
	duration     time.Duration
	conns        int
	rate         float64
	newConns     int
	tunnels      int
	downloadMiB  int64
	squidWorkers int
	feedgate     string
	squid        string
	tinyproxy    string
	jsonOut      string
	without      string
	measure      string
	settle       time.Duration
	markdown     string
	// args are the command's arguments, for the report.
	args []string
}

func main() {
	serveChild()
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per measurement and contender; medians are reported")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "measured time of one HTTP round (after a warm-up of a fifth of it)")
	flag.IntVar(&o.conns, "conns", 64, "keep-alive connections")
	flag.Float64Var(&o.rate, "rate", 0, "requests/s in all of the fixed-rate measurement (default: "+strconv.Itoa(fixedRateShare)+" % of the lowest keep-alive req/s of a proxy in this run)")
	flag.IntVar(&o.newConns, "new-conns", 32, "concurrent workers opening a new connection per request")
	flag.IntVar(&o.tunnels, "tunnels", 2000, "idle CONNECT tunnels held open for the memory measurement")
	flag.DurationVar(&o.settle, "settle", 2*time.Second, "idle time of the tunnels (and of a restarted contender before them) before its memory is read")
	flag.Int64Var(&o.downloadMiB, "download", 1024, "MiB downloaded through one tunnel per throughput round")
	flag.IntVar(&o.squidWorkers, "squid-workers", runtime.NumCPU(), "Squid SMP workers")
	flag.StringVar(&o.feedgate, "feedgate", "", "feedgate binary (default: go build ./cmd/feedgate)")
	flag.StringVar(&o.squid, "squid", "squid", "Squid binary; skipped if not found")
	flag.StringVar(&o.tinyproxy, "tinyproxy", "tinyproxy", "tinyproxy binary; skipped if not found")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to `FILE` (- for stdout)")
	flag.StringVar(&o.without, "without", "", "comma-separated contenders to leave out (squid, stdlib-go, tinyproxy, evidence: feedgate-evidence, transparent: the namespace pair feedgate-ns and feedgate-transparent)")
	flag.StringVar(&o.measure, "measure", "keepalive,fixedrate,newconn,connect,tunnels", "comma-separated measurements to run: keepalive, fixedrate, newconn, connect-tls, connect-raw (connect: both), tunnels")
	flag.StringVar(&o.markdown, "markdown", "", "rewrite the part of the Markdown `FILE` between "+markdownBegin+" and "+markdownEnd+" with this run's machine, command, table and goals")
	flag.Parse()
	o.args = os.Args[1:]
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "feedgate-bench:", err)
		os.Exit(1)
	}
}

// serveChild serves as the process that the bench re-executed itself as,
// if the environment says it is one, and exits; else it returns.
func serveChild() {
	for _, c := range []struct {
		env, name string
		serve     func(string) error // returns only on failure
	}{
		{originEnv, "origin", serveOrigin},
		{stdlibProxyEnv, "stdlib-go", serveStdlibProxy},
	} {
		if v := os.Getenv(c.env); v != "" {
			fmt.Fprintf(os.Stderr, "%s: %v\n", c.name, c.serve(v))
			os.Exit(1)
		}
	}
}

// results holds every round of every measurement, by metric and contender.
type results map[string]map[string][]float64

func (r results) add(metric, contender string, v float64) {
	if r[metric] == nil {
		r[metric] = map[string][]float64{}
	}
	r[metric][contender] = append(r[metric][contender], v)
}

func (r results) median(metric, contender string) float64 {
	return median(r[metric][contender])
}

func median(vs []float64) float64 {
	vs = slices.Clone(vs)
	if len(vs) == 0 {
		return nan()
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

func nan() float64 { return math.NaN() }

// metrics, in table order.
var metricRows = []struct {
	key, label   string
	higherBetter bool
}{
	{"keepalive_rps", "keep-alive req/s", true},
	{"keepalive_p50_ms", "keep-alive p50 ms", false},
	{"keepalive_p99_ms", "keep-alive p99 ms", false},
	{"keepalive_cpu_us", "proxy CPU µs per keep-alive request", false},
	{"keepalive_machine_cpu_us", "machine CPU µs per keep-alive request", false},
	{"fixedrate_rps", "fixed-rate req/s", true},
	{"fixedrate_p50_ms", "fixed-rate p50 ms", false},
	{"fixedrate_p99_ms", "fixed-rate p99 ms", false},
	{"newconn_rps", "new connections req/s", true},
	{"connect_tls_mbps", "CONNECT TLS download MB/s", true},
	{"connect_tls_cpu_s_per_gib", "proxy CPU s per GiB, TLS download", false},
	{"connect_tls_machine_cpu_s_per_gib", "machine CPU s per GiB, TLS download", false},
	{"connect_raw_mbps", "CONNECT raw download MB/s", true},
	{"connect_raw_cpu_s_per_gib", "proxy CPU s per GiB, raw download", false},
	{"connect_raw_machine_cpu_s_per_gib", "machine CPU s per GiB, raw download", false},
	{"tunnel_rss_kib", "RSS per idle tunnel KiB", false},
	{"tunnel_goroutines", "goroutines per idle tunnel", false},
}

// bulkMeasures are the two downloads through a tunnel: TLS application
// data end to end, as clients tunnel it, and raw bytes after a
// ClientHello, the tunnel alone. The -measure name connect runs both.
var bulkMeasures = []struct {
	measure, metric, label string
	download               func(*contender, originPorts, int64) (download, error)
}{
	{"connect-tls", "connect_tls", "CONNECT TLS", tlsThroughput},
	{"connect-raw", "connect_raw", "CONNECT raw", rawThroughput},
}

// measures are the names -measure takes.
var measures = []string{"keepalive", "fixedrate", "newconn", "connect", "connect-tls", "connect-raw", "tunnels"}

// fixedRateShare is the default rate of the fixed-rate measurement, in per
// cent of the lowest keep-alive throughput of a proxy in the same run:
// below every contender's saturation, so that its latency is its own
// service and queueing, not the queue of a saturated machine.
const fixedRateShare = 60

func run(o options, out io.Writer) error {
	for _, m := range strings.Split(o.measure, ",") {
		if !slices.Contains(measures, m) {
			return fmt.Errorf("-measure: unknown measurement %q (want some of %s)", m, strings.Join(measures, ", "))
		}
	}
	if ms := strings.Split(o.measure, ","); slices.Contains(ms, "fixedrate") && !slices.Contains(ms, "keepalive") && o.rate <= 0 {
		return errors.New("-measure fixedrate: give -rate, or measure keepalive too, whose lowest proxy throughput sets the rate")
	}
	if o.markdown != "" {
		if err := checkMarkdown(o.markdown); err != nil {
			return err
		}
	}
	loadStart := loadAverage()
	// 2,000 tunnels need more descriptors than the usual soft limit.
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	// Everything started is stopped on return, and on SIGINT or SIGTERM,
	// which would otherwise leave the namespaces behind.
	var cl cleanups
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "feedgate-bench: %v: stopping\n", s)
			cl.run()
			os.Exit(1)
		case <-finished:
		}
	}()
	defer cl.run() // before the signals are let go

	dir, err := os.MkdirTemp("", "feedgate-bench")
	if err != nil {
		return err
	}
	// Squid and tinyproxy drop privileges and must reach their directories.
	os.Chmod(dir, 0o755)
	if os.Getenv("FEEDGATE_BENCH_KEEP") == "" {
		cl.add(func() { os.RemoveAll(dir) })
	} else {
		fmt.Fprintln(os.Stderr, "keeping", dir)
	}
	originCmd, ports, err := startOrigin("", "127.0.0.1")
	if err != nil {
		return err
	}
	cl.add(func() { originCmd.Process.Kill(); originCmd.Wait() })

	bin := o.feedgate
	if bin == "" {
		if bin, err = buildFeedgate(dir); err != nil {
			return err
		}
	}
	contenders := []*contender{{name: "direct", host: "127.0.0.1", origin: "127.0.0.1"}}
	// start starts a contender on loopback, which is stopped on return
	// and can be restarted.
	start := func(start func() (*contender, error)) error {
		c, err := start()
		if err != nil {
			return err
		}
		restartable(c, start)
		cl.add(func() { c.stop() })
		contenders = append(contenders, c)
		return nil
	}
	if err := start(func() (*contender, error) { return startLoopbackFeedgate(dir, bin, ports) }); err != nil {
		return err
	}
	without := strings.Split(o.without, ",")
	if !slices.Contains(without, "evidence") {
		if err := start(func() (*contender, error) { return startEvidenceFeedgate(dir, bin, ports) }); err != nil {
			return err
		}
	}
	if bin, err := exec.LookPath(o.squid); err == nil && !slices.Contains(without, "squid") {
		if err := start(func() (*contender, error) { return startSquid(dir, bin, ports, o.squidWorkers) }); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(os.Stderr, "squid: not installed (apt-get install -y squid) or left out; skipped")
	}
	if !slices.Contains(without, "stdlib-go") {
		if err := start(startStdlibProxy); err != nil {
			return err
		}
	}
	if bin, err := exec.LookPath(o.tinyproxy); err == nil && !slices.Contains(without, "tinyproxy") {
		if err := start(func() (*contender, error) { return startTinyproxy(dir, bin) }); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(os.Stderr, "tinyproxy: not installed (apt-get install -y tinyproxy) or left out; skipped")
	}
	for _, c := range contenders {
		c.ports = ports
		c.originPid = originCmd.Process.Pid
	}
	var notes []string
	if !slices.Contains(without, "transparent") {
		ns, err := startNamespaced(dir, bin, &cl)
		var skip errNoNamespaces
		switch {
		case errors.As(err, &skip):
			notes = append(notes, "feedgate-ns and feedgate-transparent skipped: "+skip.Error())
			fmt.Fprintln(os.Stderr, notes[len(notes)-1])
		case err != nil:
			return err
		default:
			contenders = append(contenders, ns...)
			notes = append(notes, fmt.Sprintf("feedgate-ns, feedgate-transparent: one feedgate in a gateway namespace, client %s -> %s gateway %s -> origin %s, veth MTU %d, txqueuelen %d; "+
				"feedgate-ns is reached explicitly at %s:%d, feedgate-transparent by an nftables redirect to :%d",
				nsClientAddr, nsGatewayClientSide, nsGatewayOriginSide, nsOriginAddr, vethMTU, vethTxQueueLen, nsGatewayClientSide, nsProxyPort, nsTransparentPort))
		}
	} else {
		fmt.Fprintln(os.Stderr, "feedgate-ns, feedgate-transparent: left out")
	}

	res := results{}
	want := func(m string) bool { return slices.Contains(strings.Split(o.measure, ","), m) }
	progress := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	for round := 1; round <= o.rounds && want("keepalive"); round++ {
		for _, c := range roundOrder(contenders, round) {
			var cpu0 float64
			if !c.direct() {
				cpu0 = cpuSeconds(c.pids())
			}
			busy0 := machineBusySeconds()
			r := keepAlive(c, c.ports.HTTP, o.conns, o.duration)
			progress("round %d %-20s keep-alive %8.0f req/s p50 %v p99 %v errors %d", round, c.name, r.rps, r.p50, r.p99, r.errors)
			res.add("keepalive_rps", c.name, r.rps)
			res.add("keepalive_p50_ms", c.name, float64(r.p50)/1e6)
			res.add("keepalive_p99_ms", c.name, float64(r.p99)/1e6)
			if r.all > 0 {
				res.add("keepalive_machine_cpu_us", c.name, (machineBusySeconds()-busy0)/float64(r.all)*1e6)
				if !c.direct() {
					res.add("keepalive_cpu_us", c.name, (cpuSeconds(c.pids())-cpu0)/float64(r.all)*1e6)
				}
			}
		}
	}
	if want("fixedrate") {
		rate, note, err := fixedRateFor(o, res, contenders)
		if err != nil {
			return err
		}
		notes = append(notes, note)
		for round := 1; round <= o.rounds; round++ {
			for _, c := range roundOrder(contenders, round) {
				r := fixedRate(c, c.ports.HTTP, o.conns, rate, o.duration)
				progress("round %d %-20s fixed rate %8.0f req/s p50 %v p99 %v errors %d", round, c.name, r.rps, r.p50, r.p99, r.errors)
				res.add("fixedrate_rps", c.name, r.rps)
				res.add("fixedrate_p50_ms", c.name, float64(r.p50)/1e6)
				res.add("fixedrate_p99_ms", c.name, float64(r.p99)/1e6)
			}
		}
	}
	for round := 1; round <= o.rounds && want("newconn"); round++ {
		for _, c := range roundOrder(contenders, round) {
			r := newConnections(c, c.ports.HTTP, o.newConns, o.duration)
			progress("round %d %-20s new connections %8.0f req/s errors %d", round, c.name, r.rps, r.errors)
			res.add("newconn_rps", c.name, r.rps)
		}
	}
	size := o.downloadMiB << 20
	gib := float64(size) / (1 << 30)
	ciphers := map[string]bool{}
	for _, b := range bulkMeasures {
		for round := 1; round <= o.rounds && (want(b.measure) || want("connect")); round++ {
			for _, c := range roundOrder(contenders, round) {
				var cpu0 float64
				if !c.direct() {
					cpu0 = cpuSeconds(c.pids())
				}
				busy0 := machineBusySeconds()
				d, err := b.download(c, c.ports, size)
				if err != nil {
					return fmt.Errorf("%s %s download: %w", c.name, b.label, err)
				}
				res.add(b.metric+"_machine_cpu_s_per_gib", c.name, (machineBusySeconds()-busy0)/gib)
				res.add(b.metric+"_mbps", c.name, d.mbps)
				if !c.direct() {
					res.add(b.metric+"_cpu_s_per_gib", c.name, (cpuSeconds(c.pids())-cpu0)/gib)
				}
				if d.cipher != "" {
					ciphers[d.cipher] = true
				}
				progress("round %d %-20s %s %7.0f MB/s", round, c.name, b.label, d.mbps)
			}
		}
	}
	if len(ciphers) > 0 {
		notes = append(notes, "TLS download: "+strings.Join(slices.Sorted(maps.Keys(ciphers)), ", ")+
			", crypto/tls's default choice on both ends (client in the bench, server in the origin); the proxies relay it unread")
	}
	for round := 1; round <= o.rounds && o.tunnels > 0 && want("tunnels"); round++ {
		for _, c := range roundOrder(contenders, round) {
			if c.direct() {
				continue
			}
			if err := c.restart(); err != nil {
				return fmt.Errorf("%s: restarting for the idle tunnels: %w", c.name, err)
			}
			r, err := idleTunnels(c, c.ports, o.tunnels, o.settle)
			if err != nil {
				return fmt.Errorf("%s idle tunnels: %w", c.name, err)
			}
			res.add("tunnel_rss_kib", c.name, r.bytesPerTunnel/1024)
			if !math.IsNaN(r.goroutinesPerTunnel) {
				res.add("tunnel_goroutines", c.name, r.goroutinesPerTunnel)
			}
			progress("round %d %-20s %d idle tunnels: %.1f KiB each (%+.1f KiB each in the client, this process; %+.1f in the origin)",
				round, c.name, o.tunnels, r.bytesPerTunnel/1024, r.clientBytesPerTunnel/1024, r.originBytesPerTunnel/1024)
			// Let closed tunnels drain before the next contender.
			time.Sleep(time.Second)
		}
	}
	if want("tunnels") && o.tunnels > 0 {
		notes = append(notes, fmt.Sprintf("idle tunnels: each round restarts the contender, opens %d tunnels with a TLS handshake through each, leaves them idle for %s and reads the resident memory of the contender's process tree (VmRSS), before and after; the client's memory is in the bench's process, not counted",
			o.tunnels, o.settle))
	}

	names := make([]string, len(contenders))
	for i, c := range contenders {
		names[i] = c.name
	}
	printTable(out, res, names, o, notes)
	verdicts := judgeGoals(res, names)
	printGoals(out, verdicts)
	if o.jsonOut != "" {
		if err := writeJSON(o.jsonOut, res, names, o, notes, verdicts); err != nil {
			return err
		}
	}
	if o.markdown != "" {
		ri := machineInfo(o, slices.Contains(names, "squid"))
		ri.loadStart, ri.loadAfter = loadStart, loadAverage()
		if err := writeMarkdown(o.markdown, markdownSection(ri, o, res, names, notes, verdicts)); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "feedgate-bench: wrote the results into %s\n", o.markdown)
	}
	return nil
}

func ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return nan()
	}
	return a / b
}

// ratioColumn is a column of the table: num's median over den's.
type ratioColumn struct{ num, den string }

func (r ratioColumn) label() string { return r.num + "/" + r.den }

// ratioColumns are the ratios worth a column for these contenders.
func ratioColumns(names []string) []ratioColumn {
	cols := []ratioColumn{{"feedgate", "direct"}, {"feedgate", "squid"}}
	if slices.Contains(names, "stdlib-go") {
		cols = append(cols, ratioColumn{"feedgate", "stdlib-go"})
	}
	if slices.Contains(names, "feedgate-evidence") {
		cols = append(cols, ratioColumn{"feedgate-evidence", "feedgate"})
	}
	if slices.Contains(names, "feedgate-ns") && slices.Contains(names, "feedgate-transparent") {
		cols = append(cols, ratioColumn{"feedgate-transparent", "feedgate-ns"})
	}
	return cols
}

func printTable(w io.Writer, res results, names []string, o options, notes []string) {
	fmt.Fprintf(w, "feedgate-bench: %d rounds; %s per HTTP round, %d keep-alive conns, %d new-connection workers, %d MiB per download, %d idle tunnels; %d CPUs, %s\n",
		o.rounds, o.duration, o.conns, o.newConns, o.downloadMiB, o.tunnels, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(w, "%s\n\n", spreadLegend)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, row := range tableCells(res, names) {
		fmt.Fprintf(tw, "%s\t\n", strings.Join(row, "\t"))
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintln(w)
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	if t := transparentSummary(res, names); t != "" {
		fmt.Fprintln(w, t)
	}
}

// spreadLegend says what a cell of the table is.
const spreadLegend = "Each cell: the median of the rounds ± half their range (max − min); ratio columns: the ratio of the medians ± half the range of the round-by-round ratios."

// tableCells is the table: a header row, then one row per metric measured,
// with a cell per contender and per ratio column.
func tableCells(res results, names []string) [][]string {
	cols := ratioColumns(names)
	header := append([]string{"metric"}, names...)
	for _, c := range cols {
		header = append(header, c.label())
	}
	rows := [][]string{header}
	for _, m := range metricRows {
		if len(res[m.key]) == 0 {
			continue
		}
		row := []string{m.label}
		for _, n := range names {
			row = append(row, formatSpread(res[m.key][n]))
		}
		for _, c := range cols {
			row = append(row, formatRatioSpread(ratio(res.median(m.key, c.num), res.median(m.key, c.den)),
				pairedRatios(res[m.key][c.num], res[m.key][c.den])))
		}
		rows = append(rows, row)
	}
	return rows
}

// halfRange is half of max − min: the ± of the table's cells.
func halfRange(vs []float64) float64 {
	if len(vs) == 0 {
		return nan()
	}
	return (slices.Max(vs) - slices.Min(vs)) / 2
}

// formatSpread formats the median of vs and, for more than one round,
// half their range, to the median's precision.
func formatSpread(vs []float64) string {
	m := median(vs)
	if math.IsNaN(m) || len(vs) < 2 {
		return format(m)
	}
	return fmt.Sprintf("%s ±%.*f", format(m), decimals(m), halfRange(vs))
}

// formatRatioSpread formats a ratio of medians and, for more than one
// pair of rounds, half the range of the rounds' ratios.
func formatRatioSpread(r float64, rounds []float64) string {
	if math.IsNaN(r) || len(rounds) < 2 {
		return formatRatio(r)
	}
	return fmt.Sprintf("%s ±%.2f", formatRatio(r), halfRange(rounds))
}

// transparentSummary compares the transparent contender with the explicit
// one in the same namespaces, against the 5 % target; "" when they did not
// run. The verdict goes by the ratios of the rounds, pair by pair, which the
// load that other processes put on the machine moves less than the ratio
// of the medians (the table's): the two ran next to each other.
func transparentSummary(res results, names []string) string {
	if !slices.Contains(ratioColumns(names), ratioColumn{"feedgate-transparent", "feedgate-ns"}) {
		return ""
	}
	var parts []string
	for _, m := range []struct{ key, label string }{{"keepalive_rps", "keep-alive req/s"}, {"connect_tls_mbps", "TLS bulk (CONNECT-equivalent) MB/s"}, {"connect_raw_mbps", "raw bulk (CONNECT-equivalent) MB/s"}} {
		pr := pairedRatios(res[m.key]["feedgate-transparent"], res[m.key]["feedgate-ns"])
		if len(pr) == 0 {
			continue
		}
		r := median(pr)
		verdict := "within 5 %"
		switch {
		case r < 0.95:
			verdict = "more than 5 % behind"
		case r > 1.05:
			verdict = "more than 5 % ahead"
		}
		part := fmt.Sprintf("%s %s", m.label, formatRatio(r))
		if len(pr) > 1 {
			part += fmt.Sprintf(" round by round (from %s to %s; %s of the medians)", formatRatio(slices.Min(pr)), formatRatio(slices.Max(pr)),
				formatRatio(ratio(res.median(m.key, "feedgate-transparent"), res.median(m.key, "feedgate-ns"))))
		}
		parts = append(parts, part+": "+verdict)
	}
	if len(parts) == 0 {
		return ""
	}
	return "feedgate-transparent/feedgate-ns: " + strings.Join(parts, "; ")
}

// pairedRatios divides a's rounds by b's, round by round, as far as both
// go.
func pairedRatios(a, b []float64) []float64 {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if r := ratio(a[i], b[i]); !math.IsNaN(r) {
			rs = append(rs, r)
		}
	}
	return rs
}

// roundOrder is the order of the contenders in a round. They are rotated
// by one place per round, so that over as many rounds as there are
// contenders each runs once in every place: a contender that runs right
// after another's heavy load, on this shared machine, can run up to a
// fifth slower. The two namespace contenders, which share one feedgate,
// move as one and swap places every other round.
func roundOrder(cs []*contender, round int) []*contender {
	var units [][]*contender
	pair := -1 // the unit of the namespace pair
	for _, c := range cs {
		if c.name == "feedgate-ns" || c.name == "feedgate-transparent" {
			if pair >= 0 {
				units[pair] = append(units[pair], c)
				continue
			}
			pair = len(units)
		}
		units = append(units, []*contender{c})
	}
	if len(units) == 0 {
		return nil
	}
	k := (round - 1) % len(units)
	out := make([]*contender, 0, len(cs))
	for _, u := range slices.Concat(units[k:], units[:k]) {
		if len(u) == 2 && round%2 == 0 {
			u = []*contender{u[1], u[0]}
		}
		out = append(out, u...)
	}
	return out
}

func format(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.*f", decimals(v), v)
}

// decimals is how many decimals a figure of v's size is given: three
// significant digits, and every digit of the integer part.
func decimals(v float64) int {
	switch {
	case math.Abs(v) >= 100:
		return 0
	case math.Abs(v) >= 10:
		return 1
	}
	return 2
}

func formatRatio(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v)
}

func writeJSON(path string, res results, names []string, o options, notes []string, verdicts []verdict) error {
	type row struct {
		Metric    string               `json:"metric"`
		Label     string               `json:"label"`
		Median    map[string]*float64  `json:"median"`
		HalfRange map[string]*float64  `json:"half_range"`
		Rounds    map[string][]float64 `json:"rounds"`
		Ratios    map[string]*float64  `json:"ratios"`
		// RatioRounds are the round-by-round ratios, pair by pair.
		RatioRounds map[string][]float64 `json:"ratio_rounds"`
	}
	ptr := func(v float64) *float64 {
		if math.IsNaN(v) {
			return nil
		}
		return &v
	}
	doc := struct {
		Time       string     `json:"time"`
		GoVersion  string     `json:"go_version"`
		CPUs       int        `json:"cpus"`
		Rounds     int        `json:"rounds"`
		Contenders []string   `json:"contenders"`
		Notes      []string   `json:"notes,omitempty"`
		Metrics    []row      `json:"metrics"`
		Goals      []goalJSON `json:"goals"`
	}{time.Now().UTC().Format(time.RFC3339), runtime.Version(), runtime.NumCPU(), o.rounds, names, notes, nil, nil}
	for _, v := range verdicts {
		doc.Goals = append(doc.Goals, goalJSON{Goal: v.goal.label, Metric: v.goal.metric, Target: v.goal.want(),
			Figure: ptr(v.figure), Evidence: v.evidence, Status: v.status})
	}
	for _, m := range metricRows {
		if len(res[m.key]) == 0 {
			continue
		}
		r := row{Metric: m.key, Label: m.label, Median: map[string]*float64{}, HalfRange: map[string]*float64{}, Rounds: res[m.key],
			Ratios: map[string]*float64{}, RatioRounds: map[string][]float64{}}
		for _, n := range names {
			r.Median[n] = ptr(res.median(m.key, n))
			r.HalfRange[n] = ptr(halfRange(res[m.key][n]))
		}
		for _, c := range ratioColumns(names) {
			r.Ratios[c.label()] = ptr(ratio(res.median(m.key, c.num), res.median(m.key, c.den)))
			if pr := pairedRatios(res[m.key][c.num], res[m.key][c.den]); len(pr) > 0 {
				r.RatioRounds[c.label()] = pr
			}
		}
		doc.Metrics = append(doc.Metrics, r)
	}
	var w io.Writer = os.Stdout
	if path != "-" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// goalJSON is a verdict in the JSON output.
type goalJSON struct {
	Goal     string   `json:"goal"`
	Metric   string   `json:"metric"`
	Target   string   `json:"target"`
	Figure   *float64 `json:"figure"`
	Evidence string   `json:"evidence,omitempty"`
	Status   string   `json:"status"`
}

// cleanups stops what a run started, last started first, once: when the run
// returns, or on a signal, whichever comes first.
type cleanups struct {
	mu  sync.Mutex
	fns []func()
}

func (c *cleanups) add(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, f)
}

// run holds the lock throughout, so that a signal during the cleanup on
// return waits for it to finish rather than exit halfway.
func (c *cleanups) run() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

// fixedRateFor returns the rate of the fixed-rate measurement, -rate or
// fixedRateShare of the lowest median keep-alive throughput of a proxy
// in res, and the table's note that says which.
func fixedRateFor(o options, res results, contenders []*contender) (float64, string, error) {
	const how = "latency counted from each request's due time, so that a stall counts for the requests queued behind it; " +
		"the requests are released by one pacer thread that sleeps with nanosleep, since time.Sleep wakes up to a millisecond late and that would count as latency; " +
		"the keep-alive p99 above is measured at saturation, where it is the queue of a machine that client, origin and proxy share"
	if o.rate > 0 {
		return o.rate, fmt.Sprintf("fixed rate: %.0f req/s in all over %d keep-alive connections (-rate); %s", o.rate, o.conns, how), nil
	}
	lowest, by := math.Inf(1), ""
	for _, c := range contenders {
		if c.direct() {
			continue
		}
		if m := res.median("keepalive_rps", c.name); m < lowest {
			lowest, by = m, c.name
		}
	}
	if by == "" || lowest <= 0 || math.IsNaN(lowest) {
		return 0, "", errors.New("fixed rate: no proxy's keep-alive throughput to set the rate from; give -rate")
	}
	rate := math.Round(lowest * fixedRateShare / 100)
	return rate, fmt.Sprintf("fixed rate: %.0f req/s in all over %d keep-alive connections, %d %% of %s's keep-alive throughput (%.0f req/s, the lowest of the proxies); %s",
		rate, o.conns, fixedRateShare, by, lowest, how), nil
}
