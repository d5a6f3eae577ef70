package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
)

// The deployment files (configs/systemd, configs/kubernetes, configs/docker)
// are checked against the code they deploy: the binary's default ports and
// usage, its graceful-shutdown bound (shutdownGrace, which stop timeouts
// must leave room for), the real policy loader, and the tools that read
// them (systemd-analyze). Paths are relative to this package's directory,
// which is where go test runs it.

const (
	unitFile   = repoRoot + "/configs/systemd/feedgate.service"
	dockerfile = repoRoot + "/configs/docker/Dockerfile"
	k8sDir     = repoRoot + "/configs/kubernetes"
)

// defaultPorts reads the default -listen and -admin ports from the
// binary's usage text, so that the manifests follow the code.
func defaultPorts(t *testing.T) (proxyPort, adminPort int) {
	t.Helper()
	out, _ := runBinary(t, "", "run", "-h") // -h exits 2
	port := func(flag string) int {
		re := regexp.MustCompile(`(?m)^\s*-` + regexp.QuoteMeta(flag) + ` ADDR\n[^\n]*\(default "([^"]+)"\)`)
		m := re.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("feedgate run -h names no default for -%s:\n%s", flag, out)
		}
		host, p, err := net.SplitHostPort(m[1])
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("default -%s %q: want 127.0.0.1:PORT", flag, m[1])
		}
		n, _ := strconv.Atoi(p)
		return n
	}
	proxyPort, adminPort = port("listen"), port("admin")
	if proxyPort != 3128 || adminPort != 9128 {
		t.Fatalf("default ports are %d and %d; the deployment files and their comments say 3128 and 9128", proxyPort, adminPort)
	}
	return proxyPort, adminPort
}

// flagValue returns the value after flag in args.
func flagValue(args []string, flag string) (string, bool) {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return "", false
	}
	return args[i+1], true
}

func hostPort(t *testing.T, what, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		t.Fatalf("%s %q: want HOST:PORT", what, addr)
	}
	return host, n
}

// --- systemd ---

// unit is a parsed unit file: section -> key -> values, in order (a key may
// repeat, and an empty assignment resets it).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, text string) unit {
	t.Helper()
	u := unit{}
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: continuation lines are not expected", unitFile, i+1)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is not KEY=VALUE in a section", unitFile, i+1, line)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// last returns the effective value of a single-valued key.
func (u unit) last(section, key string) (string, bool) {
	vs, ok := u[section][key]
	if !ok {
		return "", false
	}
	return vs[len(vs)-1], true
}

