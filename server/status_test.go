package server

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
)

func TestToStatus(t *testing.T) {
	op := func(op string, err error) error { return &broker.Error{Op: op, Namespace: "red", Err: err} }
	kernel := func(errno unix.Errno, msg string) error {
		return op("publish", &family.Error{Op: "publish", Errno: errno, Message: msg, Seq: 9})
	}
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string // the message, or a part of it after "…"
	}{
		{"nil", nil, codes.OK, ""},
		{"not attached", op("echo", broker.ErrNotFound), codes.NotFound, `namespace "red" not attached`},
		{"exists", op("attach", broker.ErrExists), codes.AlreadyExists, "…already attached"},
		{"unavailable", op("echo", fmt.Errorf("%w: module gone", broker.ErrUnavailable)), codes.Unavailable, "…module gone"},
		{"detached", op("echo", broker.ErrDetached), codes.Aborted, "…namespace detached"},
		{"gone", op("subscribe", fmt.Errorf("%w: /run/netns/red removed", broker.ErrNamespaceGone)), codes.Aborted, "…red removed"},
		{"closed", op("echo", broker.ErrClosed), codes.Unavailable, "server shutting down"},
		{"invalid", op("publish", fmt.Errorf("%w: %w", broker.ErrInvalid, family.GroupRangeError(33))), codes.InvalidArgument, `publish "red": invalid argument: group out of range: 33, want 1..32`},
		{"reply lost", op("publish", broker.ErrReplyLost), codes.Aborted, "…may have taken effect"},
		{"watch overflow", broker.ErrWatchOverflow, codes.Aborted, "…read too slowly"},
		{"kernel EINVAL", kernel(unix.EINVAL, "group out of range"), codes.InvalidArgument, `publish "red": invalid argument: group out of range`},
		{"kernel ERANGE", kernel(unix.ERANGE, "payload too long"), codes.InvalidArgument, "…payload too long"},
		{"kernel EOPNOTSUPP", kernel(unix.EOPNOTSUPP, "unknown message type"), codes.InvalidArgument, "…unknown message type"},
		{"kernel EPROTONOSUPPORT", kernel(unix.EPROTONOSUPPORT, "bad version"), codes.InvalidArgument, "…bad version"},
		{"kernel EPERM", kernel(unix.EPERM, "CAP_NET_ADMIN needed"), codes.PermissionDenied, "…CAP_NET_ADMIN needed"},
		{"kernel ENOMEM", kernel(unix.ENOMEM, ""), codes.ResourceExhausted, `publish "red": cannot allocate memory`},
		{"kernel other", kernel(unix.EIO, "odd"), codes.Unknown, "…odd"},
		{"canceled", op("echo", context.Canceled), codes.Canceled, "…"},
		{"deadline", op("echo", context.DeadlineExceeded), codes.DeadlineExceeded, "…"},
		{"bad ref", &nsmgr.Error{Op: "open", Err: nsmgr.ErrInvalidRef}, codes.InvalidArgument, "…invalid namespace reference"},
		{"missing netns", op("attach", &nsmgr.Error{Op: "open", Err: fmt.Errorf("%w: %w", nsmgr.ErrNotNetns, fs.ErrNotExist)}), codes.NotFound, "…not a network namespace"},
		{"not a netns", op("attach", &nsmgr.Error{Op: "open", Err: nsmgr.ErrNotNetns}), codes.InvalidArgument, "…not a network namespace"},
		{"permission", op("attach", os.ErrPermission), codes.PermissionDenied, "…permission denied"},
		{"status", status.Error(codes.ResourceExhausted, "as is"), codes.ResourceExhausted, "as is"},
		{"other", fmt.Errorf("something else"), codes.Unknown, "something else"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ToStatus(tt.err)
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("ToStatus(%v) code: got %v, want %v", tt.err, st.Code(), tt.code)
			}
			if part, ok := strings.CutPrefix(tt.msg, "…"); ok {
				if !strings.Contains(st.Message(), part) {
					t.Fatalf("ToStatus(%v) message: got %q, want it to contain %q", tt.err, st.Message(), part)
				}
			} else if st.Message() != tt.msg {
				t.Fatalf("ToStatus(%v) message: got %q, want %q", tt.err, st.Message(), tt.msg)
			}
		})
	}
}

// TestToStatusBounded checks that a status made from an error with a
// client's string of 100 KiB in it stays short: a name shows only its
// first quote.Max bytes, and any message at most maxMessage bytes.
func TestToStatusBounded(t *testing.T) {
	long := strings.Repeat("x", 100*1024)
	tests := []struct {
		name string
		err  error
		max  int
	}{
		{"not attached", &broker.Error{Op: "echo", Namespace: long, Err: broker.ErrNotFound}, 200},
		{"exists", &broker.Error{Op: "attach", Namespace: long, Err: broker.ErrExists}, 200},
		{"kernel", &broker.Error{Op: "publish", Namespace: long, Err: &family.Error{Errno: unix.EINVAL, Message: "bad"}}, 200},
		{"nsmgr", &broker.Error{Op: "attach", Namespace: long, Err: &nsmgr.Error{Op: "open", Namespace: "path:" + long, Err: nsmgr.ErrNotNetns}}, 300},
		{"bare", fmt.Errorf("%w: %s", broker.ErrInvalid, long), maxMessage + len("…(102419 bytes)")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := status.Convert(ToStatus(tt.err)).Message()
			if len(msg) > tt.max {
				t.Errorf("message of %d bytes, want at most %d: %.300q", len(msg), tt.max, msg)
			}
		})
	}
}
