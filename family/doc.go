// Package family is the Go side of the nsbroker kernel ABI: the constants of
// kmod/include/uapi/linux/nsbroker.h, request encoders, reply and event
// decoders, and a Conn that talks to the module's kernel socket in one
// network namespace.
//
// Every message is a netlink header, the 4-byte family [Header] and netlink
// attributes. Requests are built with [EncodeEcho], [EncodePublish] and
// [EncodeStats]; replies and multicast events are read with [DecodeEchoReply],
// [DecodePublishReply], [DecodeStats] and [DecodeEvent], which ignore
// attributes they do not know so that a newer module can add some.
//
// A [Conn] offers synchronous helpers ([Conn.Echo], [Conn.Publish],
// [Conn.Stats]) for simple callers and a low-level [Conn.Send] /
// [Conn.Receive] pair for multiplexers that run one reader goroutine and many
// senders. Kernel rejections are [*Error] values that unwrap to their errno.
package family
