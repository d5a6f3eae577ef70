package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
	"github.com/feedgate/feedgate/rules/internal/ruletest"
)

// loadDefault loads the embedded default configuration, which must load
// cleanly.
func loadDefault(tb testing.TB) *config.Config {
	tb.Helper()
	c, warns, err := config.Load(rules.FS{FS: configs.Files()}, configs.DefaultPolicy, rules.Options{})
	if err != nil {
		tb.Fatalf("Load(default) error: %v", err)
	}
	if len(warns) > 0 {
		tb.Fatalf("Load(default) warnings: %v; want none", warns)
	}
	return c
}

// loadFile loads a configuration from the file system, which must load
// without errors or warnings.
func loadFile(tb testing.TB, file string) *config.Config {
	tb.Helper()
	c, warns, err := config.Load(rules.Dir{}, file, rules.Options{})
	if err != nil {
		tb.Fatalf("Load(%s) error: %v", file, err)
	}
	if len(warns) > 0 {
		tb.Fatalf("Load(%s) warnings: %v; want none", file, warns)
	}
	return c
}

// Each file in testdata/bad breaks one validation rule of the settings
// (or of the policy's [tls] keys, beside them); its "# want:" lines are
// the exact problems Load must report, in order.
func TestLoadBadConfigs(t *testing.T) {
	ruletest.CheckBadFiles(t, func(file string) (bool, error) {
		c, _, err := config.Load(rules.Dir{}, file, rules.Options{})
		return c != nil, err
	})
}

// TestRestartOnly: a reload applies the sections that reload and reports
// each one that does not, by the name the file gives it.
func TestRestartOnly(t *testing.T) {
	dir := t.TempDir()
	load := func(text string) *config.Config {
		t.Helper()
		file := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return loadFile(t, filepath.ToSlash(file))
	}
	base := load("")
	tests := []struct {
		name, text string
		want       []string
	}{
		{"nothing changed", "", nil},
		{"reloadable sections", "allowed_clients = [\"10.0.0.0/8\"]\npac_all = true\n[limits]\nmax_tunnels = 10\n[tls]\nsni_timeout = \"2s\"\ncut_tunnels = false\n", nil},
		{"policy", "default_action = \"log\"\n", nil},
		{"log", "[log]\nformat = \"squid\"\n", []string{"[log]"}},
		{"inventory", "[inventory]\nmax_clients = 5\n", []string{"[inventory]"}},
		{"upstream", "upstream_proxy = \"env\"\n", []string{"upstream_proxy"}},
		{"interception turned on", "[tls.intercept]\nhosts = [\"www.example.com\"]\nca_cert = \"ca.crt\"\nca_key = \"ca.key\"\n", []string{"[tls.intercept] CA and roots"}},
		{"transparent listeners", "transparent = [\"0.0.0.0:3129\"]\ntransparent_mark = 7\n", []string{"transparent, transparent_tproxy, transparent_mark"}},
		{"transparent_verify", "transparent_verify = \"strict\"\n", nil},
		{"all at once", "upstream_proxy = \"env\"\n[log]\nfile = \"a.log\"\n[inventory]\nstate_file = \"inv.json\"\n", []string{"upstream_proxy", "[log]", "[inventory]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ruletest.DiffLines(t, "restart-only sections", config.RestartOnly(base, load(tt.text)), tt.want)
		})
	}
}
