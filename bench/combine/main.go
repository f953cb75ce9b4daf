// Command combine reads the results of several `make bench` boots from a
// directory (results-N.json, and load-N.txt with the host's load while
// boot N ran) and prints the medians and ranges as markdown
// (bench.Combined). mk/bench.mk runs it after the last boot.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nsbroker/nsbroker/bench"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: combine DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "combine:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	var c bench.Combined
	for i := 1; ; i++ {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("results-%d.json", i)))
		if os.IsNotExist(err) {
			break
		}
		if err != nil {
			return err
		}
		r := new(bench.Results)
		if len(b) > 0 {
			if err := json.Unmarshal(b, r); err != nil {
				return fmt.Errorf("results-%d.json: %v", i, err)
			}
		}
		c.Boots = append(c.Boots, r)
		var l bench.Load
		if f, err := os.Open(filepath.Join(dir, fmt.Sprintf("load-%d.txt", i))); err == nil {
			l, err = bench.ParseLoad(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("load-%d.txt: %v", i, err)
			}
		}
		c.Loads = append(c.Loads, l)
	}
	if len(c.Boots) == 0 {
		return fmt.Errorf("no results-1.json in %s", dir)
	}
	fmt.Print(c.Markdown())
	return nil
}