func TestSystemdUnit(t *testing.T) {
	text, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(t, string(text))
	proxyPort, adminPort := defaultPorts(t)

	want := map[string]string{
		"Type":                    "simple",
		"DynamicUser":             "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"RestrictNamespaces":      "yes",
		"MemoryDenyWriteExecute":  "yes",
		"LockPersonality":         "yes",
		"SystemCallArchitectures": "native",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"StateDirectory":          "feedgate",
		"LogsDirectory":           "feedgate",
		"ConfigurationDirectory":  "feedgate",
		"UMask":                   "0077",
		"Restart":                 "on-failure",
		"KillSignal":              "SIGTERM",
	}
	for k, v := range want {
		if got, ok := u.last("Service", k); !ok || got != v {
			t.Errorf("[Service] %s = %q (set: %v); want %q", k, got, ok, v)
		}
	}
	if got, _ := u.last("Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("[Install] WantedBy = %q; want multi-user.target", got)
	}
	if got, _ := u.last("Service", "ExecReload"); !regexp.MustCompile(`^/\S*/kill -HUP \$MAINPID$`).MatchString(got) {
		t.Errorf("ExecReload = %q; want kill -HUP $MAINPID (SIGHUP reloads the policy)", got)
	}
	stop, _ := u.last("Service", "TimeoutStopSec")
	if n, err := strconv.Atoi(stop); err != nil || time.Duration(n)*time.Second <= shutdownGrace {
		t.Errorf("TimeoutStopSec = %q; want seconds beyond feedgate's %s graceful shutdown", stop, shutdownGrace)
	}
	// Each tunnel holds two descriptors, and [limits] max_connections is
	// 10000 by default.
	nofile, _ := u.last("Service", "LimitNOFILE")
	if n, err := strconv.Atoi(nofile); err != nil || n < 2*10000 {
		t.Errorf("LimitNOFILE = %q; want at least 20000", nofile)
	}
	if fs := u["Service"]["SystemCallFilter"]; len(fs) == 0 || fs[0] != "@system-service" {
		t.Errorf("SystemCallFilter = %q; want @system-service first", fs)
	}

	exec0, _ := u.last("Service", "ExecStart")
	args := strings.Fields(exec0)
	if len(args) < 2 || args[0] != "/usr/local/bin/feedgate" || args[1] != "run" {
		t.Fatalf("ExecStart = %q; want /usr/local/bin/feedgate run ...", exec0)
	}
	if c, _ := flagValue(args, "-config"); c != "/etc/feedgate/feedgate.toml" {
		t.Errorf("ExecStart -config %q; want /etc/feedgate/feedgate.toml (ConfigurationDirectory=feedgate)", c)
	}
	l, _ := flagValue(args, "-listen")
	if _, p := hostPort(t, "ExecStart -listen", l); p != proxyPort {
		t.Errorf("ExecStart -listen %s; want port %d", l, proxyPort)
	}
	a, _ := flagValue(args, "-admin")
	if h, p := hostPort(t, "ExecStart -admin", a); h != "127.0.0.1" || p != adminPort {
		t.Errorf("ExecStart -admin %s; want 127.0.0.1:%d (the admin listener has no authentication without a web config)", a, adminPort)
	}
	if !strings.Contains(string(text), "allowed_clients") {
		t.Error("the unit's comments do not say that the policy must set allowed_clients")
	}

	// systemd-analyze verify checks every directive and that ExecStart
	// exists: point it at a real feedgate.
	analyze := tool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	verified := filepath.Join(dir, "feedgate.service")
	rewritten := strings.ReplaceAll(string(text), "/usr/local/bin/feedgate", binary)
	if err := os.WriteFile(verified, []byte(rewritten), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", verified).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The sandbox as systemd scores it (0 best, 10 worst); 2.0 is well
	// inside its "OK" band. A change that loosens it shows up here.
	out, err = exec.Command(analyze, "security", "--offline=yes", "--threshold=20", verified).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: exposure above 2.0 or failure: %v\n%s", err, out)
	} else if m := regexp.MustCompile(`Overall exposure level for \S+: (\S+)`).FindSubmatch(out); m != nil {
		t.Logf("systemd-analyze security: exposure %s", m[1])
	}
}

// --- Kubernetes ---

// intOrString is a port that may be a number or a port name.
type intOrString string

func (s *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a scalar", n.Line)
	}
	*s = intOrString(n.Value)
	return nil
}

type meta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type object struct {
	file       string
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
	node       *yaml.Node
}

type selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type probe struct {
	HTTPGet *struct {
		Path string      `yaml:"path"`
		Port intOrString `yaml:"port"`
	} `yaml:"httpGet"`
}

