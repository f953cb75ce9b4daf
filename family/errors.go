package family

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Errors callers can branch on with errors.Is.
var (
	// ErrTruncatedHeader: a message is too short for the family header.
	ErrTruncatedHeader = errors.New("nsbroker: truncated family header")
	// ErrVersion: a message carries an ABI version this package does not
	// speak.
	ErrVersion = errors.New("nsbroker: unsupported ABI version")
	// ErrMissingAttribute: a reply or event lacks an attribute the ABI
	// promises.
	ErrMissingAttribute = errors.New("nsbroker: missing attribute")
	// ErrMalformed: attributes that cannot be parsed, or a known attribute
	// of the wrong size.
	ErrMalformed = errors.New("nsbroker: malformed attributes")
	// ErrUnknownType: a received message has a type this package does not
	// know.
	ErrUnknownType = errors.New("nsbroker: unknown message type")
	// ErrGroupRange: a multicast group outside 1..Groups
	// (GroupRangeError).
	ErrGroupRange = errors.New("group out of range")
	// ErrPayloadTooLarge: a payload longer than PayloadMax
	// (PayloadSizeError).
	ErrPayloadTooLarge = errors.New("payload too large")

	// ErrDropped is the error (ENOBUFS) with which a receive reports that
	// the socket's receive buffer overflowed and messages were lost:
	// events, and possibly replies to requests in flight.
	// errors.Is(err, ErrDropped) is the same test as
	// errors.Is(err, unix.ENOBUFS).
	ErrDropped error = unix.ENOBUFS

	// ErrForged is the error with which a receive reports that it dropped
	// a datagram whose source port id is not the kernel's (0): one that
	// another socket of the unit sent straight to this one's group, which
	// netlink allows a process with CAP_NET_ADMIN over the namespace,
	// bypassing the module. Only the kernel speaks for the module. The
	// socket stays usable.
	ErrForged = errors.New("nsbroker: datagram not sent by the kernel")

	// ErrNoReply is the error with which Request reports that it sent
	// the request but read no reply (a read deadline, a closed socket):
	// the module may have handled it. An error of Request that does not
	// match it means the request was not sent.
	ErrNoReply = errors.New("nsbroker: request sent, no reply read")
)

// GroupRangeError is the one error for a multicast group outside
// 1..Groups, whichever request or reply names it: what a client sees for
// such a group is this text, from every rpc. It matches ErrGroupRange.
func GroupRangeError(group uint32) error {
	return fmt.Errorf("%w: %d, want 1..%d", ErrGroupRange, group, Groups)
}

// CheckGroup returns GroupRangeError for a group outside 1..Groups.
func CheckGroup(group uint32) error {
	if group < 1 || group > Groups {
		return GroupRangeError(group)
	}
	return nil
}

// PayloadSizeError is the one error for a payload of n bytes, more than
// PayloadMax, whichever request carries it: what a client sees for such a
// payload is this text, from every rpc. It matches ErrPayloadTooLarge.
func PayloadSizeError(n int) error {
	return fmt.Errorf("%w: %d bytes, at most %d", ErrPayloadTooLarge, n, PayloadMax)
}

// CheckPayload returns PayloadSizeError for a payload over PayloadMax.
func CheckPayload(payload []byte) error {
	if len(payload) > PayloadMax {
		return PayloadSizeError(len(payload))
	}
	return nil
}

// Error is a request the module rejected: the errno of its NLMSG_ERROR
// reply and the extended acknowledgement that explains it. It unwraps to
// its Errno, so errors.Is(err, unix.EPERM) works.
type Error struct {
	// Op is the request that failed ("echo", "publish", "stats") when
	// known; Conn.Receive cannot know it and leaves it empty.
	Op string
	// Errno is the error number the module returned.
	Errno unix.Errno
	// Message is the extended-ACK text naming the problem.
	Message string
	// Offset is the byte offset of the offending attribute in the request,
	// when the module reported one.
	Offset int
	// Seq is the sequence number of the rejected request.
	Seq uint32
}

// Error describes the rejection: request, sequence number, errno and the
// module's explanation.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("nsbroker")
	if e.Op != "" {
		b.WriteString(" " + e.Op)
	}
	name := unix.ErrnoName(e.Errno)
	if name == "" {
		name = fmt.Sprintf("errno %d", int(e.Errno))
	}
	fmt.Fprintf(&b, " (seq %d): %s (%v)", e.Seq, name, e.Errno)
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Offset != 0 {
		fmt.Fprintf(&b, " at offset %d", e.Offset)
	}
	return b.String()
}

// Unwrap returns the errno.
func (e *Error) Unwrap() error { return e.Errno }
