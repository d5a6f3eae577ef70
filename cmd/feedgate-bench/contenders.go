package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/feedgate/feedgate/proxy/evidence"
)

// benchHost is the origin's name in proxied requests; each proxy is told
// it is 127.0.0.1 (feedgate with -resolve, Squid with a hosts file), so no
// name is ever looked up in DNS.
const benchHost = "origin.bench.test"

// contender is one way of reaching the origin.
type contender struct {
	name string
	// proxy is the host:port of an explicit proxy: requests are in
	// absolute form and tunnels are CONNECTs. "" for direct and
	// transparent contenders, which connect to origin.
	proxy string
	// origin is the origin's address for contenders without a proxy.
	origin string
	// host is the origin's name in request URLs and Host headers.
	host string
	// ports are the ports of the origin this contender reaches.
	ports originPorts
	// dial connects to a host:port; nil for net.Dial on the host.
	dial func(addr string) (net.Conn, error)
	// pids lists the processes whose memory and CPU are the contender's;
	// nil for direct traffic.
	pids func() []int
	// goroutines reads the Go runtime's goroutine count, if the contender
	// exports one.
	goroutines func() (float64, error)
	stop       func()
	// restart stops the contender's processes and starts new ones; nil
	// for direct traffic. Each round of idle tunnels starts from a new
	// process: one that earlier loads (or rounds) have left with freed
	// but resident memory hands it to the tunnels, and its RSS hardly
	// grows.
	restart func() error
	// originPid is the origin process this contender reaches, whose
	// memory is reported beside the contender's.
	originPid int
}

// restartable gives c a restart that stops its processes and starts new
// ones with start, taking over their address, processes and stop.
func restartable(c *contender, start func() (*contender, error)) {
	c.restart = func() error {
		c.stop()
		n, err := start()
		if err != nil {
			c.stop = func() {}
			return err
		}
		c.proxy, c.pids, c.goroutines, c.stop = n.proxy, n.pids, n.goroutines, n.stop
		return nil
	}
}

// direct reports whether no proxy stands between client and origin.
func (c *contender) direct() bool { return c.pids == nil }

// explicit reports whether the client speaks to a proxy it was configured
// with, rather than to the origin.
func (c *contender) explicit() bool { return c.proxy != "" }

// buildFeedgate builds ./cmd/feedgate into dir.
func buildFeedgate(dir string) (string, error) {
	bin := filepath.Join(dir, "feedgate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/feedgate")
	build.Dir = moduleRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/feedgate: %v\n%s", err, out)
	}
	return bin, nil
}

// feedgateProcess is a running feedgate and the listeners it reported.
type feedgateProcess struct {
	pid          int
	proxy, admin string
	stop         func()
}

// startFeedgate starts feedgate with the bench policy, extraConf's
// top-level keys before it, tables after it, and args, inside the
// network namespace netns unless it is "". Its configuration and decision
// log are in dir, named after name.
func startFeedgate(dir, bin, name, netns, extraConf, tables string, args []string) (*feedgateProcess, error) {
	logFile, err := os.Create(filepath.Join(dir, name+"-decisions.log"))
	if err != nil {
		return nil, err
	}
	// The built-in policy with the origin's random ports allowed: feedgate
	// tunnels only to 443 and plain HTTP only to 80 and 8080 by default.
	policy, err := os.ReadFile(filepath.Join(moduleRoot(), "configs", "feedgate.toml"))
	if err != nil {
		return nil, err
	}
	conf := extraConf + "connect_ports = [\"1-65535\"]\nhttp_ports = [\"1-65535\"]\n" +
		strings.Replace(string(policy), `catalogs = ["catalog/`, `catalogs = ["builtin:catalog/`, 1) + tables
	confFile := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	args = append([]string{"-config", confFile}, args...)
	cmd := exec.Command(bin, args...)
	if netns != "" {
		// ip netns exec execs feedgate itself: its pid is feedgate's.
		cmd = exec.Command("ip", append([]string{"netns", "exec", netns, bin}, args...)...)
	}
	cmd.Stdout = logFile
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var started struct{ Msg, Proxy, Admin string }
	sc := bufio.NewScanner(stderr)
	var lines []string
	for sc.Scan() {
		if json.Unmarshal(sc.Bytes(), &started) == nil && started.Msg == "feedgate started" {
			break
		}
		lines = append(lines, sc.Text())
	}
	if started.Proxy == "" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("%s did not report its listeners:\n%s", name, lastLines(strings.Join(lines, "\n"), 10))
	}
	go io.Copy(io.Discard, stderr)
	return &feedgateProcess{
		pid: cmd.Process.Pid, proxy: started.Proxy, admin: started.Admin,
		stop: func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			logFile.Close()
		},
	}, nil
}

// startLoopbackFeedgate starts feedgate on loopback with the origin's name
// pointed at loopback.
func startLoopbackFeedgate(dir, bin string, ports originPorts) (*contender, error) {
	return startLoopback(dir, bin, "feedgate", "", ports)
}

// startEvidenceFeedgate is startLoopbackFeedgate with the tamper-evident
// decision log on ([log] evidence_key), writing to a file with the
// default checkpoints.
func startEvidenceFeedgate(dir, bin string, ports originPorts) (*contender, error) {
	signer, _, err := evidence.GenerateKey("feedgate-bench")
	if err != nil {
		return nil, err
	}
	key := filepath.Join(dir, "evidence-signer.key")
	if err := os.WriteFile(key, []byte(signer+"\n"), 0o600); err != nil {
		return nil, err
	}
	tables := fmt.Sprintf("\n[log]\nfile = %q\nevidence_key = %q\ninstance = \"bench\"\n", filepath.Join(dir, "feedgate-evidence-sealed.log"), key)
	return startLoopback(dir, bin, "feedgate-evidence", tables, ports)
}

