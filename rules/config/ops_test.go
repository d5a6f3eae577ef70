package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
)

func TestOperationalSettings(t *testing.T) {
	c := loadDefault(t)
	if c.Log != (config.Log{Format: config.LogJSON}) {
		t.Errorf("default Log = %+v; want json to standard output", c.Log)
	}
	if want := (config.Inventory{MaxClients: config.DefaultMaxClients, SaveInterval: config.DefaultSaveInterval}); c.Inventory != want {
		t.Errorf("default Inventory = %+v; want %+v", c.Inventory, want)
	}
	if c.PAC != (config.PAC{}) {
		t.Errorf("default PAC = %+v; want zero", c.PAC)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "p.toml")
	text := `catalogs = ["builtin:catalog/kaspersky.toml"]
pac_proxy = "proxy.corp.example:3128"
pac_all = true
[log]
format = "squid"
file = "logs/access.log"
[inventory]
max_clients = 10
state_file = "/var/lib/feedgate/inventory.json"
save_interval = "30s"
`
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _, err := config.Load(rules.Dir{}, file, rules.Options{Builtin: rules.FS{FS: configs.Files()}})
	if err != nil {
		t.Fatal(err)
	}
	if want := (config.Log{Format: config.LogSquid, File: filepath.ToSlash(filepath.Join(dir, "logs/access.log"))}); c.Log != want {
		t.Errorf("Log = %+v; want %+v (relative to the policy file)", c.Log, want)
	}
	if want := (config.Inventory{MaxClients: 10, StateFile: "/var/lib/feedgate/inventory.json", SaveInterval: 30 * time.Second}); c.Inventory != want {
		t.Errorf("Inventory = %+v; want %+v", c.Inventory, want)
	}
	if want := (config.PAC{Proxy: "proxy.corp.example:3128", All: true}); c.PAC != want {
		t.Errorf("PAC = %+v; want %+v", c.PAC, want)
	}
}
