package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nsbroker/nsbroker/client"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// The --json output: the daemon's messages with the proto's field names,
// numbers as JSON numbers, payloads in base64 (as []byte encodes), enums
// as lower-case words without their prefix, and times in RFC 3339.

type namespaceJSON struct {
	Name        string `json:"name"`
	Ref         string `json:"ref"`
	Dev         uint64 `json:"dev"`
	Inode       uint64 `json:"inode"`
	Cookie      uint64 `json:"cookie"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	AttachedAt  string `json:"attached_at,omitempty"`
	Epoch       uint64 `json:"epoch"`
	Subscribers uint32 `json:"subscribers"`
}

type namespaceEventJSON struct {
	Kind      string        `json:"kind"`
	Namespace namespaceJSON `json:"namespace"`
	Reason    string        `json:"reason,omitempty"`
}

type echoJSON struct {
	Payload     []byte `json:"payload"`
	NetnsInode  uint64 `json:"netns_inode"`
	NetnsCookie uint64 `json:"netns_cookie"`
}

type publishJSON struct {
	Group     uint32 `json:"group"`
	Seq       uint64 `json:"seq"`
	Listeners bool   `json:"listeners"`
}

type publishStreamJSON struct {
	Published uint64            `json:"published"`
	LastSeq   map[uint32]uint64 `json:"last_seq"`
}

type eventJSON struct {
	Namespace    string `json:"namespace"`
	Group        uint32 `json:"group"`
	Seq          uint64 `json:"seq"`
	Payload      []byte `json:"payload"`
	NetnsInode   uint64 `json:"netns_inode"`
	SenderPortid uint32 `json:"sender_portid"`
	Timestamp    string `json:"timestamp,omitempty"`
	Epoch        uint64 `json:"epoch"`
	Instance     uint64 `json:"instance"`
}

type gapJSON struct {
	Namespace string `json:"namespace"`
	Group     uint32 `json:"group"`
	FromSeq   uint64 `json:"from_seq"`
	ToSeq     uint64 `json:"to_seq"`
	Reason    string `json:"reason"`
	Instance  uint64 `json:"instance"`
}

// subscribeJSON is one line of subscribe --json: exactly one field is set.
type subscribeJSON struct {
	Event *eventJSON `json:"event,omitempty"`
	Gap   *gapJSON   `json:"gap,omitempty"`
}

type statsJSON struct {
	Namespaces      []namespaceStatsJSON `json:"namespaces"`
	ModuleInstances uint32               `json:"module_instances"`
}

type namespaceStatsJSON struct {
	Namespace string      `json:"namespace"`
	Kernel    *kernelJSON `json:"kernel,omitempty"` // absent while unavailable
	Daemon    *daemonJSON `json:"daemon"`
}

type kernelJSON struct {
	Echo       uint64 `json:"echo"`
	Publish    uint64 `json:"publish"`
	Delivered  uint64 `json:"delivered"`
	NoListener uint64 `json:"no_listener"`
	Overrun    uint64 `json:"overrun"`
	Rejected   uint64 `json:"rejected"`
}

type daemonJSON struct {
	Received    uint64 `json:"received"`
	Delivered   uint64 `json:"delivered"`
	Overruns    uint64 `json:"overruns"`
	OverrunLost uint64 `json:"overrun_lost"`
	QueueLost   uint64 `json:"queue_lost"`
	Subscribers uint32 `json:"subscribers"`
}

// writeJSON writes v as one line.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// enumWord turns NAMESPACE_STATE_READY (with prefix "NAMESPACE_STATE_")
// into "ready".
func enumWord(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

func stateWord(s nsbrokerv1.NamespaceState) string {
	return enumWord(s.String(), "NAMESPACE_STATE_")
}

func reasonWord(r nsbrokerv1.LossReason) string {
	return enumWord(r.String(), "LOSS_REASON_")
}

func kindWord(k nsbrokerv1.NamespaceEvent_Kind) string {
	return enumWord(k.String(), "KIND_")
}

// refString writes a ref the way ns attach takes it.
func refString(r *nsbrokerv1.NamespaceRef) string {
	switch k := r.GetKind().(type) {
	case *nsbrokerv1.NamespaceRef_Name:
		return "name:" + k.Name
	case *nsbrokerv1.NamespaceRef_Path:
		return "path:" + k.Path
	case *nsbrokerv1.NamespaceRef_Pid:
		return "pid:" + strconv.Itoa(int(k.Pid))
	}
	return ""
}

func timeString(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().Format(time.RFC3339Nano)
}

func namespaceOut(ns *nsbrokerv1.Namespace) namespaceJSON {
	return namespaceJSON{
		Name:        ns.GetName(),
		Ref:         refString(ns.GetRef()),
		Dev:         ns.GetDev(),
		Inode:       ns.GetInode(),
		Cookie:      ns.GetCookie(),
		State:       stateWord(ns.GetState()),
		Reason:      ns.GetReason(),
		AttachedAt:  timeString(ns.GetAttachedAt()),
		Epoch:       ns.GetEpoch(),
		Subscribers: ns.GetSubscribers(),
	}
}

func eventOut(e *nsbrokerv1.Event) *eventJSON {
	return &eventJSON{
		Namespace:    e.GetNamespace(),
		Group:        e.GetGroup(),
		Seq:          e.GetSeq(),
		Payload:      e.GetPayload(),
		NetnsInode:   e.GetNetnsInode(),
		SenderPortid: e.GetSenderPortid(),
		Timestamp:    timeString(e.GetTimestamp()),
		Epoch:        e.GetEpoch(),
		Instance:     e.GetInstance(),
	}
}

func gapOut(g *client.Gap) *gapJSON {
	return &gapJSON{
		Namespace: g.Namespace,
		Group:     g.Group,
		FromSeq:   g.From,
		ToSeq:     g.To,
		Reason:    gapReason(g),
		Instance:  g.Instance,
	}
}

// gapReason is the daemon's reason in a word, or "reconnect" for a gap
// that the client found across a reconnect (subscribe --follow).
func gapReason(g *client.Gap) string {
	if g.Reconnect {
		return "reconnect"
	}
	return reasonWord(g.Reason)
}

// The text output: one line per item, key=value, payloads quoted.

func eventText(e *nsbrokerv1.Event) string {
	return fmt.Sprintf("event ns=%s group=%d seq=%d inode=%d sender=%d epoch=%d time=%s payload=%q",
		e.GetNamespace(), e.GetGroup(), e.GetSeq(), e.GetNetnsInode(), e.GetSenderPortid(),
		e.GetEpoch(), timeString(e.GetTimestamp()), e.GetPayload())
}

func gapText(g *client.Gap) string {
	missing := fmt.Sprintf("seq=%d-%d count=%d", g.From, g.To, g.Count())
	if g.To == 0 {
		missing = fmt.Sprintf("seq=%d- count=unknown", g.From)
	}
	return fmt.Sprintf("gap ns=%s group=%d %s reason=%s", g.Namespace, g.Group, missing, gapReason(g))
}

func namespaceEventText(ev *nsbrokerv1.NamespaceEvent) string {
	ns := ev.GetNamespace()
	s := fmt.Sprintf("%s ns=%s state=%s inode=%d epoch=%d ref=%s",
		kindWord(ev.GetKind()), ns.GetName(), stateWord(ns.GetState()), ns.GetInode(),
		ns.GetEpoch(), refString(ns.GetRef()))
	if ev.GetReason() != "" {
		s += fmt.Sprintf(" reason=%q", ev.GetReason())
	}
	return s
}
