package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// note is what createRuntime, which talks to the daemon as the runtime,
// tells createContainer, which runs inside the container (perhaps in a
// user namespace, where the admin socket refuses it): which network
// namespace it attached, under which name, and the filesystem socket the
// daemon serves that namespace through. One file per container in the
// state directory, JSON, removed at poststop.
type note struct {
	// Dev and Ino identify the container's network namespace, which
	// createContainer checks it runs in.
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
	// Name is the attachment; "" when the container shares the runtime's
	// network namespace and nothing was attached.
	Name string `json:"name,omitempty"`
	// Socket is the namespace's filesystem socket; "" when the daemon
	// serves none.
	Socket string `json:"socket,omitempty"`
}

// maxNote bounds a note read back.
const maxNote = 64 << 10

// notePath is where the note of container id lives in dir: the id itself
// when it is a plain file name (runc allows only letters, digits and
// "_+-."), else "~" and the first 16 bytes of its SHA-256 in hex.
func notePath(dir, id string) string {
	if id != "" && len(id) <= 200 && id[0] != '.' && id[0] != '~' && !strings.ContainsAny(id, "/\x00") {
		return filepath.Join(dir, id)
	}
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(dir, "~"+hex.EncodeToString(sum[:16]))
}

// writeNote writes the note of container id into dir (made mode 0755 if
// missing), atomically: a reader finds the old note or the new one.
func writeNote(dir, id string, n *note) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.Marshal(n)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".note-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a failure; gone after the rename
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	// Readable inside a container of a user namespace.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), notePath(dir, id))
}

// errNoNote means createRuntime left no note for the container.
var errNoNote = errors.New("no note from the createRuntime hook (is the hook configured for createRuntime too, with the same --state-dir?)")

// readNote reads the note of container id from dir.
func readNote(dir, id string) (*note, error) {
	path := notePath(dir, id)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, errNoNote)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var n note
	if err := json.NewDecoder(io.LimitReader(f, maxNote)).Decode(&n); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &n, nil
}

// removeNote removes the note of container id; none is no error.
func removeNote(dir, id string) error {
	if err := os.Remove(notePath(dir, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
