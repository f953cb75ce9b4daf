package broker

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/internal/quote"
)

// Errors callers branch on. Every error returned by a Broker method wraps
// one of these or a kernel rejection (*family.Error).
var (
	// ErrNotFound: no namespace is attached under that name.
	ErrNotFound = errors.New("namespace not attached")
	// ErrExists: the name, or the namespace itself, is attached already.
	ErrExists = errors.New("namespace already attached")
	// ErrUnavailable: the namespace is attached but has no connection to
	// the module right now (module missing, released, or dial failed).
	ErrUnavailable = errors.New("module unavailable in namespace")
	// ErrDetached: the namespace was detached while the call was waiting.
	ErrDetached = errors.New("namespace detached")
	// ErrNamespaceGone: the namespace disappeared (its name was unlinked or
	// its process exited) and the broker detached it.
	ErrNamespaceGone = errors.New("namespace gone")
	// ErrInvalid: the arguments are wrong (bad group, payload or name too
	// long).
	ErrInvalid = errors.New("invalid argument")
	// ErrClosed: the Broker was closed.
	ErrClosed = errors.New("broker closed")
	// ErrReplyLost: the kernel dropped the reply in a receive-buffer
	// overrun; the request may have taken effect. It matches unix.ENOBUFS.
	ErrReplyLost = fmt.Errorf("reply lost in a receive-buffer overrun: %w", unix.ENOBUFS)
	// ErrWatchOverflow: a namespace watcher fell too far behind and was cut off.
	ErrWatchOverflow = errors.New("namespace watch overflowed")
)

// Error describes a failed operation on one namespace.
type Error struct {
	Op        string // "attach", "echo", "publish", ...
	Namespace string // the attach name; Error shows it quoted and bounded
	Err       error
}

func (e *Error) Error() string {
	if e.Namespace == "" {
		return fmt.Sprintf("%s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("%s %s: %v", e.Op, quote.String(e.Namespace), e.Err)
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// invalid marks an argument error of a lower layer, such as a limit of
// family (family.GroupRangeError, family.PayloadSizeError), as ErrInvalid
// and keeps its text and its own sentinel: the limit's message is the
// same whichever operation refused the argument.
func invalid(err error) error {
	return fmt.Errorf("%w: %w", ErrInvalid, err)
}

func opError(op, ns string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Namespace: ns, Err: err}
}
