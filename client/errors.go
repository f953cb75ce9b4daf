package client

import (
	"context"
	"errors"
	"io"
	"strings"
	"unicode"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Sentinel errors, one per status code a caller branches on. An *Error
// matches the one of its code; a *ConnectError matches ErrUnavailable.
var (
	ErrNotFound          = errors.New("not found")
	ErrPermissionDenied  = errors.New("permission denied")
	ErrInvalidArgument   = errors.New("invalid argument")
	ErrAlreadyExists     = errors.New("already exists")
	ErrResourceExhausted = errors.New("resource exhausted")
	ErrUnavailable       = errors.New("unavailable")
	ErrAborted           = errors.New("aborted")
	ErrUnauthenticated   = errors.New("unauthenticated")
)

// ErrDaemonDown means nothing listens at the endpoint: the socket file
// does not exist, or the connection was refused (a socket left behind by
// a daemon that died, or no daemon on that port).
var ErrDaemonDown = errors.New("nsbrokerd is not running")

var sentinels = map[codes.Code]error{
	codes.NotFound:          ErrNotFound,
	codes.PermissionDenied:  ErrPermissionDenied,
	codes.InvalidArgument:   ErrInvalidArgument,
	codes.AlreadyExists:     ErrAlreadyExists,
	codes.ResourceExhausted: ErrResourceExhausted,
	codes.Unavailable:       ErrUnavailable,
	codes.Aborted:           ErrAborted,
	codes.Unauthenticated:   ErrUnauthenticated,
	codes.DeadlineExceeded:  context.DeadlineExceeded,
	codes.Canceled:          context.Canceled,
}

// Error is an rpc that ended with an error status. It prints the code in
// words and the daemon's message ("resource exhausted: ..." names the
// limit), keeps the status for status.Code and status.FromError, and
// matches with errors.Is the sentinel error of its code
// (context.DeadlineExceeded and context.Canceled for those codes).
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the daemon's message.
	Message string

	st *status.Status
}

func (e *Error) Error() string { return CodeText(e.Code) + ": " + e.Message }

// GRPCStatus returns the status.
func (e *Error) GRPCStatus() *status.Status { return e.st }

// Is reports whether target is the sentinel error of e's code.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.Code]
	return ok && s == target
}

// FromError returns err as an *Error when it carries a gRPC status other
// than OK, and err unchanged otherwise (nil, io.EOF, an *Error already).
func FromError(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &Error{Code: st.Code(), Message: st.Message(), st: st}
}

// CodeText spells a code in words: NotFound is "not found".
func CodeText(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte(' ')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ConnectError is a daemon that could not be reached. It matches
// ErrUnavailable, and ErrDaemonDown when nothing listens there.
type ConnectError struct {
	// Addr is the endpoint.
	Addr string
	// Err is why: the connect system call's error
	// ("connect: connection refused"), the context's, or the connection
	// having been closed before the daemon answered.
	Err error
}

func (e *ConnectError) Error() string { return "cannot connect to " + e.Addr + ": " + e.Err.Error() }

func (e *ConnectError) Unwrap() error { return e.Err }

// Is matches ErrUnavailable, and ErrDaemonDown for ENOENT and ECONNREFUSED.
func (e *ConnectError) Is(target error) bool {
	switch target {
	case ErrUnavailable:
		return true
	case ErrDaemonDown:
		return errors.Is(e.Err, unix.ENOENT) || errors.Is(e.Err, unix.ECONNREFUSED)
	}
	return false
}

// unaryErrors makes the errors of unary rpcs *Error values.
func unaryErrors(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return FromError(invoker(ctx, method, req, reply, cc, opts...))
}

// streamErrors makes the errors of streams *Error values.
func streamErrors(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, FromError(err)
	}
	return errorStream{s}, nil
}

type errorStream struct{ grpc.ClientStream }

func (s errorStream) SendMsg(m any) error { return FromError(s.ClientStream.SendMsg(m)) }
func (s errorStream) RecvMsg(m any) error { return FromError(s.ClientStream.RecvMsg(m)) }
func (s errorStream) CloseSend() error    { return FromError(s.ClientStream.CloseSend()) }

func (s errorStream) Header() (metadata.MD, error) {
	md, err := s.ClientStream.Header()
	return md, FromError(err)
}
