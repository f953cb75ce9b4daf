package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/quote"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// notFound is the one answer for a namespace that is not attached and for
// one the caller may not reach, so that a tenant cannot tell them apart.
func notFound(name string) error {
	return status.Error(codes.NotFound, "namespace "+quote.String(name)+" not attached")
}

// maxMessage bounds the message of every status ToStatus makes, in bytes.
// The names a message shows are bounded already (quote.String); this
// bounds whatever else an error carries, such as a path, so that the
// status, which travels as a header, stays far below the 8 KiB of header
// that gRPC C-core and Java clients accept, even percent-encoded.
const maxMessage = 1024

// statusError is status.Error with the message bounded by maxMessage.
func statusError(code codes.Code, msg string) error {
	return status.Error(code, quote.Cut(msg, maxMessage))
}

// ErrShuttingDown ends whatever is open when the server stops: UNAVAILABLE,
// so that clients reconnect (to the next daemon).
var ErrShuttingDown = status.Error(codes.Unavailable, "server shutting down")

// ToStatus converts an error of the broker, family or nsmgr packages to
// the gRPC status the API promises. Status errors and nil pass through.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var be *broker.Error
	errors.As(err, &be)
	var fe *family.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, broker.ErrNotFound):
		if be != nil && be.Namespace != "" {
			return notFound(be.Namespace)
		}
		return statusError(codes.NotFound, err.Error())
	case errors.Is(err, broker.ErrClosed):
		return ErrShuttingDown
	case errors.Is(err, broker.ErrExists):
		return statusError(codes.AlreadyExists, err.Error())
	case errors.Is(err, broker.ErrUnavailable):
		return statusError(codes.Unavailable, err.Error())
	case errors.Is(err, broker.ErrDetached), errors.Is(err, broker.ErrNamespaceGone):
		return statusError(codes.Aborted, err.Error())
	case errors.Is(err, broker.ErrWatchOverflow):
		return statusError(codes.Aborted, err.Error()+": the client read too slowly")
	case errors.Is(err, broker.ErrReplyLost):
		return statusError(codes.Aborted, err.Error()+"; the request may have taken effect")
	case errors.Is(err, broker.ErrInvalid), errors.Is(err, nsmgr.ErrInvalidRef):
		return statusError(codes.InvalidArgument, err.Error())
	case errors.As(err, &fe):
		return kernelStatus(be, fe)
	case errors.Is(err, nsmgr.ErrNotNetns):
		if errors.Is(err, fs.ErrNotExist) {
			return statusError(codes.NotFound, err.Error())
		}
		return statusError(codes.InvalidArgument, err.Error())
	case errors.Is(err, os.ErrPermission):
		return statusError(codes.PermissionDenied, err.Error())
	}
	return statusError(codes.Unknown, err.Error())
}

// kernelStatus maps a request the module rejected: the code follows its
// errno, the message is the module's extended-ACK text.
func kernelStatus(be *broker.Error, fe *family.Error) error {
	msg := fe.Errno.Error()
	if fe.Message != "" {
		msg += ": " + fe.Message
	}
	if be != nil {
		msg = fmt.Sprintf("%s %s: %s", be.Op, quote.String(be.Namespace), msg)
	}
	code := codes.Unknown
	switch fe.Errno {
	case unix.EINVAL, unix.ERANGE, unix.EOPNOTSUPP, unix.EPROTONOSUPPORT, unix.EMSGSIZE:
		code = codes.InvalidArgument
	case unix.EPERM, unix.EACCES:
		code = codes.PermissionDenied
	case unix.ENOMEM, unix.ENOSPC:
		code = codes.ResourceExhausted
	case unix.EAGAIN, unix.EBUSY:
		code = codes.Unavailable
	}
	return statusError(code, msg)
}
