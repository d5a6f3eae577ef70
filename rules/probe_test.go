package rules

import (
	"fmt"
	"path/filepath"
	"testing"
)

func TestProbe(t *testing.T) {
	files, _ := filepath.Glob("testdata/warn/*.toml")
	for _, f := range files {
		p, w, err := Load(Dir{}, f, Options{})
		fmt.Println("==", f, p != nil, err)
		for _, x := range w {
			fmt.Println(x)
		}
	}
}
