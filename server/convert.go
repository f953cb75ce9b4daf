package server

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func refToProto(r nsmgr.Ref) *nsbrokerv1.NamespaceRef {
	switch {
	case r.Name != "":
		return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: r.Name}}
	case r.Path != "":
		return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Path{Path: r.Path}}
	case r.PID != 0:
		return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: int32(r.PID)}}
	}
	return nil
}

func refFromProto(r *nsbrokerv1.NamespaceRef) nsmgr.Ref {
	switch k := r.GetKind().(type) {
	case *nsbrokerv1.NamespaceRef_Name:
		return nsmgr.Ref{Name: k.Name}
	case *nsbrokerv1.NamespaceRef_Path:
		return nsmgr.Ref{Path: k.Path}
	case *nsbrokerv1.NamespaceRef_Pid:
		return nsmgr.Ref{PID: int(k.Pid)}
	}
	return nsmgr.Ref{}
}

func stateToProto(s broker.State) nsbrokerv1.NamespaceState {
	switch s {
	case broker.StateReady:
		return nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY
	case broker.StateUnavailable:
		return nsbrokerv1.NamespaceState_NAMESPACE_STATE_UNAVAILABLE
	}
	return nsbrokerv1.NamespaceState_NAMESPACE_STATE_UNSPECIFIED
}

func namespaceToProto(in broker.Info) *nsbrokerv1.Namespace {
	return &nsbrokerv1.Namespace{
		Name:        in.Name,
		Ref:         refToProto(in.Ref),
		Dev:         in.ID.Dev,
		Inode:       in.ID.Ino,
		Cookie:      in.Cookie,
		State:       stateToProto(in.State),
		Reason:      in.Reason,
		AttachedAt:  timestamp(in.AttachedAt),
		Epoch:       in.Epoch,
		Subscribers: uint32(in.Subscribers),
	}
}

var namespaceEventKinds = map[broker.NamespaceEventKind]nsbrokerv1.NamespaceEvent_Kind{
	broker.NamespaceAttached:    nsbrokerv1.NamespaceEvent_KIND_ATTACHED,
	broker.NamespaceDetached:    nsbrokerv1.NamespaceEvent_KIND_DETACHED,
	broker.NamespaceUnavailable: nsbrokerv1.NamespaceEvent_KIND_UNAVAILABLE,
	broker.NamespaceReady:       nsbrokerv1.NamespaceEvent_KIND_READY,
	broker.NamespaceGone:        nsbrokerv1.NamespaceEvent_KIND_GONE,
}

func namespaceEventToProto(ev broker.NamespaceEvent) *nsbrokerv1.NamespaceEvent {
	out := &nsbrokerv1.NamespaceEvent{Kind: namespaceEventKinds[ev.Kind], Namespace: namespaceToProto(ev.Info)}
	if ev.Err != nil {
		out.Reason = ev.Err.Error()
	}
	return out
}

func eventToProto(ev broker.Event) *nsbrokerv1.SubscribeResponse {
	m := ev.Message
	return &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Event{Event: &nsbrokerv1.Event{
		Namespace:    ev.Namespace,
		Group:        m.Group,
		Seq:          m.Seq,
		Payload:      m.Payload,
		NetnsInode:   uint64(m.NetnsInum),
		SenderPortid: m.SenderPortID,
		Timestamp:    timestamp(m.Timestamp),
		Epoch:        ev.Epoch,
		Instance:     ev.Instance,
	}}}
}

var lossReasons = map[broker.LossReason]nsbrokerv1.LossReason{
	broker.LossKernelOverrun:   nsbrokerv1.LossReason_LOSS_REASON_KERNEL_OVERRUN,
	broker.LossQueueFull:       nsbrokerv1.LossReason_LOSS_REASON_QUEUE_FULL,
	broker.LossReleased:        nsbrokerv1.LossReason_LOSS_REASON_RELEASED,
	broker.LossModuleReloaded:  nsbrokerv1.LossReason_LOSS_REASON_MODULE_RELOADED,
	broker.LossNotRetained:     nsbrokerv1.LossReason_LOSS_REASON_NOT_RETAINED,
	broker.LossDaemonRestarted: nsbrokerv1.LossReason_LOSS_REASON_DAEMON_RESTARTED,
}

func gapToProto(ev broker.Event) *nsbrokerv1.SubscribeResponse {
	g := ev.Gap
	return &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Gap{Gap: &nsbrokerv1.Gap{
		Namespace: ev.Namespace,
		Group:     g.Group,
		FromSeq:   g.From,
		ToSeq:     g.To,
		Reason:    lossReasons[g.Reason],
		Instance:  g.Instance,
	}}}
}

func kernelCountersToProto(st *family.Stats) *nsbrokerv1.KernelCounters {
	return &nsbrokerv1.KernelCounters{
		Echo:       st.Echo,
		Publish:    st.Publish,
		Delivered:  st.Delivered,
		NoListener: st.NoListener,
		Overrun:    st.Overrun,
		Rejected:   st.Rejected,
	}
}

func daemonCountersToProto(in broker.Info) *nsbrokerv1.DaemonCounters {
	return &nsbrokerv1.DaemonCounters{
		Received:    in.Received,
		Delivered:   in.Delivered,
		Overruns:    in.Overruns,
		OverrunLost: in.OverrunLost,
		QueueLost:   in.QueueLost,
		Subscribers: uint32(in.Subscribers),
	}
}
