package nsmgr

import (
	"errors"
	"fmt"

	"github.com/nsbroker/nsbroker/internal/quote"
)

// ErrNotNetns means a path exists but is not a network namespace (a
// regular file, a directory, another kind of namespace), or does not exist
// at all; in the latter case the error also matches fs.ErrNotExist.
var ErrNotNetns = errors.New("not a network namespace")

// ErrInvalidRef means a [Ref] does not name exactly one valid namespace.
var ErrInvalidRef = errors.New("invalid namespace reference")

// Error is the error returned by this package's operations on a namespace.
type Error struct {
	// Op is the operation that failed: "open", "enter", "restore",
	// "create", "delete", "close", "discover", "watch" or "watch pid".
	Op string
	// Namespace names the namespace, as [Ref.String] does; it may be
	// empty. Error shows it quoted and bounded.
	Namespace string
	// Err is the underlying error.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Namespace == "" {
		return fmt.Sprintf("nsmgr: %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("nsmgr: %s %s: %v", e.Op, quote.String(e.Namespace), e.Err)
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// notNetns explains why something is not a network namespace while still
// matching ErrNotNetns.
func notNetns(why string) error { return fmt.Errorf("%w (%s)", ErrNotNetns, why) }
