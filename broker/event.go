package broker

import (
	"fmt"

	"github.com/nsbroker/nsbroker/family"
)

// EventKind tells what an Event carries.
type EventKind int

const (
	// KindMessage is an event multicast by the module.
	KindMessage EventKind = iota + 1
	// KindGap reports events this subscriber will never receive.
	KindGap
	// KindEnd is the last event of a subscription; Err says why it ended.
	KindEnd
)

func (k EventKind) String() string {
	switch k {
	case KindMessage:
		return "message"
	case KindGap:
		return "gap"
	case KindEnd:
		return "end"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// LossReason says why events were lost.
type LossReason int

const (
	// LossKernelOverrun: the kernel dropped events because the broker's
	// socket receive buffer was full (ENOBUFS).
	LossKernelOverrun LossReason = iota + 1
	// LossQueueFull: the subscriber's queue was full; the subscriber was
	// too slow.
	LossQueueFull
	// LossReleased: the broker's connection was closed (Release, or a
	// connection failure); events published meanwhile were not received.
	LossReleased
	// LossModuleReloaded: the module was reloaded; its sequence numbers
	// restarted at 1 and the events before the first one received are gone.
	LossModuleReloaded
	// LossNotRetained: a resuming subscriber missed events the broker
	// received but no longer retains (Config.RetainEvents, RetainBytes,
	// RetainTotalBytes).
	LossNotRetained
	// LossDaemonRestarted: a resuming subscriber missed events numbered
	// before this broker listened to the group: the daemon restarted (or
	// nobody had subscribed to the group since it started).
	LossDaemonRestarted
)

func (r LossReason) String() string {
	switch r {
	case LossKernelOverrun:
		return "kernel-overrun"
	case LossQueueFull:
		return "queue-full"
	case LossReleased:
		return "released"
	case LossModuleReloaded:
		return "module-reloaded"
	case LossNotRetained:
		return "not-retained"
	case LossDaemonRestarted:
		return "daemon-restarted"
	}
	return fmt.Sprintf("LossReason(%d)", int(r))
}

// Gap names a range of sequence numbers of one group that a subscriber
// will not receive.
type Gap struct {
	Group  uint32
	From   uint64 // first missing sequence number
	To     uint64 // last missing; 0 when unknown (the stream was cut, see Reason)
	Reason LossReason
	// Instance is the module instance the numbers belong to (0: unknown).
	Instance uint64
}

// Count is the number of missing events, or 0 when To is unknown.
func (g Gap) Count() uint64 {
	if g.To < g.From {
		return 0
	}
	return g.To - g.From + 1
}

func (g Gap) String() string {
	if g.To == 0 {
		return fmt.Sprintf("group %d: events from seq %d on lost (%s)", g.Group, g.From, g.Reason)
	}
	return fmt.Sprintf("group %d: seq %d..%d lost (%s)", g.Group, g.From, g.To, g.Reason)
}

// Event is one item of a subscription: a message, a gap, or the end.
type Event struct {
	Kind      EventKind
	Namespace string // attach name of the namespace
	// Epoch counts the broker's connections to this namespace; it changes
	// when the broker re-dials, for instance after a module reload.
	Epoch uint64
	// Instance is the module's instance id for the namespace
	// (family.Stats.InstanceID) that numbered Message: with Message.Seq it
	// is a resume point (ResumePoint).
	Instance uint64
	// Message is set for KindMessage: the event as the kernel sent it.
	Message family.Event
	// Receivers, for KindMessage, is how many subscriptions wanted the
	// message's group when the broker received it (a resuming one may
	// count before it receives): a hint for sharing work between the
	// copies of one message, where 1 means this copy is the only one. A
	// message replayed to a subscription that resumed has 1.
	Receivers int
	// Gap is set for KindGap.
	Gap Gap
	// Err is set for KindEnd: why the subscription ended (context
	// cancellation ends it without a KindEnd event).
	Err error
}

// State is the condition of an attached namespace.
type State int

const (
	// StateReady: connected to the module in the namespace.
	StateReady State = iota + 1
	// StateUnavailable: attached, but without a connection to the module;
	// the broker re-dials by itself.
	StateUnavailable
)

func (s State) String() string {
	switch s {
	case StateReady:
		return "ready"
	case StateUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// NamespaceEventKind tells what happened to an attached namespace.
type NamespaceEventKind int

const (
	// NamespaceAttached: attached (or already attached when Watch began).
	NamespaceAttached NamespaceEventKind = iota + 1
	// NamespaceDetached: detached on request.
	NamespaceDetached
	// NamespaceUnavailable: lost its connection to the module.
	NamespaceUnavailable
	// NamespaceReady: (re)connected to the module.
	NamespaceReady
	// NamespaceGone: disappeared and was detached by the broker.
	NamespaceGone
)

func (k NamespaceEventKind) String() string {
	switch k {
	case NamespaceAttached:
		return "attached"
	case NamespaceDetached:
		return "detached"
	case NamespaceUnavailable:
		return "unavailable"
	case NamespaceReady:
		return "ready"
	case NamespaceGone:
		return "gone"
	}
	return fmt.Sprintf("NamespaceEventKind(%d)", int(k))
}

// NamespaceEvent is one change reported by Watch.
type NamespaceEvent struct {
	Kind NamespaceEventKind
	Info Info
	Err  error // for NamespaceUnavailable and NamespaceGone: the reason
}
