package family_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/mdlayher/netlink"
	"github.com/nsbroker/nsbroker/family"
)

// A Conn on a fake kernel: code that talks to the module can be tested
// without it. The fake answers echo requests as the module in namespace
// 4026531840 would.
func ExampleNewFakeConn() {
	c := family.NewFakeConn(func(reqs []netlink.Message) ([]netlink.Message, error) {
		req := reqs[0]
		ad, err := netlink.NewAttributeDecoder(req.Data[family.HeaderLen:])
		if err != nil {
			return nil, err
		}
		reply := &family.EchoReply{NetnsInum: 4026531840, NetnsCookie: 1}
		for ad.Next() {
			if ad.Type() == family.AttrPayload {
				reply.Payload = ad.Bytes()
			}
		}
		body, err := reply.MarshalBinary()
		if err != nil {
			return nil, err
		}
		h := netlink.Header{Type: req.Header.Type, Sequence: req.Header.Sequence}
		return []netlink.Message{{Header: h, Data: body}}, nil
	})
	defer c.Close()

	r, err := c.Echo([]byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q answered by namespace %d\n", r.Payload, r.NetnsInum)
	// Output: "hello" answered by namespace 4026531840
}

// A multiplexer: one goroutine receives, any goroutine sends, and replies
// are matched to requests by sequence number.
func ExampleConn_Receive() {
	c, err := family.Dial(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.JoinGroup(1); err != nil {
		log.Fatal(err)
	}

	go func() {
		body, _ := family.EncodePublish(1, []byte("hello"))
		if _, err := c.Send(family.MsgPublish, 0, body); err != nil {
			log.Print(err)
		}
	}()

	for {
		msgs, err := c.Receive()
		if errors.Is(err, family.ErrDropped) {
			log.Print("receive buffer overrun: events were lost")
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		for _, m := range msgs {
			switch r := m.Reply.(type) {
			case *family.Event:
				fmt.Printf("event %d of group %d: %q\n", r.Seq, r.Group, r.Payload)
				return
			case *family.PublishReply:
				fmt.Printf("request %d published as event %d\n", m.Seq, r.Seq)
			default:
				if m.Err != nil {
					fmt.Printf("request %d failed: %v\n", m.Seq, m.Err)
				}
			}
		}
	}
}