type securityContext struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	Privileged               *bool  `yaml:"privileged"`
	Capabilities             struct {
		Add  []string `yaml:"add"`
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	SeccompProfile struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	ReadinessProbe  probe                                        `yaml:"readinessProbe"`
	LivenessProbe   probe                                        `yaml:"livenessProbe"`
	Resources       struct{ Requests, Limits map[string]string } `yaml:"resources"`
	SecurityContext securityContext                              `yaml:"securityContext"`
	VolumeMounts    []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

// port resolves a probe's or Service's target port to a container port.
func (c *container) port(p intOrString) int {
	if n, err := strconv.Atoi(string(p)); err == nil {
		return n
	}
	for _, cp := range c.Ports {
		if cp.Name == string(p) {
			return cp.ContainerPort
		}
	}
	return 0
}

type deployment struct {
	Spec struct {
		Replicas int      `yaml:"replicas"`
		Selector selector `yaml:"selector"`
		Template struct {
			Metadata meta `yaml:"metadata"`
			Spec     struct {
				TerminationGracePeriodSeconds int             `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               securityContext `yaml:"securityContext"`
				TopologySpreadConstraints     []struct {
					TopologyKey   string   `yaml:"topologyKey"`
					LabelSelector selector `yaml:"labelSelector"`
				} `yaml:"topologySpreadConstraints"`
				Affinity *struct {
					PodAntiAffinity any `yaml:"podAntiAffinity"`
				} `yaml:"affinity"`
				Containers []container `yaml:"containers"`
				Volumes    []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
					EmptyDir any `yaml:"emptyDir"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type service struct {
	Spec struct {
		Type            string            `yaml:"type"`
		SessionAffinity string            `yaml:"sessionAffinity"`
		Selector        map[string]string `yaml:"selector"`
		Ports           []struct {
			Name       string      `yaml:"name"`
			Port       int         `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	Spec struct {
		MinAvailable   *int     `yaml:"minAvailable"`
		MaxUnavailable *int     `yaml:"maxUnavailable"`
		Selector       selector `yaml:"selector"`
	} `yaml:"spec"`
}

type serviceMonitor struct {
	Spec struct {
		Selector  selector `yaml:"selector"`
		Endpoints []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

type kustomization struct {
	Resources []string `yaml:"resources"`
}

// readObjects parses every YAML document of every file in configs/kubernetes.
func readObjects(t *testing.T) (objs []*object, files []string) {
	t.Helper()
	entries, err := os.ReadDir(k8sDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || (path.Ext(name) != ".yaml" && path.Ext(name) != ".yml") {
			continue
		}
		files = append(files, name)
		f, err := os.Open(filepath.Join(k8sDir, name))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(f)
		for {
			var n yaml.Node
			err := dec.Decode(&n)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(n.Content) == 0 || n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" {
				continue // an empty document
			}
			o := &object{file: name, node: &n}
			if err := n.Decode(o); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if o.APIVersion == "" || o.Kind == "" {
				t.Fatalf("%s:%d: a document without apiVersion and kind", name, n.Line)
			}
			objs = append(objs, o)
		}
		f.Close()
	}
	return objs, files
}

func decodeAs[T any](t *testing.T, o *object) *T {
	t.Helper()
	v := new(T)
	if err := o.node.Decode(v); err != nil {
		t.Fatalf("%s: %s %s: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
	return v
}

// selects reports whether a label selector matches labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false // an empty selector here is a mistake, not "everything"
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func only[T any](t *testing.T, objs []*object, kind string) (*object, *T) {
	t.Helper()
	var found []*object
	for _, o := range objs {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s in %s, found %d", kind, k8sDir, len(found))
	}
	return found[0], decodeAs[T](t, found[0])
}

// writePolicy writes the ConfigMap's policy where the loader can read it.
func writePolicy(t *testing.T, text string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "feedgate.toml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestKubernetesManifests(t *testing.T) {
	objs, files := readObjects(t)
	proxyPort, adminPort := defaultPorts(t)
	for _, o := range objs {
		if o.Metadata.Namespace != "" {
			t.Errorf("%s: %s %s sets namespace %q; the manifests are namespace-agnostic", o.file, o.Kind, o.Metadata.Name, o.Metadata.Namespace)
		}
	}

	// The Deployment.
	_, d := only[deployment](t, objs, "Deployment")
	pod := &d.Spec.Template
	if d.Spec.Replicas < 2 {
		t.Errorf("Deployment replicas = %d; want at least 2", d.Spec.Replicas)
	}
	if !selects(d.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
		t.Errorf("Deployment selector %v does not select its pod labels %v", d.Spec.Selector.MatchLabels, pod.Metadata.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("Deployment has %d containers; want 1", len(pod.Spec.Containers))
	}
	c := &pod.Spec.Containers[0]
	var ports []int
	for _, p := range c.Ports {
		ports = append(ports, p.ContainerPort)
	}
	if !slices.Equal(ports, []int{proxyPort, adminPort}) {
		t.Errorf("container ports %v; want [%d %d] (proxy, admin)", ports, proxyPort, adminPort)
	}
	if c.port("proxy") != proxyPort || c.port("admin") != adminPort {
		t.Errorf("container port names: proxy is %d, admin is %d; want %d and %d", c.port("proxy"), c.port("admin"), proxyPort, adminPort)
	}
	if len(c.Args) == 0 || c.Args[0] != "run" {
		t.Errorf("container args %q; want run first", c.Args)
	}
	listen, _ := flagValue(c.Args, "-listen")
	if h, p := hostPort(t, "container -listen", listen); h != "0.0.0.0" || p != proxyPort {
		t.Errorf("container -listen %q; want 0.0.0.0:%d", listen, proxyPort)
	}
	admin, _ := flagValue(c.Args, "-admin")
	if h, p := hostPort(t, "container -admin", admin); h != "0.0.0.0" || p != adminPort {
		t.Errorf("container -admin %q; want 0.0.0.0:%d (probes and Prometheus reach the pod's address)", admin, adminPort)
	}
	if !slices.Contains(c.Args, "-admin.insecure") {
		t.Errorf("container args %q lack -admin.insecure, without which feedgate refuses -admin beyond loopback", c.Args)
	}
	for _, pr := range []struct {
		name string
		p    probe
		path string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if pr.p.HTTPGet == nil || pr.p.HTTPGet.Path != pr.path || c.port(pr.p.HTTPGet.Port) != adminPort {
			t.Errorf("%s %+v; want httpGet %s on the admin port", pr.name, pr.p.HTTPGet, pr.path)
		}
	}
	ann := pod.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(adminPort) || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations %v; want prometheus.io/scrape \"true\", port %q, path /metrics", ann, strconv.Itoa(adminPort))
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; time.Duration(g)*time.Second <= shutdownGrace {
		t.Errorf("terminationGracePeriodSeconds = %d; want beyond feedgate's %s graceful shutdown", g, shutdownGrace)
	}
	spread := pod.Spec.Affinity != nil && pod.Spec.Affinity.PodAntiAffinity != nil
	for _, tsc := range pod.Spec.TopologySpreadConstraints {
		if tsc.TopologyKey == "kubernetes.io/hostname" && selects(tsc.LabelSelector.MatchLabels, pod.Metadata.Labels) {
			spread = true
		}
	}
	if !spread {
		t.Error("the Deployment does not spread its pods across nodes (topologySpreadConstraints on kubernetes.io/hostname or podAntiAffinity)")
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("resources %+v; want cpu and memory requests and a memory limit", c.Resources)
	}

	// Security: both levels may say it, the container's wins.
	psc, csc := pod.Spec.SecurityContext, c.SecurityContext
	pick := func(cv, pv *bool) *bool {
		if cv != nil {
			return cv
		}
		return pv
	}
	if v := pick(csc.RunAsNonRoot, psc.RunAsNonRoot); v == nil || !*v {
		t.Error("runAsNonRoot is not true")
	}
	if v := csc.ReadOnlyRootFilesystem; v == nil || !*v {
		t.Error("the container's readOnlyRootFilesystem is not true")
	}
	if v := csc.AllowPrivilegeEscalation; v == nil || *v {
		t.Error("the container's allowPrivilegeEscalation is not false")
	}
	if v := csc.Privileged; v != nil && *v {
		t.Error("the container is privileged")
	}
	if !slices.Equal(csc.Capabilities.Drop, []string{"ALL"}) || len(csc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v; want drop [ALL] and nothing added", csc.Capabilities)
	}
	seccomp := csc.SeccompProfile.Type
	if seccomp == "" {
		seccomp = psc.SeccompProfile.Type
	}
	if seccomp != "RuntimeDefault" {
		t.Errorf("seccompProfile type %q; want RuntimeDefault", seccomp)
	}

	// Volumes: the policy from the ConfigMap, and a writable emptyDir for
	// the inventory state file (the root filesystem is read-only).
	mounts := map[string]string{} // mount path -> volume name
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
		if m.SubPath != "" {
			t.Errorf("volume %s is mounted with subPath: ConfigMap edits would never reach the pod", m.Name)
		}
	}
	configMaps, emptyDirs := map[string]string{}, map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap != nil {
			configMaps[v.Name] = v.ConfigMap.Name
		}
		if v.EmptyDir != nil {
			emptyDirs[v.Name] = true
		}
	}
	configFile, _ := flagValue(c.Args, "-config")
	policyCM := configMaps[mounts[path.Dir(configFile)]]
	if policyCM == "" {
		t.Fatalf("-config %s: %s is not a ConfigMap volume mount", configFile, path.Dir(configFile))
	}

	// The ConfigMap's policy loads cleanly with the real loader, opens the
	// proxy to the cluster's networks only, and is the built-in policy.
	var cmData map[string]string
	for _, o := range objs {
		if o.Kind == "ConfigMap" && o.Metadata.Name == policyCM {
			cmData = decodeAs[struct {
				Data map[string]string `yaml:"data"`
			}](t, o).Data
		}
	}
	policyText, ok := cmData[path.Base(configFile)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s (keys %v)", policyCM, path.Base(configFile), cmData)
	}
	policyFile := writePolicy(t, policyText)
	builtin := rules.FS{FS: configs.Files()}
	cfg, warnings, err := config.Load(rules.Dir{}, policyFile, rules.Options{Builtin: builtin})
	if err != nil {
		t.Fatalf("ConfigMap %s policy: %v", policyCM, err)
	}
	p := cfg.Policy
	for _, w := range warnings {
		t.Errorf("ConfigMap %s policy: %s", policyCM, w)
	}
	if !cfg.Access.ClientsConfigured {
		t.Error("the ConfigMap policy sets no allowed_clients: feedgate refuses -listen 0.0.0.0 without it")
	}
	for _, pf := range cfg.Access.AllowedClients {
		if pf.Bits() == 0 {
			t.Errorf("allowed_clients includes %s: an open proxy", pf)
		}
	}
	for _, cat := range p.Catalogs {
		if !strings.HasPrefix(cat.File, rules.BuiltinPrefix) {
			t.Errorf("catalog %s is not built in; the pod has no catalog files", cat.File)
		}
	}
	if sf := cfg.Inventory.StateFile; sf != "" && !emptyDirs[mounts[filepath.Dir(sf)]] {
		t.Errorf("[inventory] state_file %s is not on an emptyDir mount: the root filesystem is read-only", sf)
	}
	if cfg.Log.File != "" {
		t.Errorf("[log] file %s: in Kubernetes the decision log belongs on stdout", cfg.Log.File)
	}
	def, _, err := rules.Load(builtin, configs.DefaultPolicy, rules.Options{Builtin: builtin})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := policySummary(p), policySummary(def); got != want {
		t.Errorf("the ConfigMap policy's rules differ from the built-in policy's:\n got: %s\nwant: %s", got, want)
	}
	out, err := runBinary(t, "", "check", "-config", policyFile)
	if err != nil {
		t.Errorf("feedgate check -config <ConfigMap policy>: %v\n%s", err, out)
	}

	// The Services: the proxy on 3128, the admin listener on its own.
	var proxySvc, adminSvc *object
	for _, o := range objs {
		if o.Kind != "Service" {
			continue
		}
		s := decodeAs[service](t, o)
		if !selects(s.Spec.Selector, pod.Metadata.Labels) {
			t.Errorf("Service %s selector %v does not select the pods %v", o.Metadata.Name, s.Spec.Selector, pod.Metadata.Labels)
		}
		for _, sp := range s.Spec.Ports {
			switch target := c.port(sp.TargetPort); {
			case sp.Name == "proxy" && target == proxyPort && sp.Port == proxyPort:
				proxySvc = o
				if a := s.Spec.SessionAffinity; a != "" && a != "None" {
					t.Errorf("Service %s sessionAffinity %s; want None", o.Metadata.Name, a)
				}
				if len(s.Spec.Ports) != 1 {
					t.Errorf("Service %s exposes more than the proxy port", o.Metadata.Name)
				}
			case sp.Name == "admin" && target == adminPort:
				adminSvc = o
			default:
				t.Errorf("Service %s port %s %d -> %q: want proxy %d or admin %d", o.Metadata.Name, sp.Name, sp.Port, sp.TargetPort, proxyPort, adminPort)
			}
		}
	}
	if proxySvc == nil || adminSvc == nil {
		t.Fatalf("want a Service with port proxy (%d) and one with port admin (%d)", proxyPort, adminPort)
	}

	// The PodDisruptionBudget.
	_, b := only[pdb](t, objs, "PodDisruptionBudget")
	if !selects(b.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pods %v", b.Spec.Selector.MatchLabels, pod.Metadata.Labels)
	}
	if b.Spec.MinAvailable == nil || *b.Spec.MinAvailable < 1 || *b.Spec.MinAvailable >= d.Spec.Replicas {
		t.Errorf("PodDisruptionBudget minAvailable %v; want at least 1 and fewer than the %d replicas (or no drain ever finishes)", b.Spec.MinAvailable, d.Spec.Replicas)
	}

	// The ServiceMonitor scrapes the admin Service, and only it.
	_, sm := only[serviceMonitor](t, objs, "ServiceMonitor")
	if !selects(sm.Spec.Selector.MatchLabels, adminSvc.Metadata.Labels) || selects(sm.Spec.Selector.MatchLabels, proxySvc.Metadata.Labels) {
		t.Errorf("ServiceMonitor selector %v: want the admin Service %v and not the proxy Service %v",
			sm.Spec.Selector.MatchLabels, adminSvc.Metadata.Labels, proxySvc.Metadata.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v; want port admin, path /metrics", sm.Spec.Endpoints)
	}

	// The kustomization lists every other file, and nothing else.
	ko, k := only[kustomization](t, objs, "Kustomization")
	var want []string
	for _, f := range files {
		if f != ko.file {
			want = append(want, f)
		}
	}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s resources %v; want every manifest in %s: %v", ko.file, k.Resources, k8sDir, want)
	}
}

// policySummary renders what decides requests: everything but access,
// operational settings and the catalog's location.
func policySummary(p *rules.Policy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name=%s tz=%s mode=%s default=%s catalogs=", p.Name, p.Location, p.Mode, p.DefaultAction)
	for _, c := range p.Catalogs {
		fmt.Fprintf(&b, "%s@%s,", c.Vendor, c.Version)
	}
	for _, r := range p.Rules {
		fmt.Fprintf(&b, " [%s %s %s..%s vendor=%s cats=%v hosts=%v clients=%v/%v]",
			r.Name, r.Action, r.From.UTC().Format(time.RFC3339), r.Until.UTC().Format(time.RFC3339),
			r.Vendor(), r.Categories(), r.Hosts(), r.Clients(), r.NotClients())
	}
	return b.String()
}

// TestKubernetesPodStarts runs feedgate as the Deployment does, with the
// ConfigMap's policy (listening on the same addresses, ports chosen by the
// kernel), and checks the probes, a SIGHUP reload and a graceful SIGTERM.
func TestKubernetesPodStarts(t *testing.T) {
	objs, _ := readObjects(t)
	_, d := only[deployment](t, objs, "Deployment")
	c := d.Spec.Template.Spec.Containers[0]
	var policyText string
	for _, o := range objs {
		if o.Kind == "ConfigMap" {
			policyText = decodeAs[struct {
				Data map[string]string `yaml:"data"`
			}](t, o).Data["feedgate.toml"]
		}
	}
	// The inventory goes to a temporary directory instead of the pod's
	// emptyDir.
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "inventory.json")
	policyText = strings.ReplaceAll(policyText, `"/var/lib/feedgate/inventory.json"`, strconv.Quote(stateFile))
	policyFile := writePolicy(t, policyText)

	args := slices.Clone(c.Args)
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-config":
			args[i+1] = policyFile
		case "-listen", "-admin":
			h, _ := hostPort(t, args[i], args[i+1])
			args[i+1] = net.JoinHostPort(h, "0")
		}
	}
	inst := startExact(t, args...)
	_, adminPort := hostPort(t, "admin listener", inst.Admin)
	base := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))
	get := func(p string) string {
		t.Helper()
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatalf("GET %s: %v", p, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s\n%s", p, resp.Status, body)
		}
		return string(body)
	}
	for _, pr := range []probe{c.ReadinessProbe, c.LivenessProbe} {
		if pr.HTTPGet == nil {
			t.Fatal("a probe without httpGet")
		}
		get(pr.HTTPGet.Path)
	}
	get(d.Spec.Template.Metadata.Annotations["prometheus.io/path"])

	// SIGHUP (the unit's ExecReload) reloads the mounted policy.
	if err := inst.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloaded := regexp.MustCompile(`(?m)^feedgate_config_reloads_total\{result="success"\} 1$`)
	for deadline := time.Now().Add(10 * time.Second); !reloaded.MatchString(get("/metrics")); {
		if time.Now().After(deadline) {
			t.Fatalf("no successful reload after SIGHUP\n%s", inst.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// SIGTERM (Kubernetes' and the unit's stop signal) exits 0 well within
	// the grace period, and the inventory is saved on the way out.
	if err := inst.stopWithin(shutdownGrace + 5*time.Second); err != nil {
		t.Fatalf("feedgate after SIGTERM: %v\n%s", err, inst.stderr)
	}
	if _, err := os.Stat(stateFile); err != nil {
		t.Errorf("inventory state file after shutdown: %v", err)
	}
}

// --- Dockerfile ---

type instruction struct {
	cmd, args string
	line      int
}

// parseDockerfile splits a Dockerfile into instructions, joining
// continuation lines and dropping comments, as docker build does.
func parseDockerfile(text string) []instruction {
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	return out
}

func TestDockerfile(t *testing.T) {
	text, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var stages [][]instruction
	for _, in := range parseDockerfile(string(text)) {
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s:%d: %s before FROM", dockerfile, in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if len(stages) != 2 {
		t.Fatalf("%s has %d stages; want 2 (build, then the runtime image)", dockerfile, len(stages))
	}
	build, final := stages[0], stages[1]

	// The build stage: Go as go.mod says, the module downloaded before the
	// source is copied, and a static build of ./cmd/feedgate.
	from := strings.Fields(build[0].args)
	if len(from) != 3 || !strings.EqualFold(from[1], "AS") {
		t.Fatalf("first FROM %q; want IMAGE AS NAME", build[0].args)
	}
	stageName := from[2]
	image, _, _ := strings.Cut(from[0], "@")
	goVersion := goDirective(t)
	if tag, ok := strings.CutPrefix(image, "golang:"); !ok || (tag != goVersion && !strings.HasPrefix(tag, goVersion+"-")) {
		t.Errorf("build image %s; want golang:%s[-VARIANT] (go.mod says go %s)", image, goVersion, goVersion)
	}
	var buildRun string
	var copies []string
	for _, in := range build {
		switch in.cmd {
		case "COPY":
			f := strings.Fields(in.args)
			for _, src := range f[:len(f)-1] {
				if strings.HasPrefix(src, "--") {
					t.Errorf("%s:%d: COPY %s in the build stage", dockerfile, in.line, src)
				}
				copies = append(copies, src)
				if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
					t.Errorf("%s:%d: COPY %s: not in the repository (the build context is its root): %v", dockerfile, in.line, src, err)
				}
			}
		case "RUN":
			if strings.Contains(in.args, "go build") {
				buildRun = in.args
			}
		}
	}
	if i, j := slices.Index(copies, "go.sum"), slices.Index(copies, "."); i < 0 || j < i {
		t.Errorf("COPY sources %v; want go.mod and go.sum copied (and downloaded) before the rest", copies)
	}
	if buildRun == "" {
		t.Fatal("no RUN ... go build in the build stage")
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=${VERSION}", "./cmd/feedgate"} {
		if !strings.Contains(buildRun, want) {
			t.Errorf("go build %q: want %s", buildRun, want)
		}
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "cmd", "feedgate", "main.go")); err != nil {
		t.Error(err)
	}
	outFlag := regexp.MustCompile(`-o\s+(\S+)`).FindStringSubmatch(buildRun)
	if outFlag == nil {
		t.Fatalf("go build %q: no -o", buildRun)
	}

	// The runtime stage: distroless static (or scratch), not root, the
	// built binary as the entrypoint, the default command as deployed.
	rfrom := final[0].args
	if rfrom != "scratch" && !(strings.HasPrefix(rfrom, "gcr.io/distroless/static") && strings.Contains(rfrom, ":nonroot")) {
		t.Errorf("final FROM %s; want gcr.io/distroless/static...:nonroot or scratch", rfrom)
	}
	vals := func(cmd string) []string {
		var v []string
		for _, in := range final {
			if in.cmd == cmd {
				v = append(v, in.args)
			}
		}
		return v
	}
	if u := vals("USER"); len(u) == 0 {
		t.Error("no USER in the final stage: the image would run as root")
	} else if user, _, _ := strings.Cut(u[len(u)-1], ":"); user == "root" || user == "0" {
		t.Errorf("USER %s; want a non-root user", u[len(u)-1])
	}
	var exposed []string
	for _, e := range vals("EXPOSE") {
		exposed = append(exposed, strings.Fields(e)...)
	}
	proxyPort, adminPort := defaultPorts(t)
	if !slices.Equal(exposed, []string{strconv.Itoa(proxyPort), strconv.Itoa(adminPort)}) {
		t.Errorf("EXPOSE %v; want %d %d", exposed, proxyPort, adminPort)
	}
	copied := ""
	for _, cp := range vals("COPY") {
		f := strings.Fields(cp)
		if len(f) == 3 && f[0] == "--from="+stageName && f[1] == outFlag[1] {
			copied = f[2]
		}
	}
	if copied == "" {
		t.Errorf("the final stage does not COPY --from=%s %s", stageName, outFlag[1])
	}
	jsonArray := func(cmd string) []string {
		v := vals(cmd)
		if len(v) != 1 {
			t.Fatalf("want one %s in the final stage, found %d", cmd, len(v))
		}
		var a []string
		if err := json.Unmarshal([]byte(v[0]), &a); err != nil {
			t.Fatalf("%s %s: want the exec (JSON) form, so that feedgate gets the signals: %v", cmd, v[0], err)
		}
		return a
	}
	if ep := jsonArray("ENTRYPOINT"); !slices.Equal(ep, []string{copied}) {
		t.Errorf("ENTRYPOINT %q; want [%q]", ep, copied)
	}
	cmdArgs := jsonArray("CMD")
	wantCmd := []string{"run", "-config", "/etc/feedgate/feedgate.toml",
		"-listen", net.JoinHostPort("0.0.0.0", strconv.Itoa(proxyPort)),
		"-admin", net.JoinHostPort("0.0.0.0", strconv.Itoa(adminPort)), "-admin.insecure"}
	if !slices.Equal(cmdArgs, wantCmd) {
		t.Errorf("CMD %q; want %q", cmdArgs, wantCmd)
	}

	// Run the build command itself from the repository root, as the
	// build stage does (its WORKDIR holds the whole context), with the
	// output redirected, and check that VERSION reaches the binary.
	bin := filepath.Join(t.TempDir(), "feedgate")
	script := strings.Replace(buildRun, outFlag[0], "-o "+strconv.Quote(bin), 1)
	sh := exec.Command("sh", "-c", script)
	sh.Dir = repoRoot
	sh.Env = append(os.Environ(), "VERSION=v0.0.0-dockerfile-test")
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build command (%s): %v\n%s", script, err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "feedgate v0.0.0-dockerfile-test ") {
		t.Errorf("feedgate version of the Dockerfile's build: %q, %v; want feedgate v0.0.0-dockerfile-test", out, err)
	}
}

// goDirective returns go.mod's go version.
func goDirective(t *testing.T) string {
	t.Helper()
	mod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}
