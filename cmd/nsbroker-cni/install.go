package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// install copies the running binary into a CNI bin directory, atomically:
// the runtime may run the plugin at any moment, and must find either the
// old binary or the new one, never half of it. It returns the exit status.
func install(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nsbroker-cni install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dest := fs.String("dest", "/opt/cni/bin", "the CNI bin `directory` to install into")
	name := fs.String("name", "nsbroker-cni", "the file `name`: the \"type\" of the plugin in network configurations")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *name == "" || filepath.Base(*name) != *name {
		fmt.Fprintln(stderr, "usage: nsbroker-cni install [--dest DIR] [--name NAME]")
		return 2
	}
	self, err := os.Executable()
	if err == nil {
		err = copyAtomic(self, filepath.Join(*dest, *name))
	}
	if err != nil {
		fmt.Fprintf(stderr, "nsbroker-cni: install: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "installed %s\n", filepath.Join(*dest, *name))
	return 0
}

// copyAtomic copies src to a temporary file next to dst, makes it
// executable, syncs it and renames it over dst.
func copyAtomic(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = io.Copy(tmp, in); err != nil {
		return err
	}
	if err = tmp.Chmod(0o755); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