func startLoopback(dir, bin, name, tables string, ports originPorts) (*contender, error) {
	args := []string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-pprof"}
	for _, p := range ports.all() {
		args = append(args, "-resolve", fmt.Sprintf("%s:%d:127.0.0.1", benchHost, p))
	}
	fg, err := startFeedgate(dir, bin, name, "", "", tables, args)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "%s: proxy %s, admin %s (profiles at /debug/pprof/)\n", name, fg.proxy, fg.admin)
	return &contender{
		name: name, proxy: fg.proxy, host: benchHost,
		pids: func() []int { return processTree(fg.pid) },
		goroutines: func() (float64, error) {
			return scrapeGauge(http.DefaultClient, "http://"+fg.admin+"/metrics", "go_goroutines")
		},
		stop: fg.stop,
	}, nil
}

// startSquid runs Squid with its own configuration in dir: no cache, an
// access log, one worker per core, the origin's name in a hosts file and
// no DNS server but loopback.
func startSquid(dir, bin string, ports originPorts, workers int) (*contender, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	sdir := filepath.Join(dir, "squid")
	if err := os.MkdirAll(sdir, 0o777); err != nil {
		return nil, err
	}
	// Squid drops privileges to its own user, which must write here.
	os.Chmod(sdir, 0o777)
	if err := os.WriteFile(filepath.Join(sdir, "hosts"), []byte("127.0.0.1 "+benchHost+"\n"), 0o644); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`http_port 127.0.0.1:%d
workers %d
cache deny all
cache_mem 8 MB
access_log stdio:%[3]s/access.log squid
cache_log %[3]s/cache.log
pid_filename %[3]s/squid.pid
coredump_dir %[3]s
hosts_file %[3]s/hosts
dns_nameservers 127.0.0.1
http_access allow localhost
http_access deny all
max_filedescriptors 16384
pinger_enable off
shutdown_lifetime 1 seconds
visible_hostname feedgate-bench
`, port, workers, sdir)
	confFile := filepath.Join(sdir, "squid.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--foreground", "-f", confFile)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitListening(addr, 20*time.Second); err != nil {
		cmd.Process.Kill()
		log, _ := os.ReadFile(filepath.Join(sdir, "cache.log"))
		return nil, fmt.Errorf("squid: %w\n%s", err, lastLines(string(log), 10))
	}
	// SMP workers start after the master accepts; give them a moment.
	time.Sleep(2 * time.Second)
	master := cmd.Process.Pid
	return &contender{
		name: "squid", proxy: addr, host: benchHost,
		pids: func() []int { return processTree(master) },
		stop: func() {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				for _, p := range processTree(master) {
					syscall.Kill(p, syscall.SIGKILL)
				}
			}
		},
	}, nil
}

// startTinyproxy runs tinyproxy in the foreground with its own
// configuration. tinyproxy has no hosts file of its own, so its requests
// name the origin by IP address.
func startTinyproxy(dir, bin string) (*contender, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	tdir := filepath.Join(dir, "tinyproxy")
	if err := os.MkdirAll(tdir, 0o777); err != nil {
		return nil, err
	}
	os.Chmod(tdir, 0o777)
	conf := fmt.Sprintf(`Port %d
Listen 127.0.0.1
Timeout 600
MaxClients 8192
LogFile "%[2]s/tinyproxy.log"
LogLevel Connect
PidFile "%[2]s/tinyproxy.pid"
Allow 127.0.0.1
`, port, tdir)
	confFile := filepath.Join(tdir, "tinyproxy.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-d", "-c", confFile)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitListening(addr, 10*time.Second); err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("tinyproxy: %w", err)
	}
	return &contender{
		name: "tinyproxy", proxy: addr, host: "127.0.0.1",
		pids: func() []int { return processTree(cmd.Process.Pid) },
		stop: func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() },
	}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitListening(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %s", addr, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "."
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// processTree returns pid and all its descendants.
func processTree(pid int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(p); err == nil {
			parent[p] = st.ppid
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		for p, pp := range parent {
			if pp == out[i] {
				out = append(out, p)
			}
		}
	}
	return out
}

type procStat struct {
	ppid       int
	cpuSeconds float64
}

// readStat reads a process's parent and CPU time from /proc/PID/stat.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may contain spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	const ticks = 100 // USER_HZ on Linux
	return procStat{ppid: ppid, cpuSeconds: (utime + stime) / ticks}, nil
}

// rssBytes sums the resident memory of pids.
func rssBytes(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

func cpuSeconds(pids []int) float64 {
	var total float64
	for _, pid := range pids {
		if st, err := readStat(pid); err == nil {
			total += st.cpuSeconds
		}
	}
	return total
}

// scrapeGauge reads one unlabelled sample from a Prometheus text page.
func scrapeGauge(client *http.Client, url, name string) (float64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s not found at %s", name, url)
}

// machineBusySeconds reads the CPU time all processes and the kernel spent
// busy, summed over CPUs, from /proc/stat. Comparing it across contenders
// shows how much work a path costs the whole machine, kernel TCP
// processing included, which no per-process figure shows.
func machineBusySeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nan()
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy float64
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		busy += n
	}
	const ticks = 100 // USER_HZ
	return busy / ticks
}
